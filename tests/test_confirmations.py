"""A hit's confirmation runs in the sweep's free slots (sweeper/engine/slots.py), on the torch-free plain app under
the MNIST policy: the app writes metrics.json with final_test_acc = `acc` (or `acc_on_seed`), so the config decides
which seed hits, and PLAINAPP_SLOW makes chosen jobs slow."""
import json
import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState as S

from conftest import counted
from test_cluster import most_at_once, sweep_cmd
from test_plain_apps import APPS

pytestmark = pytest.mark.slow
MNIST_POLICY = ["hydra.sweeper.policy=sweeper.mnist.policy.MnistPolicy", "hydra.sweeper.direction=maximize",
                "hydra.sweeper.objectives=[final_test_acc]", "metrics=true", "acc=0.995"]


def sweep(tmp_path, *args, slow="", sleep=0.0):
    cmd = sweep_cmd(tmp_path, f"sqlite:///{tmp_path}/study.db", *MNIST_POLICY, *args)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=APPS, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HYDRA_FULL_ERROR": "0", "PLAINAPP_SLEEP": str(sleep), "PLAINAPP_SLOW": slow})
    r.out = r.stdout + r.stderr   # Hydra's log lines go to stdout
    return r, time.time() - t0


def study(tmp_path):
    return optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/study.db")


def span(tmp_path, name):
    ran = json.loads((tmp_path / f"ran-{name}.json").read_text())
    return ran["start"], ran["end"]


def test_a_hits_confirmation_seeds_run_at_once_in_free_slots(tmp_path):
    r, _ = sweep(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=2", "hydra.sweeper.confirm_seeds=2",
                 sleep=2)
    assert r.returncode == 0, r.out[-3000:]
    [t] = study(tmp_path).trials
    assert t.user_attrs["hit"] and t.user_attrs["seeds"] == 3 and t.value == pytest.approx(0.995)
    seeds = [span(tmp_path, f"0-seed{s}") for s in (1, 2)]
    assert most_at_once(seeds) == 2                              # seeds 1 and 2 at once, in the two slots
    assert span(tmp_path, "0")[1] <= min(start for start, _ in seeds)   # after the trial's own run
    assert "trial 0: hit (0.9950) on seed 0; confirming on seeds 1, 2" in r.out


def test_the_first_miss_cancels_the_other_confirmation_runs(tmp_path):
    # seed 1 misses at once; seed 2 would sleep 60 s: it is stopped, and the trial is no hit
    r, took = sweep(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=2", "hydra.sweeper.confirm_seeds=2",
                    "++acc_on_seed.s1=0.5", slow="s2")
    assert r.returncode == 0 and took < 40, r.out[-3000:]
    [t] = study(tmp_path).trials
    assert not t.user_attrs["hit"] and t.user_attrs["seeds"] == 2 and t.user_attrs["min_final_test_acc"] == 0.5
    cancelled = json.loads((tmp_path / "sweep" / "0" / "seed2" / "job_return.json").read_text())
    assert cancelled["status"] == "interrupted" and cancelled["error"].startswith("cancelled")
    assert not (tmp_path / "ran-0-seed2.json").exists()         # it never got to its end
    assert "trial 0: seed 1: 0.5 -> miss, not confirmed" in r.out
    # compare counts the seeds that ended, as the study does
    out = subprocess.run([sys.executable, "-m", "sweeper.compare", str(tmp_path / "sweep")], capture_output=True,
                         text=True, cwd=APPS).stdout
    [row] = [line.split() for line in out.splitlines() if line.split()[:1] == ["0"]]
    assert row[:7] == ["0", "ok", "100", "99.50", "2", "50.00", "74.75"] and "0 hits" in out, out


def test_stop_after_hits_stops_the_trials_still_running_and_a_resumed_study_ends_at_n_trials(tmp_path):
    # grid over x: trial x=1 hits at once, trial x=3 would sleep 60 s; stop_after_hits=1 stops it and re-queues it
    grid = ["hydra/sweeper/sampler=grid", "x=choice(1, 3)", "y=choice(0)", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2"]
    r, took = sweep(tmp_path, *grid, "hydra.sweeper.stop_after_hits=1", slow="x3")
    assert r.returncode == 0 and took < 40, r.out[-3000:]
    trials = study(tmp_path).trials
    [hit] = [t for t in trials if t.state == S.COMPLETE]
    [stopped] = [t for t in trials if t.state == S.FAIL]
    assert hit.params["x"] == 1 and hit.user_attrs["hit"] and stopped.params["x"] == 3
    assert stopped.user_attrs["uncounted"] and stopped.user_attrs["reason"].startswith("interrupted: the sweep stopped")
    assert json.loads((tmp_path / "sweep" / str(stopped.number) / "job_return.json").read_text())["status"] == \
        "interrupted"
    assert f"trial {stopped.number}: interrupted: the sweep stopped" in r.out
    # the same command, the target met and no longer a reason to stop: it runs the stopped params, ends at n_trials
    r, _ = sweep(tmp_path, *grid, "hydra.sweeper.stop_after_hits=null")
    assert r.returncode == 0, r.out[-3000:]
    s = study(tmp_path)
    assert len(counted(s)) == 2 and S.RUNNING not in [t.state for t in s.trials]
    assert any(t.user_attrs.get("requeued_from") == stopped.number and t.state == S.COMPLETE for t in s.trials)
