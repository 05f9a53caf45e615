"""Structured configs of `hydra/sweeper: mnist_optuna` and its `sampler` and `pruner` groups.

The keys are hydra-optuna-sweeper's (sampler, direction, study_name, storage, n_trials, n_jobs, max_failure_rate,
params, custom_search_space), so a search written for it runs after changing only the sweeper line; the rest
are additions. The logic lives in sweeper/engine/sweep.py.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 1
    sigma0: Optional[float] = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10


@dataclass
class GridSamplerConf:
    # the grid is every value of every choice()/range() param; intervals cannot be gridded
    _target_: str = "optuna.samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 4           # finished trials before anything is pruned
    n_warmup_steps: int = 2             # steps (epochs) a trial always runs (OneCycle's early epochs are noisy)
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf:
    # median's rule at another percentile. Optuna keeps the top `percentile` %: at 90, a trial is stopped only when
    # it is worse than 9 in 10 at the same epoch (a diverging lr), since one epoch's accuracy says little of the last
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 90.0
    n_startup_trials: int = 4
    n_warmup_steps: int = 2
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_optuna_sweeper.mnist_optuna_sweeper.MnistOptunaSweeper"
    _recursive_: bool = False            # sampler and pruner are built with the study (re-seeded, gridded)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "minimize"          # hydra-optuna-sweeper's default; a list means several objectives
    study_name: Optional[str] = None
    storage: Optional[str] = None        # "sqlite:///study.db" (any SQLAlchemy URL) or a journal file path
    n_trials: int = 20                   # the study's total: a re-run continues up to it
    n_jobs: int = 1                      # > 1: that many trial processes at once
    max_failure_rate: float = 0.0        # stop (exit 1) once failed trials exceed this fraction of n_trials
    params: Optional[Dict[str, str]] = None
    custom_search_space: Optional[str] = None      # "module.fn": fn(cfg, trial) suggests more params
    # additions
    policy: Optional[str] = None         # module.Class judging each trial (sweeper/engine/policy.py); null: the
                                         # task's return value. The MNIST searches: sweeper.mnist.policy.MnistPolicy
    objectives: Optional[List[str]] = None         # one name per direction (MnistPolicy: metrics.json fields)
    stop_after_hits: Optional[int] = None          # stop once this many trials meet all three budget constraints
    require_target: bool = False         # make final_test_acc >= budget.target_acc a constraint
    accept_changes: bool = False         # resume a stored study although its search space or fixed overrides differ
    prune_guard: Optional[float] = None  # a trial whose latest reported value is at or beyond this is never pruned
    confirm_seeds: int = 0               # a hit runs again on seeds +1 ... +K and counts only if every run hits
    # RDB storages: beat every heartbeat_interval s for each running trial; a trial silent for grace_period s
    # (null: twice the interval) is failed and re-queued by any sweep on the study, on any host. null: no beats
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = None
    # any storage: a call failing with a connection or lock error (a restart, a failover, SQLite's "database is
    # locked") is tried again for up to storage_timeout s; past it the sweep stops (exit 1), finished trials kept
    storage_timeout: float = 600
    cuda_mps: Any = "auto"               # auto | true | false: trial processes share a GPU through CUDA MPS (auto:
                                         # n_jobs > 1 and the trials use CUDA); sweeper/engine/mps.py
    trial_timeout: Optional[float] = None  # seconds: a trial running longer is stopped and failed (it then runs
                                           # in a worker process even at n_jobs=1); null: no limit
    gpus: Any = "auto"                   # worker i gets CUDA_VISIBLE_DEVICES = GPU i mod n: auto (n_jobs > 1 on
                                         # CUDA: the GPUs visible), a list such as [0, 2], or null (left alone)
    enqueue: List[Any] = field(default_factory=list)   # param dicts run first, as Optuna's enqueue_trial: what
                                         # worked before; a study that has run one already does not run it again


SAMPLERS = dict(tpe=TPESamplerConf, random=RandomSamplerConf, cmaes=CmaEsSamplerConf, nsgaii=NSGAIISamplerConf,
                gp=GPSamplerConf, grid=GridSamplerConf)
PRUNERS = dict(median=MedianPrunerConf, percentile=PercentilePrunerConf, hyperband=HyperbandPrunerConf,
               none=NopPrunerConf)


def register_configs():
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="mnist_optuna", node=OptunaSweeperConf, provider="mnist_sweeper")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="mnist_sweeper")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="mnist_sweeper")


def by_name(key, value, options):
    """`hydra.sweeper.pruner=hyperband` (a plain value) means the group option of that name, at its defaults."""
    if not isinstance(value, str):
        return value
    if value not in options:
        raise ValueError(f"hydra.sweeper.{key}={value!r} is not allowed: one of {', '.join(options)}")
    return OmegaConf.structured(options[value])
