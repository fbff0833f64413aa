"""Datasets (TFDS builders read without TensorFlow) and the grain input pipeline."""
