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
import textwrap
from pathlib import Path

from sweeper.mnist.metrics import FIELDS, is_hit
from sweeper.compare.plots import write_plots
from sweeper.compare.records import find_trial_dirs, merge, read_study, read_trial, warn
from sweeper.compare.table import WIDTH, format_table, labels, legend, override_keys, sort_records, summary


# -----------------------------------------------------------------------------
# CSV and JSON

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
        # a trial run on several seeds hits only if every seed does
        r["hit"], r["label"] = is_hit(r) and r["seeds_hit"] is not False, label
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
