"""hydra.sweeper.cuda_mps: trials that share one GPU run under CUDA MPS (Multi-Process Service).

Why: without MPS a GPU time-slices between processes, so n_jobs trial processes train no faster together than one
(issue 12, an H100: 1, 4 and 8 graph-captured trainers gave 82.7k, 83.3k and 82.5k img/s together); under one
MPS server their kernels run side by side (8 of them: 219.5k img/s).

    with mps.daemon(setting, sweep_dir, n_jobs, device):   # sweep.py, around the run of its trials
        ...   # trial processes started here inherit os.environ, and with it the daemon's pipe dir

- `auto` is on when n_jobs > 1 and the trials use CUDA: the config's `device` is `cuda`, or `auto` with a CUDA GPU
  visible. An app whose config has no `device` key is not guessed at: set `true` for it. `true` is on whenever
  MPS can start; `false` is off.
- A daemon already running (an admin's, at $CUDA_MPS_PIPE_DIRECTORY or the default /tmp/nvidia-mps) is used as it
  is and left alone.
- Otherwise this sweep starts a private one, `nvidia-cuda-mps-control -d` with its pipe and log dirs in
  <sweep dir>/mps/ (the pipe dir in /tmp when that path is too long for the daemon's sockets), and stops it (`echo quit | nvidia-cuda-mps-control`) when the block ends, however it ends:
  done, Ctrl-C or a failure. (A sweep killed with SIGKILL leaves it running; the next sweep in that dir reuses it.)
- If MPS cannot start (no such program, a container that forbids it): one warning line, and the sweep goes on.
"""
import logging
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from sweeper.engine import gpus

log = logging.getLogger(__name__)
CONTROL = "nvidia-cuda-mps-control"
DRIVER_BIN = "/usr/local/nvidia/bin"   # where containers often mount the driver's programs, off PATH
DEFAULT_PIPE_DIR = "/tmp/nvidia-mps"   # where CUDA clients look when CUDA_MPS_PIPE_DIRECTORY is unset
PIPE, LOG = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
MAX_PIPE_DIR = 80   # the daemon puts Unix sockets in it, and a socket path has at most 107 bytes
TIMEOUT = 10        # seconds for one control command


def wanted(setting, n_jobs, device):
    if setting != "auto":
        return setting
    return n_jobs > 1 and gpus.uses_cuda(device)


@contextmanager
def daemon(setting, sweep_dir, n_jobs, device, served=None):
    """Run the block under an MPS daemon when `setting` (auto, true, false) asks for one and one can be had.
    `served`: the GPU ids the workers are placed on (sweeper/engine/gpus.py); one daemon serves them all."""
    stop = start(Path(sweep_dir) / "mps", served) if wanted(setting, n_jobs, device) else None
    try:
        yield
    finally:
        if stop is not None:
            stop()


def start(root, served=None):
    """Use a running daemon or start a private one under `root`; return the function that undoes it, or None."""
    control = shutil.which(CONTROL) or shutil.which(CONTROL, path=DRIVER_BIN)
    if control is None:
        log.warning(f"CUDA MPS: {CONTROL} not found; trials share the GPU by time-slicing")
        return None
    admin = os.environ.get(PIPE, DEFAULT_PIPE_DIR)
    if _answers(control, admin):
        log.info(f"CUDA MPS: using the daemon already running at {admin}")
        return None
    pipe, logs = (root / "pipe").absolute(), (root / "log").absolute()
    short = len(str(pipe)) > MAX_PIPE_DIR
    if short:
        pipe = Path(tempfile.mkdtemp(prefix="sweeper-mps-"))
    pipe.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, PIPE: str(pipe), LOG: str(logs), **({gpus.VAR: ",".join(served)} if served else {})}
    if _answers(control, pipe):
        log.info(f"CUDA MPS: reusing the private daemon an earlier sweep left at {pipe}")
    else:
        why = _launch(control, env, pipe)
        if why:
            log.warning(f"CUDA MPS did not start ({why}; see {logs}); trials share the GPU by time-slicing")
            if short:
                shutil.rmtree(pipe, ignore_errors=True)
            return None
        log.info(f"CUDA MPS: started a private daemon, pipe dir {pipe}, logs in {logs}")
    saved = {k: os.environ.get(k) for k in (PIPE, LOG)}
    os.environ.update({PIPE: str(pipe), LOG: str(logs)})

    def stop():
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            r = subprocess.run([control], input="quit\n", env=env, capture_output=True, text=True, timeout=TIMEOUT)
            if r.returncode != 0:
                log.warning(f"CUDA MPS: quit said {_last_line(r)}; the daemon at {pipe} may still run")
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning(f"CUDA MPS: quit failed ({e}); the daemon at {pipe} may still run")
        if short:
            shutil.rmtree(pipe, ignore_errors=True)
    return stop


def _launch(control, env, pipe):
    """Start `control -d`; return None once it answers, else why not."""
    try:
        r = subprocess.run([control, "-d"], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode != 0:
        return f"{CONTROL} -d exited with {r.returncode}: {_last_line(r)}"
    deadline = time.monotonic() + TIMEOUT
    while not _answers(control, pipe):   # -d forks the daemon and returns before it listens
        if time.monotonic() > deadline:
            return f"it did not answer at {pipe} within {TIMEOUT} s"
        time.sleep(0.1)
    return None


def _answers(control, pipe_dir):
    """A daemon listens at `pipe_dir`: its control pipe is there and it answers a query."""
    if not (Path(pipe_dir) / "control").exists():
        return False
    try:
        r = subprocess.run([control], input="get_server_list\n", env={**os.environ, PIPE: str(pipe_dir)},
                           capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _last_line(r):
    lines = (r.stderr or r.stdout or "").strip().splitlines()
    return lines[-1] if lines else "nothing"
