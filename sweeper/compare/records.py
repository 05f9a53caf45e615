"""Read trials into records: trial dirs on disk, and the trials of an Optuna study.

`python -m sweeper.compare` shows a sweep from what it left behind, whether it finished, was killed or is still
running: each trial dir (and each study trial) becomes one flat record (`sweeper.mnist.metrics.new_record`), whatever
state it is in, and a study fills the gaps of the dirs it ran. Nothing here prints a table or draws a plot.
"""
import json
import os
import sys

import yaml

from sweeper.mnist.metrics import (DEFAULT_BUDGET, confirmation_dirs, first_at_target, from_metrics, new_record, over_seeds,
                             read)


def warn(msg):
    # every message of `python -m sweeper.compare` goes through here, whichever module it comes from
    print(f"compare: {msg}", file=sys.stderr)


# -----------------------------------------------------------------------------
# reading trial dirs

def is_trial_dir(path):
    return (path / ".hydra").is_dir() or (path / "metrics.json").is_file()


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


def read_trial(d):
    """One record from a trial dir: `running` while it has no metrics.json, `broken` when that can't be read."""
    rec = new_record(trial=int(d.name) if d.name.isdigit() else d.name, sweep=d.parent.name, dir=str(d))
    overrides = read_overrides(d)
    path = d / "metrics.json"
    if not path.is_file():
        # Hydra writes .hydra/ as the job starts and train() writes metrics.json as it ends (a killed trial stays here)
        rec.update(status="running", overrides=parse_overrides(overrides))
        return rec
    try:
        m = json.loads(path.read_text())
        rec.update(from_metrics(m))
        rec["overrides"] = parse_overrides(overrides if overrides is not None else m.get("overrides"))
        confirmations = confirmation_dirs(d)   # seed<N>/: the same trial on more seeds
        seeds = over_seeds([m] + [read(c) for c in confirmations])
        rec.update(seeds=seeds["seeds"], min_final_test_acc=seeds["min_final_test_acc"],
                   mean_final_test_acc=seeds["mean_final_test_acc"], seeds_hit=seeds["hit"] if confirmations else None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        warn(f"cannot read {path}: {e}")
        rec.update(status="broken", reason=f"{type(e).__name__}: {e}", overrides=parse_overrides(overrides))
    return rec


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
    single = len(study.directions) == 1
    maximize = study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    statuses = dict(COMPLETE="ok", PRUNED="pruned", FAIL="failed")
    records = []
    for t in study.trials:
        ua = t.user_attrs
        if ua.get("uncounted") and not ua.get("dir"):
            continue   # a duplicate or surplus ask that sweeper.engine.sweep closed at once: bookkeeping, not a trial
        curve = [v for _, v in sorted(t.intermediate_values.items())]   # the test accuracy reported after each epoch
        value = t.value if single else t.values
        final = ua.get("final_test_acc", curve[-1] if curve else value if maximize else None)
        epochs = ua.get("epochs")
        budget = {**DEFAULT_BUDGET, **(ua.get("budget") or {})}
        records.append(new_record(
            trial=t.number, sweep=study.study_name,
            status=ua.get("status") or statuses.get(t.state.name, t.state.name.lower()),
            params=ua.get("params"), final_test_acc=final,
            best_test_acc=ua.get("best_test_acc", max(curve, default=final)),
            first_epoch_at_target=ua.get("first_epoch_at_target", first_at_target(curve, budget["target_acc"])),
            epochs=epochs if isinstance(epochs, int) else len(curve) if curve else None,
            seconds_per_epoch=ua.get("seconds_per_epoch"), value=value, reason=ua.get("reason"), dir=ua.get("dir"),
            overrides={k: str(v) for k, v in t.params.items()}, budget=budget, test_acc=curve,
            seeds=ua.get("seeds"), min_final_test_acc=ua.get("min_final_test_acc"),
            mean_final_test_acc=ua.get("mean_final_test_acc"),
            seeds_hit=ua.get("hit") if (ua.get("seeds") or 1) > 1 else None))
    return study, records


def merge(dir_records, study_records):
    """Study trials fill the gaps of the dir record their user_attrs['dir'] names (relative to the current dir)."""
    by_dir = {os.path.realpath(r["dir"]): r for r in dir_records}
    alone = []
    for s in study_records:
        r = by_dir.get(os.path.realpath(s["dir"])) if s["dir"] else None
        if r is None:
            alone.append(s)
            continue
        for key, value in s.items():
            if r[key] in (None, [], {}):
                r[key] = value
        if r["status"] in ("running", "broken"):   # the study knows how a killed or unreadable trial ended
            r["status"] = s["status"]
        r["trial"], r["value"] = s["trial"], s["value"]
    return dir_records + alone
