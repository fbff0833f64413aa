"""Converted checkpoints on disk: an orbax checkpoint of {'params', 'batch_stats'} plus model.json.

Layout of OUTDIR:  model.json (how to rebuild the spec, and where the weights came from) and
variables/ (orbax). The directory appears atomically: it is written next to OUTDIR and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lcnn_jax.errors import ConfigError
from lcnn_jax.presets import get_spec
from lcnn_jax.spec import BatchNormSpec, NetSpec

FORMAT = "lcnn-pretrained/1"


def spec_record(spec: NetSpec, preset: str, padding: str, **source: Any) -> dict[str, Any]:
    """The model.json content that rebuilds `spec` (a preset scaled at its width) and names its source."""
    return dict(
        format=FORMAT, preset=preset, width=spec.width, depth=spec.depth, resolution=spec.resolution,
        num_classes=spec.num_classes, padding=padding,
        bn=dict(momentum=spec.bn.momentum, epsilon=spec.bn.epsilon), source=source,
    )


def spec_from_record(record: dict[str, Any]) -> NetSpec:
    """Rebuild the spec a model.json describes."""
    spec = get_spec(
        record["preset"], width=record["width"], depth=record["depth"], resolution=record["resolution"],
        num_classes=record["num_classes"], padding=record["padding"],
    )
    return spec.replace(bn=BatchNormSpec(**record["bn"]))


def save_pretrained(outdir: str | Path, record: dict[str, Any], variables: dict) -> Path:
    """Write model.json and the orbax checkpoint to `outdir`, which must not exist yet."""
    import orbax.checkpoint as ocp

    outdir = Path(outdir).absolute()
    if outdir.exists() and any(outdir.iterdir()):
        raise ConfigError(f"output directory {str(outdir)!r} exists and is not empty; pick a new one")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "variables", variables)
            ckptr.wait_until_finished()
        (tmp / "model.json").write_text(json.dumps(record, indent=2) + "\n")
        if outdir.exists():
            outdir.rmdir()
        os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


def load_pretrained(path: str | Path) -> tuple[NetSpec, dict]:
    """(spec, variables) of a directory written by `save_pretrained` (e.g. `lcnn convert`)."""
    import orbax.checkpoint as ocp

    from lcnn_jax.net import abstract_variables

    path = Path(path).absolute()
    meta = path / "model.json"
    if not meta.is_file():
        raise ConfigError(f"{str(path)!r} is not a converted checkpoint (no model.json); make one with `lcnn convert`")
    record = json.loads(meta.read_text())
    if record.get("format") != FORMAT:
        raise ConfigError(f"{str(meta)!r} has format {record.get('format')!r}, expected {FORMAT!r}")
    spec = spec_from_record(record)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(path / "variables", abstract_variables(spec))
    return spec, variables
