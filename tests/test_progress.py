"""What a sweep's terminal shows while it runs and when it ends, on the torch-free plain app: a line after each
trial when output is not a terminal, a live line that redraws itself on one, and last lines that name the best
trial and the command that trains it again."""
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from test_plain_apps import APPS, ok, rows, run

pytestmark = pytest.mark.slow
LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[HYDRA\] ")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_line_after_each_trial_and_last_lines_that_train_the_best_again(tmp_path, n_jobs):
    r = ok(run(tmp_path, "hydra.sweeper.n_trials=4", f"hydra.sweeper.n_jobs={n_jobs}"))
    out = (r.stdout + r.stderr).splitlines()
    done = [int(m.group(1)) for line in out if (m := re.search(r"\] (\d)/4 done \| \d running", line))]
    assert done[-4:] == [1, 2, 3, 4], out                 # after each trial (and 0/4 before the first)
    assert any(re.search(r"\| best value \d+ \(trial \d\)", line) for line in out)
    best = min(rows(tmp_path), key=lambda t: float(t["value"]))
    [line] = [line for line in out if "] best trial " in line]
    assert f"best trial {best['number']}: value {float(best['value']):g}" in line
    assert f"dir {tmp_path}/sweep/{best['number']}" in line
    assert any(f"every trial: {tmp_path}/sweep/trials.csv; plots: python -m sweeper.compare" in line for line in out)
    [again] = [line.split("train the best trial again: ", 1)[1] for line in out if "train the best trial again" in line]
    # the command as printed, from where the sweep ran: the same config as the trial had
    args = shlex.split(again)
    assert args[:3] == ["python", "-m", "plainapp.app"]
    subprocess.run([sys.executable, *args[1:], f"hydra.run.dir={tmp_path}/again"], cwd=APPS, check=True,
                   capture_output=True, timeout=60)
    seen = OmegaConf.load(tmp_path / "seen-run.yaml")
    trial = OmegaConf.load(tmp_path / f"seen-{best['number']}.yaml")
    assert seen == trial


def read_pty(fd, proc, timeout):
    out, end = b"", time.time() + timeout
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:   # the child closed the terminal
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out.decode(errors="replace")


def test_on_a_terminal_the_line_redraws_itself_under_whole_log_lines(tmp_path):
    import fcntl
    import termios
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))   # a terminal 160 wide
    cmd = [sys.executable, "-m", "plainapp.app", "--multirun", f"hydra.sweep.dir={tmp_path}/sweep", f"out={tmp_path}",
           "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    p = subprocess.Popen(cmd, cwd=APPS, stdin=follower, stdout=follower, stderr=follower,
                         env={**os.environ, "PLAINAPP_SLEEP": "0.5"})
    os.close(follower)
    text = read_pty(leader, p, 90)
    os.close(leader)
    assert p.wait(timeout=30) == 0, text[-3000:]
    lines = text.replace("\r\n", "\n").split("\n")
    logged = [line.split("\r")[-1] for line in lines if "][HYDRA] " in line]
    assert all(LOG_LINE.match(line) for line in logged), logged   # never a piece of the live line inside
    redraws = [part for line in lines for part in line.split("\r") if re.match(r"\d/4 done \| ", part)]
    assert redraws and redraws[-1].startswith("4/4 done | 0 running | best value"), redraws
    assert not any(re.search(r"\] \d/4 done", line) for line in logged)   # no log line of it: it is the live line
    assert "train the best trial again" in text
