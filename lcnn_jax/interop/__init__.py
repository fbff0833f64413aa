"""Weight import from other frameworks (timm/PyTorch) and the converted-checkpoint format."""
