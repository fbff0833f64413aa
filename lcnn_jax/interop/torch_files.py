"""Read a PyTorch state_dict from a .pth/.pt/.bin (torch) or .safetensors (no torch needed) file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcnn_jax.errors import ConfigError

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SUFFIXES = TORCH_SUFFIXES + (".safetensors",)
# Training scripts often save {'state_dict': ...} or {'model': ...} instead of the bare dict.
_WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a checkpoint file, unwrapped from a training-script wrapper if needed."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"checkpoint {str(path)!r} must end in one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"reading {path.suffix} needs PyTorch: pip install -e '.[torch]' (or convert the file to .safetensors)"
        ) from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    for key in _WRAPPERS:
        if key in state and isinstance(state[key], dict) and not any(hasattr(v, "shape") for v in state.values()):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
