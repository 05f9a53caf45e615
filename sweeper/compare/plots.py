"""Plots of compared trials (test accuracy per epoch, parameters vs accuracy) and Optuna's plots of a study.

matplotlib (and Optuna's plotting) is imported only when plots are asked for: the table alone does without it.
"""
import warnings

from sweeper.compare.records import warn


def save(fig, path, plt):
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_axes(rows, plt):
    """Test accuracy per epoch and the target line, unsaved (tests look at what was drawn); None when no trial
    has finished an epoch."""
    rows = [r for r in rows if r["test_acc"]]
    if not rows:
        return None
    target = 100 * rows[0]["budget"]["target_acc"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rows):
        acc = [100 * a for a in r["test_acc"]]
        # rows come best first: name the ten best, draw the rest without a legend entry
        ax.plot(range(1, len(acc) + 1), acc, marker=".", lw=2 if r["hit"] else 1, alpha=1 if r["hit"] else 0.7,
                label=f"{r['label']} ({acc[-1]:.2f})" if i < 10 else "_nolegend_")
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


def plot_curves(rows, path, plt):
    drawn = accuracy_axes(rows, plt)
    if drawn is None:
        return warn(f"skipping {path}: no trial has finished an epoch")
    return save(drawn[0], path, plt)


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
