"""The README's "Sweep your own Hydra app" example, run as written: its config, its app and its commands."""
import re
import shlex
import subprocess
import sys

import optuna
import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow


def blocks(section):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}")
    return re.findall(r"```(\w+)\n(.*?)```", text[start:text.index("\n## ", start + 3)], re.S)


def test_the_own_app_example_sweeps_prunes_and_resumes(tmp_path):
    (config, app, commands) = [body for _, body in blocks("Sweep your own Hydra app")]
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(config)
    (tmp_path / "app.py").write_text(app)
    first, second = [shlex.split(line, comments=True) for line in commands.strip().splitlines()]
    assert first[:3] == ["python", "app.py", "--multirun"]

    def run(*args):
        r = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    # the median pruner, told to judge from the first finished trial on, so six trials are enough to see it act;
    # the seed makes the six draws ones it prunes (unseeded, about one run in 30 drew six it let through)
    run(*first[1:], "hydra.sweeper.n_trials=6", "hydra.sweep.dir=first", "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0", "+hydra.sweeper.sampler.seed=0")
    s = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/sphere.db")
    states = [t.state for t in s.trials]
    assert len(states) == 6 and optuna.trial.TrialState.PRUNED in states       # report() reached the pruner
    best = yaml.safe_load((tmp_path / "first" / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and best["best_value"] == s.best_value
    # the second command changes the fixed overrides: under another study name, as the refusal says
    run(*second[1:], "hydra.sweeper.study_name=fixed-y", "hydra.sweep.dir=second")
    s = optuna.load_study(study_name="fixed-y", storage=f"sqlite:///{tmp_path}/sphere.db")
    ran = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in ran) == [0, 2] and all("y" not in t.params for t in ran)
    for t in ran:
        job = yaml.safe_load((tmp_path / "second" / str(t.number) / ".hydra" / "config.yaml").read_text())
        assert job["y"] == 0 and job["note"] == "hi" and job["x"] == t.params["x"]
