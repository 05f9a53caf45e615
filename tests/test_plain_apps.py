"""`hydra/sweeper: mnist_optuna` as a drop-in for hydra-optuna-sweeper, on a plain Hydra app (tests/apps/plainapp).

Every test types a sweep on the command line in a subprocess (`python -m plainapp.app --multirun ...` from
tests/apps, or `python app.py --multirun ...` from tests/apps/plainapp) and reads what it left behind: trials.csv,
optimization_results.yaml, each job's config as the app saved it (`seen-{trial}.yaml`, or `seen.yaml` in the job
dir under hydra.job.chdir), the times the app recorded itself (`ran-{trial}.json`), the study in its storage, the
exit code and stderr. The sweep dir, `out` and storages live under tmp_path; tests that let the sweep write
relative to its working dir run a copy of the app in tmp_path.

    python -m pytest -q tests/test_plain_apps.py
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import counted

pytestmark = pytest.mark.slow

APPS = Path(__file__).resolve().parent / "apps"
PRUNING = ["steps=3", "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2",
           "hydra.sweeper.pruner.n_warmup_steps=0"]


def run(tmp_path, *args, form="module", cwd=None, multirun=True, options=(), env=None):
    """The command a user types, with the sweep dir and the app's `out` under tmp_path; `options` (--config-dir
    ...) go before the overrides; `env`: more environment variables."""
    cmd = [sys.executable, "-m", "plainapp.app"] if form == "module" else [sys.executable, "app.py"]
    cwd = cwd or (APPS if form == "module" else APPS / "plainapp")
    where = [f"hydra.sweep.dir={tmp_path}/sweep"] if multirun else [f"hydra.run.dir={tmp_path}/run"]
    return subprocess.run([*cmd, *(["--multirun"] if multirun else []), *options, *where, f"out={tmp_path}", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})})


def ok(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def rows(tmp_path):
    with open(tmp_path / "sweep" / "trials.csv") as f:
        return list(csv.DictReader(f))


def seen(tmp_path, number):
    """The config trial `number` ran with, as the app itself saved it."""
    return OmegaConf.load(tmp_path / f"seen-{number}.yaml")


def results(tmp_path):
    return OmegaConf.to_container(OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml"))


def copy_app(tmp_path):
    """A copy of the app in tmp_path/apps: a sweep run there may write relative to its cwd."""
    shutil.copytree(APPS / "plainapp", tmp_path / "apps" / "plainapp", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "apps"


def load(storage, name="sphere"):
    return optuna.load_study(study_name=name, storage=storage)


def error_lines(r):
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------- outputs
def test_one_objective_writes_trials_and_the_best(tmp_path):
    ok(run(tmp_path, "hydra.sweeper.n_trials=4"))
    trials = rows(tmp_path)
    assert len(trials) == 4
    assert list(trials[0]) == ["number", "state", "status", "x", "y", "value", "reason"]
    assert {t["state"] for t in trials} == {"COMPLETE"}
    for t in trials:   # the value is what the app returns for the params it got
        cfg = seen(tmp_path, t["number"])
        assert (cfg.x, cfg.y) == (int(t["x"]), int(t["y"]))
        assert float(t["value"]) == cfg.x ** 2 + cfg.y ** 2 + len(cfg.name)
    best = min(float(t["value"]) for t in trials)
    res = results(tmp_path)
    assert res["name"] == "optuna" and res["best_value"] == best
    assert res["best_params"] in [{"x": int(t["x"]), "y": int(t["y"])} for t in trials if float(t["value"]) == best]


def dominates(a, b):
    return all(p <= q for p, q in zip(a, b)) and any(p < q for p, q in zip(a, b))


def test_two_objectives_give_the_pareto_set(tmp_path):
    ok(run(tmp_path, "two=true", "hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.n_trials=8"))
    trials = rows(tmp_path)
    assert len(trials) == 8
    assert list(trials[0]) == ["number", "state", "status", "x", "y", "values_0", "values_1", "reason"]
    points = {int(t["number"]): (float(t["values_0"]), float(t["values_1"])) for t in trials}
    solutions = results(tmp_path)["solutions"]
    assert solutions and all(set(s) >= {"params", "values"} for s in solutions)
    for a in solutions:
        for b in solutions:
            assert not dominates(a["values"], b["values"])
    pareto = {v for v in points.values() if not any(dominates(w, v) for w in points.values())}
    assert {tuple(s["values"]) for s in solutions} == pareto


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_fixed_added_deleted_and_custom_params_reach_every_job(tmp_path, n_jobs):
    # y=1 fixed beside the swept x, ~note deleted, +extra added, z suggested by a custom_search_space the config lacks
    ok(run(tmp_path, "y=1", "~note", "+extra=7", "hydra.sweeper.custom_search_space=plainapp.space.extend",
           "hydra.sweeper.n_trials=3", f"hydra.sweeper.n_jobs={n_jobs}"))
    trials = rows(tmp_path)
    assert len(trials) == 3 and "y" not in trials[0] and "z" in trials[0]
    xs = set()
    for t in trials:
        cfg = seen(tmp_path, t["number"])
        assert cfg.y == 1 and cfg.x == int(t["x"]) and "note" not in cfg and cfg.extra == 7
        assert cfg.z == float(t["z"]) and 0.0 <= cfg.z <= 1.0
        job = OmegaConf.load(tmp_path / "sweep" / t["number"] / ".hydra" / "config.yaml")
        assert job.y == 1 and job.x == cfg.x
        xs.add(cfg.x)
    assert len(xs) == 3   # x really was swept


def test_grid_over_strings_and_numbers_runs_each_point_once(tmp_path):
    r = ok(run(tmp_path, "hydra/sweeper/sampler=grid", "name=choice(a,bb)", "x=range(0,3)", "y=0",
               "hydra.sweeper.n_trials=10"))
    trials = rows(tmp_path)
    ran = sorted((seen(tmp_path, t["number"]).name, seen(tmp_path, t["number"]).x) for t in trials)
    assert ran == [("a", 0), ("a", 1), ("a", 2), ("bb", 0), ("bb", 1), ("bb", 2)]
    assert sorted((t["name"], int(t["x"])) for t in trials) == ran
    assert "every point of the grid has been tried" in r.stdout + r.stderr


def test_grid_over_a_float_range_has_no_drift(tmp_path):
    ok(run(tmp_path, "hydra/sweeper/sampler=grid", "x=range(0.1,0.4,step=0.1)", "y=0", "hydra.sweeper.n_trials=10"))
    trials = rows(tmp_path)
    assert sorted(seen(tmp_path, t["number"]).x for t in trials) == [0.1, 0.2, 0.3]
    assert sorted(t["x"] for t in trials) == ["0.1", "0.2", "0.3"]


# ---------------------------------------------------------------- working dirs and storages
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_chdir_jobs_write_into_their_own_dir(tmp_path, n_jobs):
    cwd = copy_app(tmp_path)
    ok(run(tmp_path, "hydra.job.chdir=True", "chdir_probe=true", "hydra.sweeper.n_trials=3",
           f"hydra.sweeper.n_jobs={n_jobs}", cwd=cwd))
    trials = rows(tmp_path)
    assert len(trials) == 3 and {t["state"] for t in trials} == {"COMPLETE"}
    for t in trials:
        cfg = OmegaConf.load(tmp_path / "sweep" / t["number"] / "seen.yaml")
        assert (cfg.x, cfg.y) == (int(t["x"]), int(t["y"]))
    assert not (cwd / "seen.yaml").exists()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_relative_sqlite_storage_with_chdir_and_pruning(tmp_path, n_jobs):
    cwd = copy_app(tmp_path)
    ok(run(tmp_path, "hydra.job.chdir=True", "chdir_probe=true", "hydra.sweeper.storage=sqlite:///rel.db",
           "hydra.sweeper.n_trials=3", f"hydra.sweeper.n_jobs={n_jobs}", *PRUNING, cwd=cwd))
    assert (cwd / "rel.db").exists()
    assert not list((tmp_path / "sweep").rglob("*.db"))   # no job opened a db of its own in its dir
    s = load(f"sqlite:///{cwd}/rel.db")
    assert len(counted(s)) == 3 and all(t.state.is_finished() for t in s.trials)
    # every trial reported its 3 steps to the one storage, or stopped when pruned
    assert all(t.intermediate_values for t in counted(s) if t.state != TrialState.FAIL)
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in s.trials if t.state == TrialState.COMPLETE)


def check_pruning(s, tmp_path, n_trials):
    trials = counted(s)
    assert len(trials) == n_trials
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and complete
    best = min(t.value for t in complete)
    for t in complete:
        assert sorted(t.intermediate_values) == [0, 1, 2]
    for t in pruned:
        assert t.intermediate_values and max(t.intermediate_values.values()) > best
    assert {r["state"] for r in rows(tmp_path) if int(r["number"]) in {t.number for t in pruned}} == {"PRUNED"}
    return pruned


def test_pruning_in_process(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=6", *PRUNING))
    check_pruning(load(db), tmp_path, 6)


def test_pruning_in_worker_processes(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2", *PRUNING))
    for t in check_pruning(load(db), tmp_path, 6):
        # the worker's own sweeper.report said stop, and the task raised TrialPruned there
        assert json.loads((tmp_path / "sweep" / str(t.number) / "job_return.json").read_text())["status"] == "pruned"


def test_parallel_jobs_without_storage_keep_a_journal(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    ok(run(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2"))
    journal = tmp_path / "sweep" / "study.journal"
    assert journal.exists()
    s = load(JournalStorage(JournalFileBackend(str(journal))))
    finished = [t for t in counted(s) if t.state.is_finished()]
    assert len(finished) == 3 and len(counted(s)) == 3


def test_parallel_jobs_overlap(tmp_path):
    ok(run(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "sleep=1.0"))
    trials = rows(tmp_path)
    assert len(trials) == 2 and {t["state"] for t in trials} == {"COMPLETE"}
    ran = {}
    for t in trials:
        job = tmp_path / "sweep" / t["number"]
        assert (job / "console.log").exists()
        assert json.loads((job / "job_return.json").read_text()) == {"status": "completed",
                                                                    "value": int(float(t["value"]))}
        ran[t["number"]] = json.loads((tmp_path / f"ran-{t['number']}.json").read_text())
    assert len({r["pid"] for r in ran.values()}) == 2   # each job in a process of its own
    assert not any(r["torch"] for r in ran.values())    # the engine, and what every Hydra run imports, is torch-free
    overlaps = [min(a["end"], b["end"]) - max(a["start"], b["start"]) for i, a in ran.items()
                for j, b in ran.items() if i < j]
    assert max(overlaps) > 0, ran   # two jobs slept at the same time: run one after the other, this is < 0


# ---------------------------------------------------------------- failures
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_too_many_failures_stop_the_sweep(tmp_path, n_jobs):
    r = run(tmp_path, "fail_from=0", "hydra.sweeper.max_failure_rate=0.5", "hydra.sweeper.n_trials=6",
            f"hydra.sweeper.n_jobs={n_jobs}")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    [line] = error_lines(r)
    assert "max_failure_rate=0.5" in line
    assert "ValueError: x=" in line and "is too big" in line
    trials = rows(tmp_path)
    failed = [t for t in trials if t["state"] == "FAIL"]
    assert len(failed) > 3 and len(failed) < len(trials)   # some failed, more than 0.5 of n_trials
    for t in failed:
        assert int(t["x"]) >= 0 and t["reason"] == f"ValueError: x={t['x']} is too big"


def test_every_trial_may_fail_when_allowed(tmp_path):
    ok(run(tmp_path, "fail_from=-10", "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_trials=3"))
    trials = rows(tmp_path)
    assert len(trials) == 3
    for t in trials:
        assert t["state"] == "FAIL" and t["status"] == "failed"
        assert t["reason"] == f"ValueError: x={t['x']} is too big"
    assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_wrong_number_of_values_fails_the_trial(tmp_path, n_jobs):
    ok(run(tmp_path, "two=true", "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_trials=2",
           f"hydra.sweeper.n_jobs={n_jobs}"))
    trials = rows(tmp_path)
    assert len(trials) == 2
    for t in trials:
        cfg = seen(tmp_path, t["number"])
        assert t["state"] == "FAIL"
        assert "the task returned 2 values" in t["reason"] and "a sweep needs a float" in t["reason"]
        returned = (cfg.x ** 2 + cfg.y ** 2 + len(cfg.name), (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2)
        assert str(returned) in t["reason"] or str(list(returned)) in t["reason"]   # names what was returned


# ---------------------------------------------------------------- how it is run
CONFIG = """\
defaults:
  - override hydra/sweeper: mnist_optuna
x: 0
y: 0
two: false
steps: 0
fail_from: null
out: .
chdir_probe: false
note: mine
name: ccc
sleep: 0.0
hydra:
  sweeper:
    study_name: mine
    n_trials: 5
    params:
      x: choice(3, 4, 5)
"""


# `python -m plainapp.app` is every other test's form
@pytest.mark.parametrize("form,n_jobs", [("script", 1), ("script", 2), ("config-dir", 1), ("config-dir", 2),
                                         ("config-path", 2)])
def test_run_forms(tmp_path, form, n_jobs):
    options = []
    if form.startswith("config-"):
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "mine.yaml").write_text(CONFIG)
        options = [f"--{form}", str(tmp_path / "conf"), "--config-name", "mine"]
    n_trials = 3 if form.startswith("config-") else 2
    ok(run(tmp_path, f"hydra.sweeper.n_jobs={n_jobs}", f"hydra.sweeper.n_trials={n_trials}", options=options,
           form="script" if form == "script" else "module"))
    trials = rows(tmp_path)
    assert len(trials) == n_trials and {t["state"] for t in trials} == {"COMPLETE"}
    for t in trials:
        cfg = seen(tmp_path, t["number"])
        assert cfg.x == int(t["x"])
        if form.startswith("config-"):   # every job composed the test's config, not the app's own
            assert cfg.name == "ccc" and cfg.note == "mine" and cfg.y == 0 and cfg.x in (3, 4, 5)
    if form.startswith("config-"):
        assert sorted(int(t["x"]) for t in trials) == [3, 4, 5] and "y" not in trials[0]


def test_a_study_remembers_what_it_is(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "name=a", "hydra.sweeper.n_trials=2"))
    assert len(load(db).trials) == 2
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "name=a", "hydra.sweeper.n_trials=3"))
    assert len(load(db).trials) == 3
    r = run(tmp_path, f"hydra.sweeper.storage={db}", "name=bb", "hydra.sweeper.n_trials=4")
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    [line] = error_lines(r)
    assert "name=a" in line and "name=bb" in line and "accept_changes" in line
    assert "Traceback" not in r.stderr
    assert len(load(db).trials) == 3
    assert not (tmp_path / "seen-3.yaml").exists()
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "name=bb", "hydra.sweeper.n_trials=4",
           "hydra.sweeper.accept_changes=true"))
    trials = counted(load(db))
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert [seen(tmp_path, t.number).name for t in trials] == ["a", "a", "a", "bb"]


def test_resume_continues_the_study(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    sweep = [f"hydra.sweeper.storage={db}", "x=interval(-5.0, 5.0)"]   # a float: no two proposals alike by chance
    ok(run(tmp_path, *sweep, "hydra.sweeper.n_trials=2"))
    first = {n: (tmp_path / "sweep" / str(n) / ".hydra" / "config.yaml").read_text() for n in (0, 1)}
    r = ok(run(tmp_path, *sweep, "hydra.sweeper.n_trials=4"))
    assert "2 of 4 trials done" in r.stdout + r.stderr
    s = load(db)
    trials = counted(s)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    # exactly four asks in all: a sampler not re-seeded past the first run would replay its proposals, and each
    # replay would be closed as a duplicate, an extra (uncounted) trial in the study
    assert [t.number for t in s.trials] == [0, 1, 2, 3]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4        # nothing proposed twice
    for n, text in first.items():
        assert (tmp_path / "sweep" / str(n) / ".hydra" / "config.yaml").read_text() == text  # old dirs untouched
    for n in (2, 3):
        assert seen(tmp_path, n).x == s.trials[n].params["x"]
    r = ok(run(tmp_path, *sweep, "hydra.sweeper.n_trials=4"))                  # nothing left to do
    assert "4 of 4 trials done" in r.stdout + r.stderr and len(load(db).trials) == 4


def test_stop_after_hits_stops_at_exactly_that_many_hits(tmp_path):
    # the app writes a metrics.json whose final_test_acc is `acc`: the config decides which trials hit (>= 99.4 %)
    r = ok(run(tmp_path, "metrics=true", "hydra.sweeper.policy=sweeper.mnist.policy.MnistPolicy",
               "acc=choice(0.5, 0.999)", "x=choice(0, 1, 2)", "y=0",
               "hydra/sweeper/sampler=grid", "hydra.sweeper.stop_after_hits=2", "hydra.sweeper.n_trials=6"))
    trials = rows(tmp_path)
    assert [t["hit"] for t in trials] == [str(float(t["acc"]) == 0.999) for t in trials]
    assert sum(t["hit"] == "True" for t in trials) == 2 and trials[-1]["hit"] == "True"   # stopped at the 2nd
    assert "2 trials reached the target (stop_after_hits=2)" in r.stdout + r.stderr


def test_an_empty_range_is_refused_before_any_trial(tmp_path):
    r = run(tmp_path, "x=range(5,5)")
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    [line] = error_lines(r)
    assert "x=range(5,5)" in line and "empty" in line
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("seen-*")) and not (tmp_path / "sweep" / "trials.csv").exists()


def test_outside_a_sweep_report_does_nothing(tmp_path):
    r = ok(run(tmp_path, "steps=3", multirun=False))
    assert "report returned False" in r.stdout
    assert seen(tmp_path, "run").steps == 3


# ---------------------------------------------------------------- prune_guard
def pruned_values(tmp_path, *args):
    """A grid over five constant curves (value = x**2 + 1 at every step), judged by the median rule from the
    first finished trial on; returns {value: state}."""
    ok(run(tmp_path, "x=choice(0,1,2,3,4)", "y=0", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=5",
           f"hydra.sweeper.storage=sqlite:///{tmp_path}/g.db", "steps=3", "hydra/sweeper/pruner=median",
           "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0", *args))
    return {t.intermediate_values[0]: t.state for t in load(f"sqlite:///{tmp_path}/g.db").trials}


def test_a_trial_at_or_beyond_the_guard_is_never_pruned(tmp_path):
    # direction minimize: "beyond" the guard of 10 means a value <= 10
    without = pruned_values(tmp_path / "a")
    guarded = pruned_values(tmp_path / "b", "hydra.sweeper.prune_guard=10")
    assert sorted(without) == sorted(guarded) == [1, 2, 5, 10, 17]
    # the same grid order both times (seeded): without the guard the pruner stops some curve the guard protects
    assert any(state == TrialState.PRUNED for value, state in without.items() if value <= 10), without
    assert all(state == TrialState.COMPLETE for value, state in guarded.items() if value <= 10), guarded
    # below the guard the pruner decides as before
    assert guarded[17] == without[17]


def test_the_guard_follows_a_maximised_objective(tmp_path):
    # maximize: values >= 2 are beyond the guard; without it the median rule would stop the curve at 5
    guarded = pruned_values(tmp_path, "hydra.sweeper.prune_guard=2", "hydra.sweeper.direction=maximize")
    assert all(state == TrialState.COMPLETE for value, state in guarded.items() if value >= 2), guarded
