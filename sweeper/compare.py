"""Compare trials: `python -m sweeper.compare PATH [PATH ...] [--storage URL --study NAME] [options]`.

PATH is a trial dir (a Hydra job output dir: `.hydra/` from the start, `metrics.json` once the trial has ended),
a multirun dir, or any folder above them. Every trial becomes one flat record; the records are printed as one
table sorted by the objective (final test accuracy) and can be written to CSV/JSON and plotted.
An Optuna study (--storage/--study) adds its trials: a study trial whose user_attrs["dir"] is a trial dir read
from PATH fills the gaps of that dir's record and gives it its trial number; the others are listed on their own.
"""
import argparse
import csv
import json
import os
import signal
import sys
import textwrap
import warnings
from collections import Counter
from pathlib import Path

import yaml

DEFAULT_BUDGET = dict(max_params=20000, max_epochs=20, target_acc=0.994)  # conf/train.yaml, for outputs without one
WIDTH = 100        # the table fits a 100-column terminal; varying overrides that don't fit are named below it
CUT = 12           # override headers and values are cut to this many characters in the table (not in CSV/JSON)
STATUSES = ["ok", "pruned", "failed", "rejected", "running", "broken"]  # the summary's order
# one record per trial; these scalar fields are the CSV/JSON columns (accuracies are fractions, as in metrics.json)
FIELDS = ["trial", "sweep", "status", "hit", "params", "final_test_acc", "best_test_acc", "first_epoch_at_target",
          "epochs", "seconds_per_epoch", "wall_seconds", "value", "reason", "dir"]
NUMBERS = ["params", "final_test_acc", "best_test_acc", "first_epoch_at_target", "seconds_per_epoch", "wall_seconds"]
DESCENDING = {"hit", "final_test_acc", "best_test_acc"}   # --sort puts these best first, everything else ascending


def pct(v):
    return f"{100 * v:.2f}"


# the table's columns after trial, status and the varying overrides: header, field, format
COLUMNS = [("params", "params", str), ("final%", "final_test_acc", pct), ("best%", "best_test_acc", pct),
           ("tgt@ep", "first_epoch_at_target", str), ("epochs", "epochs", str),
           ("s/ep", "seconds_per_epoch", "{:.1f}".format)]


def warn(msg):
    print(f"compare: {msg}", file=sys.stderr)


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def new_record(**fields):
    rec = dict.fromkeys(FIELDS)
    rec.update(overrides={}, budget=dict(DEFAULT_BUDGET), test_acc=[])
    rec.update(fields)
    return rec


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


def first_at_target(curve, target):
    return next((epoch for epoch, acc in enumerate(curve, 1) if acc >= target), None)


def from_metrics(m):
    """The record fields a metrics.json gives. Older or partial files lack some keys: derive them from the epochs."""
    budget = {**DEFAULT_BUDGET, **(m.get("budget") or {})}
    epochs = m.get("epochs") or []
    curve = [e["test_acc"] for e in epochs]
    seconds = [e["seconds"] for e in epochs if e.get("seconds") is not None]
    fields = dict(
        status=m.get("status", "ok"), reason=m.get("reason"), params=m.get("params"), budget=budget, test_acc=curve,
        final_test_acc=m.get("final_test_acc", curve[-1] if curve else None),
        best_test_acc=m.get("best_test_acc", max(curve, default=None)),
        first_epoch_at_target=m.get("first_epoch_at_target", first_at_target(curve, budget["target_acc"])),
        epochs=len(epochs) if "epochs" in m else None,
        seconds_per_epoch=sum(seconds) / len(seconds) if seconds else None, wall_seconds=m.get("wall_seconds"))
    # a wrong type here would only surface later, in the table or a plot, and take every other trial down with it
    for key, v in [*((k, fields[k]) for k in NUMBERS), *budget.items()]:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{key} is {v!r}, not a number")
    return fields


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
            continue   # a duplicate or surplus ask that sweeper.sweep closed at once: bookkeeping, not a trial
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
            overrides={k: str(v) for k, v in t.params.items()}, budget=budget, test_acc=curve))
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


# -----------------------------------------------------------------------------
# judging, sorting, the table

def is_hit(r):
    """Finished and inside all three constraints of its own budget."""
    b = r["budget"]
    return (r["status"] == "ok" and r["final_test_acc"] is not None and r["final_test_acc"] >= b["target_acc"]
            and r["params"] is not None and r["params"] <= b["max_params"]
            and r["epochs"] is not None and r["epochs"] <= b["max_epochs"])


def labels(records):
    """Trial ids, or sweep/trial where ids repeat (several multiruns under one folder each have a trial 0)."""
    names = [str(r["trial"]) for r in records]
    if len(set(names)) == len(names):
        return names
    return [f"{r['sweep']}/{r['trial']}" for r in records]


def override_keys(records):
    """Every override key in the order it first appears (a sweep's keys keep the order they were given in)."""
    return list(dict.fromkeys(k for r in records for k in r["overrides"]))


def varying_keys(records):
    """Keys whose value differs between the records; the ones every record sets (the swept ones) first."""
    keys = [k for k in override_keys(records) if len({r["overrides"].get(k) for r in records}) > 1]
    return sorted(keys, key=lambda k: sum(k not in r["overrides"] for r in records))


def cut(text, n=CUT):
    return text if len(text) <= n else text[:n - 1] + "…"


def show_override(value):
    # a sampled float (0.0336037801549) reads better as 0.0336; CSV and JSON keep every digit
    if len(value) > CUT:
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return cut(value)


def short_names(keys):
    """'optimizer.lr' -> 'lr', or 'o.lr' where another key or a table header ends the same way, else in full."""
    taken = {"trial", "status", *(h for h, _, _ in COLUMNS)}
    last = [k.rsplit(".", 1)[-1] for k in keys]
    initials = [".".join([p[0] for p in k.split(".")[:-1]] + [s]) for k, s in zip(keys, last)]
    return [s if last.count(s) == 1 and s not in taken else i if initials.count(i) == 1 and i not in taken else k
            for s, i, k in zip(last, initials, keys)]


def sort_field(key, records):
    """A --sort KEY as a getter: a table header, a CSV field, or an override key (in full, or its last part)."""
    field = {h: f for h, f, _ in COLUMNS}.get(key, key)
    if field in FIELDS:
        return field, lambda r: r[field]
    keys = override_keys(records)
    matches = [k for k in keys if key == k] or [k for k, s in zip(keys, short_names(keys)) if key == s]
    if len(matches) != 1:
        choices = [h for h, _, _ in COLUMNS] + FIELDS + keys
        raise ValueError(f"--sort {key}: not a column, field or override key; use one of {', '.join(choices)}")
    return matches[0], lambda r: r["overrides"].get(matches[0])


def sortable(v):
    # override values are strings as typed: compare them as numbers where they are numbers
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):   # words, and the list of values of a multi-objective study
        return (1, 0.0, str(v))


def sort_records(records, key):
    """Accuracies and hits best first, everything else ascending; missing values last; ties keep dir order."""
    field, get = sort_field(key, records)
    present = sorted((r for r in records if get(r) is not None), key=lambda r: sortable(get(r)),
                     reverse=field in DESCENDING)
    return present + [r for r in records if get(r) is None]


def format_table(rows):
    """Aligned lines, and the varying override keys left out because their columns would pass WIDTH."""
    def show(v, fmt):
        return "-" if v is None else fmt(v)

    def width(col):
        return max(len(s) for s in [col[0], *col[1]])

    # a column is (header, cells, right-aligned); the mark column is one wide even when nothing is marked
    head = [(" ", ["*" if r["hit"] else "" for r in rows], False), ("trial", [r["label"] for r in rows], False),
            ("status", [r["status"] for r in rows], False)]
    tail = [(h, [show(r[f], fmt) for r in rows], True) for h, f, fmt in COLUMNS]
    used = sum(width(c) + 2 for c in head + tail) - 2
    middle, left_out = [], []
    keys = varying_keys(rows)
    for key, name in zip(keys, short_names(keys)):
        col = (cut(name), [show_override(r["overrides"].get(key, "-")) for r in rows], False)
        if used + 2 + width(col) <= WIDTH:
            middle.append(col)
            used += 2 + width(col)
        else:
            left_out.append(key)
    cols = head + middle + tail
    widths = [width(c) for c in cols]
    lines = []
    for i in range(len(rows) + 1):
        cells = [header if i == 0 else values[i - 1] for header, values, _ in cols]
        lines.append("  ".join(s.rjust(w) if right else s.ljust(w)
                               for s, w, (_, _, right) in zip(cells, widths, cols)).rstrip())
    return lines, left_out


def legend(records):
    budgets = {tuple(sorted(r["budget"].items())) for r in records}
    if len(budgets) != 1:
        return "* hit: status ok and inside its own budget (the budgets differ; see --json)"
    b = records[0]["budget"]
    return (f"* hit: final test acc >= {100 * b['target_acc']:.2f} %, params <= {b['max_params']}, "
            f"epochs <= {b['max_epochs']}")


def summary(records):
    counts = Counter(r["status"] for r in records)
    order = STATUSES + sorted(set(counts) - set(STATUSES))
    done = [r for r in records if r["status"] == "ok" and r["final_test_acc"] is not None]
    best = max(done, key=lambda r: r["final_test_acc"], default=None)
    return (f"{plural(len(records), 'trial')} ({', '.join(f'{counts[s]} {s}' for s in order if counts[s])}), "
            f"{plural(sum(r['hit'] for r in records), 'hit')}, "
            + (f"best {pct(best['final_test_acc'])} % (trial {best['label']})" if best else "none finished"))


# -----------------------------------------------------------------------------
# CSV, JSON and plots

def export(r):
    return {k: r[k] for k in FIELDS}


def to_csv(rows, path):
    """One row per trial: the fields, then one column per override key (empty where a trial doesn't set it)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS + override_keys(rows))
        w.writeheader()
        for r in rows:
            w.writerow({**export(r), **r["overrides"]})


def to_json(rows, path):
    """One object per trial: the fields, its overrides, its budget and its test accuracy after each epoch."""
    with open(path, "w") as f:
        json.dump([{**export(r), "overrides": r["overrides"], "budget": r["budget"], "test_acc": r["test_acc"]}
                   for r in rows], f, indent=2)


def save(fig, path, plt):
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(rows, path, plt):
    rows = [r for r in rows if r["test_acc"]]
    if not rows:
        return warn(f"skipping {path}: no trial has finished an epoch")
    target = 100 * rows[0]["budget"]["target_acc"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rows):
        acc = [100 * a for a in r["test_acc"]]
        # rows come best first: name the ten best, draw the rest without a legend entry
        ax.plot(range(1, len(acc) + 1), acc, marker=".", lw=2 if r["hit"] else 1, alpha=1 if r["hit"] else 0.7,
                label=f"{r['label']} ({acc[-1]:.2f})" if i < 10 else "_nolegend_")
    ax.axhline(target, color="red", ls="--", lw=1, label=f"target {target:.1f} %")
    # zoom on where the named trials end, the part worth comparing; early epochs and weaker trials fall below
    low = min(100 * r["test_acc"][-1] for r in rows[:10])
    ax.set_ylim(max(0, low - 0.5), min(100, max(target, max(100 * max(r["test_acc"]) for r in rows)) + 0.2))
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path, plt)


def plot_params(rows, path, plt):
    rows = [r for r in rows if r["params"] is not None and r["final_test_acc"] is not None]
    if not rows:
        return warn(f"skipping {path}: no trial has both a parameter count and a final accuracy")
    b = rows[0]["budget"]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter([r["params"] for r in rows], [100 * r["final_test_acc"] for r in rows],
               c=["tab:green" if r["hit"] else "tab:blue" for r in rows])
    for r in rows:
        ax.annotate(r["label"], (r["params"], 100 * r["final_test_acc"]), xytext=(3, 3), textcoords="offset points",
                    fontsize=8)
    ax.axvline(b["max_params"], color="gray", ls="--", lw=1, label=f"budget {b['max_params']} params")
    ax.axhline(100 * b["target_acc"], color="red", ls="--", lw=1, label=f"target {100 * b['target_acc']:.1f} %")
    ax.set(xlabel="parameters", ylabel="final test accuracy (%)",
           title="parameters vs final test accuracy (green: hit)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path, plt)


def plot_study(study, out, plt):
    """Optuna's own plots of the study: optimization history and, when they can be told, parameter importances."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    history, importances = {}, {}
    if len(study.directions) > 1:
        # no single value to follow: follow the first objective. PED-ANOVA, Optuna's default importance evaluator,
        # counts a lower target as better, so a maximised objective is negated for it
        sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        history = dict(target=lambda t: t.values[0], target_name="objective 0")
        importances = dict(target=lambda t: sign * t.values[0], target_name="objective 0")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    keys = {k for t in done for k in t.params}
    varied = len(done) >= 2 and any(len({repr(t.params.get(k)) for t in done}) > 1 for k in keys)
    written = []
    with warnings.catch_warnings():
        # Optuna marks these plots experimental, and warns about the lower-is-better target handled above
        warnings.simplefilter("ignore")
        if not done:
            warn("skipping optimization_history.png: the study has no completed trial")
        else:
            ax = ovm.plot_optimization_history(study, **history)
            written.append(save(ax.figure, out / "optimization_history.png", plt))
        if not varied:
            warn("skipping param_importances.png: it needs >= 2 completed trials whose params vary")
            return written
        try:
            ax = ovm.plot_param_importances(study, **importances)
            written.append(save(ax.figure, out / "param_importances.png", plt))
        except (ValueError, RuntimeError) as e:
            warn(f"skipping param_importances.png: {e}")
    return written


def write_plots(rows, study, out):
    import matplotlib  # imported here: the table alone does without it
    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(rows, out / "curves.png", plt), plot_params(rows, out / "params_vs_acc.png", plt)]
    if study is not None:
        written += plot_study(study, out, plt)
    return [p for p in written if p]


# -----------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m sweeper.compare", description=__doc__.split("\n\n")[1].strip(),
        epilog="example: python -m sweeper.compare outputs/multirun --only-hits --csv trials.csv --plot plots")
    p.add_argument("paths", nargs="*", metavar="PATH", help="a trial dir, a multirun dir, or a folder above them")
    p.add_argument("--sort", metavar="KEY", default="final_test_acc",
                   help="a table header, CSV field or override key (default: final test accuracy, best first)")
    p.add_argument("--only-hits", action="store_true", help="show (and write) only the trials that meet all three "
                                                            "constraints")
    p.add_argument("--csv", metavar="FILE", help="write one row per trial shown, with all its overrides")
    p.add_argument("--json", metavar="FILE", help="write one object per trial shown, with all its overrides")
    p.add_argument("--plot", metavar="DIR", type=Path, help="write PNG plots into DIR")
    p.add_argument("--storage", metavar="URL", help="an Optuna storage, e.g. sqlite:///sweep.db")
    p.add_argument("--study", metavar="NAME", help="the study in --storage (optional when it holds only one)")
    args = p.parse_args(argv)
    if args.study and not args.storage:
        p.error("--study needs --storage")
    if not args.paths and not args.storage:
        p.error("give at least one PATH, or --storage")
    return args


def main(argv=None):
    args = parse_args(argv)
    records, seen = [], set()
    for path in map(Path, args.paths):
        if not path.is_dir():
            warn(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
            continue
        found = find_trial_dirs(path)
        if not found:
            warn(f"{path}: no trials here (a trial dir holds .hydra/ or metrics.json)")
        for d in found:
            if d.resolve() not in seen:   # the same trial reached through two PATHs is shown once
                seen.add(d.resolve())
                records.append(read_trial(d))
    study = None
    if args.storage:
        try:
            study, study_records = read_study(args.storage, args.study)
        except KeyError:
            warn(f"{args.storage}: no study named {args.study!r}")
        except Exception as e:   # optuna and SQLAlchemy raise many kinds; here they all mean "could not load"
            warn(f"cannot load a study from {args.storage}: {e}")
        else:
            records = merge(records, study_records)
    if all(r["status"] == "broken" for r in records):
        warn("nothing to compare: no trial could be read")
        return 1

    for r, label in zip(records, labels(records)):
        r["hit"], r["label"] = is_hit(r), label
    try:
        rows = sort_records(records, args.sort)
    except ValueError as e:
        warn(str(e))
        return 2
    if args.only_hits:
        rows = [r for r in rows if r["hit"]]

    # files first: a table piped into `head` may end this process before it is done printing
    rc = 0
    try:
        if args.csv:
            to_csv(rows, args.csv)
            warn(f"wrote {args.csv}")
        if args.json:
            to_json(rows, args.json)
            warn(f"wrote {args.json}")
        if args.plot:
            for path in write_plots(rows, study, args.plot):
                warn(f"wrote {path}")
    except OSError as e:
        warn(f"cannot write {e.filename}: {e.strerror}")
        rc = 1

    lines, left_out = format_table(rows)
    print("\n".join(lines) if rows else "(no trial meets all three constraints)")
    if left_out:
        print(textwrap.fill(f"(not shown, varying too: {', '.join(left_out)}; see --csv/--json)", WIDTH))
    print(legend(records))
    print(summary(records))
    return rc


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly, not with a traceback
    sys.exit(main())
