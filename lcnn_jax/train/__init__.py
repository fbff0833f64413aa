"""Training: state, optimisers, jitted steps, checkpoints, metric logs, and train_and_evaluate."""
