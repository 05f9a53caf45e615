"""A trial's side of a sweep: `report` to its Optuna trial, and running it in a worker process.

Any Hydra task swept by `hydra/sweeper: mnist_optuna` can be pruned:

    import optuna, sweeper
    for epoch in range(1, epochs + 1):
        ...
        if sweeper.report(val_acc, epoch):    # True: the pruner says stop
            raise optuna.TrialPruned()

The task reaches its trial in one of two ways. Under Hydra's basic launcher with n_jobs=1 the job runs in the
sweep's own process, which binds the trial here (`bound`). Anywhere else (worker processes, joblib, Ray,
submitit) the sweep sets SWEEPER_TRIAL in the job's environment, and `report` loads the trial from the storage.
Outside a sweep `report` does nothing and returns False, so a task runs the same on its own.

A job in a worker process is a plain `python app.py overrides` run; the `SaveReturn` callback writes what the
task returned (or raised) to `job_return.json` in its dir, for the sweep to read.
"""
import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import ListConfig

TRIAL_ENV = "SWEEPER_TRIAL"   # a job elsewhere: how to reach its trial, and how long it may run (`spec`)
RETURN_FILE = "job_return.json"

_bound = None                 # (trial, guard) of a job that runs in the sweep's own process
_loaded = {}                  # env spec -> (trial, guard), loaded once per process


def in_sweep():
    return _bound is not None or bool(os.environ.get(TRIAL_ENV))


def report(value, step, may_prune=True):
    """Report `value` at `step` to the running trial; return True when its pruner says stop. With `may_prune`
    False (the last step: nothing is left to save) the value is recorded and the pruner is not asked.

    A value at or beyond the sweep's `prune_guard` (in the direction of the first objective) is never pruned.
    Outside a sweep, and in a multi-objective study (Optuna cannot prune those), this does nothing and
    returns False.
    """
    trial, guard = _trial()
    if trial is None or len(trial.study.directions) > 1:
        return False
    value = float(value)
    retry = _retry()   # a report during a blink of the storage waits it out, as the sweep's own calls do
    retry(trial.report, value, int(step))
    if not may_prune:
        return False
    if guard is not None:
        import optuna
        maximize = trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
        if (value >= guard) if maximize else (value <= guard):
            return False
    return retry(trial.should_prune)


def _retry():
    from sweeper.engine.retry import Retry   # loaded on a job's first report, not by every Hydra run
    global _retrier
    if _retrier is None:
        _retrier = Retry(timeout=float(json.loads(os.environ.get(TRIAL_ENV) or "{}").get("storage_timeout", 600)))
    return _retrier


_retrier = None


def _trial():
    if _bound is not None:
        return _bound
    spec = os.environ.get(TRIAL_ENV)
    if not spec:
        return None, None
    if spec not in _loaded:
        s = json.loads(spec)
        if s.get("run"):   # another run of a trial (a confirmation seed): the trial is not its to report
            _loaded[spec] = None, None
            return _loaded[spec]
        import optuna
        from hydra.utils import instantiate

        from sweeper.engine.study import open_storage
        study = optuna.load_study(study_name=s["study"], storage=open_storage(s["storage"]),
                                  pruner=instantiate(s["pruner"]))
        _loaded[spec] = optuna.Trial(study, s["trial_id"]), s.get("guard")
    return _loaded[spec]


@contextmanager
def bound(trial, guard=None):
    """Make `trial` the one `report` reaches while a job runs in this process."""
    global _bound
    _bound = trial, guard
    try:
        yield
    finally:
        _bound = None


def spec(storage_url, study, trial, pruner_cfg, guard=None, storage_timeout=600, timeout=None, run=None):
    """SWEEPER_TRIAL for a job in another process: enough to load its trial from the storage, whether the job
    reports to it (a trial's own run) or is another `run` of it (another seed: its dir's name), and its `timeout`
    (watch.py)."""
    return json.dumps(dict(storage=storage_url, study=study.study_name, trial_id=trial._trial_id, pruner=pruner_cfg,
                           guard=guard, storage_timeout=storage_timeout, timeout=timeout, run=run))


# ---------------------------------------------------------------- what a job returned
@dataclass
class JobResult:
    """How a job ended, whoever ran it: `completed` with a value, `pruned`, or `failed` with an error line."""
    status: str
    value: Any = None
    error: Optional[str] = None


def describe(e):
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def from_exception(e):
    import optuna
    if isinstance(e, optuna.TrialPruned):
        return JobResult("pruned", error=describe(e))
    return JobResult("failed", error=describe(e))


def from_job_return(ret):
    """A Hydra JobReturn (basic, joblib, Ray, submitit launchers) -> JobResult."""
    if ret.status.name == "COMPLETED":
        return JobResult("completed", ret._return_value)
    return from_exception(ret._return_value)


def save_return(run_dir, result):
    """Write how a job ended (a JobResult) to RETURN_FILE in its dir: `{"status": "completed", "value": ...}` or
    `{"status": "pruned" | "failed", "error": "one line"}`. compare reads it back."""
    if result.status == "completed":
        record = dict(status="completed", value=_jsonable(result.value))
    else:
        record = dict(status=result.status, error=result.error)
    (Path(run_dir) / RETURN_FILE).write_text(json.dumps(record))


def read_return(job_dir):
    return JobResult(**json.loads((Path(job_dir) / RETURN_FILE).read_text()))


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        pass
    try:   # numpy and torch scalars, and lists of them
        return [float(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else float(value)
    except (TypeError, ValueError):
        return repr(value)   # the sweep says what it got and why it is not an objective


class SaveReturn(Callback):
    """Added to a worker's command line: write the task's return value or exception to RETURN_FILE."""

    def on_job_end(self, config, job_return, **kwargs):
        save_return(job_return.hydra_cfg.hydra.runtime.output_dir, from_job_return(job_return))


# ---------------------------------------------------------------- a job in a worker process
def app_args(config):
    """The app and the config it composes, as the sweep was started: `-m pkg.app` or the script's path, its primary
    config dir (--config-path, or the app's own), extra config dirs, config name and Hydra's own overrides."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    app = ["-m", spec.name.removesuffix(".__main__")] if spec else [os.path.abspath(sys.argv[0])]
    hc = config.hydra
    for src in hc.runtime.config_sources:
        path = src.path.replace("file://", "", 1)
        if src.provider == "main" and path:
            app += ["--config-path", path if src.schema == "file" else f"{src.schema}://{path}"]
        elif src.provider == "command-line":
            app += ["--config-dir", path]
    app += ["--config-name", hc.job.config_name]
    return app + [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(
        ("hydra.sweep", "hydra/sweeper", "hydra.mode", "hydra.run.dir", "hydra.job.num"))]


def command(config, overrides, job_dir, number):
    """`python app.py ...` composing the same config as the sweep, for one job in `job_dir`."""
    # one job, whatever the app's config says of hydra.mode (searches written for the template set MULTIRUN)
    return [sys.executable, *app_args(config), *overrides, "hydra.mode=RUN", f"hydra.run.dir={job_dir}",
            f"hydra.job.num={number}",
            f"++hydra.callbacks.mnist_sweeper_return._target_={SaveReturn.__module__}.SaveReturn"]


_running = {}                 # worker process -> its job dir, of this sweep: stopped together on Ctrl-C (`stop_all`)
_stopping = threading.Event()
_cancelled = {}               # job dir -> why, of the jobs the sweep cancelled one by one (`cancel`)


def run(config, overrides, job_dir, number, trial_spec, timeout=None, env=None):
    """Run one job as a child process (it dies with the sweep); return its JobResult. KeyboardInterrupt once the
    sweep is stopping: the job was stopped with it. After `timeout` seconds the job's process group is killed and
    the job failed. A job stopped by a SIGTERM of its own (a scheduler preempting it) ends `interrupted`."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / RETURN_FILE).unlink(missing_ok=True)
    env = {**os.environ, TRIAL_ENV: trial_spec, **(env or {})}   # env: e.g. the GPU this worker gets
    with open(job_dir / "console.log", "w") as out:
        # a session of its own: a terminal's Ctrl-C reaches only the sweep, which stops its workers itself and
        # leaves their records clean (a worker that got it too would end its console.log in a traceback)
        p = subprocess.Popen(command(config, overrides, job_dir, number), stdout=out, stderr=subprocess.STDOUT,
                             env=env, preexec_fn=_die_with_parent, start_new_session=True)
        _running[p] = job_dir
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)   # its session: the job and whatever it started
            p.wait()
            return JobResult("failed", error=f"timeout after {timeout:g} s")
        finally:
            _running.pop(p, None)
    if job_dir in _cancelled:
        return JobResult("interrupted", error=_cancelled.pop(job_dir))
    if _stopping.is_set() or p.returncode in (-signal.SIGINT, 130):
        raise KeyboardInterrupt
    if p.returncode in (-signal.SIGTERM, 143):
        return JobResult("interrupted", error="interrupted by SIGTERM")
    try:
        return read_return(job_dir)
    except (OSError, ValueError, TypeError):
        # the job never reached its end (a bad override, sys.exit, a crash): its last line says why
        lines = (job_dir / "console.log").read_text(errors="replace").strip().splitlines()
        return JobResult("failed", error=lines[-1] if lines else f"worker exited with code {p.returncode}")


def cancel(job_dir, why):
    """Stop the worker process running the job in `job_dir`, if one is: its `run` returns `interrupted`, `why`."""
    for p, d in list(_running.items()):
        if d == job_dir:
            _cancelled[job_dir] = why
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)   # its session: the job and whatever it started


def stop_all(timeout=10):
    """Stop every worker process of this sweep (SIGTERM, then SIGKILL after `timeout` s) and wait for them."""
    _stopping.set()
    for p in list(_running):
        with suppress(ProcessLookupError):
            p.terminate()
    for p in list(_running):
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def mark_interrupted(job_dir, overrides, why, requeued=True):
    """What a stopped job leaves: job_return.json saying `interrupted`, one line at the end of its console.log
    (if it has one), and its overrides in .hydra/ where Hydra had not written them yet. `requeued`: its trial runs
    again (else the job was another run of a trial, cancelled)."""
    job_dir.mkdir(parents=True, exist_ok=True)   # Ctrl-C may come before the job made its dir
    save_return(job_dir, JobResult("interrupted", error=why))
    if (job_dir / "console.log").exists():
        with open(job_dir / "console.log", "a") as f:
            f.write(f"{why}: stopped by its sweep{'; its params are queued to run again' if requeued else ''}\n")
    if not (job_dir / ".hydra" / "overrides.yaml").exists():
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {json.dumps(o)}\n" for o in overrides))


def _prctl():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").prctl
    except (OSError, AttributeError):   # not Linux
        return None


_PRCTL = _prctl()   # looked up here: between fork and exec, in a threaded sweep, nothing may be loaded


def _die_with_parent():
    """Linux: a worker process gets SIGKILL when its sweep dies, so no orphan keeps training."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
