"""mnist-sweeper: `sweeper.report(value, step)` lets any Hydra task swept by `hydra/sweeper: mnist_optuna` be
pruned (see sweeper/engine/worker.py); it does nothing outside a sweep."""
from sweeper.engine.worker import report

__all__ = ["report"]
