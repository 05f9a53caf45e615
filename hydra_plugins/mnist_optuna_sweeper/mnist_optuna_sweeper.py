"""Hydra only loads sweepers from the hydra_plugins namespace; the logic lives in sweeper/sweep.py."""
from hydra.plugins.sweeper import Sweeper

from sweeper.sweep import OptunaSweep, register_configs

register_configs()


class MnistOptunaSweeper(Sweeper):
    def __init__(self, **kwargs):
        self.sweep_impl = OptunaSweep(**kwargs)

    def setup(self, *, hydra_context, task_function, config):
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments):
        return self.sweep_impl.sweep(arguments)
