"""Discover the experiments: every `experiments/NAME/` folder with an analysis.py and sweep files.

An experiment folder holds
  README.md     its command, expected output and where our trend differs from the paper's
  analysis.py   TITLE, KIND ("count" | "train" | "bench"), SMOKE_MINUTES and analyze(result)
  smoke/*.yaml  W&B-format sweep files for the 2-core CPU size (one file per plotted series)
  full/*.yaml   the paper's setting (ImageNet or a named TFDS dataset), for accelerators
"""

from __future__ import annotations

import dataclasses
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
        """The experiment's analysis.py, imported from its folder."""
        return _load(self.folder / "analysis.py", f"lcnn_experiment_{self.name}")


def _load(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def list_experiments(root: Path | None = None) -> list[Experiment]:
    """Every experiment under `root` (default: the repository's experiments/), by name."""
    root = Path(root) if root else default_root()
    out = []
    for folder in sorted(p for p in root.iterdir() if (p / "analysis.py").is_file()):
        module = _load(folder / "analysis.py", f"lcnn_experiment_{folder.name}")
        kind = getattr(module, "KIND", None)
        if kind not in KINDS:
            raise ConfigError(f"{folder / 'analysis.py'}: KIND must be one of {', '.join(KINDS)}, got {kind!r}")
        out.append(Experiment(folder.name, folder, module.TITLE, kind, float(module.SMOKE_MINUTES)))
    return out


def get_experiment(name: str, root: Path | None = None) -> Experiment:
    """The experiment called `name`; an unknown name lists the valid ones."""
    experiments = {e.name: e for e in list_experiments(root)}
    if name not in experiments:
        raise unknown_choice("experiment", name, list(experiments))
    return experiments[name]
