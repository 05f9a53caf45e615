"""Faults injected for real: kill -9, Ctrl-C, torn writes, bad data, unwritable outputs, concurrent sweeps, fuzzed values."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import optuna
import pytest
from omegaconf import open_dict

from conftest import ROOT, TINY, cli, counted, make_cfg, search_cmd, study
from sweeper.checks import ConfigError, check_config
from sweeper.data import FILES

PARAMS = {"model.width": "range(4, 13)", "model.dropout": "interval(0.0, 0.1)"}


def wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return
        except Exception:  # the study may not exist yet
            pass
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def states(tmp_path):
    return [t.state for t in study(tmp_path).trials]


def finished_snapshot(tmp_path):
    return {t.number: (t.params, t.value, (tmp_path / "sweep" / str(t.number) / "metrics.json").read_text())
            for t in study(tmp_path).trials if t.state == optuna.trial.TrialState.COMPLETE}


def check_complete_study(tmp_path, n_trials):
    trials = counted(study(tmp_path))
    assert len(trials) == n_trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials          # no params twice
    for t in trials:
        assert json.loads((tmp_path / "sweep" / str(t.number) / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_kill_9_then_rerun_keeps_finished_trials(tmp_path):
    cmd = search_cmd(tmp_path, PARAMS, n_trials=4, epochs=3, train_subset=500)
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    S = optuna.trial.TrialState
    wait_for(lambda: S.COMPLETE in states(tmp_path) and states(tmp_path)[-1] == S.RUNNING)
    before = finished_snapshot(tmp_path)
    p.kill()
    p.wait()
    running = [t for t in study(tmp_path).trials if t.state == S.RUNNING]
    assert len(running) == 1
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "left RUNNING by a dead sweep" in r.stderr + r.stdout
    s = study(tmp_path)
    killed = s.trials[running[0].number]
    assert killed.state == S.FAIL and "died" in killed.user_attrs["reason"] and killed.user_attrs["uncounted"]
    assert any(t.params == killed.params and t.state == S.COMPLETE for t in s.trials)      # retried
    for number, (params, value, text) in before.items():                                     # intact
        assert s.trials[number].params == params and s.trials[number].value == value
        assert (tmp_path / "sweep" / str(number) / "metrics.json").read_text() == text
    check_complete_study(tmp_path, 4)


@pytest.mark.slow
def test_ctrl_c_stops_promptly_and_says_how_to_resume(tmp_path):
    cmd = search_cmd(tmp_path, PARAMS, n_trials=4, epochs=3, n_jobs=2, train_subset=500)
    # a terminal's Ctrl-C reaches the whole process group: the sweep and its worker processes
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    S = optuna.trial.TrialState
    wait_for(lambda: S.RUNNING in states(tmp_path) and
             any((tmp_path / "sweep" / str(n) / "train.log").exists() for n in range(4)))
    os.killpg(p.pid, signal.SIGINT)
    t0 = time.time()
    out, _ = p.communicate(timeout=60)
    assert time.time() - t0 < 20 and p.returncode == 130, out[-2000:]
    assert "run the same command again to continue" in out and "Traceback" not in out, out[-3000:]
    s = study(tmp_path)
    assert S.RUNNING not in [t.state for t in s.trials]                                      # consistent
    interrupted = [t for t in s.trials if t.user_attrs.get("reason") == "interrupted by Ctrl-C"]
    assert interrupted and all(t.state == S.FAIL and t.user_attrs["uncounted"] for t in interrupted)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    check_complete_study(tmp_path, 4)


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs,sig", [(1, signal.SIGKILL), (1, signal.SIGINT), (2, signal.SIGKILL),
                                        (2, signal.SIGINT)], ids=["1-kill9", "1-ctrl-c", "2-kill9", "2-ctrl-c"])
def test_resume_runs_what_was_requeued_when_the_last_trials_were_interrupted(tmp_path, n_jobs, sig):
    # the interrupted trials are the study's last: a resume that counted their re-queued copies (WAITING) as
    # done would print "n of n trials done", run nothing and leave the study short
    n_trials = 2
    cmd = search_cmd(tmp_path, PARAMS, n_trials=n_trials, epochs=5, n_jobs=n_jobs, train_subset=1000)
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    S = optuna.trial.TrialState

    def last_ones_training():
        trials = study(tmp_path).trials
        running = [t for t in trials if t.state == S.RUNNING]
        return (sum(t.state == S.COMPLETE for t in trials) == n_trials - n_jobs and len(running) == n_jobs
                and all((tmp_path / "sweep" / str(t.number) / "train.log").exists() for t in running))
    wait_for(last_ones_training)
    interrupted = {t.number: t.params for t in study(tmp_path).trials if t.state == S.RUNNING}
    os.killpg(p.pid, sig)   # a terminal's Ctrl-C reaches the whole group; kill -9 of the group kills workers too
    p.wait(timeout=60)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{n_trials - n_jobs} of {n_trials} trials done" in r.stdout + r.stderr
    s = study(tmp_path)
    assert not [t for t in s.trials if t.state in (S.WAITING, S.RUNNING)]
    for number, params in interrupted.items():
        assert s.trials[number].state == S.FAIL and s.trials[number].user_attrs["uncounted"]
        rerun = [t for t in s.trials if t.user_attrs.get("requeued_from") == number]
        assert len(rerun) == 1 and rerun[0].params == params and rerun[0].state == S.COMPLETE
    check_complete_study(tmp_path, n_trials)


@pytest.mark.slow
def test_two_sweeps_on_one_study_share_n_trials(tmp_path):
    cmd = search_cmd(tmp_path, PARAMS, n_trials=5, train_subset=500)
    procs = [subprocess.Popen(cmd + extra, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for extra in ([], ["hydra.sweeper.n_jobs=2"])]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    check_complete_study(tmp_path, 5)
    trials = counted(study(tmp_path))
    assert sorted(t.number for t in trials) == sorted({t.number for t in trials})             # own dir each


def test_metrics_json_is_never_half_written(tmp_path):
    # a writer rewriting a large metrics.json as fast as it can, killed at a random moment, many times
    path = tmp_path / "metrics.json"
    writer = ("import sys; from sweeper.metrics import write_json\n"
              "i = 0\n"
              "while True:\n"
              "    i += 1; write_json(sys.argv[1], {'i': i, 'epochs': [{'test_acc': 0.5}] * 20000})\n")
    rng = random.Random(0)
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", writer, str(path)], cwd=ROOT)
        wait_for(lambda: path.exists(), timeout=60)
        time.sleep(rng.random())
        p.kill()
        p.wait()
        m = json.loads(path.read_text())                  # old or new, always whole
        assert len(m["epochs"]) == 20000


def corrupt_copy(tmp_path, name, how):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    src = os.path.join(os.environ["MNIST_ROOT"], "MNIST", "raw")
    for f in FILES:
        if f != name:
            os.symlink(os.path.join(src, f), raw / f)
    data = open(os.path.join(src, name), "rb").read()
    (raw / name).write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x00\x00\x08\x99" + data[4:])
    return tmp_path


@pytest.mark.parametrize("name,how", [("train-images-idx3-ubyte", "truncated"),
                                      ("t10k-labels-idx1-ubyte", "bad magic")])
def test_damaged_data_is_named_and_nothing_trains(tmp_path, name, how):
    root = corrupt_copy(tmp_path / "data", name, how)
    r = cli(*TINY, f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert name in err and "corrupted" in err and "expected magic" in err and "download" in err
    assert "epoch" not in r.stdout and not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_unwritable_output_dir_is_one_line(tmp_path, mode):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    r = cli(*(["--multirun"] if mode == "multirun" else []), *TINY, f"{key}={blocker}/out")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and key in err and "cannot be written" in err, err


def test_non_finite_loss_through_the_cli_is_one_line(tmp_path):
    r = cli(*TINY, "optimizer.lr=1e20", "scheduler=none", f"hydra.run.dir={tmp_path}")
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "non-finite loss at epoch 1, step" in err, err
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


NUMERIC = ["model.width", "model.dropout", "trainer.epochs", "trainer.batch_size", "trainer.threads", "seed",
           "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "augment.pre_rotate", "augment.degrees",
           "augment.translate", "augment.shear", "data.train_subset", "data.test_subset", "budget.max_params",
           "budget.max_epochs", "budget.target_acc", "scheduler.pct_start", "scheduler.div_factor",
           "scheduler.final_div_factor", "scheduler.step_size", "scheduler.gamma", "scheduler.eta_min"]


def fuzz_values(rng, n):
    special = [0, -1, 1, 0.0, -0.0, 1e308, -1e308, 2 ** 63, -(2 ** 63), math.nan, math.inf, -math.inf, True, False,
               None, "nan", "inf", "abc", "", "1e400", "-5", [1, 2], [0.5], {"a": 1}]
    rand = [rng.choice([lambda: rng.randint(-10 ** 12, 10 ** 12), lambda: rng.uniform(-1e6, 1e6),
                        lambda: rng.uniform(-2, 2), lambda: rng.randint(-3, 30), lambda: 10 ** rng.uniform(-12, 12)])()
            for _ in range(n - len(special))]
    return special + rand


@pytest.mark.parametrize("key", NUMERIC)
def test_fuzzed_values_validate_or_give_the_one_line_error(key):
    rng = random.Random(key)
    sched = {"scheduler": "step"} if key in ("scheduler.step_size", "scheduler.gamma") else \
        {"scheduler": "cosine"} if key == "scheduler.eta_min" else {}
    cfg = make_cfg(*[f"{k}={v}" for k, v in sched.items()])
    group, _, leaf = key.rpartition(".")
    node = cfg[group] if group else cfg
    accepted = 0
    for value in fuzz_values(rng, 300):
        with open_dict(node):
            node[leaf] = value
        try:
            check_config(cfg)
            accepted += 1
        except ConfigError as e:
            msg = str(e)
            # a smaller budget.max_epochs can make the default trainer.epochs the value that is out of range
            named = msg.split("=")[0]
            assert named in (key, "trainer.epochs" if key == "budget.max_epochs" else key), msg
            assert "\n" not in msg and "not allowed" in msg, msg
    assert 0 < accepted < 300           # the fuzz reaches both outcomes


@pytest.mark.parametrize("override", ["optimizer.lr=nan", "model.width=abc", "trainer.epochs=1e400",
                                      "data.train_subset=-5"])
def test_fuzzed_values_through_the_cli_never_show_a_traceback(tmp_path, override):
    r = cli(*TINY, override, f"hydra.run.dir={tmp_path}")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {override.split('=')[0]}="), err
