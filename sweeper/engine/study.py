"""The Optuna study behind a sweep: its storage, its sampler and pruner, and what it remembers about itself.

A study stores its identity (search space and fixed overrides, `space.identity`) the first time a sweep runs
on it; a later sweep whose identity differs stops before any trial instead of mixing two experiments under one
name. Raising n_trials is not a change of identity.
"""
import hashlib
import os
import time
import warnings

import optuna
import sqlalchemy.exc
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from sweeper.engine import space as sp
from sweeper.engine.ledger import requeue_stale

IDENTITY = "mnist_sweeper:identity"   # the study's user_attr holding space.identity(...)


class StudyError(ValueError):
    """The stored study is another experiment than the one asked for; the message says how to go on."""


def enqueue(study, params_list, retry):
    """Queue each param dict to run first (Optuna's enqueue_trial), unless the study has a trial with those params
    already: a resumed study, or another sweep on it, does not run them twice."""
    with warnings.catch_warnings():   # Optuna warns once per point it skips
        warnings.simplefilter("ignore", UserWarning)
        for params in params_list:
            retry(lambda: study.enqueue_trial(params, user_attrs={"enqueued": True}, skip_if_exists=True))


def open_storage(storage, heartbeat_interval=None, grace_period=None):
    """None (in memory), an SQLAlchemy URL, or a journal file path -> what optuna.create_study takes.

    With `heartbeat_interval` (seconds), an RDB storage records the heartbeats of the sweep's running trials, and
    `optuna.storages.fail_stale_trials` re-queues those silent for longer than `grace_period` (default: twice the
    interval), whichever host ran them. A journal has no heartbeats.
    """
    if storage is None:
        return None
    if "://" in storage:
        if heartbeat_interval is None:
            return optuna.storages.RDBStorage(storage)
        with warnings.catch_warnings():   # heartbeats are "experimental" in Optuna since 2.9; what we use is stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                              heartbeat_stale_trial_callback=requeue_stale)
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


# what another sweep opening the same storage at this moment, or a database that is restarting, can raise: it may
# go through on a later try. Anything else (a grid sampler given interval(), a bad URL) is told at once.
RETRIED = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
           optuna.exceptions.DuplicatedStudyError)
RETRY_DELAYS = (0.5, 1.5, 2.5, 3.5)   # seconds before each try after the first


def make_study(name, storage_url, directions, sampler_cfg, pruner_cfg, space, heartbeat=(None, None), names=None):
    """heartbeat: (interval, grace period) in seconds, for an RDB storage. names: the objectives' names, stored
    with the study (optuna-dashboard shows them). Raises StudyError or space.SpaceError."""
    _check_folder(storage_url)
    storage = _retried(storage_url, lambda: open_storage(storage_url, *heartbeat))
    sampler_cfg = OmegaConf.to_container(sampler_cfg) if OmegaConf.is_config(sampler_cfg) else dict(sampler_cfg)
    kwargs = {}
    grid = get_method(sampler_cfg["_target_"]) is optuna.samplers.GridSampler
    if grid:
        kwargs["search_space"] = sp.grid(space)   # SpaceError naming a param that has no grid
    sampler = _build("sampler", sampler_cfg, **kwargs)
    # a grid's seed orders its points once, and it gives trial n the n-th of them: it needs no reseeding
    if sampler_cfg.get("seed") is not None and not grid:
        sampler = TrialSeeded(lambda seed: _build("sampler", {**sampler_cfg, "seed": seed}, **kwargs),
                              sampler_cfg["seed"], sampler)
    pruner = _build("pruner", pruner_cfg)
    study = _retried(storage_url, lambda: optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                                              study_name=name, directions=directions,
                                                              load_if_exists=True))
    if names and study.metric_names != list(names):
        with warnings.catch_warnings():   # "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            _retried(storage_url, lambda: study.set_metric_names(list(names)))
    return study


class TrialSeeded(optuna.samplers.BaseSampler):
    """A seeded sampler, rebuilt before each trial it proposes for with a seed drawn from (seed, trial number).

    One sweep thus proposes the same params in the same order on every run, and a resumed study goes on from its
    trial count instead of replaying its first proposals; sweeps that share a study, though started together with
    the same seed, never sample with the same seed, since no two of them get the same trial number. (Seed + trial
    number would have given the sweeps seeded 0 and 1 the same proposals, one trial apart.)"""

    def __init__(self, build, seed, first):
        self.build, self.seed, self.inner = build, seed, first

    def before_trial(self, study, trial):
        self.inner = self.build(trial_seed(self.seed, trial.number))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()


def trial_seed(seed, number):
    """A 32-bit seed of its own for each (sweep seed, trial number)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{number}".encode(), digest_size=4).digest(), "big")


def _build(key, cfg, **kwargs):
    try:
        return instantiate(cfg, **kwargs)
    except Exception as e:
        cause = e.__cause__ or e   # Hydra's InstantiationException wraps what the class said
        raise StudyError(f"hydra.sweeper.{key} cannot be built: {_first_line(cause)}") from None


def _retried(storage_url, call):
    for delay in (*RETRY_DELAYS, None):
        try:
            return call()
        except Exception as e:
            if not isinstance(e, RETRIED) or delay is None:
                raise StudyError(f"hydra.sweeper.storage={storage_url!r} cannot be opened: {_first_line(e)}") from None
            time.sleep(delay)


def _check_folder(storage_url):
    """An SQLite file or journal in a folder that does not exist: no retry can cure it."""
    if storage_url is None or "://" in storage_url and not storage_url.startswith("sqlite:///"):
        return
    path = storage_url[len("sqlite:///"):] if storage_url.startswith("sqlite:///") else storage_url
    folder = os.path.dirname(os.path.abspath(path))
    if path and ":memory:" not in path and not os.path.isdir(folder):
        raise StudyError(f"hydra.sweeper.storage={storage_url!r} cannot be opened: the folder {folder} does not "
                         f"exist; create it, or give a path in an existing folder")


def _first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_identity(study, identity, accept_changes):
    """Store the identity of a new study; refuse (StudyError) a stored study whose identity differs."""
    stored = study.user_attrs.get(IDENTITY)
    if stored is not None and stored != identity:
        diff = sp.differences(stored, identity)
        if not accept_changes:
            raise StudyError(
                f"study {study.study_name!r} was run with other settings ({'; '.join(diff)}); use another "
                f"hydra.sweeper.study_name, or add hydra.sweeper.accept_changes=true to continue it with these")
    if stored != identity:
        study.set_user_attr(IDENTITY, identity)


def absolute_url(url):
    """sqlite:///rel.db and journal paths relative to where the sweep started, as absolute ones."""
    if url is None:
        return None
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        return "sqlite:///" + os.path.abspath(url[len("sqlite:///"):])
    if "://" not in url:
        return os.path.abspath(url)
    return url
