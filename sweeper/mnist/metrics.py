"""The `metrics.json` format, owned here: `train` writes it, `sweep` and `compare` read it.

A trial dir's `metrics.json` holds `status` (ok, failed, pruned, rejected, interrupted), `reason`, `params`, `budget`,
`epochs` (one dict per epoch with `test_acc`), `best_test_acc`, `final_test_acc`, `first_epoch_at_target`,
`started_at`, `ended_at` (unix seconds) and `wall_seconds`. Readers turn it into one flat record (`FIELDS`) and judge hits with `is_hit`, the one hit rule.
"""
import json
import os
import time
from pathlib import Path

# conf/train.yaml's budget: only for metrics.json files written before trials recorded their own
DEFAULT_BUDGET = dict(max_params=20000, max_epochs=20, target_acc=0.994)
# one record per trial; these scalar fields are the CSV/JSON columns (accuracies are fractions, as in metrics.json)
FIELDS = ["trial", "sweep", "status", "hit", "params", "final_test_acc", "best_test_acc", "first_epoch_at_target",
          "epochs", "seconds_per_epoch", "wall_seconds", "seeds", "min_final_test_acc", "mean_final_test_acc",
          "value", "reason", "dir"]
NUMBERS = ["params", "final_test_acc", "best_test_acc", "first_epoch_at_target", "seconds_per_epoch", "wall_seconds"]


def new(seed, overrides, budget):
    """The metrics.json of a trial that has not run yet: `status: failed` until it ends otherwise."""
    return dict(params=None, status="failed", reason=None, seed=seed, device=None, precision=None, cuda_graph=None,
                overrides=list(overrides), budget=dict(budget), epochs=[], best_test_acc=None, final_test_acc=None,
                first_epoch_at_target=None, started_at=round(time.time(), 3), ended_at=None, wall_seconds=None)


def over_budget(n_params, max_params):
    """Why a model is rejected, or None when it fits."""
    if n_params <= max_params:
        return None
    return (f"model has {n_params} parameters, over budget.max_params={max_params}; "
            f"lower model.width or raise budget.max_params")


def write_json(path, obj):
    """Write to a temp file and rename over `path`: a reader (or a kill) never sees a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(job_dir):
    """The dict in `job_dir/metrics.json`, or None when the trial wrote none (a plain Hydra app, a crash)."""
    try:
        return json.loads((Path(job_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def new_record(**fields):
    rec = dict.fromkeys(FIELDS)
    # seeds_hit: every seed of a trial run on several (hydra.sweeper.confirm_seeds) hit; None for one seed
    rec.update(overrides={}, budget=dict(DEFAULT_BUDGET), test_acc=[], seeds_hit=None)
    rec.update(fields)
    return rec


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


def is_hit(r):
    """Finished and inside all three constraints of its own budget (`r` is a record, see `new_record`)."""
    b = r["budget"]
    return (r["status"] == "ok" and r["final_test_acc"] is not None and r["final_test_acc"] >= b["target_acc"]
            and r["params"] is not None and r["params"] <= b["max_params"]
            and r["epochs"] is not None and r["epochs"] <= b["max_epochs"])


def metrics_hit(m):
    """The hit rule on a metrics.json dict (None: a run that wrote none, never a hit)."""
    return m is not None and is_hit(new_record(**from_metrics(m)))


def confirmation_dirs(trial_dir):
    """The dirs of a trial's confirmation runs (`seed<N>/`, see hydra.sweeper.confirm_seeds), by seed."""
    found = [d for d in Path(trial_dir).glob("seed*") if d.is_dir() and d.name[4:].isdigit()]
    return sorted(found, key=lambda d: int(d.name[4:]))


def over_seeds(runs):
    """A trial run on several seeds (its own first, then its confirmations; None for a run that wrote no
    metrics.json): it hits only if every run hits. Returns the fields trials.csv and compare show."""
    finals = [m.get("final_test_acc") if m else None for m in runs]
    known = [f for f in finals if f is not None]
    return dict(seeds=len(runs), hit=all(metrics_hit(m) for m in runs),
                min_final_test_acc=min(finals) if None not in finals else None,
                mean_final_test_acc=sum(known) / len(known) if known else None)
