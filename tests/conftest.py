import os
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# tests never download: they read the verified copy (CI sets MNIST_ROOT=../shared/data)
GIVEN_ROOT = os.environ.get("MNIST_ROOT")
os.environ["MNIST_ROOT"] = str(Path(GIVEN_ROOT or "data").resolve())   # data.root's default without it
pytest_plugins = ["servers"]   # the postgres, pg_url and ray_cluster fixtures
TINY = ["data.train_subset=2000", "data.test_subset=500", "trainer.epochs=1"]


def pytest_configure(config):
    """One clear message before any test runs, instead of a download attempt failing test by test."""
    from sweeper.mnist.data import DataError, check_files
    try:
        check_files(os.environ["MNIST_ROOT"])
    except DataError as e:
        found = str(e).split(";")[0].split(": ", 1)[1]   # "MNIST not found, expected FILES in DIR" or what is damaged
        where = f"MNIST_ROOT={GIVEN_ROOT}" if GIVEN_ROOT else "MNIST_ROOT is not set, so the tests looked in data/"
        raise pytest.UsageError(f"{where}: {found}. The tests never download: set MNIST_ROOT to the folder that "
                                f"holds MNIST/raw/*-ubyte (torchvision's layout), e.g. export MNIST_ROOT=/data/mnist "
                                f"(CI: MNIST_ROOT=../shared/data)")


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make_cfg(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def cli(*args, cwd=ROOT, timeout=300):
    """Run `python -m sweeper.train ARGS` as a user types it."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "sweeper.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


@pytest.fixture
def tiny():
    return lambda *o: make_cfg(*TINY, *o)


SEARCH = """\
# @package _global_
defaults:
  - override /hydra/sweeper: mnist_optuna
  - override /hydra/sweeper/sampler: {sampler}
  - override /hydra/sweeper/pruner: {pruner}
data:
  train_subset: {train_subset}
  test_subset: 500
trainer:
  epochs: {epochs}
hydra:
  sweep:
    dir: {dir}
  sweeper:
    policy: sweeper.mnist.policy.MnistPolicy
    direction: maximize
    study_name: tiny
    storage: {storage}
    n_trials: {n_trials}
    n_jobs: {n_jobs}
    sampler:
      seed: {seed}
    params:
{params}
{extra}"""


def search_cmd(tmp_path, params, *args, sampler="random", pruner="none", epochs=1, n_trials=3, n_jobs=1, seed=0,
               storage=True, train_subset=1000, extra=""):
    """Write hparams_search/tiny.yaml into a config dir of the test's own (`extra`: more YAML at its top level);
    return the command a user would type."""
    (tmp_path / "conf" / "hparams_search").mkdir(parents=True, exist_ok=True)
    lines = textwrap.indent("\n".join(f"{k}: {v}" for k, v in params.items()), " " * 6)
    db = f"sqlite:///{tmp_path}/study.db" if storage else "null"
    (tmp_path / "conf" / "hparams_search" / "tiny.yaml").write_text(SEARCH.format(
        sampler=sampler, pruner=pruner, epochs=epochs, dir=tmp_path / "sweep", storage=db, n_trials=n_trials,
        n_jobs=n_jobs, seed=seed, params=lines, train_subset=train_subset, extra=textwrap.dedent(extra)))
    return [sys.executable, "-m", "sweeper.train", "--multirun", "--config-dir", str(tmp_path / "conf"),
            "hparams_search=tiny", *args]


def study(tmp_path):
    import optuna
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/study.db")


def counted(s):
    """The trials that use up n_trials: the sweeper marks interrupted, surplus and duplicate asks `uncounted`, and a
    trial failed for a stale heartbeat is named by its re-run's `requeued_from`."""
    replaced = {t.user_attrs.get("requeued_from") for t in s.trials}
    return [t for t in s.trials if not t.user_attrs.get("uncounted") and t.number not in replaced]


def sweeper_settings(**changes):
    """The keyword arguments `hydra/sweeper: mnist_optuna` gives sweeper.engine.sweep.OptunaSweep at its defaults."""
    from hydra_plugins.mnist_optuna_sweeper.config import OptunaSweeperConf
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(OmegaConf.structured(OptunaSweeperConf))
    for key in ("_target_", "_recursive_", "defaults"):
        cfg.pop(key)
    return {**cfg, "sampler": {}, "pruner": {}, **changes}
