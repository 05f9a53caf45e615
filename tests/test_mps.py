"""hydra.sweeper.cuda_mps (sweeper/engine/mps.py), with a stand-in for nvidia-cuda-mps-control: `-d` creates the control
pipe file, `get_server_list` answers while it exists, `quit` removes it; every call is logged.

    python -m pytest -q -n 0 tests/test_mps.py
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweeper.engine import mps
from test_plain_apps import ok, run

FAKE = """#!/usr/bin/env bash
pipe=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}
if [[ ${1:-} == -d ]]; then
    echo "start $pipe ${CUDA_MPS_LOG_DIRECTORY:-}" >> "$FAKE_MPS_CALLS"
    [[ -z ${FAKE_MPS_FAIL:-} ]] || { echo "$FAKE_MPS_FAIL" >&2; exit 1; }
    touch "$pipe/control"
    exit 0
fi
read -r cmd
echo "$cmd $pipe" >> "$FAKE_MPS_CALLS"
[[ -e $pipe/control ]] || { echo "Cannot find MPS control daemon process" >&2; exit 1; }
[[ $cmd != quit ]] || rm "$pipe/control"
"""


@pytest.fixture
def short():
    """A dir whose path is short enough for the daemon's sockets (pytest's tmp_path under xdist is not)."""
    root = Path(tempfile.mkdtemp(prefix="mps-test-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The stand-in on PATH; returns a function giving the calls it got, one string each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / mps.CONTROL).write_text(FAKE)
    (bin_dir / mps.CONTROL).chmod(0o755)
    calls = tmp_path / "calls.log"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_CALLS", str(calls))
    monkeypatch.delenv(mps.PIPE, raising=False)
    monkeypatch.delenv(mps.LOG, raising=False)
    monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", str(tmp_path / "default-pipe"))   # never the machine's own
    return lambda: calls.read_text().splitlines()


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_means_several_jobs_on_cuda():
    assert mps.wanted("auto", 8, "cuda") and mps.wanted(True, 1, "cpu")
    assert not mps.wanted("auto", 1, "cuda") and not mps.wanted("auto", 8, "cpu") and not mps.wanted(False, 8, "cuda")
    assert not mps.wanted("auto", 8, None)   # an app without a `device` key: not guessed at
    import torch
    assert mps.wanted("auto", 8, "auto") == torch.cuda.is_available()


def test_a_private_daemon_serves_the_block_and_stops(short, fake, caplog):
    pipe, logs = short / "sweep" / "mps" / "pipe", short / "sweep" / "mps" / "log"
    with caplog.at_level(logging.INFO, logger="sweeper.engine.mps"):
        with mps.daemon(True, short / "sweep", 2, "cuda"):
            child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{mps.PIPE}'])"],
                                   capture_output=True, text=True, check=True)
            assert child.stdout.strip() == str(pipe) and os.environ[mps.LOG] == str(logs)
            assert (pipe / "control").exists()
    assert mps.PIPE not in os.environ and mps.LOG not in os.environ
    assert not (pipe / "control").exists()
    assert fake() == [f"start {pipe} {logs}", f"get_server_list {pipe}", f"quit {pipe}"]
    assert warnings(caplog) == [] and any("started a private daemon" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_it_stops_after_ctrl_c_or_a_failure(short, fake, error):
    with pytest.raises(error):
        with mps.daemon(True, short / "sweep", 2, "cuda"):
            raise error()
    assert fake()[-1] == f"quit {short / 'sweep' / 'mps' / 'pipe'}" and mps.PIPE not in os.environ


def test_a_pipe_path_too_long_for_a_socket_moves_to_tmp(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(mps, "MAX_PIPE_DIR", 10)
    with mps.daemon(True, tmp_path / "sweep", 2, "cuda"):
        pipe = Path(os.environ[mps.PIPE])
        assert pipe.name.startswith("sweeper-mps-") and (pipe / "control").exists()
        assert os.environ[mps.LOG] == str(tmp_path / "sweep" / "mps" / "log")
    assert fake()[-1] == f"quit {pipe}" and not pipe.exists()


def test_when_it_cannot_start_one_warning_and_the_block_runs(tmp_path, fake, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_MPS_FAIL", "MPS is not supported on this device")
    ran = False
    with mps.daemon(True, tmp_path / "sweep", 2, "cuda"):
        ran = True
        assert mps.PIPE not in os.environ
    [line] = warnings(caplog)
    assert ran and line.startswith("CUDA MPS did not start (") and "MPS is not supported on this device" in line
    assert [c.split()[0] for c in fake()] == ["start"]   # no quit: nothing was started


def test_without_the_program_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mps, "DRIVER_BIN", str(tmp_path))
    with mps.daemon("auto", tmp_path / "sweep", 2, "cuda"):
        pass
    [line] = warnings(caplog)
    assert "nvidia-cuda-mps-control not found" in line


def test_a_running_admin_daemon_is_used_and_left_alone(tmp_path, fake, monkeypatch, caplog):
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "control").touch()
    monkeypatch.setenv(mps.PIPE, str(admin))
    with mps.daemon("auto", tmp_path / "sweep", 4, "cuda"):
        assert os.environ[mps.PIPE] == str(admin) and mps.LOG not in os.environ
    assert (admin / "control").exists() and os.environ[mps.PIPE] == str(admin)
    assert fake() == [f"get_server_list {admin}"] and warnings(caplog) == []
    assert not (tmp_path / "sweep" / "mps").exists()


@pytest.mark.slow
def test_a_sweep_runs_its_trials_under_its_daemon_and_stops_it(short, fake):
    """The plain app (no `device` key), cuda_mps=true, two worker processes: each trial got the private pipe dir."""
    r = ok(run(short, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.cuda_mps=true"))
    pipe = short / "sweep" / "mps" / "pipe"
    seen = [json.loads((short / f"ran-{n}.json").read_text())["mps"] for n in range(3)]
    assert seen == [str(pipe)] * 3
    assert fake()[0].startswith(f"start {pipe}") and fake()[-1] == f"quit {pipe}" and not (pipe / "control").exists()
    assert "CUDA MPS" in r.stderr + r.stdout


def test_a_bad_setting_is_one_line(tmp_path):
    r = run(tmp_path, "hydra.sweeper.cuda_mps=maybe")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == \
        "error: hydra.sweeper.cuda_mps='maybe' is not allowed: auto, true or false"
