"""`sweeper.compare` on a fake multirun: three trials written by the real `train()`, the rest by hand (hits, an old
metrics.json, a broken one, a trial still running, a pruned one), and a small Optuna study in SQLite."""
import csv
import json
import os
import subprocess
import sys

import optuna
import pytest
import yaml

from conftest import ROOT, make_cfg
from sweeper.compare import main
from sweeper.mnist.trial import Rejected, train

TINY = ["data.train_subset=1000", "data.test_subset=200", "trainer.epochs=1", "trainer.batch_size=32"]  # ~1 s
PNG = b"\x89PNG\r\n\x1a\n"


def trial_dir(path, overrides, metrics=None):
    """A Hydra job dir as a sweep leaves it: .hydra/overrides.yaml, and metrics.json (a dict, or raw text) if given."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (path / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return path


def metrics(accs, params=8780, status="ok", overrides=(), seconds=20.0):
    """A metrics.json as train() writes it, for a run we don't have the minutes to train."""
    first = next((i + 1 for i, a in enumerate(accs) if a >= 0.994), None)
    return dict(params=params, status=status, reason=None if status == "ok" else f"{status} by hand", seed=0,
                device="cpu", overrides=list(overrides), budget=dict(max_params=20000, max_epochs=20, target_acc=0.994),
                epochs=[dict(epoch=i + 1, train_loss=0.1, train_acc=a, test_loss=0.05, test_acc=a, lr=0.01,
                             seconds=seconds) for i, a in enumerate(accs)],
                best_test_acc=max(accs, default=None), final_test_acc=accs[-1] if accs else None,
                first_epoch_at_target=first, wall_seconds=seconds * len(accs) + 1)


def swept(width, lr):
    return ["trainer.epochs=15", f"model.width={width}", f"optimizer.lr={lr}"]


def ran(path, *overrides):
    """A trial through the real code path: train() writes metrics.json whatever the outcome."""
    trial_dir(path, list(overrides))
    try:
        train(make_cfg(*overrides), str(path), overrides=list(overrides))
    except Rejected:
        pass


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("outputs") / "multirun" / "2026-11-26" / "12-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")                 # files a sweep dir holds besides trials
    (sweep / "trials.csv").write_text("number,value\n0,0.5\n")
    ran(sweep / "0", *TINY, "model.width=8", "optimizer.lr=0.05")
    ran(sweep / "1", *TINY, "model.width=12", "optimizer.lr=0.02")
    ran(sweep / "2", *TINY, "model.width=64", "optimizer.lr=0.05")      # over budget: rejected before training
    trial_dir(sweep / "3", swept(10, 0.02), metrics([0.985, 0.992, 0.9951], overrides=swept(10, 0.02)))  # a hit
    trial_dir(sweep / "4", swept(10, 0.05), metrics([0.990, 0.9939], overrides=swept(10, 0.05)))   # just below target
    old = metrics([0.99, 0.9942], params=9000, overrides=swept(11, 0.05))   # an older metrics.json: fewer keys
    for key in ("budget", "best_test_acc", "final_test_acc", "first_epoch_at_target", "wall_seconds"):
        del old[key]
    trial_dir(sweep / "5", swept(11, 0.05), old)
    trial_dir(sweep / "6", swept(9, 0.05), '{"params": 9000, "status": "ok", "epo')   # killed mid-write by hand
    trial_dir(sweep / "7", swept(9, 0.02))                                           # still running
    trial_dir(sweep / "8", swept(14, 0.05), metrics([0.95, 0.96], params=15000, status="pruned"))
    trial_dir(sweep / "10", swept(12, 0.01), metrics([0.991, 0.993, 0.9945], params=9500, seconds=25.0))  # a hit
    return sweep


def table(capsys, *args):
    """main(args) -> (exit code, {trial: row line}, all stdout lines, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    rows = {line[1:].split()[0]: line for line in lines[1:] if line[:3] in ("   ", "*  ")}   # not the legend
    return code, rows, lines, err


def test_table_rows_order_marks_and_summary(sweep, capsys):
    code, rows, lines, err = table(capsys, sweep)
    assert code == 0, err
    # final accuracy, best first (the real trials 0 and 1 learn little in one short epoch); the pruned trial 8's
    # partial accuracy is higher than theirs, but a finished trial ranks first; then no accuracy
    assert list(rows)[:4] == ["3", "10", "5", "4"] and sorted(list(rows)[4:6]) == ["0", "1"]
    assert list(rows)[6:] == ["8", "2", "6", "7"]
    assert {t for t, line in rows.items() if line.startswith("*")} == {"3", "10", "5"}
    assert rows["3"].split() == ["*", "3", "ok", "15", "10", "0.02", "-", "8780", "99.51", "99.51", "3", "3", "20.0"]
    assert rows["5"].split()[-6:] == ["9000", "99.42", "99.42", "2", "2", "20.0"]     # derived from its epochs
    assert rows["2"].split()[:2] == ["2", "rejected"] and int(rows["2"].split()[-6]) > 20000
    assert rows["7"].split()[:2] == ["7", "running"] and rows["6"].split()[:2] == ["6", "broken"]
    assert rows["8"].split()[1] == "pruned"
    header = lines[0].split()
    assert header[:2] == ["trial", "status"]
    assert header[-6:] == ["params", "final%", "best%", "tgt@ep", "epochs", "s/ep"]
    assert header[2:6] == ["t.epochs", "width", "lr", "train_subset"]      # set in every trial first
    assert "(not shown, varying too: data.test_subset, trainer.batch_size; see --csv/--json)" in lines
    assert lines[-1] == "10 trials (6 ok, 1 pruned, 1 rejected, 1 running, 1 broken), 3 hits, best 99.51 % (trial 3)"
    assert lines[-2] == "* hit: final test acc >= 99.40 %, params <= 20000, epochs <= 20"
    assert str(sweep / "6" / "metrics.json") in err and "multirun.yaml" not in err
    assert max(len(line) for line in lines) <= 100


def test_only_overrides_that_vary_between_shown_trials(sweep, capsys):
    _, rows, lines, _ = table(capsys, sweep, "--only-hits")
    assert list(rows) == ["3", "10", "5"]
    assert lines[0].split()[:5] == ["trial", "status", "width", "lr", "params"]   # trainer.epochs=15 in all three
    assert lines[-1].startswith("10 trials")                                       # the summary counts them all


@pytest.mark.parametrize("key,order", [
    ("params", "0 3 4 5 10 1 8 2 6 7"),        # ascending; ties keep dir order; trials without params last
    ("width", "0 6 7 3 4 5 1 10 8 2"),         # as numbers: 8 < 9 < 10 < 12 < 64
    ("model.width", "0 6 7 3 4 5 1 10 8 2"),
    ("s/ep", "R R 3 4 5 8 10 2 6 7"),          # R: the real trials 0 and 1, a second or so each
    ("best_test_acc", "3 10 5 4 R R 8 2 6 7"),      # the pruned trial 8 after every finished one
])
def test_sort(sweep, capsys, key, order):
    _, rows, _, _ = table(capsys, sweep, "--sort", key)
    # how the two real trials compare in speed or accuracy is theirs to decide: R checks only where they stand
    real = ["R" if t in ("0", "1") and "R" in order else t for t in rows]
    assert real == order.split()


def test_unknown_sort_key_names_the_choices(sweep, capsys):
    code, _, _, err = table(capsys, sweep, "--sort", "speed")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("compare: --sort speed") and "final_test_acc" in last and "model.width" in last


def test_csv_and_json_hold_every_trial_shown_with_all_overrides(sweep, capsys, tmp_path):
    code, rows, _, _ = table(capsys, sweep, "--csv", tmp_path / "t.csv", "--json", tmp_path / "t.json")
    assert code == 0
    with open(tmp_path / "t.csv", newline="") as f:
        table_csv = list(csv.DictReader(f))
    records = json.loads((tmp_path / "t.json").read_text())
    assert [r["trial"] for r in table_csv] == list(rows) == [str(r["trial"]) for r in records]
    by_trial = {r["trial"]: r for r in table_csv}
    assert by_trial["0"]["data.test_subset"] == "200" and by_trial["0"]["trainer.batch_size"] == "32"  # not shown
    assert by_trial["3"]["data.test_subset"] == "" and by_trial["3"]["hit"] == "True"
    assert float(by_trial["3"]["final_test_acc"]) == 0.9951 and by_trial["7"]["status"] == "running"
    assert by_trial["6"]["status"] == "broken" and "JSONDecodeError" in by_trial["6"]["reason"]
    j = {r["trial"]: r for r in records}
    assert j[0]["overrides"] == {"data.train_subset": "1000", "data.test_subset": "200", "trainer.epochs": "1",
                                 "trainer.batch_size": "32", "model.width": "8", "optimizer.lr": "0.05"}
    assert j[3]["test_acc"] == [0.985, 0.992, 0.9951] and j[3]["budget"]["max_params"] == 20000
    assert j[0]["final_test_acc"] == json.loads((sweep / "0" / "metrics.json").read_text())["final_test_acc"]
    assert j[0]["dir"] == str(sweep / "0") and j[10]["seconds_per_epoch"] == 25.0

    table(capsys, sweep, "--only-hits", "--csv", tmp_path / "hits.csv")
    with open(tmp_path / "hits.csv", newline="") as f:
        assert [r["trial"] for r in csv.DictReader(f)] == ["3", "10", "5"]


def assert_png(path):
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000, path


def test_plots_from_dirs(sweep, capsys, tmp_path):
    code, _, _, err = table(capsys, sweep, "--plot", tmp_path / "plots")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["curves.png", "params_vs_acc.png"]
    for p in (tmp_path / "plots").iterdir():
        assert_png(p)
        assert str(p) in err


# study trials: model.width, optimizer.lr, test accuracy after each epoch (params: 700 per unit of width)
STUDY = [(8, 0.05, [0.985, 0.990]), (12, 0.02, [0.991, 0.9952]), (6, 0.01, [0.980, 0.986]),
         (14, 0.005, [0.9945, 0.993])]


def make_study(tmp_path, sweep, n_done):
    """A study as sweeper.engine.sweep leaves it: params by override key, test accuracy per epoch, user_attrs; then a pruned
    trial and a closed duplicate. Trial 0 says it wrote the dir `sweep/0`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    study = optuna.create_study(study_name="smallest", storage=storage, direction="maximize")
    for width, lr, accs in STUDY[:n_done]:
        study.enqueue_trial({"model.width": width, "optimizer.lr": lr})
        t = study.ask()
        t.suggest_int("model.width", 6, 14), t.suggest_float("optimizer.lr", 1e-3, 0.1, log=True)
        for epoch, acc in enumerate(accs, 1):
            t.report(acc, epoch)
        t.set_user_attr("params", 700 * width)
        t.set_user_attr("epochs", len(accs))
        if t.number == 0:
            t.set_user_attr("dir", str(sweep / "0"))
        study.tell(t, accs[-1])
    t = study.ask()
    t.suggest_int("model.width", 6, 14)
    t.report(0.9, 1)
    study.tell(t, state=optuna.trial.TrialState.PRUNED)
    t = study.ask()                                   # how sweeper.engine.sweep closes a duplicate ask: not a trial
    t.set_user_attr("uncounted", True)
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    return storage


def test_study_merges_by_dir_and_plots_optuna_views(sweep, capsys, tmp_path):
    storage = make_study(tmp_path, sweep, n_done=4)
    code, rows, lines, err = table(capsys, sweep, "--storage", storage, "--study", "smallest",
                                   "--plot", tmp_path / "plots", "--json", tmp_path / "t.json")
    assert code == 0, err
    records = {(r["sweep"], r["trial"]): r for r in json.loads((tmp_path / "t.json").read_text())}
    assert len(records) == 10 + 3 + 1                      # study trials 1-3 and the pruned 4 stand alone
    merged = records[("12-00-00", 0)]                      # the dir's own numbers and overrides, the study's value
    assert merged["params"] == json.loads((sweep / "0" / "metrics.json").read_text())["params"]
    assert merged["status"] == "ok" and merged["overrides"]["model.width"] == "8" and merged["value"] == 0.990
    assert records[("smallest", 1)]["overrides"] == {"model.width": "12", "optimizer.lr": "0.02"}
    assert records[("smallest", 4)]["status"] == "pruned" and records[("smallest", 4)]["test_acc"] == [0.9]
    # ids repeat between the sweep and the study, so rows are named sweep/trial
    assert rows["smallest/1"].split() == ["*", "smallest/1", "ok", "12", "0.02", "-", "8400", "99.52", "99.52", "2",
                                          "2", "-"]
    assert rows["smallest/3"].split()[-6:] == ["9800", "99.30", "99.45", "1", "2", "-"]   # reached 99.4, fell back
    assert rows["12-00-00/1"].split()[:2] == ["12-00-00/1", "ok"]
    assert lines[-1] == ("14 trials (9 ok, 2 pruned, 1 rejected, 1 running, 1 broken), 4 hits, "
                         "best 99.52 % (trial smallest/1)")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["curves.png", "optimization_history.png", "param_importances.png", "params_vs_acc.png"]
    for p in (tmp_path / "plots").iterdir():
        assert_png(p)


def test_study_alone_with_one_trial_skips_importances(sweep, capsys, tmp_path):
    storage = make_study(tmp_path, sweep, n_done=1)
    code, rows, _, err = table(capsys, "--storage", storage, "--plot", tmp_path / "plots")   # the only study
    assert code == 0, err
    assert list(rows) == ["0", "1"]
    assert "skipping param_importances.png" in err and ">= 2 completed trials" in err
    assert (tmp_path / "plots" / "optimization_history.png").exists()
    assert not (tmp_path / "plots" / "param_importances.png").exists()


def test_missing_study_or_database_is_one_line_and_creates_nothing(sweep, capsys, tmp_path):
    code, rows, _, err = table(capsys, sweep, "--storage", f"sqlite:///{tmp_path / 'nope.db'}", "--study", "x")
    assert code == 0 and len(rows) == 10                     # the dirs are still shown
    assert f"no such database file: {tmp_path / 'nope.db'}" in err and not (tmp_path / "nope.db").exists()
    storage = make_study(tmp_path, sweep, n_done=1)
    code, _, _, err = table(capsys, "--storage", storage, "--study", "other")
    assert code == 1 and f"{storage}: no study named 'other'" in err


def test_nothing_readable_exits_nonzero_naming_the_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, _, err = table(capsys, tmp_path / "empty", tmp_path / "absent")
    assert code == 1
    assert f"{tmp_path / 'empty'}: no trials here" in err and f"{tmp_path / 'absent'}: no such directory" in err
    trial_dir(tmp_path / "bad" / "0", ["model.width=8"], "not json")
    code, _, _, err = table(capsys, tmp_path / "bad")
    assert code == 1 and f"cannot read {tmp_path / 'bad' / '0' / 'metrics.json'}" in err


def test_one_bad_path_does_not_hide_the_others(sweep, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, rows, _, err = table(capsys, tmp_path / "empty", sweep)
    assert code == 0 and len(rows) == 10 and "no trials here" in err


def test_single_run_dirs_and_parents_of_several_sweeps(tmp_path, capsys):
    run = trial_dir(tmp_path / "outputs" / "2026-11-26" / "09-15-00", ["model.width=10"], metrics([0.9945]))
    code, rows, _, _ = table(capsys, run)
    assert code == 0 and list(rows) == ["09-15-00"]
    for sweep, acc in [("12-00-00", 0.99), ("13-00-00", 0.98)]:
        for num in range(2):
            trial_dir(tmp_path / "multirun" / sweep / str(num), [f"model.width={8 + num}"], metrics([acc - num / 100]))
    code, rows, _, _ = table(capsys, tmp_path / "multirun")
    assert list(rows) == ["12-00-00/0", "12-00-00/1", "13-00-00/0", "13-00-00/1"]


def test_many_varying_overrides_still_fit_100_columns(tmp_path, capsys):
    for num in range(3):
        over = [f"group{k}.some_long_key_{k}=value_that_is_long_{num}" for k in range(8)]
        trial_dir(tmp_path / str(num), over, metrics([0.99], overrides=over))
    code, rows, lines, _ = table(capsys, tmp_path)
    assert code == 0 and len(rows) == 3
    assert max(len(line) for line in lines) <= 100
    assert "(not shown, varying too: group" in "\n".join(lines)


@pytest.mark.slow
def test_command_line_as_a_user_types_it(sweep, tmp_path):
    r = subprocess.run([sys.executable, "-m", "sweeper.compare", str(sweep), "--sort", "params", "--only-hits",
                        "--csv", str(tmp_path / "t.csv")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=os.environ)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[:3] == ["*", "3", "ok"]
    assert "3 hits" in r.stdout and (tmp_path / "t.csv").exists()
