"""`python -m sweeper.compare SWEEP --export-best FILE`: the best finished trial as an experiment config that composes
the trial's own config again.

The fast tests read trial dirs written by hand in the formats a sweep leaves (.hydra/overrides.yaml and hydra.yaml as
Hydra writes them, metrics.json, job_return.json) and compose the exported file with Hydra itself; the slow one
exports the best trial of a real MNIST sweep and runs the command its comments give.

    python -m pytest -q tests/test_export_best.py
"""
import json
import shlex
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, ROOT, search_cmd
from sweeper.compare import main
from test_compare import metrics, trial_dir
from test_compare_any_app import any_app_trial, multirun_yaml
from test_plain_apps import APPS

PLAIN_CONF = APPS / "plainapp" / "conf"


def hydra_yaml(d, choices, main=CONF, config_dir=None, job="train", config_name="train"):
    """.hydra/hydra.yaml as Hydra writes it, with what the export reads: the config sources, the group choices, the
    job's name and config name."""
    sources = [dict(path="hydra.conf", schema="pkg", provider="hydra"),
               dict(path=str(main), schema="file", provider="main")]
    if config_dir:
        sources.append(dict(path=str(config_dir), schema="file", provider="command-line"))
    sources.append(dict(path="", schema="structured", provider="schema"))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {
        "runtime": {"config_sources": sources, "choices": {**choices, "hydra/sweeper": "mnist_optuna"}},
        "job": {"name": job, "config_name": config_name}}}))


def composed(conf, name, overrides):
    """The job config Hydra composes from `conf` (the app's own config dir) with these overrides."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return OmegaConf.to_container(compose(name, overrides=list(overrides)))


def export(capsys, *args):
    """main(args) -> (exit code, stderr lines)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.splitlines()


# ---------------------------------------------------------------- the MNIST trial
# around the smallest net (conf/experiment/smallest.yaml): an added group option, group choices, typed values
BEST = ["+experiment=smallest", "model.width=12", "optimizer.lr=1e-3", "model=slim", "augment=affine",
        "trainer.epochs=3", "model.dropout=0.03", "+tag='007'", "hydra.job.chdir=true"]
MNIST_CHOICES = {"model": "slim", "augment": "affine", "optimizer": "sgd", "scheduler": "onecycle",
                 "hparams_search": None}


def mnist_sweep(sweep):
    """A sweep whose best finished trial is 0 (a hit confirmed on seeds 1 and 2); a pruned and an interrupted trial
    ended higher, but only a finished trial can be the best."""
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {sweeper: {direction: maximize}}\n")
    trial_dir(sweep / "0", BEST, metrics([0.99, 0.994, 0.9951], params=8780, overrides=BEST))
    for seed, acc in ((1, 0.9945), (2, 0.9950)):
        (sweep / "0" / f"seed{seed}").mkdir()
        (sweep / "0" / f"seed{seed}" / "metrics.json").write_text(json.dumps(metrics([0.99, acc], params=8780)))
    hydra_yaml(sweep / "0", {**MNIST_CHOICES, "experiment": "smallest"})
    for n, status, acc in ((1, "pruned", 0.996), (2, "interrupted", 0.997), (3, "ok", 0.990)):
        over = ["model.width=8", "optimizer.lr=0.05"]
        trial_dir(sweep / str(n), over, metrics([acc], params=5000, status=status, overrides=over))
        hydra_yaml(sweep / str(n), {**MNIST_CHOICES, "model": "reference"})


def test_mnist_best_as_an_experiment_that_composes_the_trials_config(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    mnist_sweep(sweep)
    out = tmp_path / "conf" / "experiment" / "best.yaml"
    code, err = export(capsys, sweep, "--export-best", out)
    assert code == 0, err
    assert err == [f"compare: wrote {out} (trial 0)"]
    assert out.read_text() == f"""\
# @package _global_
# Trial 0 of the sweep {sweep}: the best by final%, as python -m sweeper.compare sorted it.
#   params 8780, final% 99.51, best% 99.51, epochs 3, seeds 3, worst% 99.45, mean% 99.49, a hit
# Left out (Hydra's own settings, not the job's config): hydra.job.chdir=true
# Run it:
#   python -m sweeper.train --config-dir {tmp_path / 'conf'} +experiment=best hydra.mode=RUN
defaults:
  - /experiment/smallest
  - override /model: slim
  - override /augment: affine

model:
  width: 12
  dropout: 0.03

optimizer:
  lr: 0.001

trainer:
  epochs: 3

tag: '007'
"""
    # Hydra composes the same job config from the file as from the trial's overrides
    again = composed(CONF, "train", [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+experiment=best"])
    assert again == composed(CONF, "train", BEST)
    assert again["model"]["_target_"].endswith("slim") and again["tag"] == "007" and again["optimizer"]["lr"] == 0.001


def test_sort_and_only_hits_choose_the_trial(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    mnist_sweep(sweep)
    out = tmp_path / "best.yaml"
    code, _ = export(capsys, sweep, "--sort", "params", "--export-best", out)   # ascending: 5000 before 8780
    text = out.read_text()
    assert code == 0 and text.startswith(f"# @package _global_\n# Trial 3 of the sweep {sweep}: the best by params,")
    assert "override /model" not in text and "model:\n  width: 8\n" in text
    # outside an experiment/ folder, +experiment can't find it: the comments say where it must go
    assert f"# Move it to {CONF}/experiment/ (+experiment looks in a config dir's experiment/ folder)" in text
    assert "#   python -m sweeper.train +experiment=best hydra.mode=RUN" in text.splitlines()
    code, _ = export(capsys, sweep, "--sort", "params", "--only-hits", "--export-best", out)
    assert code == 0 and "# Trial 0 of the sweep" in out.read_text() and "params among the hits" in out.read_text()


# ---------------------------------------------------------------- any app
PLAIN = ["x=2", "name=bb", "+shape=round", "shape.sides=3", "~note", "y=0.5"]


def test_plain_app_best_with_an_added_group_and_a_deleted_key(tmp_path, capsys):
    conf = tmp_path / "conf"                 # the sweep's --config-dir: a group of its own
    (conf / "shape").mkdir(parents=True)
    (conf / "shape" / "round.yaml").write_text("sides: 0\nsmooth: true\n")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun_yaml(sweep, "maximize", ["score"])
    for n, ret in enumerate([{"status": "completed", "value": 0.25}, {"status": "completed", "value": 0.75},
                             {"status": "interrupted", "error": "interrupted by Ctrl-C"}]):
        any_app_trial(sweep / str(n), PLAIN if n == 1 else ["x=1"], ret)
        hydra_yaml(sweep / str(n), {"shape": "round"}, main=PLAIN_CONF, config_dir=conf, job="app",
                   config_name="quadratic")
    out = conf / "experiment" / "best.yaml"
    code, err = export(capsys, sweep, "--export-best", out)
    assert code == 0, err
    assert out.read_text() == f"""\
# @package _global_
# Trial 1 of the sweep {sweep}: the best by score, as python -m sweeper.compare sorted it.
#   score 0.75
# A config file cannot delete a key: keep ~note on the command line
# <app>: how you start the app (app.py, -m pkg.app, ...); Hydra records only its job name, app.
# Run it:
#   python <app> --config-dir {conf} --config-name quadratic +experiment=best '~note' hydra.mode=RUN
defaults:
  - /shape/round

x: 2

name: bb

shape:
  sides: 3

y: 0.5
"""
    searchpath = f"hydra.searchpath=[file://{conf}]"   # what --config-dir does
    again = composed(PLAIN_CONF, "quadratic", [searchpath, "+experiment=best", "~note"])
    assert again == composed(PLAIN_CONF, "quadratic", [searchpath, *PLAIN])
    assert again["shape"] == {"sides": 3, "smooth": True} and "note" not in again


# ---------------------------------------------------------------- refusals: one line, exit 1, no file
def test_no_finished_trial_writes_nothing(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun_yaml(sweep, "minimize")
    any_app_trial(sweep / "0", ["x=1"], {"status": "pruned", "error": "TrialPruned"})
    any_app_trial(sweep / "1", ["x=2"], {"status": "interrupted", "error": "interrupted by Ctrl-C"})
    any_app_trial(sweep / "2", ["x=3"])                                                     # still running
    out = tmp_path / "conf" / "experiment" / "best.yaml"
    code, err = export(capsys, sweep, "--export-best", out)
    assert code == 1
    assert err == ["compare: --export-best: no finished (ok) trial among the 3 shown; nothing written"]
    assert not (tmp_path / "conf").exists()

    mnist_sweep(tmp_path / "mnist")
    code, err = export(capsys, tmp_path / "mnist", "--only-hits", "--sort", "params", "--export-best", out)
    assert code == 0 and out.exists()                 # trial 0 is a hit; a sweep without one:
    out.unlink()
    trial_dir(tmp_path / "nohit" / "0", ["model.width=8"], metrics([0.98]))
    code, err = export(capsys, tmp_path / "nohit", "--only-hits", "--export-best", out)
    assert code == 1 and err == ["compare: --export-best: no finished (ok) trial among the 0 shown; nothing written"]
    assert not out.exists()


@pytest.mark.parametrize("override,why", [
    ("++model=slim", "trial 0 was run with ++model=slim, which adds or replaces a group option (++): its files don't "
                     "say which"),
    ("model@net=slim", "trial 0 was run with model@net=slim, which puts a group option under another package: not "
                       "exported"),
    ("model.width=8", None),
])
def test_what_a_config_cannot_say_is_refused_in_one_line(tmp_path, capsys, override, why):
    over = ["optimizer.lr=0.05", override]
    trial_dir(tmp_path / "sweep" / "0", over, metrics([0.99], overrides=over))
    hydra_yaml(tmp_path / "sweep" / "0", MNIST_CHOICES)
    out = tmp_path / "best.yaml"
    code, err = export(capsys, tmp_path / "sweep", "--export-best", out)
    if why is None:   # the same trial with an override a config can hold is written
        assert code == 0 and yaml.safe_load(out.read_text()) == {"optimizer": {"lr": 0.05}, "model": {"width": 8}}
        return
    assert code == 1 and err == [f"compare: {why}"] and not out.exists()


def test_a_file_hydra_would_not_run_is_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    mnist_sweep(sweep)
    # Hydra searches the app's own conf/ before any --config-dir: +experiment=smallest would run conf/'s
    out = tmp_path / "conf" / "experiment" / "smallest.yaml"
    code, err = export(capsys, sweep, "--export-best", out)
    assert code == 1 and not out.exists()
    assert err == [f"compare: --export-best {out}: Hydra finds {CONF / 'experiment' / 'smallest.yaml'} first, so "
                   f"+experiment=smallest would run that one; give the file another name"]
    code, err = export(capsys, sweep, "--export-best", tmp_path / "best.yml")
    assert code == 1 and not (tmp_path / "best.yml").exists()
    assert err == [f"compare: --export-best {tmp_path / 'best.yml'}: Hydra reads a config from a .yaml file; name it "
                   f"best.yaml"]


# ---------------------------------------------------------------- a real sweep
@pytest.mark.slow
def test_the_best_of_a_real_sweep_runs_again_with_the_same_config(tmp_path, capsys):
    cmd = search_cmd(tmp_path, {"model.width": "choice(6, 8)", "optimizer.lr": "interval(0.01, 0.1)"},
                     "model=slim", "augment=none", "data.test_subset=300", n_trials=1)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "conf" / "experiment" / "best.yaml"
    r = subprocess.run([sys.executable, "-m", "sweeper.compare", str(tmp_path / "sweep"), "--export-best", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    best = r.stdout.splitlines()[1].split()[0]                       # the table's first row
    assert r.stderr.strip().splitlines()[-1] == f"compare: wrote {out} (trial {best})"
    text = out.read_text()
    # the sweep's group choices, its search and its fixed override: all of them, as the trial ran with them
    assert "  - override /hparams_search: tiny\n  - override /model: slim\n  - override /augment: none\n" in text
    assert "data:\n  test_subset: 300\n" in text

    # the command the comments give, as a user copies it, runs one training with the trial's config
    [line] = [line for line in text.splitlines() if line.startswith("#   python ")]
    argv = shlex.split(line[len("#   "):])
    assert argv == ["python", "-m", "sweeper.train", "--config-dir", str(tmp_path / "conf"), "+experiment=best",
                    "hydra.mode=RUN"]
    r = subprocess.run([sys.executable, *argv[1:], f"hydra.run.dir={tmp_path / 'again'}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    trial_cfg = yaml.safe_load((tmp_path / "sweep" / best / ".hydra" / "config.yaml").read_text())
    assert yaml.safe_load((tmp_path / "again" / ".hydra" / "config.yaml").read_text()) == trial_cfg
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["status"] == "ok"

    # written into a third config dir, beside the sweep's own: its command puts that one on the search path
    other = tmp_path / "elsewhere" / "experiment" / "mine.yaml"
    code, err = export(capsys, tmp_path / "sweep", "--export-best", other)
    assert code == 0, err
    [line] = [line for line in other.read_text().splitlines() if line.startswith("#   python ")]
    assert f"'hydra.searchpath=[file://{tmp_path / 'elsewhere'}]'" in line
    r = subprocess.run([sys.executable, *shlex.split(line[len("#   "):])[1:], "--cfg", "job"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load(r.stdout) == trial_cfg

