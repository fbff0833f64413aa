"""lcnn_jax: architecture-scaling studies of lightweight CNNs (MobileNet, EfficientNet) in JAX/Flax."""

__version__ = "0.1.0"
