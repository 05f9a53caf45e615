"""Plots of compared trials and Optuna's plots of a study.

- curves.png: the MNIST trial's test accuracy per epoch, with its target; any other app's reported values per
  step (what it passed to sweeper.report, read from the study), named as its objective.
- params_vs_acc.png: parameters vs final accuracy, for trials that wrote metrics.json.
- optimization_history.png, param_importances.png: Optuna's, in the study's directions and objective names.

matplotlib (and Optuna's plotting) is imported only when plots are asked for: the table alone does without it.
The `*_axes` functions return the figure and its axes unsaved, so tests can look at what was drawn.
"""
import warnings
from itertools import accumulate

from sweeper.compare.records import value_names, warn

NAMED = 10   # rows come best first: the legend names this many, the rest are drawn without an entry


def save(fig, path, plt):
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_axes(rows, plt):
    """The MNIST trial's test accuracy per epoch, and its target line; None when no trial finished an epoch."""
    rows = [r for r in rows if r["test_acc"]]
    if not rows:
        return None
    target = 100 * rows[0]["budget"]["target_acc"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rows):
        acc = [100 * a for a in r["test_acc"]]
        ax.plot(range(1, len(acc) + 1), acc, marker=".", lw=2 if r["hit"] else 1, alpha=1 if r["hit"] else 0.7,
                label=f"{r['label']} ({acc[-1]:.2f})" if i < NAMED else "_nolegend_")
    ax.axhline(target, color="red", ls="--", lw=1, label=f"target {target:.1f} %")
    # every point drawn stays in view, however weak the trial, and the target line keeps off the top border
    points = [100 * a for r in rows for a in r["test_acc"]]
    low, high = min(points), max(*points, target)
    pad = max(0.2, 0.05 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig, ax


def reported_axes(rows, plt):
    """Any app's reported values per step (sweeper.report: the first objective, the only one Optuna prunes on),
    without a target; None when no trial reported one."""
    rows = [r for r in rows if r["reported"]]
    if not rows:
        return None
    name = (value_names(rows[0]) or ["value"])[0]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rows):
        steps, values = zip(*r["reported"])
        ax.plot(steps, values, marker=".", lw=1,
                label=f"{r['label']} ({values[-1]:.4g})" if i < NAMED else "_nolegend_")
    ax.set(xlabel="step", ylabel=name, title=f"{name} per step (sweeper.report)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def plot_curves(rows, path, plt, mnist, study):
    drawn = accuracy_axes(rows, plt) if mnist else reported_axes(rows, plt)
    if drawn is not None:
        return save(drawn[0], path, plt)
    if mnist:
        return warn(f"skipping {path}: no trial has finished an epoch")
    if study is None:
        return warn(f"skipping {path}: values per step (sweeper.report) are kept in the study; add --storage")
    return warn(f"skipping {path}: no trial reported a value per step (sweeper.report)")


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


def targets(study, names):
    """Optuna's plot arguments for the history and the importances: the objective's name and, with several, the
    first objective as the target. PED-ANOVA, Optuna's default importance evaluator, counts a lower target as
    better, so a maximised first objective is negated for it."""
    import optuna
    history, importances = dict(target_name=names[0]), dict(target_name=names[0])
    if len(study.directions) > 1:
        sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        history["target"] = lambda t: t.values[0]
        importances["target"] = lambda t: sign * t.values[0]
    return history, importances


def history_axes(study, names):
    """Optuna's optimization history of the first objective, with its best-so-far line in that objective's
    direction (Optuna draws it itself only for a study of one objective)."""
    import optuna
    from optuna.visualization import matplotlib as ovm
    ax = ovm.plot_optimization_history(study, **targets(study, names)[0])
    if len(study.directions) > 1:
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                and all(c <= 0 for c in t.constraints.values())]   # as Optuna's own best line: feasible only
        best = list(accumulate((t.values[0] for t in done), max if maximize else min))
        ax.plot([t.number for t in done], best, color="tab:red", label=f"best {names[0]}")
        ax.legend()
    return ax


def plot_study(study, out, plt, names):
    """Optuna's own plots of the study: optimization history and, when they can be told, parameter importances;
    named by `names` (the study's objective names), following the first objective when there are several."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    keys = {k for t in done for k in t.params}
    varied = len(done) >= 2 and any(len({repr(t.params.get(k)) for t in done}) > 1 for k in keys)
    written = []
    with warnings.catch_warnings():
        # Optuna marks these plots experimental, and warns about the lower-is-better target handled in `targets`
        warnings.simplefilter("ignore")
        if not done:
            warn("skipping optimization_history.png: the study has no completed trial")
        else:
            written.append(save(history_axes(study, names).figure, out / "optimization_history.png", plt))
        if not varied:
            warn("skipping param_importances.png: it needs >= 2 completed trials whose params vary")
            return written
        try:
            ax = ovm.plot_param_importances(study, **targets(study, names)[1])
            written.append(save(ax.figure, out / "param_importances.png", plt))
        except (ValueError, RuntimeError) as e:
            warn(f"skipping param_importances.png: {e}")
    return written


def pyplot():
    import matplotlib  # imported here: the table alone does without it
    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def write_plots(rows, study, out, mnist, names):
    """The PNGs for the rows shown (params_vs_acc.png only in the MNIST view) and, with a study, Optuna's plots of
    it; `names`: the study's objective names."""
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(rows, out / "curves.png", plt, mnist, study)]
    if mnist:
        written.append(plot_params(rows, out / "params_vs_acc.png", plt))
    if study is not None:
        written += plot_study(study, out, plt, names)
    return [p for p in written if p]
