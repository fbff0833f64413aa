"""Discover the experiments: every `experiments/NAME/` folder with an analysis.py and sweep files.

An experiment folder holds
  README.md     its command, expected output and where our trend differs from the paper's
  analysis.py   TITLE, KIND ("count" | "train" | "bench"), SMOKE_MINUTES and analyze(result)
  smoke/*.yaml  W&B-format sweep files for the 2-core CPU size (one file per plotted series)
  full/*.yaml   the paper's setting (ImageNet or a named TFDS dataset), for accelerators
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from types import ModuleType

from lcnn_jax.errors import ConfigError, unknown_choice

SIZES = ("smoke", "full")
KINDS = ("count", "train", "bench")


def default_root() -> Path:
    """The repository's experiments/ folder (next to the lcnn_jax package)."""
    return Path(__file__).resolve().parents[2] / "experiments"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One ablation: its folder and the analysis module's metadata."""

    name: str
    folder: Path
    title: str
    kind: str
    smoke_minutes: float

    def sweep_files(self, size: str) -> list[Path]:
        """The sweep files of one size, in name order."""
        if size not in SIZES:
            raise unknown_choice("experiment size", size, SIZES)
        files = sorted((self.folder / size).glob("*.yaml"))
        if not files:
            raise ConfigError(f"experiment {self.name} has no sweep files in {self.folder / size}")
        return files

    def analysis(self) -> ModuleType:
        """The experiment's analysis.py, imported from its folder (once per process)."""
        return _load(self.folder / "analysis.py")


@functools.cache
def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lcnn_experiment_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _experiment(folder: Path) -> Experiment:
    module = _load(folder / "analysis.py")
    kind = getattr(module, "KIND", None)
    if kind not in KINDS:
        raise ConfigError(f"{folder / 'analysis.py'}: KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    return Experiment(folder.name, folder, module.TITLE, kind, float(module.SMOKE_MINUTES))


def _folders(root: Path | None) -> list[Path]:
    root = Path(root) if root else default_root()
    return sorted(p for p in root.iterdir() if (p / "analysis.py").is_file())


def list_experiments(root: Path | None = None) -> list[Experiment]:
    """Every experiment under `root` (default: the repository's experiments/), by name."""
    return [_experiment(folder) for folder in _folders(root)]


def get_experiment(name: str, root: Path | None = None) -> Experiment:
    """The experiment called `name` (only its analysis is imported); an unknown name lists the valid ones."""
    folders = {f.name: f for f in _folders(root)}
    if name not in folders:
        raise unknown_choice("experiment", name, list(folders))
    return _experiment(folders[name])
