"""`sweeper.compare` on any Hydra app's sweep: values named and sorted as the sweep named and directed them, the
best trial or the Pareto set in the sweep's directions, no %, budget or hits; and the MNIST curves' axis limits.

The slow tests compare real sweeps of the torch-free plain app (tests/apps/plainapp, one sweep per fixture, a few
seconds each) with what Optuna says of the same study. The fast ones read trial dirs written by hand in the
formats a sweep leaves: job_return.json (sweeper/engine/worker.py), multirun.yaml (Hydra), metrics.json
(sweeper/mnist/metrics.py).

    python -m pytest -q tests/test_compare_any_app.py
"""
import csv
import json
import subprocess

import matplotlib
import optuna
import pytest
import yaml

from sweeper.compare import main
from sweeper.compare.plots import accuracy_axes, history_axes, reported_axes
from sweeper.compare.records import find_trial_dirs, read_study, read_trials
from sweeper.compare.table import labels
from test_cluster import env, sweep_cmd
from test_compare import assert_png, metrics, trial_dir
from test_plain_apps import APPS, ok

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

STATUSES = {"ok", "pruned", "failed", "rejected", "running", "broken"}
# y continuous, so no two trials tie on a value and Optuna's best trial is the one compare must name
SWEPT = ["y=interval(-2.0,2.0)", "hydra/sweeper/pruner=none", "hydra.sweeper.n_jobs=2"]


def table(capsys, *args):
    """main(args) -> (exit code, table rows as lists of cells, header cells, all stdout lines, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    rows = [line.split() for line in lines[1:] if line.split()[1:2] and line.split()[1] in STATUSES]
    return code, rows, lines[0].split(), lines, err


def no_mnist_words(lines):
    text = "\n".join(lines)
    return "%" not in text and "hit" not in text and "target" not in text and "*" not in text


def sweep_dir(tmp_path_factory, name, *args):
    """A real sweep of the plain app into its own folder, with its study in SQLite there: (sweep dir, storage)."""
    base = tmp_path_factory.mktemp(name)
    storage = f"sqlite:///{base}/study.db"
    ok(subprocess.run(sweep_cmd(base, storage, *SWEPT, *args), cwd=APPS, env=env(0), capture_output=True,
                      text=True, timeout=120))
    return base / "sweep", storage


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    # minimises x**2 + y**2 + len(name); reports it twice (steps) so the study holds per-step values
    return sweep_dir(tmp_path_factory, "one", "hydra.sweeper.n_trials=4", "steps=2")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    # x**2 + y**2 + 1 minimised, (x-2)**2 + (y-1)**2 maximised: the Pareto set depends on both directions
    return sweep_dir(tmp_path_factory, "two", "two=true", "hydra.sweeper.direction=[minimize,maximize]",
                     "hydra.sweeper.n_trials=6")


def trials_csv(sweep):
    with open(sweep / "trials.csv") as f:
        return {row["number"]: row for row in csv.DictReader(f)}


# ---------------------------------------------------------------- real sweeps
@pytest.mark.slow
@pytest.mark.xdist_group("compare_any_app")
def test_a_minimising_sweep_best_first_with_and_without_its_study(one, capsys, tmp_path):
    sweep, storage = one
    study = optuna.load_study(study_name="sphere", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and len({t.value for t in done}) == 4
    code, rows, header, lines, err = table(capsys, sweep)
    assert code == 0, err
    assert header == ["trial", "status", "x", "y", "value"]
    assert [r[1] for r in rows] == ["ok"] * 4                     # finished, from job_return.json
    values = [float(r[-1]) for r in rows]
    assert values == sorted(values)                               # minimised: the smallest first
    assert rows[0][0] == str(study.best_trial.number)
    assert {r[0]: float(r[-1]) for r in rows} == pytest.approx({str(t.number): t.value for t in done}, rel=1e-5)
    assert lines[-1] == f"4 trials (4 ok), best value {study.best_value:.6g} (trial {study.best_trial.number})"
    assert no_mnist_words(lines)

    # the study gives the same table, the values per step, and Optuna's plots; no accuracy plot for this app
    code, rows_s, header_s, lines_s, err = table(capsys, sweep, "--storage", storage, "--plot", tmp_path / "plots",
                                                 "--csv", tmp_path / "t.csv", "--json", tmp_path / "t.json")
    assert code == 0, err
    assert lines_s == lines
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["curves.png", "optimization_history.png", "param_importances.png"]
    for p in (tmp_path / "plots").iterdir():
        assert_png(p)
    with open(tmp_path / "t.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0])[:6] == ["trial", "sweep", "status", "value", "reason", "dir"]
    assert [(w["trial"], float(w["value"])) for w in written] == [(str(t.number), t.value)
                                                                  for t in sorted(done, key=lambda t: t.value)]
    by_trial = {j["trial"]: j for j in json.loads((tmp_path / "t.json").read_text())}
    assert by_trial[0]["reported"] == [[0, study.trials[0].value], [1, study.trials[0].value]]

    # without the study there are no values per step to draw: one line says so
    code, _, _, _, err = table(capsys, sweep, "--plot", tmp_path / "alone")
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == []
    assert "compare: skipping" in err and "curves.png" in err and "--storage" in err


@pytest.mark.slow
@pytest.mark.xdist_group("compare_any_app")
def test_reported_values_are_drawn_per_step_under_the_objectives_name(one):
    _, storage = one
    study, records = read_study(storage, "sphere")
    for r, label in zip(records, labels(records)):
        r["label"] = label
    fig, ax = reported_axes(records, plt)
    assert ax.get_ylabel() == "value" and ax.get_xlabel() == "step"
    drawn = {tuple(line.get_ydata()) for line in ax.get_lines()}
    assert drawn == {(t.value, t.value) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert not any("target" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)


@pytest.mark.slow
@pytest.mark.xdist_group("compare_any_app")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")   # Optuna's matplotlib plots
def test_two_objectives_give_optunas_pareto_set_in_both_directions(two, capsys):
    sweep, storage = two
    study = optuna.load_study(study_name="sphere", storage=storage)
    front = sorted(t.number for t in study.best_trials)
    for extra in ([], ["--storage", storage]):
        code, rows, header, lines, err = table(capsys, sweep, *extra)
        assert code == 0, err
        assert header[-2:] == ["values_0", "values_1"] and len(rows) == 6
        firsts = [float(r[-2]) for r in rows]
        assert firsts == sorted(firsts)                           # the first objective, minimised, best first
        assert lines[-1] == (f"6 trials (6 ok), Pareto set: {len(front)} trial{'s' * (len(front) != 1)} "
                             f"({', '.join(map(str, front))})")
        assert no_mnist_words(lines)
    _, rows, _, _, _ = table(capsys, sweep, "--sort", "values_1")
    seconds = [float(r[-1]) for r in rows]
    assert seconds == sorted(seconds, reverse=True)               # maximised: the largest first
    assert {r[0]: float(r[-1]) for r in rows} == pytest.approx(
        {n: float(row["values_1"]) for n, row in trials_csv(sweep).items()}, rel=1e-5)

    # Optuna's history follows the first objective by its name, its best line falling as that objective is minimised
    ax = history_axes(study, ["values_0", "values_1"])
    assert ax.get_ylabel() == "values_0"
    best = [line for line in ax.get_lines() if line.get_label() == "best values_0"][0].get_ydata()
    assert list(best) == sorted(best, reverse=True) and best[-1] == min(
        t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    plt.close(ax.figure)


# ---------------------------------------------------------------- trial dirs as a sweep leaves them
def any_app_trial(path, overrides, ret=None):
    """A plain app's job dir: .hydra/overrides.yaml, and job_return.json (a dict, or raw text) once it ended."""
    trial_dir(path, overrides)
    if ret is not None:
        (path / "job_return.json").write_text(ret if isinstance(ret, str) else json.dumps(ret))
    return path


def multirun_yaml(sweep, direction, objectives=None):
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"sweeper": {"direction": direction, "objectives": objectives, "n_trials": 9}}, "lr": 0.1}))


def test_every_way_a_job_ends_and_a_maximised_named_objective(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun_yaml(sweep, "maximize", ["score"])
    any_app_trial(sweep / "0", ["lr=0.1"], {"status": "completed", "value": 0.25})
    any_app_trial(sweep / "1", ["lr=0.2"], {"status": "completed", "value": 0.75})
    any_app_trial(sweep / "2", ["lr=0.3"], {"status": "pruned", "error": "TrialPruned: at step 3"})
    any_app_trial(sweep / "3", ["lr=0.4"], {"status": "failed", "error": "ValueError: diverged"})
    any_app_trial(sweep / "4", ["lr=0.5"], {"status": "completed", "value": "<object at 0x1>"})   # a repr
    any_app_trial(sweep / "5", ["lr=0.6"], '{"status": "compl')                                   # cut short
    any_app_trial(sweep / "6", ["lr=0.7"])                                                         # still running
    any_app_trial(sweep / "10", ["lr=0.8"], {"status": "completed", "value": 0.5})
    code, rows, header, lines, err = table(capsys, sweep, "--json", tmp_path / "t.json")
    assert code == 0
    assert header == ["trial", "status", "lr", "score"]
    assert [r[:2] for r in rows[:3]] == [["1", "ok"], ["10", "ok"], ["0", "ok"]]   # maximised: the largest first
    assert rows[0][-1] == "0.75" and rows[1][-1] == "0.5"
    assert {r[0]: r[1] for r in rows[3:]} == {"2": "pruned", "3": "failed", "4": "failed", "5": "broken",
                                              "6": "running"}
    assert lines[-1] == "8 trials (3 ok, 1 pruned, 2 failed, 1 running, 1 broken), best score 0.75 (trial 1)"
    assert no_mnist_words(lines)
    assert f"cannot read {sweep / '5' / 'job_return.json'}" in err
    reasons = {j["trial"]: j["reason"] for j in json.loads((tmp_path / "t.json").read_text())}
    assert reasons[3] == "ValueError: diverged" and reasons[2] == "TrialPruned: at step 3"
    assert reasons[4] == "the task returned '<object at 0x1>'; a sweep needs a float"


def test_the_pareto_set_respects_each_direction(tmp_path, capsys):
    points = {0: [1.0, 1.0], 1: [2.0, 5.0], 2: [3.0, 4.0], 3: [0.5, 0.5], 4: [2.0, 2.0]}
    for direction, front in [(["minimize", "maximize"], "3 trials (0, 1, 3)"),
                             (["minimize", "minimize"], "1 trial (3)"),
                             (["maximize", "maximize"], "2 trials (1, 2)")]:
        sweep = tmp_path / "_".join(direction)
        sweep.mkdir()
        multirun_yaml(sweep, direction)
        for n, values in points.items():
            any_app_trial(sweep / str(n), [f"x={n}"], {"status": "completed", "value": values})
        _, rows, header, lines, _ = table(capsys, sweep)
        assert header[-2:] == ["values_0", "values_1"]
        assert lines[-1] == f"5 trials (5 ok), Pareto set: {front}", direction
        firsts = [float(r[-2]) for r in rows]
        assert firsts == sorted(firsts, reverse=direction[0] == "maximize")


def test_an_unknown_direction_is_said_in_one_line(tmp_path, capsys):
    # trial dirs copied out of their sweep: no multirun.yaml says which way is better
    any_app_trial(tmp_path / "0", ["x=3"], {"status": "completed", "value": 9.0})
    any_app_trial(tmp_path / "1", ["x=1"], {"status": "completed", "value": 1.0})
    _, rows, _, lines, _ = table(capsys, tmp_path)
    assert [r[0] for r in rows] == ["1", "0"]
    assert lines[-2] == ("value: direction unknown (not in a multirun.yaml, no --storage); minimize "
                         "assumed, the sweeper's default")
    assert lines[-1] == "2 trials (2 ok), best value 1 (trial 1)"


def test_a_folder_with_some_mnist_trials_keeps_the_mnist_view(tmp_path, capsys):
    trial_dir(tmp_path / "0", ["model.width=10"], metrics([0.99, 0.9951]))
    any_app_trial(tmp_path / "1", ["model.width=12"], {"status": "completed", "value": 0.5})
    _, rows, header, lines, _ = table(capsys, tmp_path)
    assert header[-6:] == ["params", "final%", "best%", "tgt@ep", "epochs", "s/ep"]
    assert lines[1].split()[:3] == ["*", "0", "ok"] and lines[2].split()[:2] == ["1", "ok"]
    assert lines[-1] == "2 trials (2 ok), 1 hit, best 99.51 % (trial 0)"


def test_mnist_curves_show_every_point_and_keep_the_target_off_the_border(tmp_path):
    # a trial stuck at 10.6 % beside ten good ones: the old zoom on the ten best ends cut it off
    for n in range(11):
        accs = [0.106, 0.106] if n == 10 else [0.97 + n / 1000, 0.985 + n / 1000]
        trial_dir(tmp_path / str(n), [f"model.width={n + 6}"], metrics(accs))
    records = read_trials(find_trial_dirs(tmp_path))
    for r, label in zip(records, labels(records)):
        r["label"], r["hit"] = label, False
    fig, ax = accuracy_axes(records, plt)
    low, high = ax.get_ylim()
    drawn = [y for line in ax.get_lines() for y in line.get_ydata()]
    assert low < min(drawn) and max(drawn) < high and min(drawn) == pytest.approx(10.6)
    target = [line for line in ax.get_lines() if line.get_label().startswith("target")][0].get_ydata()[0]
    assert target == pytest.approx(99.4) and high - target > 0.2
    plt.close(fig)


def test_an_mnist_sweep_with_no_trial_ended_yet_has_the_mnist_view(tmp_path, capsys):
    # Hydra wrote .hydra/ as each job started; the composed config's budget says it is the MNIST trial
    for n in (0, 1):
        trial_dir(tmp_path / str(n), [f"model.width={n + 8}"])
        (tmp_path / str(n) / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"model": {"width": n + 8}, "budget": {"max_params": 20000, "max_epochs": 20, "target_acc": 0.994}}))
    _, rows, header, lines, _ = table(capsys, tmp_path)
    assert header[-6:] == ["params", "final%", "best%", "tgt@ep", "epochs", "s/ep"]
    assert lines[-1] == "2 trials (2 running), 0 hits, none finished"
