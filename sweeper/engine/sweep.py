"""An Optuna sweeper for any Hydra app: `override hydra/sweeper: mnist_optuna` (the configs: hydra_plugins/).

The task returns a float, or one float per direction. What this sweeper adds to hydra-optuna-sweeper:

- pruning through `sweeper.report(value, step)` (sweeper/engine/worker.py), in-process and in other processes;
- resume: `n_trials` is the study's total, trial dirs are named by trial number, a trial left RUNNING by a
  dead or interrupted sweep is failed and re-queued (sweeper/engine/ledger.py), a seeded sampler is re-seeded past
  the trials it has seen, and a study refuses a sweep with another search space (sweeper/engine/study.py);
- `n_jobs` trials at once (worker processes, or jobs of any other Hydra launcher: Ray, submitit, joblib), a
  new one started as soon as one ends;
- heartbeats in an RDB storage (sweeper/engine/heartbeat.py), so a sweep on any host re-runs the trials of one that died;
- a policy (`hydra.sweeper.policy`, sweeper/engine/policy.py) that judges how each trial ended: by default the
  task's return value; the MNIST trial's (sweeper/mnist/policy.py) adds budgets, confirmation seeds and hits.

This module runs the sweep: it asks the ledger for trials, has its slots run them (sweeper/engine/slots.py), and tells
Optuna how they ended.
"""
import contextlib
import importlib
import logging
import shlex
import shutil
import threading
from pathlib import Path

from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeper.engine import mps, policy as pol, results, space as sp, worker
from sweeper.engine.heartbeat import Heartbeat
from sweeper.engine.jobs import Jobs
from sweeper.engine.ledger import Ledger
from sweeper.engine.progress import Progress, final_lines, log_to_file
from sweeper.engine.retry import Retry
from sweeper.engine.settings import Settings
from sweeper.engine.slots import WAIT, Slots
from sweeper.engine.stops import StorageLost, Stops, SweepError
from sweeper.engine.study import StudyError, absolute_url, check_identity, enqueue, make_study

log = logging.getLogger(__name__)


class OptunaSweep:
    def __init__(self, **settings):
        s = self.settings = Settings(**settings)   # ValueError: one line naming the bad key
        self.sampler_cfg, self.pruner_cfg, self.directions = s.sampler, s.pruner, s.directions
        self.study_name, self.storage, self.n_trials, self.n_jobs = s.study_name, s.storage, s.n_trials, s.n_jobs
        self.max_failure_rate, self.params = s.max_failure_rate, dict(s.params or {})
        self.custom_search_space, self.accept_changes = s.custom_search_space, s.accept_changes
        self.policy_path, self.policy_settings = s.policy, s.policy_settings()
        self.prune_guard = None if s.prune_guard is None else float(s.prune_guard)
        self.heartbeat_interval, self.grace_period, self.cuda_mps = s.heartbeat_interval, s.grace_period, s.cuda_mps
        self.trial_timeout = s.trial_timeout
        self.lock = threading.Lock()
        self.last_failure = None
        self.heartbeat, self.waiting = None, False
        # every storage call waits out a blink of the database for up to storage_timeout s (sweeper/engine/retry.py)
        self.retry = Retry(s.storage_timeout, error=StorageLost)
        self.in_flight = {}      # trial number -> trial, of the trials this sweep's slots run now

    def setup(self, *, hydra_context, task_function, config):
        self.hydra_context, self.config = hydra_context, config
        self.task_function = task_function
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.stops = Stops(self.sweep_dir, self.overrides)   # Ctrl-C, SIGTERM, a storage gone, a crashed slot

    # ------------------------------------------------------------ the sweep
    def sweep(self, arguments):
        self.prepare(arguments)
        study = self.open_study()
        ledger, self.study, self.slots = self.ledger, study, Slots(self, study)
        self.progress = Progress(study, self.n_trials, self.n_jobs, self.policy, live=not self.jobs.in_process)
        self.jobs.warm_up()
        beats = study._storage if self.heartbeat_interval is not None and "://" in (self.storage_url or "") else None
        self.stops.catch_sigterm()
        try:
            with mps.daemon(self.cuda_mps, self.sweep_dir, self.n_jobs, OmegaConf.select(self.config, "device"),
                            self.jobs.gpus), \
                    Heartbeat(beats, self.heartbeat_interval, self.retry, self.stops.lost) if beats else \
                    contextlib.nullcontext() as hb, \
                    self.progress.shown():
                self.heartbeat = hb
                self.retry(self.progress.update, ledger.finished(), ledger.running())
                self.slots.run(self.n_jobs, self.jobs, self.stops)
            if ledger.stop_reason == "interrupted":
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.stops.interrupted(self.lock, lambda: results.write_outputs(study, self.sweep_dir, self.policy),
                                   self.log_file, self.storage_url)
        return self.finish(study)

    def prepare(self, arguments):
        """Everything that can refuse the sweep before a file is written: its space, policy and launcher."""
        try:
            self.space, self.fixed = sp.parse(self.params, arguments, self.hydra_context.config_loader)
        except sp.SpaceError as e:
            raise SweepError(f"hydra.sweeper.params: {e}") from None
        compose = lambda overrides: self.hydra_context.config_loader.load_sweep_config(  # noqa: E731
            self.config, list(overrides))
        try:
            self.policy = pol.load(self.policy_path, pol.SweepInfo(self.policy_settings, len(self.directions),
                                                                   self.config, compose))
        except ValueError as e:
            raise SweepError(str(e)) from None
        try:
            checked = [sp.check_params(self.space, p, self.fixed) for p in self.settings.enqueue]
            self.enqueue = [p for p in checked if p]   # a dict whose keys the command line all fixed runs nothing
        except sp.SpaceError as e:
            raise SweepError(f"hydra.sweeper.enqueue: {e}") from None
        self.extend = _custom_search_space(self.custom_search_space, self.config)
        self.jobs = Jobs(self.hydra_context, self.task_function, self.config, self.n_jobs, self.prune_guard,
                         self.pruner_cfg, self.trial_timeout, self.settings.gpus)
        storage_url = self.storage
        if self.storage is None and not self.jobs.in_process:
            # trials in other processes reach their Optuna trial through the storage: give this sweep one
            storage_url = str(self.sweep_dir / "study.journal")
        self.jobs.storage_timeout = self.settings.storage_timeout
        self.storage_url = self.jobs.storage_url = absolute_url(storage_url)   # a chdir job opens it from its dir

    def open_study(self):
        """The sweep dir, its log file and the study. A study that cannot be opened (or is another experiment)
        refuses the sweep and takes back the dir this call created."""
        created = _first_missing(self.sweep_dir.absolute())   # what a refusal takes back: outputs/ too
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        verbose = OmegaConf.select(self.config, "hydra.verbose")
        optuna_on_terminal = verbose is True or "optuna" in str(verbose)
        self.log_file = log_to_file(self.sweep_dir / "sweep.log", optuna_on_terminal)
        beats = "://" in (self.storage_url or "") and self.heartbeat_interval is not None   # RDB storages only
        heartbeat = (self.heartbeat_interval, self.grace_period) if beats else (None, None)
        try:
            study = make_study(self.study_name or "mnist-sweeper", self.storage_url, self.directions,
                               self.sampler_cfg, self.pruner_cfg, self.space, heartbeat, self.policy.names)
            check_identity(study, sp.identity(self.space, self.fixed), self.accept_changes)
        except (StudyError, sp.SpaceError) as e:
            self.log_file.close_and_detach()
            if created:
                shutil.rmtree(created, ignore_errors=True)
            raise SweepError(str(e)) from None
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        self.ledger = self.stops.ledger = ledger = Ledger(study, self.n_trials, self.extend, retry=self.retry)
        ledger.recover()
        enqueue(study, self.enqueue, self.retry)
        log.info(f"study {study.study_name!r} in {self.storage_url or 'memory'}: {len(ledger.finished())} of "
                 f"{self.n_trials} trials done{_earlier_dirs(ledger.finished(), self.sweep_dir)}; {self.n_jobs} at "
                 f"a time; trial dirs under {self.sweep_dir}")
        return study

    def finish(self, study):
        """Write the outputs and say what came of the sweep: its best trial(s), hits, files, how to run the best."""
        ledger, fatal = self.ledger, self.stops.fatal
        if isinstance(fatal, StorageLost):   # nothing more can be written or read
            self.stops.abandon(list(self.in_flight.values()))
            self.log_file.close_and_detach()
            raise fatal
        with self.lock:
            self.retry(results.write_outputs, study, self.sweep_dir, self.policy)
        done = ledger.finished()
        if ledger.stop_reason and fatal is None:
            log.info(f"stopped early: {ledger.stop_reason}")
        for line in self.retry(lambda: list(final_lines(study, done, self.policy, self.sweep_dir, self.storage_url,
                                                        self.rerun))):
            log.info(line)
        self.log_file.close_and_detach()
        if fatal is not None:
            raise fatal
        if self.too_many_failures(done):
            failed = [t for t in done if t.state == TrialState.FAIL]
            last = self.last_failure or f"trial {failed[-1].number}: {failed[-1].user_attrs.get('reason')}"
            raise SweepError(f"{len(failed)} failed trials exceed max_failure_rate={self.max_failure_rate} of "
                             f"n_trials={self.n_trials}; last failure: {last}", exit_code=1)
        return study

    def overrides(self, trial):
        """The overrides a trial's job runs with: its params, then the sweep's fixed overrides."""
        return sp.overrides(trial, self.space, self.config) + self.fixed

    def rerun(self, trial):
        """The command that trains `trial` again as a single run: the app, its config and the trial's overrides."""
        saved = Path(trial.user_attrs.get("dir", "")) / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(saved)) if saved.is_file() else self.overrides(trial)
        return " ".join(shlex.quote(a) for a in ["python", *worker.app_args(self.config), *overrides, "hydra.mode=RUN"])

    # ------------------------------------------------------------ what the slots ask and tell (slots.py)
    def ask(self):
        """A new trial for a slot; WAIT while only other sweeps' last trials run (if one of them dies, its trial goes
        stale and runs here); None when the sweep is done."""
        with self.lock:
            trial = self.ledger.ask(self.space)
            others = self.ledger.others_beating() if trial is None and not self.ledger.stop_reason else []
        if trial is None:
            if not (others and self.heartbeat):
                return None
            if not self.waiting:
                log.info(f"waiting for {len(others)} trial(s) of other sweeps to end")
                self.waiting = True
            return WAIT
        self.in_flight[trial.number] = trial
        if self.heartbeat:
            self.heartbeat.add(trial)
        return trial

    def finish_trial(self, trial, overrides, job_dir, verdict):
        """Tell Optuna how a trial ended, as all its runs said (`verdict`), and rewrite the outputs."""
        with self.lock:
            if self.ledger.stop_reason == "interrupted":
                return  # the interrupt handler re-queues this trial
            if verdict.status == "interrupted":   # its job alone was stopped (preempted): it runs again
                self.ledger.requeue(trial, verdict.reason)
                worker.mark_interrupted(job_dir, overrides, verdict.reason)
                log.warning(f"trial {trial.number}: {verdict.reason}; its params are queued to run again")
                return
            self.tell(self.study, trial, verdict)
            self.retry(results.write_outputs, self.study, self.sweep_dir, self.policy)

    def closed(self, trial):
        """A slot is done with `trial`: told, re-queued or dropped."""
        if self.heartbeat:
            self.heartbeat.discard(trial)
        self.in_flight.pop(trial.number, None)

    def tell(self, study, trial, verdict):
        """Tell Optuna how a trial ended (`verdict`, sweeper/engine/policy.py), then whether the sweep goes on."""
        attrs = {**verdict.attrs, "status": verdict.status}
        if verdict.reason:
            attrs["reason"] = verdict.reason
        if verdict.status == "pruned":
            told = self.ledger.tell(trial, state=TrialState.PRUNED, attrs=attrs)
        elif verdict.values is not None and verdict.status != "failed":
            told = self.ledger.tell(trial, verdict.values, attrs=attrs, constraints=verdict.constraints)
        else:
            told = self.ledger.tell(trial, state=TrialState.FAIL, attrs=attrs)
            if told:
                self.last_failure = f"trial {trial.number}: {verdict.reason}"
                log.warning(f"trial {trial.number} failed: {verdict.reason}")
        if told and verdict.status != "failed":
            shown = verdict.shown if verdict.shown is not None else \
                verdict.values[0] if verdict.values and len(verdict.values) == 1 else verdict.values
            log.info(f"trial {trial.number}: {verdict.status} {trial.params} -> {shown}")
        done = self.ledger.finished()
        if self.too_many_failures(done):
            failed = sum(t.state == TrialState.FAIL for t in done)
            self.ledger.stop(f"{failed} failed trials exceed max_failure_rate={self.max_failure_rate} of "
                             f"n_trials={self.n_trials}")
        if (reason := self.policy.stop(done)) and self.ledger.stop_reason != reason:
            self.ledger.stop(reason)
            if hasattr(self, "slots"):   # the trials still running are stopped, and run again by a resumed study
                self.slots.drop(f"interrupted: the sweep stopped ({reason})", keep=trial.number)
        if hasattr(self, "progress"):   # tell() also runs on its own, in tests of the ledger
            self.retry(self.progress.update, done, self.ledger.running())

    def too_many_failures(self, done):
        return sum(t.state == TrialState.FAIL for t in done) > self.max_failure_rate * self.n_trials


def _first_missing(path):
    """The outermost folder of `path` that does not exist yet (None when it all does)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _custom_search_space(path, config):
    """hydra.sweeper.custom_search_space (module.function) -> extend(trial), or None."""
    if not path:
        return None
    module, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise SweepError(f"hydra.sweeper.custom_search_space={path!r} cannot be loaded ({e}); give module.function, "
                         f"importable from here") from None
    return lambda trial: fn(config, trial)


def _earlier_dirs(finished, sweep_dir):
    """A resumed study's trials that ran in other sweep dirs (a timestamped hydra.sweep.dir): say where."""
    dirs = {str(Path(t.user_attrs["dir"]).parent) for t in finished if t.user_attrs.get("dir")}
    dirs.discard(str(sweep_dir.absolute()))
    return f" (earlier trial dirs under {', '.join(sorted(dirs))})" if dirs else ""
