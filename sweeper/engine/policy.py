"""How a sweep judges its trials: the one interface between the engine and an app's own rules.

`hydra.sweeper.policy` names a class (module.Class); null is `TaskValue`: a trial's value is what its task
returned. An app with rules of its own (the MNIST trial's are sweeper/mnist/policy.py: budgets, confirmation
seeds, hits) subclasses TaskValue and overrides what it needs. For every trial the engine calls, in this order:

    before(number, overrides, job_dir)   a Verdict to record without running the trial, or None to run it
    judge(result, run_dir)               how one run ended: a Verdict from the job's JobResult and its files
    again(number, first, overrides, job_dir)
                                         after the trial's own run (`first`, its Verdict): [(overrides, run dir)]
                                         of more runs of the same trial. They run at once, in the sweep's free
                                         slots, ahead of new trials (sweeper/engine/slots.py).
    decides(number, run)                 after each of those: True when this run's Verdict settles the trial
                                         alone; the trial's other runs are then cancelled
    combine(runs)                        the trial's Verdict over all its runs that ended (its own first)

and, after each trial is told, `stop(finished)`: a reason to stop the sweep now, or None. No more trials are
asked, and the trials still running are stopped and re-queued (a resumed study runs them). `names` are the
objectives' names (trials.csv's columns, the study's metric names), `columns` the user attrs trials.csv shows
after the values, and `hits(finished)` the finished trials
the policy calls hits (None: it has no such notion). The engine calls a policy from several threads, one
trial per thread: keep per-trial state in the Verdicts, not on the policy.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.utils import get_class
from omegaconf import ListConfig



@dataclass
class Verdict:
    """How a run or a trial ended, as the engine tells Optuna.

    status: ok, pruned, failed, or a word of the policy's own (values are told for any status but pruned and
    failed). attrs: the trial's user attrs (shown by trials.csv and compare). constraints: Optuna constraints,
    feasible when <= 0. record: whatever the policy read for this run (the MNIST trial's metrics.json)."""
    status: str
    values: Optional[list] = None
    reason: Optional[str] = None
    attrs: dict = field(default_factory=dict)
    constraints: dict = field(default_factory=dict)
    record: Any = None
    shown: Any = None   # what the trial's log line shows as its result (default: its values)


@dataclass
class SweepInfo:
    """What a policy may know of its sweep: `settings` (the policy's own hydra.sweeper keys), the number of
    directions, the sweep's config, and `compose(overrides)`, the config a job with those overrides gets."""
    settings: dict
    n_values: int
    config: Any
    compose: Any


class TaskValue:
    """The task returns a float, or one float per direction; nothing else is read."""
    columns = ()

    def __init__(self, sweep):
        self.n_values = sweep.n_values
        s = sweep.settings
        for key in ("stop_after_hits", "require_target", "confirm_seeds"):
            if s.get(key):
                raise ValueError(f"hydra.sweeper.{key}={s[key]!r} is not allowed with hydra.sweeper.policy=null (the "
                                 f"task's return value): it needs trials that write metrics.json and "
                                 f"hydra.sweeper.policy=sweeper.mnist.policy.MnistPolicy")
        self.names = value_names(s.get("objectives"), self.n_values)

    def before(self, number, overrides, job_dir):
        return None

    def judge(self, result, run_dir):
        if result.status != "completed":
            return Verdict(result.status, reason=result.error)
        values, problem = as_values(result.value, self.n_values)
        if problem:
            return Verdict("failed", reason=problem)
        return Verdict("ok", values)

    def again(self, number, first, overrides, job_dir):
        return []

    def decides(self, number, run):
        return False

    def combine(self, runs):
        return runs[0]

    def stop(self, finished):
        return None

    def hits(self, finished):
        return None


def value_names(objectives, n):
    """One name per objective: hydra.sweeper.objectives, else Optuna's own `value` / `values_i`."""
    if objectives:
        if len(objectives) != n:
            raise ValueError(f"hydra.sweeper.objectives={list(objectives)} is not allowed: one name per direction "
                             f"({n})")
        return list(objectives)
    return ["value"] if n == 1 else [f"values_{i}" for i in range(n)]


def as_values(value, n):
    """The task's return value -> (one float per direction, None), or (None, what is wrong with it)."""
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    want = "a float" if n == 1 else f"a list of {n} floats, one per direction"
    try:
        floats = [float(v) for v in items]
    except (TypeError, ValueError):
        return None, f"the task returned {value!r}; a sweep needs {want}"
    if len(floats) != n:
        return None, f"the task returned {len(floats)} values ({value!r}); a sweep needs {want}"
    if not all(math.isfinite(v) for v in floats):
        return None, f"the task returned {value!r}, which is not finite"
    return floats, None


def load(path, sweep):
    """hydra.sweeper.policy (module.Class, or null) -> the policy for this sweep. ValueError: one line."""
    if path is None:
        return TaskValue(sweep)
    try:
        cls = get_class(path)
    except Exception as e:   # Hydra wraps ImportError and AttributeError alike
        raise ValueError(f"hydra.sweeper.policy={path!r} cannot be loaded ({str(e).splitlines()[0]}); give "
                         f"module.Class, importable from here, or null") from None
    if not (isinstance(cls, type) and issubclass(cls, TaskValue)):
        raise ValueError(f"hydra.sweeper.policy={path!r} is not allowed: a subclass of "
                         f"{TaskValue.__module__}.TaskValue")
    return cls(sweep)

