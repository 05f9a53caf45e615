"""The table `python -m sweeper.compare` prints: rows sorted best first, aligned columns, the legend and summary.

Two views. Trials that wrote `metrics.json` (the MNIST trial) get the MNIST view: accuracies in %, params, epochs,
hits marked `*` against their budget. Any other app's trials get their values, one column per objective named as
the sweep named it, sorted and summed up in the sweep's directions (best value, or the Pareto set); no %, no
budget, no hits.
"""
from collections import Counter

from sweeper.mnist.metrics import FIELDS
from sweeper.compare.records import value_names

WIDTH = 100        # the table fits a 100-column terminal; varying overrides that don't fit are named below it
CUT = 12           # override headers and values are cut to this many characters in the table (not in CSV/JSON)
STATUSES = ["ok", "pruned", "failed", "interrupted", "rejected", "running", "broken"]  # the summary's order
# --sort puts these best first (and any app's maximised values), everything else ascending
DESCENDING = {"hit", "final_test_acc", "best_test_acc", "min_final_test_acc", "mean_final_test_acc"}


def pct(v):
    return f"{100 * v:.2f}"


def number(v):
    return f"{v:.6g}"


# the MNIST view's columns after trial, status and the varying overrides: header, field, format
COLUMNS = [("params", "params", str), ("final%", "final_test_acc", pct), ("best%", "best_test_acc", pct),
           ("tgt@ep", "first_epoch_at_target", str), ("epochs", "epochs", str),
           ("s/ep", "seconds_per_epoch", "{:.1f}".format)]
# after final%, when some trial ran on several seeds (hydra.sweeper.confirm_seeds)
SEEDED = [("seeds", "seeds", str), ("worst%", "min_final_test_acc", pct), ("mean%", "mean_final_test_acc", pct)]


def mnist_view(records):
    """The MNIST view as soon as one trial wrote metrics.json (or its study holds what the sweep copied from one)."""
    return any(r["metrics"] for r in records)


def columns(rows):
    if not any((r["seeds"] or 1) > 1 for r in rows):
        return COLUMNS
    return COLUMNS[:2] + SEEDED + COLUMNS[2:]


def mark(r):
    return "**" if r["hit"] and (r["seeds"] or 1) > 1 else "*" if r["hit"] else ""


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


# -----------------------------------------------------------------------------
# any app's objectives

def value_of(r, name):
    return dict(zip(value_names(r), r["values"] or [])).get(name)


def objectives(records):
    """({value column: True when maximised}, notes): the value columns of the records, each in its sweep's
    direction. One without a known direction is taken as minimised, the sweeper's default, and a note says so."""
    seen = {}
    for r in records:
        for i, name in enumerate(value_names(r)):
            seen.setdefault(name, [])
            if r["directions"] and r["directions"][i] not in seen[name]:
                seen[name].append(r["directions"][i])
    cols, notes = {}, []
    unknown = [name for name, ds in seen.items() if not ds]
    if unknown:
        notes.append(f"{', '.join(unknown)}: direction unknown (not in a multirun.yaml, no --storage); minimize "
                     f"assumed, the sweeper's default")
    for name, ds in seen.items():
        if len(ds) > 1:
            notes.append(f"the sweeps shown disagree on {name}'s direction ({' and '.join(ds)}): sorted as {ds[0]}")
        cols[name] = ds[:1] == ["maximize"]
    return cols, notes


def finished(records, cols):
    return [r for r in records if r["status"] == "ok" and all(value_of(r, n) is not None for n in cols)]


def dominates(a, b, cols):
    """Record a is at least as good as b on every objective and better on one, each in its own direction."""
    pairs = [(value_of(a, n), value_of(b, n)) if up else (-value_of(a, n), -value_of(b, n))
             for n, up in cols.items()]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto(records, cols):
    """The finished trials no other finished trial dominates, in the records' order."""
    done = finished(records, cols)
    return [r for r in done if not any(dominates(o, r, cols) for o in done)]


# -----------------------------------------------------------------------------
# sorting

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


def short_names(keys, taken):
    """'optimizer.lr' -> 'lr', or 'o.lr' where another key or a table header ends the same way, else in full."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    initials = [".".join([p[0] for p in k.split(".")[:-1]] + [s]) for k, s in zip(keys, last)]
    return [s if last.count(s) == 1 and s not in taken else i if initials.count(i) == 1 and i not in taken else k
            for s, i, k in zip(last, initials, keys)]


def headers(cols):
    """The table's own headers, which an override's short name must not take."""
    return {"trial", "status", *(cols if cols is not None else (h for h, _, _ in COLUMNS + SEEDED))}


def sort_field(key, records, cols):
    """A --sort KEY as a getter: a value column, a table header, a CSV field, or an override key (in full, or its
    last part)."""
    if cols and key in cols:
        return key, lambda r: value_of(r, key)
    field = {h: f for h, f, _ in COLUMNS + SEEDED}.get(key, key)
    if field in FIELDS:
        return field, lambda r: r[field]
    keys = override_keys(records)
    matches = [k for k in keys if key == k] or [k for k, s in zip(keys, short_names(keys, headers(cols)))
                                                if key == s]
    if len(matches) != 1:
        known = [*cols, "trial", "status"] if cols is not None else [h for h, _, _ in COLUMNS + SEEDED] + FIELDS
        raise ValueError(f"--sort {key}: not a column, field or override key; use one of "
                         f"{', '.join(known + keys)}")
    return matches[0], lambda r: r["overrides"].get(matches[0])


def sortable(v):
    # override values are strings as typed: compare them as numbers where they are numbers
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):   # words, and the list of values of a multi-objective study
        return (1, 0.0, str(v))


def sort_records(records, key, cols=None):
    """Objectives (accuracies, hits, any app's values) best first, finished (ok) trials before those whose value
    is partial (failed, interrupted, pruned); everything else ascending; missing values last; ties keep dir
    order. `cols`: any app's value columns (see `objectives`); None in the MNIST view. No key: dir order."""
    if key is None:
        return list(records)
    field, get = sort_field(key, records, cols)
    maximize = (cols or {}).get(field, field in DESCENDING)
    objective = field in DESCENDING or field in (cols or {})
    present = sorted((r for r in records if get(r) is not None), key=lambda r: sortable(get(r)), reverse=maximize)

    def unfinished(r):   # only an objective ranks trials: there a partial one must not pass a finished one
        return objective and r["status"] != "ok"
    return sorted(present, key=unfinished) + sorted((r for r in records if get(r) is None), key=unfinished)


# -----------------------------------------------------------------------------
# the table

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


def format_table(rows, cols=None):
    """Aligned lines, and the varying override keys left out because their columns would pass WIDTH. `cols`:
    any app's value columns (its view: no hit marks, the values as plain numbers); None: the MNIST view."""
    def show(v, fmt):
        return "-" if v is None else fmt(v)

    def width(col):
        return max(len(s) for s in [col[0], *col[1]])

    # a column is (header, cells, right-aligned); the MNIST view's mark column is one wide when nothing is marked
    head = [("trial", [r["label"] for r in rows], False), ("status", [r["status"] for r in rows], False)]
    if cols is None:
        head.insert(0, (" ", [mark(r) for r in rows], False))
        tail = [(h, [show(r[f], fmt) for r in rows], True) for h, f, fmt in columns(rows)]
    else:
        tail = [(name, [show(value_of(r, name), number) for r in rows], True) for name in cols]
    used = sum(width(c) + 2 for c in head + tail) - 2
    middle, left_out = [], []
    keys = varying_keys(rows)
    for key, name in zip(keys, short_names(keys, headers(cols))):
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
        text = "* hit: status ok and inside its own budget (the budgets differ; see --json)"
    else:
        b = records[0]["budget"]
        text = (f"* hit: final test acc >= {100 * b['target_acc']:.2f} %, params <= {b['max_params']}, "
                f"epochs <= {b['max_epochs']}")
    if any((r["seeds"] or 1) > 1 for r in records):
        text += "\n** confirmed: a hit on every seed it ran (worst% and mean% are over its seeds)"
    return text


def counts(records):
    """'10 trials (6 ok, 1 pruned, ...)'"""
    n = Counter(r["status"] for r in records)
    order = STATUSES + sorted(set(n) - set(STATUSES))
    return f"{plural(len(records), 'trial')} ({', '.join(f'{n[s]} {s}' for s in order if n[s])})"


def summary(records, cols=None):
    """The last line: the trials by status, then the MNIST view's hits and best accuracy, or any app's best value
    (one objective) or Pareto set (several), in the directions `cols` gives."""
    if cols is None:
        done = [r for r in records if r["status"] == "ok" and r["final_test_acc"] is not None]
        best = max(done, key=lambda r: r["final_test_acc"], default=None)
        return (f"{counts(records)}, {plural(sum(r['hit'] for r in records), 'hit')}, "
                + (f"best {pct(best['final_test_acc'])} % (trial {best['label']})" if best else "none finished"))
    done = finished(records, cols)
    if not cols or not done:
        return f"{counts(records)}, none finished"
    if len(cols) == 1:
        (name, up), = cols.items()
        best = (max if up else min)(done, key=lambda r: value_of(r, name))   # ties: the first in dir order
        return f"{counts(records)}, best {name} {number(value_of(best, name))} (trial {best['label']})"
    front = pareto(records, cols)
    return (f"{counts(records)}, Pareto set: {plural(len(front), 'trial')} "
            f"({', '.join(r['label'] for r in front)})")
