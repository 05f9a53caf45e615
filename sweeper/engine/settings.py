"""The sweep's settings (`hydra.sweeper.*`, as hydra_plugins/mnist_optuna_sweeper/config.py declares them),
checked once when the sweeper is built: a bad value is one line naming the key, the value and what is allowed."""
import math
from dataclasses import dataclass, fields
from typing import Any, Optional

from omegaconf import ListConfig, OmegaConf


@dataclass
class Settings:
    sampler: Any
    pruner: Any
    direction: Any
    study_name: Optional[str]
    storage: Optional[str]
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    params: Any
    custom_search_space: Optional[str]
    policy: Optional[str]
    objectives: Any
    stop_after_hits: Optional[int]
    require_target: bool
    accept_changes: bool
    prune_guard: Optional[float]
    confirm_seeds: int
    heartbeat_interval: Optional[int]
    grace_period: Optional[int]
    cuda_mps: Any
    trial_timeout: Optional[float] = None
    storage_timeout: float = 600
    gpus: Any = "auto"
    enqueue: Any = ()

    def __post_init__(self):
        d = self.direction
        self.directions = list(d) if isinstance(d, (list, tuple, ListConfig)) else [d]
        for d in self.directions:
            check(d in ("minimize", "maximize"), "direction", d, "minimize or maximize, or a list of them")
        check(isinstance(self.n_trials, int) and self.n_trials > 0, "n_trials", self.n_trials, "an integer > 0")
        check(isinstance(self.n_jobs, int) and self.n_jobs > 0, "n_jobs", self.n_jobs, "an integer > 0")
        check(0 <= self.max_failure_rate <= 1, "max_failure_rate", self.max_failure_rate, "a fraction in [0, 1]")
        check(self.prune_guard is None or isinstance(self.prune_guard, (int, float))
              and math.isfinite(self.prune_guard), "prune_guard", self.prune_guard, "a number or null")
        for key in ("heartbeat_interval", "grace_period"):
            value = getattr(self, key)
            check(value is None or isinstance(value, int) and value > 0, key, value,
                  "a whole number of seconds > 0, or null")
        check(self.cuda_mps == "auto" or isinstance(self.cuda_mps, bool), "cuda_mps", self.cuda_mps,
              "auto, true or false")
        g = self.gpus
        check(g is None or g == "auto" or isinstance(g, (list, tuple, ListConfig)) and len(g) > 0
              and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in g), "gpus", g,
              "auto, null, or a list of GPU ids such as [0, 2]")
        t = self.trial_timeout
        check(t is None or isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0, "trial_timeout", t,
              "seconds > 0, or null")
        t = self.storage_timeout
        check(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0, "storage_timeout", t, "seconds > 0")
        e = OmegaConf.to_container(self.enqueue) if OmegaConf.is_config(self.enqueue) else self.enqueue
        check(isinstance(e, (list, tuple)) and all(isinstance(p, dict) for p in e), "enqueue", e,
              "a list of param dicts, such as [{model: slim, optimizer.lr: 0.01}]")
        self.enqueue = [dict(p) for p in e]

    def policy_settings(self):
        """The policy's own keys (sweeper/engine/policy.py): it reads them."""
        return dict(objectives=list(self.objectives) if self.objectives else None,
                    stop_after_hits=self.stop_after_hits, require_target=self.require_target,
                    confirm_seeds=self.confirm_seeds)


def keys():
    return [f.name for f in fields(Settings)]


def check(ok, key, value, allowed):
    if not ok:
        raise ValueError(f"hydra.sweeper.{key}={value!r} is not allowed: {allowed}")
