"""The table `python -m sweeper.compare` prints: rows sorted best first, aligned columns, the legend and summary."""
from collections import Counter

from sweeper.mnist.metrics import FIELDS

WIDTH = 100        # the table fits a 100-column terminal; varying overrides that don't fit are named below it
CUT = 12           # override headers and values are cut to this many characters in the table (not in CSV/JSON)
STATUSES = ["ok", "pruned", "failed", "rejected", "running", "broken"]  # the summary's order
DESCENDING = {"hit", "final_test_acc", "best_test_acc", "min_final_test_acc", "mean_final_test_acc"}   # --sort puts these best first, everything else ascending


def pct(v):
    return f"{100 * v:.2f}"


# the table's columns after trial, status and the varying overrides: header, field, format
COLUMNS = [("params", "params", str), ("final%", "final_test_acc", pct), ("best%", "best_test_acc", pct),
           ("tgt@ep", "first_epoch_at_target", str), ("epochs", "epochs", str),
           ("s/ep", "seconds_per_epoch", "{:.1f}".format)]
# after final%, when some trial ran on several seeds (hydra.sweeper.confirm_seeds)
SEEDED = [("seeds", "seeds", str), ("worst%", "min_final_test_acc", pct), ("mean%", "mean_final_test_acc", pct)]


def columns(rows):
    if not any((r["seeds"] or 1) > 1 for r in rows):
        return COLUMNS
    return COLUMNS[:2] + SEEDED + COLUMNS[2:]


def mark(r):
    return "**" if r["hit"] and (r["seeds"] or 1) > 1 else "*" if r["hit"] else ""


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


# -----------------------------------------------------------------------------
# sorting and the table

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
    taken = {"trial", "status", *(h for h, _, _ in COLUMNS + SEEDED)}
    last = [k.rsplit(".", 1)[-1] for k in keys]
    initials = [".".join([p[0] for p in k.split(".")[:-1]] + [s]) for k, s in zip(keys, last)]
    return [s if last.count(s) == 1 and s not in taken else i if initials.count(i) == 1 and i not in taken else k
            for s, i, k in zip(last, initials, keys)]


def sort_field(key, records):
    """A --sort KEY as a getter: a table header, a CSV field, or an override key (in full, or its last part)."""
    field = {h: f for h, f, _ in COLUMNS + SEEDED}.get(key, key)
    if field in FIELDS:
        return field, lambda r: r[field]
    keys = override_keys(records)
    matches = [k for k in keys if key == k] or [k for k, s in zip(keys, short_names(keys)) if key == s]
    if len(matches) != 1:
        choices = [h for h, _, _ in COLUMNS + SEEDED] + FIELDS + keys
        raise ValueError(f"--sort {key}: not a column, field or override key; use one of {', '.join(choices)}")
    return matches[0], lambda r: r["overrides"].get(matches[0])


def sortable(v):
    # override values are strings as typed: compare them as numbers where they are numbers
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):   # words, and the list of values of a multi-objective study
        return (1, 0.0, str(v))


def sort_records(records, key):
    """Accuracies and hits best first, finished (ok) trials before those whose accuracy is partial (failed,
    interrupted, pruned); everything else ascending; missing values last; ties keep dir order."""
    field, get = sort_field(key, records)
    present = sorted((r for r in records if get(r) is not None), key=lambda r: sortable(get(r)),
                     reverse=field in DESCENDING)

    def unfinished(r):   # only an accuracy ranks trials: there a partial one must not pass a finished one
        return field in DESCENDING and r["status"] != "ok"
    return sorted(present, key=unfinished) + sorted((r for r in records if get(r) is None), key=unfinished)


def format_table(rows):
    """Aligned lines, and the varying override keys left out because their columns would pass WIDTH."""
    def show(v, fmt):
        return "-" if v is None else fmt(v)

    def width(col):
        return max(len(s) for s in [col[0], *col[1]])

    # a column is (header, cells, right-aligned); the mark column is one wide even when nothing is marked
    head = [(" ", [mark(r) for r in rows], False), ("trial", [r["label"] for r in rows], False),
            ("status", [r["status"] for r in rows], False)]
    tail = [(h, [show(r[f], fmt) for r in rows], True) for h, f, fmt in columns(rows)]
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
        text = "* hit: status ok and inside its own budget (the budgets differ; see --json)"
    else:
        b = records[0]["budget"]
        text = (f"* hit: final test acc >= {100 * b['target_acc']:.2f} %, params <= {b['max_params']}, "
                f"epochs <= {b['max_epochs']}")
    if any((r["seeds"] or 1) > 1 for r in records):
        text += "\n** confirmed: a hit on every seed it ran (worst% and mean% are over its seeds)"
    return text


def summary(records):
    counts = Counter(r["status"] for r in records)
    order = STATUSES + sorted(set(counts) - set(STATUSES))
    done = [r for r in records if r["status"] == "ok" and r["final_test_acc"] is not None]
    best = max(done, key=lambda r: r["final_test_acc"], default=None)
    return (f"{plural(len(records), 'trial')} ({', '.join(f'{counts[s]} {s}' for s in order if counts[s])}), "
            f"{plural(sum(r['hit'] for r in records), 'hit')}, "
            + (f"best {pct(best['final_test_acc'])} % (trial {best['label']})" if best else "none finished"))
