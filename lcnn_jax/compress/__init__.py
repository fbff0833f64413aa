"""Model compression: magnitude pruning (lcnn_jax.compress.pruning) and quantization (lcnn_jax.compress.quantize)."""
