"""What a user sees when a sweep goes wrong: one line, the right exit code, no traceback, nothing lost."""
import pytest

from conftest import sweeper_settings
from test_plain_apps import error_lines, ok, rows, run

pytestmark = pytest.mark.slow


def test_resuming_a_study_already_over_its_failure_limit_names_the_last_failure(tmp_path):
    db = f"hydra.sweeper.storage=sqlite:///{tmp_path}/f.db"
    first = run(tmp_path, "fail_from=-10", "hydra.sweeper.n_trials=3", db)
    assert first.returncode == 1
    again = run(tmp_path, "fail_from=-10", "hydra.sweeper.n_trials=3", db)
    [line] = error_lines(again)
    assert again.returncode == 1 and "None" not in line and "ValueError: x=" in line and "is too big" in line, line


def test_an_unopenable_storage_is_one_line(tmp_path):
    r = run(tmp_path, f"hydra.sweeper.storage=sqlite:///{tmp_path}/no/such/dir/s.db")
    [line] = error_lines(r)
    assert r.returncode == 2 and "hydra.sweeper.storage=" in line and "cannot be opened" in line
    assert "Traceback" not in r.stderr


def test_a_plain_app_with_its_own_model_and_budget_keys_is_not_counted(tmp_path):
    # only a `model` with a _target_ is counted against budget.max_params; this app's model is just a name
    ok(run(tmp_path, "+model.name=mlp", "+budget.max_params=10", "hydra.sweeper.n_trials=2"))
    assert [r["state"] for r in rows(tmp_path)] == ["COMPLETE", "COMPLETE"]


def test_an_objective_the_metrics_lack_fails_the_trial_with_one_line(tmp_path):
    # the app writes a metrics.json (as the MNIST trial does) without the field named as the objective
    r = ok(run(tmp_path, "metrics=true", "hydra.sweeper.policy=sweeper.mnist.policy.MnistPolicy",
               "hydra.sweeper.objectives=[val_loss]", "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_trials=2"))
    table = rows(tmp_path)
    assert [t["state"] for t in table] == ["FAIL", "FAIL"]
    assert all("metrics.json has no number for hydra.sweeper.objectives ['val_loss']" in t["reason"] for t in table)
    assert "Traceback" not in r.stdout + r.stderr


def test_a_bad_heartbeat_setting_is_one_line_before_any_trial(tmp_path):
    r = run(tmp_path, "hydra.sweeper.heartbeat_interval=0")
    [line] = error_lines(r)
    assert r.returncode == 2 and line.startswith("error: hydra.sweeper.heartbeat_interval=0 is not allowed")
    assert "whole number of seconds" in line
    assert not list(tmp_path.glob("seen-*.yaml"))   # no trial ran


@pytest.mark.parametrize("key,value", [("heartbeat_interval", 0), ("heartbeat_interval", 1.5), ("grace_period", -5),
                                       ("cuda_mps", "maybe"), ("n_jobs", 0), ("direction", "maximise")])
def test_bad_settings_are_refused_when_the_sweeper_is_built(key, value):
    # what the line above prints after "error: ", checked without a process each
    from sweeper.engine.sweep import OptunaSweep
    with pytest.raises(ValueError, match=rf"^hydra.sweeper.{key}={value!r} is not allowed: "):
        OptunaSweep(**{**sweeper_settings(), key: value})


@pytest.mark.parametrize("args,says", [
    (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs=0 is not allowed"),
    (["hydra.sweeper.direction=maximise"], "hydra.sweeper.direction='maximise' is not allowed"),
    (["x=range(5,5)"], "hydra.sweeper.params: x=range(5,5)"),
    (["x=tag(log,interval(0,3))"], "x=tag(log,interval(0,3))"),
    (["+hydra.sweeper.n_trial=3"], "hydra.sweeper.n_trial is not a key of hydra/sweeper: mnist_optuna; did you mean "
                                   "n_trials?"),
    (["hydra.sweeper.storage=sqlite:///{tmp}/no/such/dir/s.db", "hydra.sweep.dir={tmp}/outputs/multirun/s"],
     "cannot be opened"),
    (["hydra.sweeper.n_jobs=2", "hydra.sweeper.policy=nowhere.Policy"], "cannot be loaded"),
])
def test_a_refused_sweep_is_one_line_and_leaves_nothing(tmp_path, args, says):
    r = run(tmp_path, *[a.format(tmp=tmp_path) for a in args])
    [line] = error_lines(r)
    assert r.returncode == 2 and says in line, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []   # no sweep dir, nor a folder above it


def test_optunas_own_lines_stay_off_the_terminal_and_go_to_the_sweep_log(tmp_path):
    db = f"hydra.sweeper.storage=sqlite:///{tmp_path}/s.db"
    first = ok(run(tmp_path, db, "hydra.sweeper.n_trials=1"))
    assert "A new study created" not in first.stdout + first.stderr
    assert "A new study created" in (tmp_path / "sweep" / "sweep.log").read_text()
    refused = run(tmp_path, db, "hydra.sweeper.n_trials=1", "+extra=1")   # other fixed overrides: another experiment
    assert refused.returncode == 2 and "Using an existing study" not in refused.stdout + refused.stderr
    [line] = error_lines(refused)
    assert "was run with other settings" in line
    asked = ok(run(tmp_path, db, "hydra.sweeper.n_trials=2", "hydra.verbose=optuna"))
    assert "Using an existing study" in asked.stdout + asked.stderr
