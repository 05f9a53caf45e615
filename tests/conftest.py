import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# tests never download: they read the verified copy (CI sets MNIST_ROOT=../shared/data)
os.environ["MNIST_ROOT"] = str(Path(os.environ.get("MNIST_ROOT", "data")).resolve())
TINY = ["data.train_subset=2000", "data.test_subset=500", "trainer.epochs=1"]


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
