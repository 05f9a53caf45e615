"""Configs written for hydra-optuna-sweeper, as third-party projects ship them, on the torch-free plain app; and
what a sweep leaves for the tools a Hydra user already has (optimization_results.yaml, optuna-dashboard).

lightning-hydra-template's `configs/hparams_search/mnist_optuna.yaml` pins `hydra.sweeper._target_` to the
official class, sets `hydra.mode: MULTIRUN` (so its searches run without `-m`) and gives the sampler as a dict
with its own `_target_`. Only its defaults line is switched to `mnist_optuna` here.
"""
import json
import textwrap

import optuna
import pytest
from omegaconf import OmegaConf

from test_plain_apps import error_lines, ok, rows, run

pytestmark = pytest.mark.slow

TEMPLATE = """\
# @package _global_
# python app.py hparams_search=template_optuna  (lightning-hydra-template's form; no -m needed)
defaults:
  - override /hydra/sweeper: mnist_optuna   # was: optuna

hydra:
  mode: "MULTIRUN"
  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper
    storage: null
    study_name: null
    n_jobs: {n_jobs}
    direction: minimize
    n_trials: 4
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 10
    params:
      x: interval(-5.0, 5.0)
      y: choice(-2, 0, 2)
"""


def template_search(tmp_path, n_jobs):
    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "template_optuna.yaml").write_text(TEMPLATE.format(n_jobs=n_jobs))
    return ["--config-dir", str(tmp_path / "conf")]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_template_search_pinning_the_official_target_runs_as_it_is(tmp_path, n_jobs):
    # no --multirun: the file's hydra.mode says MULTIRUN, and each worker process still runs exactly one job
    ok(run(tmp_path, "+hparams_search=template_optuna", f"hydra.sweep.dir={tmp_path}/sweep", multirun=False,
           options=template_search(tmp_path, n_jobs)))
    trials = rows(tmp_path)
    assert [t["state"] for t in trials] == ["COMPLETE"] * 4
    assert all(-5 <= float(t["x"]) <= 5 and t["y"] in ("-2", "0", "2") for t in trials)
    ran = [json.loads((tmp_path / f"ran-{t['number']}.json").read_text()) for t in trials]
    assert len({r["pid"] for r in ran}) == (1 if n_jobs == 1 else 4)   # in the sweep's process, or one process each
    assert not any(r["torch"] for r in ran)
    for t in trials:
        job = tmp_path / "sweep" / t["number"]
        assert json.loads((job / "job_return.json").read_text())["status"] == "completed"
        assert not (job / "multirun.yaml").exists() and not any(p.is_dir() and p.name.isdigit() for p in job.iterdir())


def test_the_results_name_the_best_trial_and_the_study_its_objectives(tmp_path):
    db = f"sqlite:///{tmp_path}/study.db"
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=4", "two=true",
           "hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.objectives=[sphere,shifted]"))
    study = optuna.load_study(study_name="sphere", storage=db)
    assert study.metric_names == ["sphere", "shifted"]        # optuna-dashboard shows these, not "Objective 0"
    assert set(rows(tmp_path)[0]) >= {"sphere", "shifted"}
    solutions = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml").solutions
    assert sorted(s.number for s in solutions) == sorted(t.number for t in study.best_trials)

    ok(run(tmp_path, f"hydra.sweeper.storage={tmp_path}/one.journal", "hydra.sweeper.n_trials=3",
           "hydra.sweep.dir=" + str(tmp_path / "one")))
    best = OmegaConf.load(tmp_path / "one" / "optimization_results.yaml")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    study = optuna.load_study(study_name="sphere", storage=JournalStorage(JournalFileBackend(f"{tmp_path}/one.journal")))
    assert best.best_trial == study.best_trial.number and best.best_value == study.best_value
    assert study.metric_names == ["value"]


def test_a_study_resumed_in_a_new_sweep_dir_says_where_its_earlier_trials_are(tmp_path):
    db = f"sqlite:///{tmp_path}/study.db"
    ok(run(tmp_path, f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}/first"))
    r = ok(run(tmp_path, f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=3"))
    [first] = [line for line in (r.stdout + r.stderr).splitlines() if "study 'sphere' in" in line]
    assert "2 of 3 trials done" in first and f"earlier trial dirs under {tmp_path}/first" in first


@pytest.mark.parametrize("policy,says", [
    ("nowhere.Policy", "hydra.sweeper.policy='nowhere.Policy' cannot be loaded"),
    ("collections.OrderedDict", "is not allowed: a subclass of sweeper.engine.policy.TaskValue"),
])
def test_a_policy_that_cannot_be_used_is_one_line_before_any_trial(tmp_path, policy, says):
    r = run(tmp_path, f"hydra.sweeper.policy={policy}")
    assert r.returncode == 2 and [says in line for line in error_lines(r)] == [True], r.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()


def test_settings_of_the_mnist_policy_are_refused_without_it(tmp_path):
    r = run(tmp_path, "hydra.sweeper.confirm_seeds=2")
    [line] = error_lines(r)
    assert r.returncode == 2 and "hydra.sweeper.confirm_seeds=2 is not allowed with hydra.sweeper.policy=null" in line
    assert "sweeper.mnist.policy.MnistPolicy" in line


def test_a_plain_policy_of_an_apps_own_plugs_in_the_same_way(tmp_path):
    # an app's own rule: a value over 20 is "too far", recorded as failed without changing anything else
    policy = textwrap.dedent("""\
        from sweeper.engine.policy import TaskValue, Verdict

        class TooFar(TaskValue):
            def judge(self, result, run_dir):
                verdict = super().judge(result, run_dir)
                if verdict.values and verdict.values[0] > 20:
                    return Verdict("failed", reason=f"too far: {verdict.values[0]}")
                return verdict
        """)
    (tmp_path / "mypolicy.py").write_text(policy)
    import os
    r = run(tmp_path, "hydra.sweeper.policy=mypolicy.TooFar", "hydra.sweeper.max_failure_rate=1.0", "x=choice(0, 5)",
            "y=0", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
            env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    ok(r)
    by_x = {t["x"]: t for t in rows(tmp_path)}
    assert by_x["0"]["state"] == "COMPLETE" and by_x["5"]["state"] == "FAIL"
    assert by_x["5"]["reason"] == "too far: 26.0"
