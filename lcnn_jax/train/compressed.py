"""What a run reports about compression: sparsity reached, effective counts, model bytes, int8 PTQ.

These fill summary.json (and so results.csv) next to the dense counts, so pruned, quantized and
scaled-down runs can be compared at equal cost:
  sparsity          zeros among the prunable kernels (the set the target applies to)
  kernel_sparsity   zeros among all conv/dense kernels (what the bytes and MACs see)
  effective_params / effective_macs   counts over the non-zero weights only
  bits              the QAT precision of the kernels (32 = float)
  model_bytes       kernels at `bits`; a pruned model is stored as bitmap + non-zero values
  ptq_*             int8 PTQ of the EMA weights: top-1 and prediction agreement with float
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from lcnn_jax.compress.pruning import effective_counts, sparsity_report
from lcnn_jax.compress.quantize import model_bytes, ptq_int8
from lcnn_jax.config import Config
from lcnn_jax.count import Counts
from lcnn_jax.data.pipeline import Preprocess, eval_batches
from lcnn_jax.data.sources import Split
from lcnn_jax.train.optim import prune_config


def compress_summary(config: Config, counts: Counts, params, total_steps: int) -> dict:
    """Sparsity reached, effective params/MACs and model bytes of trained `params`."""
    cfg = config.compress
    params = jax.device_get(params)
    pcfg = prune_config(cfg, total_steps)
    eff = effective_counts(counts, params)
    return {
        "sparsity_target": cfg.sparsity,
        "sparsity": sparsity_report(params, pcfg)["global"] if pcfg else 0.0,
        "kernel_sparsity": sparsity_report(params)["global"],
        "effective_params": eff.effective_params,
        "effective_macs": eff.effective_macs,
        "bits": cfg.bits,
        "model_bytes": model_bytes(params, cfg.bits, sparse=pcfg is not None),
        "float_model_bytes": model_bytes(params, 32),
    }


def ptq_evaluate(model, variables, config: Config, train_split: Split, eval_split: Split, prep: Preprocess) -> dict:
    """Int8-quantize `variables` (calibrated on training batches) and evaluate against the float model.

    Returns ptq_top1, ptq_float_top1 (the same weights in float32), ptq_agreement (the share of
    test images whose predicted class is unchanged) and ptq_model_bytes.
    """
    bs = config.data.eval_batch_size
    variables = jax.device_get(variables)
    calib = itertools.islice(eval_batches(train_split, config.data, prep, bs), config.compress.calibration_batches)
    int8 = ptq_int8(model, variables, [b["image"] for b in calib], config.compress.calibration_percentile)
    float_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    hits_q = hits_f = agree = n = 0
    for batch in eval_batches(eval_split, config.data, prep, bs):
        mask = batch["mask"]
        pred_q = np.asarray(jnp.argmax(int8(batch["image"]), -1))[mask]
        pred_f = np.asarray(jnp.argmax(float_fn(variables, batch["image"]), -1))[mask]
        labels = batch["label"][mask]
        hits_q += int(np.sum(pred_q == labels))
        hits_f += int(np.sum(pred_f == labels))
        agree += int(np.sum(pred_q == pred_f))
        n += int(mask.sum())
    return {"ptq_top1": hits_q / n, "ptq_float_top1": hits_f / n, "ptq_agreement": agree / n,
            "ptq_model_bytes": model_bytes(variables["params"], 8, sparse=config.compress.sparsity > 0)}
