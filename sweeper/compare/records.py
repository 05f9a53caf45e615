"""Read trials into records: trial dirs on disk, and the trials of an Optuna study.

`python -m sweeper.compare` shows a sweep from what it left behind, whether it finished, was killed or is still
running: each trial dir (and each study trial) becomes one flat record (`sweeper.mnist.metrics.new_record`, plus
the fields `record` adds), whatever state it is in, and a study fills the gaps of the dirs it ran. Nothing here
prints a table or draws a plot.

Two kinds of trial: the MNIST trial writes `metrics.json` (accuracies, params, a budget: `metrics` is True), any
other Hydra app leaves what its task returned, in `job_return.json` (sweeper/engine/worker.py) or in the study.
Their values are named and judged as the sweep that ran them said: its `multirun.yaml` (hydra.sweeper.direction
and objectives), or the study's own directions and metric names.
"""
import json
import os
import sys

import yaml

from sweeper.engine import policy
from sweeper.engine.worker import RETURN_FILE
from sweeper.mnist.metrics import (DEFAULT_BUDGET, confirmation_dirs, first_at_target, from_metrics, new_record,
                                   over_seeds, read)

DIRECTIONS = ("minimize", "maximize")
# user attrs the sweep sets only on trials that wrote metrics.json: a study holding them is an MNIST study
METRICS_ATTRS = ("epochs", "params", "final_test_acc")


def warn(msg):
    # every message of `python -m sweeper.compare` goes through here, whichever module it comes from
    print(f"compare: {msg}", file=sys.stderr)


def record(**fields):
    """A flat record: metrics.json's fields, and what any app's trial has. `values`: one float per objective;
    `objectives`: the sweep's names for them (None: `value` / `values_i`); `directions`: minimize or maximize per
    objective (None: unknown); `reported`: [step, value] pairs the trial passed to sweeper.report."""
    return new_record(**{**dict(metrics=False, values=None, objectives=None, directions=None, reported=[]), **fields})


def names_for(objectives, n):
    """The names of n values, as the sweep's trials.csv and study name them (sweeper/engine/policy.py's rule):
    hydra.sweeper.objectives (or the study's metric names), else Optuna's own `value` / `values_0, values_1, ...`."""
    return policy.value_names(objectives if objectives and len(objectives) == n else None, n)


def value_names(r):
    """The names of a record's value columns (none while neither its directions nor its values are known)."""
    n = len(r["directions"] or r["values"] or [])
    return names_for(r["objectives"], n) if n else []


# -----------------------------------------------------------------------------
# reading trial dirs

def is_trial_dir(path):
    if (path / ".hydra").is_dir() or (path / "metrics.json").is_file() or (path / RETURN_FILE).is_file():
        return True
    # a job stopped before Hydra wrote .hydra/ (Ctrl-C while a worker process starts) holds only the sweep's
    # console.log, or nothing yet; trials.csv lists it all the same, so a numbered dir with console.log, or any
    # numbered dir in a sweep dir (it holds multirun.yaml), is a trial dir
    return path.name.isdigit() and ((path / "console.log").is_file() or (path.parent / "multirun.yaml").is_file())


def natural(path):
    # multirun job dirs are numbers: 2 before 10
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def find_trial_dirs(path):
    """Trial dirs at or under `path`, in name order; the folders inside a trial dir are not searched."""
    if is_trial_dir(path):
        return [path]
    try:
        subs = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural)
    except OSError as e:
        warn(f"cannot list {path}: {e.strerror}")
        return []
    return [d for sub in subs for d in find_trial_dirs(sub)]


def parse_overrides(lines):
    """['model.width=12', '+x=1'] -> {'model.width': '12', 'x': '1'}; values stay as they were typed."""
    out = {}
    for line in lines or []:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+~")] = value
    return out


def read_overrides(d):
    path = d / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as e:
        warn(f"cannot read {path}: {e}")
        return None
    if not isinstance(overrides, list):
        warn(f"cannot read {path}: not a list of overrides")
        return None
    return overrides


def sweep_settings(sweep_dir):
    """(directions, objectives) of the sweep whose multirun.yaml is in `sweep_dir`, or None where it holds none
    (a single run, a copied trial dir, another sweeper, a value left as an interpolation)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None, None
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        warn(f"cannot read {path}: {str(e).splitlines()[0]}")
        return None, None
    s = (((cfg or {}).get("hydra") or {}).get("sweeper") or {}) if isinstance(cfg, dict) else {}
    direction = s.get("direction") if isinstance(s, dict) else None
    directions = [direction] if isinstance(direction, str) else direction
    if not (isinstance(directions, list) and directions
            and all(isinstance(d, str) and d.lower() in DIRECTIONS for d in directions)):
        return None, None
    objectives = s.get("objectives")
    ok = isinstance(objectives, list) and len(objectives) == len(directions)
    return [d.lower() for d in directions], [str(o) for o in objectives] if ok else None


def interrupted(reason):
    """The reason a sweep (sweeper/engine/ledger.py) or a trial (metrics.json) gives an interrupted run: Ctrl-C,
    SIGTERM, or a sweep that died."""
    return isinstance(reason, str) and reason.startswith("interrupted")


def from_return(path, n):
    """The record fields a job_return.json gives: {"status": "completed", "value": ...} or {"status": "pruned",
    "failed" or "interrupted", "error": ...}, as sweeper/engine/worker.py writes it."""
    try:
        ret = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warn(f"cannot read {path}: {e}")
        return dict(status="broken", reason=f"{type(e).__name__}: {e}")
    status = ret.get("status") if isinstance(ret, dict) else None
    if status == "completed":
        # judged as the sweep judged it; with no known direction, as many values as there are
        value = ret.get("value")
        values, problem = policy.as_values(value, n or (len(value) if isinstance(value, list) else 1))
        if problem:
            return dict(status="failed", reason=problem)
        return dict(status="ok", values=values, value=values[0] if len(values) == 1 else values)
    if status in ("pruned", "failed", "interrupted"):
        return dict(status=status, reason=ret.get("error"))
    warn(f"cannot read {path}: status {status!r} is none of completed, pruned, failed, interrupted")
    return dict(status="broken", reason=f"unknown status {status!r}")


def read_trial(d, settings=(None, None)):
    """One record from a trial dir: `running` while it has neither metrics.json nor job_return.json, `broken`
    when the one it has can't be read. `settings`: its sweep's (directions, objectives), see `sweep_settings`."""
    directions, objectives = settings
    rec = record(trial=int(d.name) if d.name.isdigit() else d.name, sweep=d.parent.name, dir=str(d),
                 directions=directions, objectives=objectives)
    overrides = read_overrides(d)
    path = d / "metrics.json"
    if not path.is_file():
        rec["overrides"] = parse_overrides(overrides)
        if (d / RETURN_FILE).is_file():   # any app's job, as the sweep's worker (or the sweep itself) saw it end
            rec.update(from_return(d / RETURN_FILE, len(directions or [])))
        else:
            # Hydra writes .hydra/ as the job starts; the files above come as it ends (a killed trial stays here)
            rec.update(status="running", metrics=composes_mnist(d))
        return rec
    rec["metrics"] = True
    try:
        m = json.loads(path.read_text())
        rec.update(from_metrics(m))
        if rec["status"] == "failed" and interrupted(rec["reason"]):   # written before metrics.json said so
            rec["status"] = "interrupted"
        rec["overrides"] = parse_overrides(overrides if overrides is not None else m.get("overrides"))
        # seed<N>/: the same trial on more seeds; not those its sweep cancelled (another seed had settled it)
        confirmations = [c for c in confirmation_dirs(d) if not _stopped(c)]
        seeds = over_seeds([m] + [read(c) for c in confirmations])
        rec.update(seeds=seeds["seeds"], min_final_test_acc=seeds["min_final_test_acc"],
                   mean_final_test_acc=seeds["mean_final_test_acc"], seeds_hit=seeds["hit"] if confirmations else None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        warn(f"cannot read {path}: {e}")
        rec.update(status="broken", reason=f"{type(e).__name__}: {e}", overrides=parse_overrides(overrides))
    return rec


def _stopped(run_dir):
    try:
        return json.loads((run_dir / RETURN_FILE).read_text()).get("status") == "interrupted"
    except (OSError, ValueError, AttributeError):
        return False


def composes_mnist(d):
    """A job still running: is it the MNIST trial (its composed config has the budget that metrics.json will)?"""
    try:
        cfg = yaml.safe_load((d / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("budget"), dict)


def read_trials(dirs):
    """One record per trial dir; each sweep's multirun.yaml (a trial dir's parent holds it) is read once."""
    settings = {}
    for d in dirs:
        if d.parent not in settings:
            settings[d.parent] = sweep_settings(d.parent)
    return [read_trial(d, settings[d.parent]) for d in dirs]


# -----------------------------------------------------------------------------
# reading an Optuna study

def sqlite_file(storage):
    return storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None


def read_study(storage, name):
    """The study and one record per trial; user_attrs (params, epochs, status, dir, ...) fill what they hold."""
    import optuna  # imported here: a plain table of run dirs does without it

    # load_study on a missing SQLite file would quietly create an empty database there
    if sqlite_file(storage) and not os.path.isfile(sqlite_file(storage)):
        raise FileNotFoundError(f"no such database file: {sqlite_file(storage)}")
    study = optuna.load_study(study_name=name, storage=storage)
    # the trials trials.csv lists (sweeper/engine/results.py): not re-queued params that have not run yet
    # (WAITING), nor a duplicate or surplus ask the sweep closed at once (uncounted, no dir): bookkeeping
    trials = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING
              and not (t.user_attrs.get("uncounted") and not t.user_attrs.get("dir"))]
    # a trial failed for a stale heartbeat is named by its re-run's requeued_from (sweeper/engine/ledger.py)
    requeued = {t.user_attrs["requeued_from"]: t.number for t in study.trials if "requeued_from" in t.user_attrs}
    metrics = any(k in t.user_attrs for t in trials for k in METRICS_ATTRS)
    directions = [d.name.lower() for d in study.directions]
    statuses = dict(COMPLETE="ok", PRUNED="pruned", FAIL="failed")
    records = []
    for t in trials:
        ua = t.user_attrs
        status, reason = ua.get("status") or statuses.get(t.state.name, t.state.name.lower()), ua.get("reason")
        if t.state.name == "FAIL" and (ua.get("uncounted") and interrupted(reason) or t.number in requeued):
            # Ctrl-C, or its sweep died: not counted, its params re-run as another trial
            status = "interrupted"
            if t.number in requeued and not interrupted(reason):
                reason = f"interrupted: no heartbeat from its sweep; re-run as trial {requeued[t.number]}"
        rec = record(trial=t.number, sweep=study.study_name, metrics=metrics, status=status,
                     value=t.value if len(directions) == 1 else t.values, values=t.values, reason=reason,
                     dir=ua.get("dir"), overrides={k: str(v) for k, v in t.params.items()},
                     directions=directions, objectives=study.metric_names,
                     reported=[[step, v] for step, v in sorted(t.intermediate_values.items())])
        if metrics:
            rec.update(mnist_fields(t, rec["value"], directions == ["maximize"]))
        records.append(rec)
    return study, records


def mnist_fields(t, value, maximize):
    """The metrics.json fields of an MNIST study trial, from the user attrs the sweep copied from it; what they
    lack comes from the test accuracy reported after each epoch."""
    ua = t.user_attrs
    curve = [v for _, v in sorted(t.intermediate_values.items())]
    final = ua.get("final_test_acc", curve[-1] if curve else value if maximize else None)
    epochs = ua.get("epochs")
    budget = {**DEFAULT_BUDGET, **(ua.get("budget") or {})}
    return dict(
        params=ua.get("params"), final_test_acc=final, best_test_acc=ua.get("best_test_acc", max(curve, default=final)),
        first_epoch_at_target=ua.get("first_epoch_at_target", first_at_target(curve, budget["target_acc"])),
        epochs=epochs if isinstance(epochs, int) else len(curve) if curve else None,
        seconds_per_epoch=ua.get("seconds_per_epoch"), budget=budget, test_acc=curve, seeds=ua.get("seeds"),
        min_final_test_acc=ua.get("min_final_test_acc"), mean_final_test_acc=ua.get("mean_final_test_acc"),
        seeds_hit=ua.get("hit") if (ua.get("seeds") or 1) > 1 else None)


def merge(dir_records, study_records):
    """Study trials fill the gaps of the dir record their user_attrs['dir'] names (relative to the current dir).
    The study's values and directions win; it names its values where it was told names (metric names), else
    the names the dirs' sweep gave them stand for all its trials."""
    by_dir = {os.path.realpath(r["dir"]): r for r in dir_records}
    alone, matched = [], []
    for s in study_records:
        r = by_dir.get(os.path.realpath(s["dir"])) if s["dir"] else None
        if r is None:
            alone.append(s)
            continue
        for key, value in s.items():
            if r[key] in (None, [], {}):
                r[key] = value
        # the study knows how a killed or unreadable trial ended, and which runs the sweep stopped: a job that
        # ended as its sweep was interrupted was not counted, whatever its dir says
        if s["status"] == "interrupted":
            r.update(status="interrupted", reason=s["reason"])
        elif r["status"] in ("running", "broken"):
            r["status"] = s["status"]
        r.update(trial=s["trial"], value=s["value"], values=s["values"], directions=s["directions"],
                 metrics=r["metrics"] or s["metrics"])
        matched.append(r)
    n = len(study_records[0]["directions"]) if study_records else 0
    named = next((r["objectives"] for r in study_records + matched if r["objectives"] and len(r["objectives"]) == n),
                 None)
    for r in study_records + matched:
        r["objectives"] = named
    return dir_records + alone
