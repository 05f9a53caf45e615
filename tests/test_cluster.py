"""Scale out, against real servers (tests/servers.py): one study on PostgreSQL shared by several sweeps, a dead
sweep's trial recovered from another host by heartbeats, trials on a Ray cluster and through submitit, and
optuna-dashboard reading a finished study.

The sweeps are the plain app's (tests/apps/plainapp: torch-free, so each trial takes milliseconds plus its
`sleep`), typed as a user types them. The app holds a global that does not pickle, as the MNIST trial's torch
does, so the Ray test checks that Ray gets the task of a `python -m` app by reference.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import counted
from servers import free_port
from test_plain_apps import APPS, PRUNING, check_pruning, ok, run

# 4 trials in 2 slots: with this seed trials 2 and 3 come out worse than 0 and 1 (values 14, 6, then 17, 17), so the
# median pruner has trials to prune however the slots interleave
PRUNED_4 = [*PRUNING, "hydra.sweeper.sampler.seed=4"]

pytestmark = pytest.mark.slow


def sweep_cmd(tmp_path, storage, *args, name="sweep"):
    return [sys.executable, "-m", "plainapp.app", "--multirun", f"hydra.sweep.dir={tmp_path}/{name}",
            f"out={tmp_path}", f"hydra.sweeper.storage='{storage}'", *args]


def env(sleep):
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "PLAINAPP_SLEEP": str(sleep)}


def spans(tmp_path):
    """(start, end) of every job, as the jobs recorded them."""
    return [tuple(json.loads(p.read_text())[k] for k in ("start", "end")) for p in tmp_path.glob("ran-*.json")]


def most_at_once(intervals):
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


# ---------------------------------------------------------------- PostgreSQL
def test_three_sweeps_share_one_postgres_study(tmp_path, pg_url):
    procs = [subprocess.Popen(sweep_cmd(tmp_path, pg_url, "hydra.sweeper.n_trials=9", name=f"sweep{i}"), cwd=APPS,
                              env=env(1.0), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(log[-2000:] for log in logs)
    s = optuna.load_study(study_name="sphere", storage=pg_url)
    trials = counted(s)
    assert len(trials) == 9 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 9          # no parameter set ran twice
    assert len({t.user_attrs["worker"] for t in trials}) >= 2                    # the sweeps really shared it


def test_a_sweep_on_another_host_recovers_a_killed_sweeps_trial(tmp_path, pg_url):
    if os.geteuid() != 0:
        pytest.skip("`unshare --uts` (another hostname) needs root")
    beat = ["hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    a = subprocess.Popen(sweep_cmd(tmp_path, pg_url, *beat), cwd=APPS, env=env(120), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob("seen-*.yaml")):   # the job runs: its sweep has recorded a first heartbeat
            assert time.time() < deadline and a.poll() is None, "sweep A never started a trial"
            time.sleep(0.5)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    finally:
        a.kill()
    [killed] = _running(pg_url)
    time.sleep(4)
    assert [t.number for t in _running(pg_url)] == [killed.number]   # nobody fails it by itself
    b = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname sweep-b && exec "$0" "$@"',
                        *sweep_cmd(tmp_path, pg_url, *beat, name="sweep-b")],
                       cwd=APPS, env=env(0), capture_output=True, text=True, timeout=120)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    assert f"trial {killed.number} had no heartbeat from its sweep" in b.stdout + b.stderr
    s = optuna.load_study(study_name="sphere", storage=pg_url)
    assert s.trials[killed.number].state == TrialState.FAIL
    trials = counted(s)
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    [rerun] = [t for t in trials if t.user_attrs.get("requeued_from") == killed.number]
    assert rerun.params == killed.params and rerun.user_attrs["worker"].startswith("sweep-b:")


def _running(url):
    try:
        s = optuna.load_study(study_name="sphere", storage=url)
    except KeyError:   # not created yet
        return []
    return s.get_trials(states=(TrialState.RUNNING,))


# ---------------------------------------------------------------- launchers
def ray(address):
    # hydra-ray-launcher 1.2.2 sets object_store_memory for a Ray it starts itself; Ray 2.x refuses it when
    # connecting to a running cluster, so the README's command sets it to null
    return ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}",
            "+hydra.launcher.ray.init.object_store_memory=null"]


@pytest.mark.xdist_group("ray")
def test_ray_launcher_keeps_n_jobs_trials_in_flight_and_prunes_through_the_storage(tmp_path, ray_cluster):
    # one sweep for both (a second Ray cluster cannot start beside the first): 2 CPUs, n_jobs=2.
    # `python -m plainapp.app`: its task lives in __main__ and holds a lock, so Ray must get plainapp.app.main
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, *ray(ray_cluster), "sleep=2", f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=6",
           "hydra.sweeper.n_jobs=2", *PRUNED_4))
    check_pruning(optuna.load_study(study_name="sphere", storage=db), tmp_path, 6)
    assert len(spans(tmp_path)) == 6 and most_at_once(spans(tmp_path)) == 2


@pytest.mark.xdist_group("ray")
def test_a_hung_ray_job_is_stopped_at_trial_timeout_and_the_ray_workers_are_free_again(tmp_path, ray_cluster):
    # both jobs sleep for an hour; each one's watch (sweeper/engine/watch.py) stops it in its Ray worker at 2 s
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, *ray(ray_cluster), f"hydra.sweeper.storage={db}", "hydra.sweeper.trial_timeout=2",
           "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
           "sleep=3600"))
    trials = optuna.load_study(study_name="sphere", storage=db).trials
    assert [(t.state, t.user_attrs["reason"]) for t in trials] == [(TrialState.FAIL, "timeout after 2 s")] * 2
    # the cluster's 2 CPUs are free: a second sweep on it runs its 2 jobs at once
    ok(run(tmp_path, *ray(ray_cluster), "sleep=1", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
           "hydra.sweep.dir=" + str(tmp_path / "second")))
    assert most_at_once(spans(tmp_path)) == 2


def test_submitit_local_launcher(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, "hydra/launcher=submitit_local", f"hydra.sweeper.storage={db}", "sleep=2",
           "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", *PRUNED_4))
    check_pruning(optuna.load_study(study_name="sphere", storage=db), tmp_path, 4)
    assert most_at_once(spans(tmp_path)) == 2


def test_joblib_launcher_keeps_n_jobs_trials_in_flight_and_prunes_through_the_storage(tmp_path):
    # joblib runs each job in a loky worker process: the job finds its Optuna trial through the storage
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, "hydra/launcher=joblib", "sleep=1", f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=4",
           "hydra.sweeper.n_jobs=2", *PRUNED_4))
    check_pruning(optuna.load_study(study_name="sphere", storage=db), tmp_path, 4)
    assert len(spans(tmp_path)) == 4 and most_at_once(spans(tmp_path)) == 2


# ---------------------------------------------------------------- live view
def test_optuna_dashboard_reads_a_finished_sweep(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "steps=2", "hydra.sweeper.n_trials=2"))
    port = free_port()
    dash = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), db,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        [summary] = [x for x in studies if x["study_name"] == "sphere"]
        study = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
    finally:
        dash.terminate()
        dash.wait(10)
    assert len(study["trials"]) == 2
    for trial in study["trials"]:
        assert [v["step"] for v in trial["intermediate_values"]] == [0, 1]          # what sweeper.report sent
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["status"] == "ok" and attrs["dir"].endswith(f"/sweep/{trial['number']}")


def _get(url, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
