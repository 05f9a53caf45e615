"""The Optuna study behind a sweep: its storage, its sampler and pruner, and what it remembers about itself.

A study stores its identity (search space and fixed overrides, `space.identity`) the first time a sweep runs
on it; a later sweep whose identity differs stops before any trial instead of mixing two experiments under one
name. Raising n_trials is not a change of identity.
"""
import os
import time
import warnings

import optuna
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from sweeper import space as sp
from sweeper.ledger import requeue_stale

IDENTITY = "mnist_sweeper:identity"   # the study's user_attr holding space.identity(...)


class StudyError(ValueError):
    """The stored study is another experiment than the one asked for; the message says how to go on."""


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


def make_study(name, storage_url, directions, sampler_cfg, pruner_cfg, space, heartbeat=(None, None)):
    """heartbeat: (interval, grace period) in seconds, for an RDB storage."""
    for attempt in range(5):
        try:
            return _make_study(name, storage_url, directions, sampler_cfg, pruner_cfg, space, heartbeat)
        except StudyError:
            raise
        except Exception as e:  # another sweep creating the same storage tables or study at this moment
            if attempt == 4:
                raise StudyError(f"hydra.sweeper.storage={storage_url!r} cannot be opened: "
                                 f"{str(e).strip().splitlines()[0]}") from None
            time.sleep(0.5 + attempt)


def _make_study(name, storage_url, directions, sampler_cfg, pruner_cfg, space, heartbeat):
    storage = open_storage(storage_url, *heartbeat)
    seen = 0
    if storage is not None and name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        seen = len(optuna.load_study(study_name=name, storage=storage).trials)
    kwargs = {}
    if get_method(sampler_cfg["_target_"]) is optuna.samplers.GridSampler:
        kwargs["search_space"] = sp.grid(space)
    sampler_cfg = OmegaConf.to_container(sampler_cfg) if OmegaConf.is_config(sampler_cfg) else dict(sampler_cfg)
    if sampler_cfg.get("seed") is not None:
        # a resumed study would otherwise replay the first run's random proposals
        sampler_cfg["seed"] += seen
    return optuna.create_study(storage=storage, sampler=instantiate(sampler_cfg, **kwargs),
                               pruner=instantiate(pruner_cfg), study_name=name, directions=directions,
                               load_if_exists=True)


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
