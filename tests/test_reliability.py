"""Faults injected for real: kill -9, Ctrl-C, torn writes, bad data, unwritable outputs, concurrent sweeps, fuzzed values.

The sweeps are the plain app's (tests/apps/plainapp): the sweeper's handling of a fault does not depend on the trial,
and a torch-free trial that sleeps a set time makes every fault land where the test means it to."""
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf, open_dict
from optuna.trial import TrialState

from conftest import ROOT, TINY, cli, counted, make_cfg
from test_cluster import env, sweep_cmd
from test_plain_apps import APPS
from sweeper.mnist.checks import ConfigError, check_config
from sweeper.mnist.data import FILES, DataError, check_files
from sweeper.train import CheckOutputDir, check_command

S = TrialState


def plain_cmd(tmp_path, *args, n_trials=4, n_jobs=1):
    """A sweep of the plain app (torch-free) on an SQLite study, as a user types it. x is a float interval, so no
    two proposals are ever the same params by chance. Each trial sleeps as `env(sleep)` says: set in the
    environment, so a resume with other sleeps is the same sweep."""
    return sweep_cmd(tmp_path, f"sqlite:///{tmp_path}/study.db", f"hydra.sweeper.n_trials={n_trials}",
                     f"hydra.sweeper.n_jobs={n_jobs}", "x=interval(-5.0, 5.0)", *args)


def start(cmd, sleep, **kwargs):
    return subprocess.Popen(cmd, cwd=APPS, text=True, env=env(sleep), **kwargs)


def rerun(cmd):
    r = subprocess.run(cmd, cwd=APPS, capture_output=True, text=True, timeout=120, env=env(0))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def sphere(tmp_path):
    return optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/study.db")


def wait_for(predicate, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return
        except Exception:  # the study may not exist yet
            pass
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def started(tmp_path, trials):
    """Each trial's job is running its task: the app saved the config it got."""
    return all((tmp_path / f"seen-{t.number}.yaml").exists() for t in trials)


def finished_snapshot(tmp_path):
    return {t.number: (t.params, t.value, (tmp_path / "sweep" / str(t.number) / ".hydra" / "config.yaml").read_text())
            for t in sphere(tmp_path).trials if t.state == S.COMPLETE}


def check_complete_study(tmp_path, n_trials):
    trials = counted(sphere(tmp_path))
    assert len(trials) == n_trials and all(t.state == S.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials          # no params twice
    for t in trials:   # each in its own dir, told what its own job returned
        job = OmegaConf.load(tmp_path / "sweep" / str(t.number) / ".hydra" / "config.yaml")
        assert job.x == t.params["x"] and t.value == job.x ** 2 + job.y ** 2 + len(job.name)


@pytest.mark.slow
def test_kill_9_then_rerun_keeps_finished_trials(tmp_path):
    # trial 0 runs to the end first; then a sweep whose trials never end on their own is killed in trial 1
    rerun(plain_cmd(tmp_path, n_trials=1))
    cmd = plain_cmd(tmp_path, n_trials=4)
    p = start(cmd, 120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: started(tmp_path, sphere(tmp_path).get_trials(states=(S.RUNNING,))) and
             len(sphere(tmp_path).trials) == 2)
    before = finished_snapshot(tmp_path)
    p.kill()
    p.wait()
    [running] = sphere(tmp_path).get_trials(states=(S.RUNNING,))
    r = rerun(cmd)
    assert "left RUNNING by a dead sweep" in r.stderr + r.stdout
    s = sphere(tmp_path)
    killed = s.trials[running.number]
    assert killed.state == S.FAIL and "died" in killed.user_attrs["reason"] and killed.user_attrs["uncounted"]
    assert any(t.params == killed.params and t.state == S.COMPLETE for t in s.trials)      # retried
    assert list(before) == [0]
    for number, (params, value, text) in before.items():                                     # intact
        assert s.trials[number].params == params and s.trials[number].value == value
        assert (tmp_path / "sweep" / str(number) / ".hydra" / "config.yaml").read_text() == text
    check_complete_study(tmp_path, 4)


@pytest.mark.slow
def test_ctrl_c_stops_promptly_and_says_how_to_resume(tmp_path):
    cmd = plain_cmd(tmp_path, n_trials=4, n_jobs=2)
    # a terminal's Ctrl-C reaches the whole process group: the sweep and its worker processes
    p = start(cmd, 60, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: started(tmp_path, sphere(tmp_path).get_trials(states=(S.RUNNING,))) and
             len(sphere(tmp_path).get_trials(states=(S.RUNNING,))) == 2)
    os.killpg(p.pid, signal.SIGINT)
    t0 = time.time()
    out, _ = p.communicate(timeout=60)
    assert time.time() - t0 < 10 and p.returncode == 130, out[-2000:]
    assert "run the same command again to continue" in out and "Traceback" not in out, out[-3000:]
    s = sphere(tmp_path)
    assert S.RUNNING not in [t.state for t in s.trials]                                      # consistent
    interrupted = [t for t in s.trials if t.user_attrs.get("reason") == "interrupted by Ctrl-C"]
    assert len(interrupted) == 2 and all(t.state == S.FAIL and t.user_attrs["uncounted"] for t in interrupted)
    for t in interrupted:   # a clean record: its dir says so in one line, and keeps what it ran with
        job = Path(t.user_attrs["dir"])
        assert json.loads((job / "job_return.json").read_text()) == {"status": "interrupted",
                                                                     "error": "interrupted by Ctrl-C"}
        console = (job / "console.log").read_text()
        assert "Traceback" not in console and console.splitlines()[-1].startswith("interrupted by Ctrl-C: stopped")
        assert (job / ".hydra" / "overrides.yaml").exists()
    rerun(cmd)
    check_complete_study(tmp_path, 4)


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs,sig", [(1, signal.SIGKILL), (1, signal.SIGINT), (2, signal.SIGKILL),
                                        (2, signal.SIGINT)], ids=["1-kill9", "1-ctrl-c", "2-kill9", "2-ctrl-c"])
def test_resume_runs_what_was_requeued_when_the_last_trials_were_interrupted(tmp_path, n_jobs, sig):
    # the interrupted trials are the study's last: a resume that counted their re-queued copies (WAITING) as
    # done would print "n of n trials done", run nothing and leave the study short
    n_trials = 2 * n_jobs
    rerun(plain_cmd(tmp_path, n_trials=n_jobs, n_jobs=n_jobs))   # the first trials end; the last never do
    cmd = plain_cmd(tmp_path, n_trials=n_trials, n_jobs=n_jobs)
    p = start(cmd, 120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def last_ones_running():
        running = sphere(tmp_path).get_trials(states=(S.RUNNING,))
        return len(running) == n_jobs and started(tmp_path, running)
    wait_for(last_ones_running)
    interrupted = {t.number: t.params for t in sphere(tmp_path).trials if t.state == S.RUNNING}
    os.killpg(p.pid, sig)   # a terminal's Ctrl-C reaches the whole group; kill -9 of the group kills workers too
    p.wait(timeout=60)
    r = rerun(cmd)
    assert f"{n_trials - n_jobs} of {n_trials} trials done" in r.stdout + r.stderr
    s = sphere(tmp_path)
    assert not [t for t in s.trials if t.state in (S.WAITING, S.RUNNING)]
    for number, params in interrupted.items():
        assert s.trials[number].state == S.FAIL and s.trials[number].user_attrs["uncounted"]
        rerun_of = [t for t in s.trials if t.user_attrs.get("requeued_from") == number]
        assert len(rerun_of) == 1 and rerun_of[0].params == params and rerun_of[0].state == S.COMPLETE
    check_complete_study(tmp_path, n_trials)


def children(pid):
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def gone(pid):
    """Dead, or a zombie nobody reaped yet (a container's pid 1 may never reap it)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


@pytest.mark.slow
def test_worker_processes_die_when_only_the_sweeps_pid_is_killed(tmp_path):
    # no process group kill here: a scheduler or an OOM killer kills one pid, the sweep's
    p = start(plain_cmd(tmp_path, n_trials=2, n_jobs=2), 120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        wait_for(lambda: len(list(tmp_path.glob("seen-*.yaml"))) == 2)
        workers = children(p.pid)
        assert len(workers) == 2
        p.kill()
        p.wait()
        wait_for(lambda: all(gone(w) for w in workers), timeout=10)
    finally:   # whatever failed, no sleeping worker outlives the test
        p.kill()
        for w in workers:
            if not gone(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.slow
def test_two_sweeps_on_one_study_share_n_trials(tmp_path):
    cmd = plain_cmd(tmp_path, n_trials=6)
    procs = [start(cmd + extra, 1.0, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for extra in ([], ["hydra.sweeper.n_jobs=2"])]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    check_complete_study(tmp_path, 6)
    # both sweeps ran trials: each sweep process is one `worker` (host:pid)
    assert {t.user_attrs["worker"] for t in counted(sphere(tmp_path))} == {f"{socket.gethostname()}:{p.pid}"
                                                                           for p in procs}


@pytest.mark.slow
@pytest.mark.parametrize("fate", ["ends", "goes stale"])
def test_a_sweep_with_nothing_left_to_ask_waits_for_another_sweeps_last_trial(tmp_path, fate):
    # heartbeats in the SQLite study; sweep A runs the study's only trial, B starts once A's trial has beaten
    cmd = plain_cmd(tmp_path, "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3", n_trials=1)
    a = start(cmd, 6 if fate == "ends" else 120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sphere(tmp_path).trials[0].user_attrs.get("heartbeat_interval"))
        b = start(cmd, 0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen = []
        for line in b.stdout:   # until B says it waits (or ends without)
            seen.append(line)
            if "waiting for" in line:
                break
        if fate == "goes stale":
            a.send_signal(signal.SIGSTOP)   # alive (its pid checks out) but silent: only its heartbeat can tell
        out = "".join(seen) + b.communicate(timeout=60)[0]
    finally:
        a.kill()
        a.wait()
    assert b.returncode == 0, out[-3000:]
    assert "waiting for 1 trial(s) of other sweeps to end" in out, out[-3000:]
    s = sphere(tmp_path)
    workers = {f"{socket.gethostname()}:{p.pid}": name for p, name in ((a, "A"), (b, "B"))}
    if fate == "ends":   # B ran nothing: A's trial was the last one
        assert [(t.state, workers[t.user_attrs["worker"]]) for t in s.trials] == [(S.COMPLETE, "A")]
    else:                # B failed A's silent trial and ran its params again
        assert "trial 0 had no heartbeat from its sweep" in out
        assert [(t.state, workers[t.user_attrs["worker"]]) for t in s.trials] == [(S.FAIL, "A"), (S.COMPLETE, "B")]
        assert s.trials[1].params == s.trials[0].params and s.trials[1].user_attrs["requeued_from"] == 0
        assert [t.number for t in counted(s)] == [1]


@pytest.mark.slow
def test_metrics_json_is_never_half_written(tmp_path):
    # a writer rewriting a large metrics.json as fast as it can, killed at a random moment, many times
    path = tmp_path / "metrics.json"
    writer = ("import sys; from sweeper.mnist.metrics import write_json\n"
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


@pytest.mark.slow
def test_damaged_data_through_the_cli_is_one_line_and_nothing_trains(tmp_path):
    name = "train-images-idx3-ubyte"
    root = corrupt_copy(tmp_path / "data", name, "truncated")
    r = cli(*TINY, f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert name in err and "corrupted" in err and "expected magic" in err and "download" in err
    assert "epoch" not in r.stdout and not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("name,how", [("train-images-idx3-ubyte", "truncated"),
                                      ("t10k-images-idx3-ubyte", "truncated"),
                                      ("train-labels-idx1-ubyte", "bad magic"),
                                      ("t10k-labels-idx1-ubyte", "bad magic")])
def test_damaged_data_is_named(tmp_path, name, how):
    root = corrupt_copy(tmp_path / "data", name, how)
    with pytest.raises(DataError) as e:
        check_files(str(root))
    err = str(e.value)
    assert "\n" not in err and name in err and "corrupted" in err and "expected magic" in err and "download" in err


@pytest.mark.slow
def test_unwritable_output_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = cli(*TINY, f"hydra.run.dir={blocker}/out")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "hydra.run.dir" in err and "cannot be written" in err, err


def test_unwritable_sweep_dir_is_one_line(tmp_path, capsys):
    # the same Hydra callback as above, at a multirun's start
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as e:
        CheckOutputDir().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": f"{tmp_path}/a-file/out"}}}))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "hydra.sweep.dir" in err and "cannot be written" in err


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
    for value in fuzz_values(rng, 150):
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
    assert 0 < accepted < 150           # the fuzz reaches both outcomes


@pytest.mark.parametrize("override", ["optimizer.lr=nan", "model.width=abc", "trainer.epochs=1e400",
                                      "data.train_subset=-5"])
def test_fuzzed_values_on_the_command_line_are_one_line(override):
    # what cli() prints after "error: " (tests/test_cli.py types one such refusal)
    with pytest.raises(ConfigError) as e:
        check_command([*TINY, override])
    assert str(e.value).startswith(f"{override.split('=')[0]}=") and "\n" not in str(e.value)
