"""`hydra.sweeper.enqueue`: param dicts a sweep runs first (Optuna's enqueue_trial), once per study; on the
torch-free plain app (x: range(-5, 5), y: choice(-2, 0, 2))."""
import optuna
import pytest

from test_plain_apps import error_lines, ok, run

ENQUEUE = "hydra.sweeper.enqueue=[{x: 2, y: 0}, {x: -3}]"


def params(tmp_path):
    study = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/s.db")
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.slow
def test_enqueued_params_run_first_and_a_resumed_study_does_not_run_them_again(tmp_path):
    db = f"hydra.sweeper.storage=sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, db, ENQUEUE, "hydra.sweeper.n_trials=3"))
    first = params(tmp_path)
    assert first[0] == {"x": 2, "y": 0} and first[1]["x"] == -3 and len(first) == 3
    ok(run(tmp_path, db, ENQUEUE, "hydra.sweeper.n_trials=5"))   # the same command, more trials
    every = params(tmp_path)
    assert len(every) == 5 and every[:3] == first
    assert every.count({"x": 2, "y": 0}) == 1 and sum(p["x"] == -3 for p in every) == len([p for p in first
                                                                                          if p["x"] == -3])


def test_a_param_fixed_on_the_command_line_is_left_out_of_the_enqueued_dicts(tmp_path):
    # x=1 fixes x for every trial, so {x: 2, y: 0} runs as y=0 and {x: -3}, with nothing left, not at all
    db = f"hydra.sweeper.storage=sqlite:///{tmp_path}/s.db"
    ok(run(tmp_path, db, ENQUEUE, "x=1", "hydra.sweeper.n_trials=2"))
    first = params(tmp_path)
    assert first[0] == {"y": 0} and len(first) == 2


@pytest.mark.parametrize("enqueue, line", [
    ("[{z: 1}]", "hydra.sweeper.enqueue: z=1 is not a param of the search space (x, y)"),
    ("[{x: 7}]", "hydra.sweeper.enqueue: x=7 is outside its search space: an integer from -5 to 4"),
    ("[{y: 1}]", "hydra.sweeper.enqueue: y=1 is outside its search space: one of [-2, 0, 2]"),
    ("[3]", "hydra.sweeper.enqueue=[3] is not allowed: a list of param dicts"),
])
def test_a_bad_enqueue_is_one_line_and_runs_nothing(tmp_path, enqueue, line):
    r = run(tmp_path, f"hydra.sweeper.enqueue={enqueue}")
    [error] = error_lines(r)
    assert r.returncode == 2 and line in error, r.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()
