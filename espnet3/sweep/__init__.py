"""Hyperparameter sweeps: a sweep file (docs/sweep_yaml.md) run as one Ray Tune experiment
whose trials are Ray Train runs of the base train.yaml."""
