"""The Hydra launcher that runs a sweep's jobs, and what other launchers than the basic one need.

The sweep hands each job to `launcher.launch` alone, from n_jobs threads at once, so any launcher (Ray,
submitit, joblib) keeps n_jobs trials in flight and starts the next as soon as one ends.
"""
import contextlib
import importlib
import sys

from hydra.core.plugins import Plugins

from sweeper.engine.watch import Watched


def make(hydra_context, task_function, config):
    basic = str(config.hydra.launcher._target_).endswith(".BasicLauncher")
    # any other launcher may pickle the task: give it one that pickles, and that stops when its sweep says so
    return Plugins.instance().instantiate_launcher(
        hydra_context=hydra_context, task_function=task_function if basic else Watched(importable(task_function)),
        config=config)


def importable(task_function):
    """The task as a launcher that pickles it (Ray) should get it.

    A task of an app run as `python -m pkg.app` lives in `__main__`, which cloudpickle sends by value with every
    global it touches (torch's do not pickle). The same module imported by name holds the same task behind
    @hydra.main, which runs it on a config passed in; that pickles as a reference, `pkg.app.main`.
    """
    name = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", None)
    if task_function.__module__ != "__main__" or not name:
        return task_function
    twin = getattr(importlib.import_module(name), task_function.__name__, None)
    return twin if callable(twin) else task_function


def warm_up(launcher):
    """Ray's launcher connects to its cluster inside its first launch(): n_jobs slots launching at once would all
    call ray.init, and all but one fail. An empty launch connects once, before they start. Launchers that refuse
    an empty launch (submitit asserts a job) connect per job and need none."""
    with contextlib.suppress(AssertionError):
        launcher.launch([], initial_job_idx=0)
