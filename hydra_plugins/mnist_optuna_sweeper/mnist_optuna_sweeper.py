"""Hydra only loads sweepers from the hydra_plugins namespace: this shim registers the configs (config.py) and
forwards to sweeper.engine.sweep.OptunaSweep, where the logic lives."""
import sys

from hydra.plugins.sweeper import Sweeper

from hydra_plugins.mnist_optuna_sweeper.config import PRUNERS, SAMPLERS, by_name, register_configs
from sweeper.engine.sweep import OptunaSweep, SweepError

register_configs()


class MnistOptunaSweeper(Sweeper):
    def __init__(self, sampler, pruner, **kwargs):
        try:
            self.sweep_impl = OptunaSweep(sampler=by_name("sampler", sampler, SAMPLERS),
                                          pruner=by_name("pruner", pruner, PRUNERS), **kwargs)
        except ValueError as e:
            fail(e)

    def setup(self, *, hydra_context, task_function, config):
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments):
        try:
            return self.sweep_impl.sweep(arguments)
        except SweepError as e:
            fail(e)


def fail(e):
    """Bad sweep settings and a sweep stopped by failures end in one line on stderr, not Hydra's traceback."""
    print(f"error: {e}", file=sys.stderr)
    sys.exit(getattr(e, "exit_code", 2))
