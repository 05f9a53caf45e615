"""`sweeper.compare` on trials a Ctrl-C (or SIGTERM) stopped: shown as `interrupted`, counted in the summary after
`failed`, never a hit or the best, and as many trials as the sweep's trials.csv lists.

What an interrupted trial leaves: `job_return.json` = {"status": "interrupted", "error": "interrupted by Ctrl-C"}
(sweeper/engine/worker.py), the MNIST trial's `metrics.json` with status `interrupted` (older ones: `failed`, reason
`interrupted (Ctrl-C)`), a worker's dir stopped before Hydra started in it (only `console.log`, or nothing), and in
the study a FAIL trial with user attrs `uncounted` and `reason: interrupted by Ctrl-C`, its params queued again
(WAITING, `requeued_from`) (sweeper/engine/ledger.py). The fast tests write these by hand and through the real
ledger and trials.csv writer; the slow one interrupts a real sweep.

    python -m pytest -q tests/test_compare_interrupted.py
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution

from sweeper.compare import main
from sweeper.engine.ledger import Ledger, requeue_stale
from sweeper.engine.results import write_trials_csv
from test_compare import metrics, trial_dir
from test_compare_any_app import any_app_trial, multirun_yaml
from test_plain_apps import APPS

INTERRUPTED = {"status": "interrupted", "error": "interrupted by Ctrl-C"}
STATUSES = {"ok", "pruned", "failed", "interrupted", "rejected", "running", "broken"}


def table(capsys, *args):
    """main(args) -> (exit code, {trial: its cells}, all stdout lines); the MNIST view's hit mark is a cell too."""
    code = main([str(a) for a in args])
    lines = capsys.readouterr().out.splitlines()
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        cells = cells[1:] if cells[:1] == ["*"] else cells
        if cells[1:2] and cells[1] in STATUSES:
            rows[cells[0]] = line.split()
    return code, rows, lines


def trials_csv(sweep):
    with open(sweep / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_mnist_trials_stopped_every_way_are_interrupted_never_hits_or_best(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {sweeper: {direction: maximize}}\n")
    trial_dir(sweep / "0", ["model.width=10"], metrics([0.99, 0.9951]))                       # a hit
    # stopped after two epochs higher than trial 0 ever got: as the trial and the sweep record it now
    trial_dir(sweep / "1", ["model.width=12"], dict(metrics([0.996, 0.997]), status="interrupted",
                                                   reason="interrupted (Ctrl-C)"))
    (sweep / "1" / "job_return.json").write_text(json.dumps(INTERRUPTED))
    # as a trial recorded it before metrics.json had the status
    trial_dir(sweep / "2", ["model.width=14"], dict(metrics([0.998]), status="failed", reason="interrupted (Ctrl-C)"))
    trial_dir(sweep / "3", ["model.width=16"], metrics([0.5], status="failed"))                 # failed: diverged
    (sweep / "4").mkdir()                                                # a worker stopped before Hydra started in it
    (sweep / "4" / "console.log").write_text("")
    (sweep / "5").mkdir()                                                # its dir made, nothing in it yet
    code, rows, lines = table(capsys, sweep)
    assert code == 0
    assert list(rows)[0] == "0" and rows["0"][0] == "*"
    assert {t: r[1 + (r[0] == "*")] for t, r in rows.items()} == {
        "0": "ok", "1": "interrupted", "2": "interrupted", "3": "failed", "4": "running", "5": "running"}
    assert rows["1"][0] == "1" and rows["2"][0] == "2"                   # no hit mark: not finished
    assert lines[-1] == "6 trials (1 ok, 1 failed, 2 interrupted, 2 running), 1 hit, best 99.51 % (trial 0)"


def test_any_apps_interrupted_trial_is_counted_not_best(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun_yaml(sweep, "minimize")
    any_app_trial(sweep / "0", ["x=3"], {"status": "completed", "value": 9.0})
    any_app_trial(sweep / "1", ["x=1"], INTERRUPTED)
    any_app_trial(sweep / "2", ["x=2"], {"status": "failed", "error": "ValueError: x=2 is too big"})
    code, rows, lines = table(capsys, sweep, "--json", tmp_path / "t.json")
    assert code == 0
    assert [r[:2] for r in rows.values()] == [["0", "ok"], ["1", "interrupted"], ["2", "failed"]]
    assert lines[-1] == "3 trials (1 ok, 1 failed, 1 interrupted), best value 9 (trial 0)"
    reasons = {j["trial"]: j["reason"] for j in json.loads((tmp_path / "t.json").read_text())}
    assert reasons[1] == "interrupted by Ctrl-C"


def test_a_study_interrupted_as_the_sweep_leaves_it_counts_as_trials_csv(tmp_path, capsys):
    """The real ledger and trials.csv writer on a SQLite study: four trials ran, a duplicate ask was closed, another
    sweep failed a fifth for its stale heartbeat, then Ctrl-C re-queued the three still running. compare lists what
    trials.csv lists, with and without the study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    ledger = Ledger(study, n_trials=10)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun_yaml(sweep, "minimize")
    space = {"x": FloatDistribution(-5.0, 5.0)}   # no duplicate proposals among these few
    trials = [ledger.ask(space) for _ in range(4)]
    for t in trials:
        t.set_user_attr("dir", str(sweep / str(t.number)))
    any_app_trial(sweep / "0", [f"x={trials[0].params['x']}"], {"status": "completed", "value": 5.0})
    ledger.tell(trials[0], 5.0, attrs={"status": "ok"})
    # trial 1's job ended just as the sweep stopped; trial 2 only started; trial 3's dir was made, nothing more
    any_app_trial(sweep / "1", [f"x={trials[1].params['x']}"], {"status": "completed", "value": 1.0})
    (sweep / "2").mkdir()
    (sweep / "2" / "console.log").write_text("")
    (sweep / "3").mkdir()
    ledger.uncount(study.ask(), "duplicate of another trial's params")       # closed at once, no dir: no trial
    stale = ledger.ask(space)                                   # its sweep died; another failed it and re-queued it
    stale.set_user_attr("dir", str(sweep / str(stale.number)))
    any_app_trial(sweep / str(stale.number), [f"x={stale.params['x']}"])
    study.tell(stale, state=optuna.trial.TrialState.FAIL)       # as optuna.storages.fail_stale_trials does
    requeue_stale(study, study.trials[stale.number])
    for t in ledger.running(mine=True):                                    # Ctrl-C, as OptunaSweep.interrupted does
        ledger.requeue(t, "interrupted by Ctrl-C")
    write_trials_csv(study, sweep / "trials.csv", ["value"])
    listed = trials_csv(sweep)
    assert [row["number"] for row in listed] == ["0", "1", "2", "3", "5"]
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 4   # the re-queued params

    code, rows, lines = table(capsys, sweep)
    assert code == 0 and list(rows) == ["1", "0", "2", "3", "5"]           # the dirs alone: 1 looks finished
    assert lines[-1] == "5 trials (2 ok, 3 running), best value 1 (trial 1)"
    code, rows, lines = table(capsys, sweep, "--storage", storage, "--json", tmp_path / "t.json")
    assert code == 0 and sorted(rows) == [row["number"] for row in listed]
    assert {t: r[1] for t, r in rows.items()} == {"0": "ok", "1": "interrupted", "2": "interrupted",
                                                  "3": "interrupted", "5": "interrupted"}
    assert lines[-1] == "5 trials (1 ok, 4 interrupted), best value 5 (trial 0)"
    reasons = {j["trial"]: j["reason"] for j in json.loads((tmp_path / "t.json").read_text())}
    assert reasons[1] == "interrupted by Ctrl-C"
    assert reasons[5] == "interrupted: no heartbeat from its sweep; re-run as trial 6"
    # the study alone, without the dirs: the same trials
    code, rows, lines = table(capsys, "--storage", storage)
    assert sorted(rows) == ["0", "1", "2", "3", "5"]
    assert lines[-1] == "5 trials (1 ok, 4 interrupted), best value 5 (trial 0)"


@pytest.mark.slow
def test_a_real_sweep_stopped_by_ctrl_c(tmp_path, capsys):
    """A plain app's sweep, two trials at a time, each job 2 s: Ctrl-C once the first two have ended and the next
    two are running. compare shows what trials.csv lists, the trials it stopped `interrupted`."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    p = subprocess.Popen([sys.executable, "-m", "plainapp.app", "--multirun", f"hydra.sweep.dir={tmp_path}/sweep",
                          f"out={tmp_path}", f"hydra.sweeper.storage='{storage}'", "hydra.sweeper.n_jobs=2",
                          "hydra.sweeper.n_trials=8"], cwd=APPS, start_new_session=True,
                         env={**os.environ, "HYDRA_FULL_ERROR": "0", "PLAINAPP_SLEEP": "2"},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    # ran-N.json: job N ended; seen-N.yaml: job N started (the job numbers are the trial numbers)
    while not (len(list(tmp_path.glob("ran-*.json"))) >= 2 and len(list(tmp_path.glob("seen-*.yaml"))) >= 4):
        assert time.time() < deadline and p.poll() is None, p.communicate()[0][-3000:]
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out[-3000:]
    sweep = tmp_path / "sweep"
    listed = {row["number"]: row for row in trials_csv(sweep)}
    stopped = {n for n, row in listed.items() if (row["reason"] or "").startswith("interrupted")}
    assert stopped, listed
    for args in ([], ["--storage", storage]):
        code, rows, lines = table(capsys, sweep, *args)
        assert code == 0 and sorted(rows) == sorted(listed), (args, lines)
    assert {t for t, r in rows.items() if r[1] == "interrupted"} == stopped       # with the study
    assert f"{len(stopped)} interrupted" in lines[-1]
