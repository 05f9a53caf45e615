"""Hydra only loads sweepers from the hydra_plugins namespace: this shim registers the configs (config.py) and
forwards to sweeper.engine.sweep.OptunaSweep, where the logic lives.

Hydra imports every plugin module in every run of every app on the machine (a sweep's worker processes too), so
the engine (Optuna, SQLAlchemy) is imported only once a sweep builds this sweeper.
"""
import difflib
import importlib
import sys

from hydra.plugins.sweeper import Sweeper

from hydra_plugins.mnist_optuna_sweeper.config import PRUNERS, SAMPLERS, by_name, register_configs

register_configs()
OFFICIAL = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"   # hydra-optuna-sweeper's class


class MnistOptunaSweeper(Sweeper):
    def __init__(self, sampler, pruner, **kwargs):
        from sweeper.engine import settings
        from sweeper.engine.sweep import OptunaSweep
        unknown = sorted(set(kwargs) - set(settings.keys()))
        if unknown:   # `+hydra.sweeper.n_trial=5` adds a key Hydra cannot check: say what was meant
            keys = sorted(settings.keys())
            close = difflib.get_close_matches(unknown[0], keys, n=1)
            fail(ValueError(f"hydra.sweeper.{unknown[0]} is not a key of hydra/sweeper: mnist_optuna"
                            + (f"; did you mean {close[0]}?" if close else "") + f" (keys: {', '.join(keys)})"))
        try:
            self.sweep_impl = OptunaSweep(sampler=by_name("sampler", sampler, SAMPLERS),
                                          pruner=by_name("pruner", pruner, PRUNERS), **kwargs)
        except ValueError as e:
            fail(e)

    def setup(self, *, hydra_context, task_function, config):
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments):
        from sweeper.engine.stops import SweepError
        try:
            return self.sweep_impl.sweep(arguments)
        except SweepError as e:
            fail(e)


class OfficialTarget(MnistOptunaSweeper):
    """Searches written for hydra-optuna-sweeper often pin `hydra.sweeper._target_` to its class, and Hydra finds a
    plugin by that name. Registered under it too (the name is set below), this sweeper runs such a file once its
    defaults line says `mnist_optuna`. Where hydra-optuna-sweeper is installed as well, a config composed from its
    own group (`hydra/sweeper: optuna`, without this sweeper's keys) still gets hydra-optuna-sweeper."""

    def __new__(cls, *args, **kwargs):
        if "prune_guard" not in kwargs:   # every config of `hydra/sweeper: mnist_optuna` has it
            module, _, name = OFFICIAL.rpartition(".")
            try:
                official = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                official = None
            if official is not None and official is not cls:
                return official(*args, **kwargs)
        return super().__new__(cls)


# Hydra registers a plugin class as f"{__module__}.{__name__}" (its scan reaches this package after
# hydra_plugins.hydra_optuna_sweeper, so this entry is the one that stays), then builds it from
# f"{__module__}.{__qualname__}", which must import: the official name for the one, this class's for the other
OfficialTarget.__module__ = "hydra_plugins"
OfficialTarget.__name__ = OFFICIAL[len("hydra_plugins."):]
OfficialTarget.__qualname__ = f"{__name__[len('hydra_plugins.'):]}.OfficialTarget"


def fail(e):
    """Bad sweep settings and a sweep stopped by failures end in one line on stderr, not Hydra's traceback."""
    print(f"error: {e}", file=sys.stderr)
    sys.exit(getattr(e, "exit_code", 2))
