"""`python -m sweeper.train` as a user types it."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY, cli, make_cfg
from sweeper.mnist import data
from sweeper.mnist.checks import ConfigError
from sweeper.mnist.data import DataError
from sweeper.mnist.overrides import OverrideError
from sweeper.train import CheckOutputDir, check_command


@pytest.mark.slow
def test_main_command_trains_and_writes_outputs(tmp_path):
    r = cli("data.train_subset=2000", "data.test_subset=1000", "trainer.epochs=1", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "ok" and m["final_test_acc"] > 0.5
    assert "data.train_subset=2000" in m["overrides"]
    assert (tmp_path / "model.pt").exists() and (tmp_path / ".hydra" / "config.yaml").exists()
    assert "final test acc" in (tmp_path / "train.log").read_text()


BAD = [
    ("model.dropout=1.5", "model.dropout=1.5", "[0, 1)"),
    ("model.dropout=-0.2", "model.dropout=-0.2", "[0, 1)"),
    ("model.width=0", "model.width=0", "> 0"),
    ("trainer.epochs=0", "trainer.epochs=0", "[1, budget.max_epochs=20]"),
    ("trainer.epochs=25", "trainer.epochs=25", "[1, budget.max_epochs=20]"),
    ("optimizer.lr=0", "optimizer.lr=0", "> 0"),
    ("optimizer.lr=-1", "optimizer.lr=-1", "> 0"),
    ("trainer.batch_size=0", "trainer.batch_size=0", "> 0"),
    ("model=resnet50", "model=resnet50", "lean, reference, slim"),
    ("data.root=/no/such/dir data.download=false", "t10k-images-idx3-ubyte", "MNIST_ROOT"),
]


@pytest.mark.parametrize("args,names,allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_clear_line(args, names, allowed):
    # what cli() prints after "error: ", checked without a process each
    with pytest.raises((ConfigError, OverrideError, DataError)) as e:
        check_command(args.split())
    err = str(e.value)
    assert names in err and allowed in err and "\n" not in err, err


@pytest.mark.slow
def test_bad_input_through_the_cli_exits_2_and_trains_nothing(tmp_path):
    # test_overrides.py types more refusals; all print what check_command raised, as here
    r = cli(*TINY, "model.dropout=1.5", f"hydra.run.dir={tmp_path}")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "epoch 1" not in r.stdout + err
    assert list(tmp_path.iterdir()) == []     # refused before Hydra created the run dir


@pytest.mark.slow
def test_over_budget_cli_names_both_numbers(tmp_path):
    r = cli(*TINY, "model.width=64", f"hydra.run.dir={tmp_path}")
    assert r.returncode != 0
    assert "over budget.max_params=20000" in r.stderr and "model has" in r.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "rejected"


@pytest.mark.slow
def test_a_huge_model_is_counted_not_allocated(tmp_path):
    # width=5000 is 2.1 G parameters: 8.4 GB when the model was built to count it; counted on the meta device
    # the whole process stays at torch's import size
    probe = ("import resource, runpy, sys\n"
             "sys.argv = ['sweeper.train', *sys.argv[1:]]\n"
             "try:\n"
             "    runpy.run_module('sweeper.train', run_name='__main__')\n"
             "finally:\n"
             "    print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, "model.width=5000", f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "model has 2075235010 parameters, over budget.max_params=20000" in r.stderr
    rss_kb = int(r.stderr.split("maxrss_kb")[1].split()[0])
    assert rss_kb < 1_000_000, rss_kb
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "rejected" and m["params"] == 2075235010 and m["epochs"] == []


@pytest.mark.slow
@pytest.mark.parametrize("given", [True, False], ids=["MNIST_ROOT set", "MNIST_ROOT unset"])
def test_the_test_suite_without_mnist_says_so_once_and_never_downloads(tmp_path, given):
    env = {k: v for k, v in os.environ.items() if k != "MNIST_ROOT"}
    if given:
        env["MNIST_ROOT"] = str(tmp_path / "nowhere")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                        str(ROOT / "tests" / "test_space.py")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=env)
    out = r.stdout + r.stderr
    [line] = [line for line in out.splitlines() if line.startswith("ERROR:")]
    assert r.returncode == 4 and "passed" not in out, out
    assert "never download" in line and "MNIST/raw" in line and "export MNIST_ROOT=" in line, line
    if given:
        assert f"MNIST_ROOT={tmp_path / 'nowhere'}:" in line, line
    else:   # it names where it looked, without claiming MNIST_ROOT was set
        assert "MNIST_ROOT is not set, so the tests looked in data/" in line and str(tmp_path / "data") in line, line
    assert "urlopen" not in out and "download failed" not in out


def test_a_subset_larger_than_the_data_is_capped_with_a_warning(caplog):
    _, (test_x, _) = data.load(os.environ["MNIST_ROOT"], False, 100, 20000, 0, torch.device("cpu"))
    assert len(test_x) == 10000
    assert "data.test_subset=20000 is more than the 10000 test images: using all 10000" in caplog.text


def test_a_failed_download_does_not_advise_the_download_it_tried(tmp_path, monkeypatch):
    # data.download=true into an empty folder with no internet: the advice is where to point, not to download
    import torchvision.datasets.mnist as tv
    monkeypatch.setattr(tv.MNIST, "mirrors", ["http://127.0.0.1:9/"])   # refused at once, online or not
    with pytest.raises(DataError) as e:
        data.load(str(tmp_path / "empty"), True, 100, 100, 0, torch.device("cpu"))
    err = str(e.value)
    assert "\n" not in err and "the download failed" in err and "set data.download=true" not in err, err


def test_a_failed_download_takes_back_the_folders_it_made(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv
    monkeypatch.setattr(tv.MNIST, "mirrors", ["http://127.0.0.1:9/"])   # refused at once, online or not
    for root, kept in ((tmp_path / "new" / "data", tmp_path), (tmp_path / "mine", tmp_path / "mine")):
        kept.mkdir(exist_ok=True)
        (kept / "notes.txt").write_text("mine")
        with pytest.raises(DataError):
            data.load(str(root), True, 100, 100, 0, torch.device("cpu"))
        # no empty MNIST/raw/ left behind; what was there before stays
        assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_the_output_dir_check_creates_nothing(tmp_path):
    # a sweep the sweeper then refuses must not leave an empty sweep dir: the check only probes the nearest folder
    CheckOutputDir().on_multirun_start(make_cfg(f"hydra.sweep.dir={tmp_path}/multirun/study", hydra=True))
    CheckOutputDir().on_run_start(make_cfg(f"hydra.run.dir={tmp_path}/a/b", hydra=True))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_search_sweeps_without_multirun_and_each_worker_runs_one_trial(tmp_path):
    # conf/hparams_search/budget.yaml sets hydra.mode: MULTIRUN; its workers get hydra.mode=RUN
    # one trial is enough: with n_jobs=2 it runs in a worker process, which must run it as one job
    r = cli("hparams_search=budget", "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=2",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db", f"hydra.sweep.dir={tmp_path}/sweep",
            "data.train_subset=500", "data.test_subset=100", "trainer.epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "sweep" / "trials.csv") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["COMPLETE"]
    for trial in ("0",):
        job = tmp_path / "sweep" / trial
        assert json.loads((job / "metrics.json").read_text())["status"] == "ok"
        # one trial, not a sweep of its own: no multirun.yaml and no job dirs inside
        assert not (job / "multirun.yaml").exists() and not any(p.name.isdigit() for p in job.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db", "sweep"]


@pytest.mark.slow
def test_ctrl_c_ends_a_run_in_one_line_and_keeps_its_record(tmp_path):
    run = tmp_path / "run"
    # a child of a test process may have SIGINT ignored (xdist): give it the default a terminal's Ctrl-C finds
    p = subprocess.Popen([sys.executable, "-m", "sweeper.train", "data.train_subset=1000", "data.test_subset=100",
                          "trainer.epochs=20", f"hydra.run.dir={run}"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log, deadline = run / "train.log", time.time() + 120
    while not (log.exists() and "epoch  1 " in log.read_text()):
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    err = err.strip()
    assert p.returncode == 130 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: interrupted (Ctrl-C) after ") and f"{run} keeps metrics.json" in err, err
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["reason"] == "interrupted (Ctrl-C)" and 1 <= len(m["epochs"]) < 20
    assert f"after {len(m['epochs'])} of 20 epochs" in err, err
    assert not (run / "model.pt").exists()


def test_bf16_on_a_cpu_without_bf16_units_warns_once_and_trains(tmp_path, monkeypatch, caplog):
    import sweeper.mnist.trial as trial
    monkeypatch.setattr(trial, "cpu_has_bf16", lambda: False)   # /proc/cpuinfo without avx512_bf16, amx_bf16
    m = trial.train(make_cfg("data.train_subset=500", "data.test_subset=100", "trainer.epochs=1",
                             "trainer.precision=bf16"), str(tmp_path))
    [line] = [r.getMessage() for r in caplog.records if "slower than fp32" in r.getMessage()]
    assert "trainer.precision=bf16" in line and "3.7x" in line and "trainer.precision=fp32" in line
    assert m["status"] == "ok" and m["precision"] == "bf16"


@pytest.mark.parametrize("precision,bf16", [("fp32", False), ("auto", False), ("bf16", True)])
def test_what_a_cpu_without_bf16_units_runs(monkeypatch, caplog, precision, bf16):
    import sweeper.mnist.trial as trial
    monkeypatch.setattr(trial, "cpu_has_bf16", lambda: False)
    assert trial.pick_bf16(precision, torch.device("cpu")) is bf16     # auto picks fp32 there
    assert ("slower than fp32" in caplog.text) is bf16


@pytest.mark.slow
def test_a_diverged_trial_fails_and_stops(tmp_path):
    # lr 100 without a warm-up blows up in epoch 1: as a huge finite mean loss (1.2e16 on one CPU, 8.4e13 in fp32
    # on another) or as a non-finite loss at some step (bf16 there), depending on the CPU's float kernels
    r = cli(*TINY, "trainer.epochs=2", "optimizer.lr=100", "scheduler=none", f"hydra.run.dir={tmp_path}")
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert re.fullmatch(r"error: diverged: (training loss [\d.]+e\+\d+ at epoch 1|non-finite loss at epoch 1, "
                        r"step \d+/32); lower optimizer.lr \(now 100\)", err), err
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "failed" and m["reason"] == err.removeprefix("error: ") and m["epochs"] == []
    assert m["reason"] in (tmp_path / "train.log").read_text()
    assert not (tmp_path / "model.pt").exists()           # stopped in epoch 1 of 2
