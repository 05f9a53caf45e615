"""Faults a cluster has every day, on the torch-free plain app: SIGTERM to a sweep (a scheduler preempting it),
SIGTERM to one of its worker processes, and a trial that hangs; under the basic launcher and under submitit's and
Ray's, whose jobs stop themselves when their sweep is done with them (sweeper/engine/watch.py)."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import counted
from test_plain_apps import error_lines, rows
from test_reliability import S, check_complete_study, plain_cmd, rerun, sphere, start, started, wait_for

pytestmark = pytest.mark.slow


def test_sigterm_stops_a_sweep_as_ctrl_c_does_and_the_same_command_finishes_it(tmp_path):
    cmd = plain_cmd(tmp_path, n_trials=4, n_jobs=2)
    p = start(cmd, 60, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: len(sphere(tmp_path).get_trials(states=(S.RUNNING,))) == 2
             and started(tmp_path, sphere(tmp_path).get_trials(states=(S.RUNNING,))))
    running = {t.number: t.params for t in sphere(tmp_path).get_trials(states=(S.RUNNING,))}
    os.killpg(p.pid, signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 143, out[-2000:]
    [line] = [line for line in out.splitlines() if "interrupted by SIGTERM" in line]
    assert "run the same command again to continue" in line and "Traceback" not in out
    s = sphere(tmp_path)
    assert S.RUNNING not in [t.state for t in s.trials]
    for number in running:
        t = s.trials[number]
        assert t.state == S.FAIL and t.user_attrs["uncounted"] and t.user_attrs["reason"] == "interrupted by SIGTERM"
    rerun(cmd)
    check_complete_study(tmp_path, 4)
    s = sphere(tmp_path)
    for number, params in running.items():   # the interrupted params ran again
        assert any(t.user_attrs.get("requeued_from") == number and t.state == S.COMPLETE for t in s.trials)


def workers_of(pid):
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_a_worker_preempted_alone_runs_its_trial_again_and_the_sweep_goes_on(tmp_path):
    cmd = plain_cmd(tmp_path, n_trials=3, n_jobs=2)
    p = start(cmd, 2, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: len(workers_of(p.pid)) == 2 and len(sphere(tmp_path).get_trials(states=(S.RUNNING,))) == 2)
    os.kill(workers_of(p.pid)[0], signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out[-3000:]
    s = sphere(tmp_path)
    [preempted] = [t for t in s.trials if t.user_attrs.get("reason") == "interrupted by SIGTERM"]
    assert preempted.state == S.FAIL and preempted.user_attrs["uncounted"]
    assert f"trial {preempted.number}: interrupted by SIGTERM; its params are queued to run again" in out
    assert any(t.user_attrs.get("requeued_from") == preempted.number and t.state == S.COMPLETE for t in s.trials)
    assert len([t for t in counted(s) if t.state == S.COMPLETE]) == 3


def test_a_hung_trial_is_stopped_at_trial_timeout_and_failed_and_the_sweep_goes_on(tmp_path):
    # every trial sleeps for an hour; n_jobs=1 with a timeout runs them in worker processes, which can be stopped
    t0 = time.time()
    r = subprocess.run(plain_cmd(tmp_path, "hydra.sweeper.trial_timeout=2", "hydra.sweeper.max_failure_rate=1.0",
                                 n_trials=2, n_jobs=1),
                       cwd=Path(__file__).parent / "apps", capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PLAINAPP_SLEEP": "3600"})
    assert r.returncode == 0 and time.time() - t0 < 60, r.stderr[-3000:]
    trials = rows(tmp_path)
    assert [(t["state"], t["reason"]) for t in trials] == [("FAIL", "timeout after 2 s")] * 2
    assert "trial 0 failed: timeout after 2 s" in r.stdout + r.stderr
    assert not _left(tmp_path)   # the hung jobs' processes are gone


def test_a_hung_submitit_job_is_stopped_at_trial_timeout_and_failed_and_the_sweep_goes_on(tmp_path):
    r = subprocess.run(plain_cmd(tmp_path, "hydra/launcher=submitit_local", "hydra.sweeper.trial_timeout=2",
                                 "hydra.sweeper.max_failure_rate=1.0", n_trials=2, n_jobs=2),
                       cwd=Path(__file__).parent / "apps", capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PLAINAPP_SLEEP": "3600"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(t["state"], t["reason"]) for t in rows(tmp_path)] == [("FAIL", "timeout after 2 s")] * 2
    assert not _left(tmp_path)


def test_sigterm_to_a_sweep_stops_its_submitit_jobs(tmp_path):
    cmd = plain_cmd(tmp_path, "hydra/launcher=submitit_local", n_trials=4, n_jobs=2)
    p = start(cmd, 3600, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: started(tmp_path, sphere(tmp_path).get_trials(states=(S.RUNNING,)) or [None]))
    jobs = _left(tmp_path)
    assert len(jobs) >= 2   # submitit's local jobs: processes of their own, not children of the sweep
    os.kill(p.pid, signal.SIGTERM)   # the sweep alone, as a scheduler preempting its job would
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 143, out[-2000:]
    wait_for(lambda: not _left(tmp_path), timeout=20)   # each job saw its trial re-queued and stopped
    assert not _left(tmp_path)
    assert S.RUNNING not in [t.state for t in sphere(tmp_path).trials]


def _left(tmp_path):
    """The processes still running a job of the sweep under tmp_path (their command lines name its dirs)."""
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and str(tmp_path).encode() in _cmdline(pid)
            and int(pid) != os.getpid()]


def test_a_bad_trial_timeout_is_one_line(tmp_path):
    r = subprocess.run(plain_cmd(tmp_path, "hydra.sweeper.trial_timeout=0"), cwd=Path(__file__).parent / "apps",
                       capture_output=True, text=True, timeout=60)
    [line] = error_lines(r)
    assert r.returncode == 2 and "hydra.sweeper.trial_timeout=0.0 is not allowed: seconds > 0, or null" in line


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
