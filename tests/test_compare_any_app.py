"""`sweeper.compare`'s plots, looked at where they are drawn: the MNIST curves' axis limits.

    python -m pytest -q tests/test_compare_any_app.py
"""
import matplotlib
import pytest

from sweeper.compare.cli import labels
from sweeper.compare.plots import accuracy_axes
from sweeper.compare.records import find_trial_dirs, read_trial
from test_compare import metrics, trial_dir

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)


def test_mnist_curves_show_every_point_and_keep_the_target_off_the_border(tmp_path):
    # a trial stuck at 10.6 % beside ten good ones: the old zoom on the ten best ends cut it off
    for n in range(11):
        accs = [0.106, 0.106] if n == 10 else [0.97 + n / 1000, 0.985 + n / 1000]
        trial_dir(tmp_path / str(n), [f"model.width={n + 6}"], metrics(accs))
    records = [read_trial(d) for d in find_trial_dirs(tmp_path)]
    for r, label in zip(records, labels(records)):
        r["label"], r["hit"] = label, False
    fig, ax = accuracy_axes(records, plt)
    low, high = ax.get_ylim()
    drawn = [y for line in ax.get_lines() for y in line.get_ydata()]
    assert low < min(drawn) and max(drawn) < high and min(drawn) == pytest.approx(10.6)
    target = [line for line in ax.get_lines() if line.get_label().startswith("target")][0].get_ydata()[0]
    assert target == pytest.approx(99.4) and high - target > 0.2
    plt.close(fig)
