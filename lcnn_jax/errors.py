"""The one exception type for bad user input; the CLI turns it into a one-line error and exit 2."""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """Invalid user input (model name, multiplier, resolution, option); the message names the fix."""


def unknown_choice(kind: str, value: str, choices: list[str] | tuple[str, ...]) -> ConfigError:
    """A ConfigError for an unknown name that suggests the nearest valid ones."""
    near = difflib.get_close_matches(value, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return ConfigError(f"unknown {kind} {value!r}; {hint}valid: {', '.join(choices)}")
