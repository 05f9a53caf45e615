"""What stops a sweep before its ledger says it is done, and what each stop leaves behind.

- Ctrl-C or SIGTERM (a scheduler preempting the sweep): the jobs are stopped, the running trials failed and
  re-queued, the outputs written; exit 130 or 143 with one line on how to resume.
- The storage gone for longer than storage_timeout: the running jobs are stopped, their trials stay RUNNING for the
  next sweep to re-run; exit 1.
- An error no slot expects: no more trials start, the running ones end; exit 1.

Finished trials are in the storage already, whichever it is.
"""
import logging
import os
import signal
import threading
from pathlib import Path

from sweeper.engine import worker
from sweeper.engine.retry import StorageLost as Lost

log = logging.getLogger("sweeper.engine.sweep")   # the sweep's own lines, whichever module writes them


class SweepError(Exception):
    """Bad sweep settings (exit 2), or a sweep stopped by failures (exit 1): one line for the user."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class StorageLost(SweepError, Lost):
    """The storage stayed unreachable for longer than storage_timeout: the sweep stops, exit 1. Raised by the
    sweep's Retry (sweeper/engine/retry.py)."""

    def __init__(self, message):
        super().__init__(message, exit_code=1)


class Stops:
    """A sweep's stops. `overrides(trial)` gives the overrides a trial's job ran with (what an interrupted dir
    records)."""

    def __init__(self, sweep_dir, overrides):
        self.sweep_dir, self.overrides = Path(sweep_dir), overrides
        self.ledger = None
        self.fatal = None      # the SweepError that stops the whole sweep: the storage is gone, or a slot crashed
        self.cause = "Ctrl-C"

    def catch_sigterm(self):
        """From now on SIGTERM (preemption: SLURM, kill, systemd) stops the sweep as Ctrl-C does."""
        on_signal(signal.SIGTERM, self._terminated)

    def _terminated(self, signum, frame):
        self.cause = "SIGTERM"
        raise KeyboardInterrupt

    def lost(self, e):
        """The storage stayed unreachable past storage_timeout (in a slot or the heartbeat thread): stop now."""
        self.stop(e if isinstance(e, StorageLost) else StorageLost(str(e)))

    def crashed(self, e, log_file=None):
        """An error no slot expects: no more trials start, the running ones end, and the sweep exits 1 saying so.
        Its traceback goes to sweep.log only."""
        if log_file is not None:
            log_file.handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "a slot of the sweep crashed",
                                                   None, (type(e), e, e.__traceback__)))
        self.stop(SweepError(f"a slot of the sweep crashed ({worker.describe(e)}): no more trials were started, the "
                             f"finished ones are kept; traceback in {self.sweep_dir / 'sweep.log'}", exit_code=1))

    def stop(self, error):
        if self.fatal is None:
            self.fatal = error
        self.ledger.stop(str(error))

    def abandon(self, in_flight):
        """The storage is gone: stop this sweep's running trials. They stay RUNNING in the study, so the next sweep
        on it re-runs them (their sweep's pid is dead, or their heartbeat stale); the dirs of the stopped jobs say
        `interrupted` (a job that ended but could not be told keeps its job_return.json)."""
        worker.stop_all()
        why = "interrupted: the storage was unreachable"
        for trial in in_flight:
            job_dir = self.sweep_dir / str(trial.number)
            if not (job_dir / worker.RETURN_FILE).exists():
                worker.mark_interrupted(job_dir, self.overrides(trial), why)

    def interrupted(self, lock, write_outputs, log_file, storage_url):
        """Ctrl-C or SIGTERM: stop the worker processes, fail and re-queue this sweep's running trials (their dirs
        say `interrupted`; jobs of other launchers see that and stop, watch.py), keep the finished ones, say how
        to resume. A second signal meanwhile exits at once: the finished trials are in the storage already."""
        code = 143 if self.cause == "SIGTERM" else 130
        for sig in (signal.SIGINT, signal.SIGTERM):
            on_signal(sig, lambda *_: os._exit(code))
        why = f"interrupted by {self.cause}"
        worker.stop_all()
        with lock:
            self.ledger.stop("interrupted")
            for t in self.ledger.running(mine=True):
                self.ledger.requeue(t, why)
                if t.user_attrs.get("dir"):
                    worker.mark_interrupted(Path(t.user_attrs["dir"]), self.overrides(t), why)
            write_outputs()
        log_file.close_and_detach()
        where = f"in {storage_url}; run the same command again to continue" if storage_url else \
            f"in {self.sweep_dir}; set hydra.sweeper.storage to make a sweep resumable"
        log.warning(f"{why}: finished trials are kept {where}")
        raise SystemExit(code)


def on_signal(sig, handler):
    if threading.current_thread() is threading.main_thread():   # Python's rule: only there
        signal.signal(sig, handler)
