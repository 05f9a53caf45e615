"""Sweeps started together on one PostgreSQL study with one seed do not propose in lockstep (issue 20, item 4).

Each sweep's sampler used to be seeded with `seed + trials seen` when it opened the study: sweeps started
together saw the same count, sampled with the same seed, and the ledger closed most of their asks as duplicates.
benchmarks/shared_study.py measures it over repeats; this test checks one run.

    python -m pytest -q tests/test_shared_study.py
"""
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from conftest import counted
from test_cluster import env, sweep_cmd
from test_plain_apps import APPS

pytestmark = pytest.mark.slow

DUPLICATE = "duplicate of another trial's params"


def test_four_sweeps_started_together_with_one_seed_rarely_ask_the_same_params(tmp_path, pg_url):
    # the app's TPE with sampler.seed 123, on two floats: two proposals alike are the sampler's doing, never chance.
    # heartbeat_interval=1: a sweep done asking polls each second, not every 5 s, for the others' last trials
    args = ["hydra.sweeper.n_trials=12", "hydra.sweeper.sampler.seed=123", "x=interval(-5.0,5.0)",
            "y=interval(-5.0,5.0)", "hydra.sweeper.heartbeat_interval=1"]
    procs = [subprocess.Popen(sweep_cmd(tmp_path, pg_url, *args, name=f"sweep{i}"), cwd=APPS, env=env(0),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(log[-2000:] for log in logs)
    s = optuna.load_study(study_name="sphere", storage=pg_url)
    duplicates = [t.number for t in s.trials if t.user_attrs.get("reason") == DUPLICATE]
    assert len(duplicates) < 0.1 * len(s.trials), f"{len(duplicates)} of {len(s.trials)} asks were duplicates"
    trials = counted(s)
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    assert not s.get_trials(states=(TrialState.RUNNING,))
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12    # no parameter set ran twice
    assert len({t.user_attrs["worker"] for t in trials}) >= 2               # the sweeps really shared it
