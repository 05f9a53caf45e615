"""A job that another Hydra launcher runs (Ray, submitit, joblib) stops itself when its sweep is done with it.

The sweep cannot reach into such a job: Hydra's Ray and submitit launchers keep their job handles inside
`launch()`, and the job may run on another host. What every job can reach is the storage, so each one watches its
own trial from a thread of its process (the sweep's worker processes are stopped by the sweep itself, worker.py):

- past `hydra.sweeper.trial_timeout` it stops with `timeout after N s`;
- when its trial is no longer RUNNING (the sweep was stopped by Ctrl-C or SIGTERM and re-queued it, or the trial
  was failed), or the sweep cancelled this run of it (a confirmation seed another seed's miss made moot: the
  trial's CANCELLED system attr names it), it stops as interrupted, within WATCH_EVERY seconds.

Stopping raises JobStopped in the task, which Hydra records as a failed job, so the launcher returns normally. A
task that does not get out within GRACE seconds (stuck in C code) has its process exit, after writing
job_return.json for the sweep.
"""
import json
import os
import signal
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from sweeper.engine import worker

WATCH_EVERY = 2.0   # seconds between two looks at the trial in the storage
GRACE = 10.0        # seconds a stopped task gets to end before its process exits
CANCELLED = "sweeper:cancelled"   # a trial's system attr: the names of its runs' dirs (seed2) the sweep cancelled

_why = None         # why the job is being stopped: JobStopped raised asynchronously takes no arguments


class JobStopped(Exception):
    """Raised in a task its sweep stopped. `why` starts with `timeout` (the job failed) or `interrupted`."""

    def __init__(self, why=None):
        super().__init__(why or _why or "interrupted: stopped by its sweep")


class Watched:
    """The task as the sweep gives it to another launcher: the task, run under a watch when its job belongs to a
    trial (SWEEPER_TRIAL is set in the job's environment by `hydra.job.env_set`). Pickles by reference, as the
    task does (launchers.importable)."""

    def __init__(self, task_function):
        self.task_function = task_function
        self.__name__ = getattr(task_function, "__name__", "task")

    def __call__(self, cfg):
        spec = os.environ.get(worker.TRIAL_ENV)
        if not spec:
            return self.task_function(cfg)
        from hydra.core.hydra_config import HydraConfig
        job_dir = Path(HydraConfig.get().runtime.output_dir)
        with suppress(OSError, ValueError, TypeError):
            # the launcher retries a job whose process exited (Ray does): the first attempt said how it ended
            raise JobStopped(worker.read_return(job_dir).error)
        with watching(json.loads(spec), job_dir):
            return self.task_function(cfg)


@contextmanager
def watching(spec, job_dir):
    """Watch the job of `spec` (worker.spec) while the task runs in this thread."""
    global _why
    _why = None
    done, task = threading.Event(), threading.get_ident()
    main = threading.current_thread() is threading.main_thread()
    # a signal interrupts what an asynchronous exception cannot: time.sleep, a blocking read, a lock's wait
    old = signal.signal(signal.SIGUSR1, _raise) if main else None
    watcher = threading.Thread(target=_watch, args=(spec, job_dir, task, main, done), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        if old is not None:
            signal.signal(signal.SIGUSR1, old)


def _raise(signum, frame):
    raise JobStopped()


def _watch(spec, job_dir, task, main, done):
    started, timeout = time.monotonic(), spec.get("timeout")
    trial = _trial_state(spec)
    while not done.wait(WATCH_EVERY if timeout is None else min(WATCH_EVERY, max(timeout / 4, 0.1))):
        state, cancelled = trial() if trial is not None else (None, ())
        if timeout is not None and time.monotonic() - started > timeout:
            why = f"timeout after {timeout:g} s"
        elif state not in (None, "RUNNING"):
            why = f"interrupted: its trial is {state} (its sweep stopped it)"
        elif spec.get("run") in cancelled:
            why = "interrupted: cancelled by its sweep"
        else:
            continue
        _stop(why, job_dir, task, main, done)
        return


def _trial_state(spec):
    """A function that reads the state of the job's trial ('RUNNING', 'FAIL', ...; None while the storage does not
    answer: a blink never stops a job) and the runs of it cancelled, or None for a job without a trial."""
    if spec.get("trial_id") is None or not spec.get("storage"):
        return None
    from sweeper.engine.study import open_storage
    storage = open_storage(spec["storage"])

    def state():
        try:
            trial = storage.get_trial(spec["trial_id"])
            return trial.state.name, trial.system_attrs.get(CANCELLED, ())
        except Exception:
            return None, ()
    return state


def _stop(why, job_dir, task, main, done):
    global _why
    _why = why
    if main:
        signal.pthread_kill(task, signal.SIGUSR1)
    else:
        import ctypes
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(task), ctypes.py_object(JobStopped))
    if done.wait(GRACE):
        return
    # the task did not get out: the sweep reads how it ended from its dir, then its launcher sees the process die
    with suppress(OSError):
        worker.save_return(job_dir, stopped(why))
    os._exit(1)


def stopped(why):
    """How a stopped job ended, for the sweep: a timeout fails the trial; an interrupted one runs again."""
    return worker.JobResult("failed" if why.startswith("timeout") else "interrupted", error=why)


def from_job_return(ret):
    """What another launcher returned for a job (a Hydra JobReturn) -> JobResult, a job its watch stopped too."""
    if ret.status.name != "COMPLETED" and isinstance(ret._return_value, JobStopped):
        return stopped(str(ret._return_value))
    return worker.from_job_return(ret)
