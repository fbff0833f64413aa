"""Paper ablations as experiments: `experiments/NAME/` folders, run at a smoke or full size."""
