"""Compare trials: `python -m sweeper.compare PATH [PATH ...] [--storage URL --study NAME] [options]`.

PATH is a trial dir (a Hydra job output dir: `.hydra/` from the start, `metrics.json` or `job_return.json` once the
trial has ended), a multirun dir, or any folder above them. Every trial becomes one flat record; the records are
printed as one table sorted by the objective, best first, and can be written to CSV/JSON and plotted, and the best
finished one as a Hydra experiment config (--export-best, sweeper/compare/export.py).
An Optuna study (--storage/--study) adds its trials: a study trial whose user_attrs["dir"] is a trial dir read
from PATH fills the gaps of that dir's record and gives it its trial number; the others are listed on their own.
"""
import argparse
import csv
import json
import textwrap
from pathlib import Path

from sweeper.mnist.metrics import FIELDS, is_hit
from sweeper.compare.export import ExportError, export_best
from sweeper.compare.plots import write_plots
from sweeper.compare.records import find_trial_dirs, merge, names_for, read_study, read_trials, warn
from sweeper.compare.table import (WIDTH, format_table, labels, legend, mnist_view, objectives, override_keys,
                                   sort_records, summary, value_of)


# -----------------------------------------------------------------------------
# CSV and JSON

def fields(cols):
    """The CSV/JSON fields: metrics.json's (the MNIST view), or any app's, its values under their names."""
    return FIELDS if cols is None else ["trial", "sweep", "status", *cols, "reason", "dir"]


def export(r, cols):
    return {k: value_of(r, k) if cols and k in cols else r[k] for k in fields(cols)}


def to_csv(rows, path, cols):
    """One row per trial: the fields, then one column per override key (empty where a trial doesn't set it)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields(cols) + override_keys(rows))
        w.writeheader()
        for r in rows:
            w.writerow({**export(r, cols), **r["overrides"]})


def to_json(rows, path, cols):
    """One object per trial: the fields and its overrides; then the MNIST trial's budget and test accuracy after
    each epoch, or any app's [step, value] pairs it reported (sweeper.report)."""
    def extra(r):
        return dict(budget=r["budget"], test_acc=r["test_acc"]) if cols is None else dict(reported=r["reported"])
    with open(path, "w") as f:
        json.dump([{**export(r, cols), "overrides": r["overrides"], **extra(r)} for r in rows], f, indent=2)


# -----------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m sweeper.compare", description=__doc__.split("\n\n")[1].strip(),
        epilog="example: python -m sweeper.compare outputs/multirun --only-hits --csv trials.csv --plot plots")
    p.add_argument("paths", nargs="*", metavar="PATH", help="a trial dir, a multirun dir, or a folder above them")
    p.add_argument("--sort", metavar="KEY",
                   help="a value column, table header, CSV field or override key (default: the objective, best "
                        "first: final test accuracy for trials that write metrics.json)")
    p.add_argument("--only-hits", action="store_true", help="show (and write) only the trials that meet all three "
                                                            "constraints")
    p.add_argument("--csv", metavar="FILE", help="write one row per trial shown, with all its overrides")
    p.add_argument("--json", metavar="FILE", help="write one object per trial shown, with all its overrides")
    p.add_argument("--plot", metavar="DIR", type=Path, help="write PNG plots into DIR")
    p.add_argument("--export-best", metavar="FILE", type=Path,
                   help="write the best finished trial shown (the first ok row) as a Hydra experiment config, e.g. "
                        "conf/experiment/best.yaml: all its overrides, and the command that runs it")
    p.add_argument("--storage", metavar="URL", help="an Optuna storage, e.g. sqlite:///sweep.db")
    p.add_argument("--study", metavar="NAME", help="the study in --storage (optional when it holds only one)")
    args = p.parse_args(argv)
    if args.study and not args.storage:
        p.error("--study needs --storage")
    if not args.paths and not args.storage:
        p.error("give at least one PATH, or --storage")
    return args


def export_label(args, cols):
    """What --export-best's trial is the best by, named as the table names it."""
    key = args.sort or ("final%" if cols is None else next(iter(cols), "dir order"))
    return f"{key} among the hits" if args.only_hits else key


def read_dirs(paths):
    dirs, seen = [], set()
    for path in map(Path, paths):
        if not path.is_dir():
            warn(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
            continue
        found = find_trial_dirs(path)
        if not found:
            warn(f"{path}: no trials here (a trial dir holds .hydra/, metrics.json, job_return.json or console.log)")
        for d in found:
            if d.resolve() not in seen:   # the same trial reached through two PATHs is shown once
                seen.add(d.resolve())
                dirs.append(d)
    return read_trials(dirs)


def main(argv=None):
    args = parse_args(argv)
    records = read_dirs(args.paths)
    study = study_names = None
    if args.storage:
        try:
            study, study_records = read_study(args.storage, args.study)
        except KeyError:
            warn(f"{args.storage}: no study named {args.study!r}")
        except Exception as e:   # optuna and SQLAlchemy raise many kinds; here they all mean "could not load"
            warn(f"cannot load a study from {args.storage}: {e}")
        else:
            records = merge(records, study_records)
            # what the study's values are called: the names merge settled on for all its trials
            study_names = names_for(study_records[0]["objectives"] if study_records else study.metric_names,
                                    len(study.directions))
    if all(r["status"] == "broken" for r in records):
        warn("nothing to compare: no trial could be read")
        return 1

    for r, label in zip(records, labels(records)):
        # a trial run on several seeds hits only if every seed does
        r["hit"], r["label"] = is_hit(r) and r["seeds_hit"] is not False, label
    # the MNIST view (cols None) or any app's, whose value columns carry their sweep's directions
    cols, notes = (None, []) if mnist_view(records) else objectives(records)
    default = "final_test_acc" if cols is None else next(iter(cols), None)
    try:
        rows = sort_records(records, args.sort or default, cols)
    except ValueError as e:
        warn(str(e))
        return 2
    if args.only_hits:
        rows = [r for r in rows if r["hit"]]

    # files first: a table piped into `head` may end this process before it is done printing
    rc = 0
    try:
        if args.csv:
            to_csv(rows, args.csv, cols)
            warn(f"wrote {args.csv}")
        if args.json:
            to_json(rows, args.json, cols)
            warn(f"wrote {args.json}")
        if args.plot:
            for path in write_plots(rows, study, args.plot, cols is None, study_names):
                warn(f"wrote {path}")
    except OSError as e:
        warn(f"cannot write {e.filename}: {e.strerror}")
        rc = 1
    if args.export_best:   # on its own: a trial that can't be exported leaves the other files be
        try:
            r = export_best(rows, args.export_best, cols, export_label(args, cols))
            warn(f"wrote {args.export_best} (trial {r['label']})")
        except ExportError as e:
            warn(str(e))
            rc = 1
        except OSError as e:
            warn(f"cannot write {e.filename}: {e.strerror}")
            rc = 1

    lines, left_out = format_table(rows, cols)
    if rows:
        print("\n".join(lines))
    else:
        print("(no trial meets all three constraints)" if cols is None else
              "(no hits: only trials that write metrics.json can hit)")
    if left_out:
        print(textwrap.fill(f"(not shown, varying too: {', '.join(left_out)}; see --csv/--json)", WIDTH))
    for line in [legend(records)] if cols is None else notes:
        print(line)
    print(summary(records, cols))
    return rc
