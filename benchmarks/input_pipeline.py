"""Input pipeline throughput: records read one at a time vs decoded once into RAM, with augmentation.

Run:  .venv/bin/python benchmarks/input_pipeline.py [--batch 256] [--batches 100] [--resolution 32]

Uses the prepared Fashion-MNIST (lcnn_jax.data.sources). Prints img/s for each variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

from lcnn_jax.config import DataConfig
from lcnn_jax.data.pipeline import Preprocess, TrainBatches, normalisation
from lcnn_jax.data.sources import builder_for, load_split
from lcnn_jax.tables import markdown_table


def _rate(batches, n_batches: int, batch: int) -> float:
    it = iter(batches)
    next(it)  # start-up (threads, first epoch's shuffle) is not throughput
    t0 = time.perf_counter()
    for _ in itertools.islice(it, n_batches):
        pass
    return n_batches * batch / (time.perf_counter() - t0)


def main() -> None:
    """Measure and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--resolution", type=int, default=32)
    a = p.parse_args()
    t0 = time.perf_counter()
    split = load_split("fashion_mnist", "train")
    load_s = time.perf_counter() - t0
    mean, std = normalisation(split)
    prep = Preprocess(a.resolution, 3, mean, std)
    rows = []
    # Record at a time from array_record: what a pipeline without the in-RAM copy would do.
    lazy = dataclasses.replace(split, images=None, labels=None, source=builder_for("fashion_mnist", None).as_data_source(split="train"))
    for label, src, cfg in (
        ("array_record, one record at a time", lazy, DataConfig()),
        ("in RAM (decoded once), crop+flip", split, DataConfig()),
        ("in RAM, crop+flip+RandAugment(2, 9)", split, DataConfig(randaugment_ops=2)),
        ("in RAM, no augmentation", split, DataConfig(crop_padding=0, flip=False)),
    ):
        n = max(4, a.batches // 10) if src is lazy else a.batches
        rate = _rate(TrainBatches(src, cfg, prep, a.batch, seed=0).from_step(0), n, a.batch)
        rows.append((label, f"{rate:,.0f}"))
    print(f"decode 60k records into RAM: {load_s:.1f} s; batch {a.batch}, {a.resolution} px, RGB float32")
    print(markdown_table(("pipeline", "img/s"), rows, right=(False, True)))


if __name__ == "__main__":
    main()
