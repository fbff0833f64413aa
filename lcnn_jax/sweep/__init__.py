"""Sweeps: W&B-format sweep files, the submitit runner, results.csv, reports and the (alpha, beta, gamma) search."""
