"""The MNIST trial: data, models, the training loop (trial.py) and its record, metrics.json (metrics.py)."""
