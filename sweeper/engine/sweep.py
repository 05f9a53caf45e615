"""An Optuna sweeper for any Hydra app: `override hydra/sweeper: mnist_optuna` (the configs: hydra_plugins/).

The task returns a float, or one float per direction. What this sweeper adds to hydra-optuna-sweeper:

- pruning through `sweeper.report(value, step)` (sweeper/engine/worker.py), in-process and in other processes;
- resume: `n_trials` is the study's total, trial dirs are named by trial number, a trial left RUNNING by a
  dead or interrupted sweep is failed and re-queued (sweeper/engine/ledger.py), a seeded sampler is re-seeded past
  the trials it has seen, and a study refuses a sweep with another search space (sweeper/engine/study.py);
- `n_jobs` trials at once (worker processes, or jobs of any other Hydra launcher: Ray, submitit, joblib), a
  new one started as soon as one ends;
- heartbeats in an RDB storage (sweeper/engine/heartbeat.py), so a sweep on any host re-runs the trials of one that died;
- for trials that write `metrics.json` (the MNIST trial): budget constraints, `objectives` read from it,
  hits and `stop_after_hits`.

This module runs the sweep: it asks the ledger for trials, launches them, and tells Optuna how they ended.
"""
import contextlib
import importlib
import logging
import math
import shutil
import threading
import time
from pathlib import Path

from omegaconf import ListConfig, OmegaConf
from optuna.trial import TrialState

from sweeper.mnist import metrics as mx
from sweeper.engine import launchers, mps, results, space as sp, worker
from sweeper.engine.heartbeat import Heartbeat
from sweeper.engine.ledger import Ledger
from sweeper.engine.outcome import outcome
from sweeper.engine.study import StudyError, absolute_url, check_identity, make_study

log = logging.getLogger(__name__)


class SweepError(Exception):
    """Bad sweep settings (exit 2), or a sweep stopped by failures (exit 1): one line for the user."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class OptunaSweep:
    def __init__(self, sampler, pruner, direction, study_name, storage, n_trials, n_jobs, max_failure_rate,
                 params, custom_search_space, objectives, stop_after_hits, require_target, accept_changes,
                 prune_guard, confirm_seeds, heartbeat_interval, grace_period, cuda_mps):
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.directions = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, n_jobs
        self.max_failure_rate, self.stop_after_hits = max_failure_rate, stop_after_hits
        self.params = dict(params or {})
        self.custom_search_space = custom_search_space
        self.objectives = list(objectives) if objectives else None
        self.require_target, self.accept_changes = require_target, accept_changes
        _check(prune_guard is None or isinstance(prune_guard, (int, float)) and math.isfinite(prune_guard),
               "prune_guard", prune_guard, "a number or null")
        self.prune_guard = None if prune_guard is None else float(prune_guard)
        _check(isinstance(confirm_seeds, int) and confirm_seeds >= 0, "confirm_seeds", confirm_seeds,
               "an integer >= 0")
        self.confirm_seeds = confirm_seeds
        for key, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            _check(value is None or isinstance(value, int) and value > 0, key, value, "a whole number of seconds > 0, "
                   "or null")
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        _check(cuda_mps == "auto" or isinstance(cuda_mps, bool), "cuda_mps", cuda_mps, "auto, true or false")
        self.cuda_mps = cuda_mps
        for d in self.directions:
            _check(d in ("minimize", "maximize"), "direction", d, "minimize or maximize, or a list of them")
        _check(isinstance(n_trials, int) and n_trials > 0, "n_trials", n_trials, "an integer > 0")
        _check(isinstance(n_jobs, int) and n_jobs > 0, "n_jobs", n_jobs, "an integer > 0")
        _check(0 <= max_failure_rate <= 1, "max_failure_rate", max_failure_rate, "a fraction in [0, 1]")
        if self.objectives:
            _check(len(self.objectives) == len(self.directions), "objectives", self.objectives,
                   f"one metrics.json field per direction {self.directions}")
        self.lock = threading.Lock()
        self.last_failure = None
        self.heartbeat, self.waiting = None, False

    def setup(self, *, hydra_context, task_function, config):
        self.hydra_context, self.config = hydra_context, config
        self.launcher = launchers.make(hydra_context, task_function, config)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.budget = OmegaConf.select(config, "budget")   # the MNIST trial's; a plain app has none

    # ------------------------------------------------------------ the sweep
    def sweep(self, arguments):
        try:
            space, fixed = sp.parse(self.params, arguments, self.hydra_context.config_loader)
        except sp.SpaceError as e:
            raise SweepError(f"hydra.sweeper.params: {e}") from None
        self.space, self.fixed = space, fixed
        extend = None
        if self.custom_search_space:
            module, _, name = self.custom_search_space.rpartition(".")
            try:
                fn = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError) as e:
                raise SweepError(f"hydra.sweeper.custom_search_space={self.custom_search_space!r} cannot be "
                                 f"loaded ({e}); give module.function, importable from here") from None
            extend = lambda trial: fn(self.config, trial)  # noqa: E731
        self.storage_url = self.storage
        self.basic = type(self.launcher).__name__ == "BasicLauncher"
        self.in_process = self.n_jobs == 1 and self.basic
        if self.storage is None and not self.in_process:
            # trials in other processes reach their Optuna trial through the storage: give this sweep one
            self.storage_url = str(self.sweep_dir / "study.journal")
        self.storage_url = absolute_url(self.storage_url)   # a job with hydra.job.chdir=True opens it from its dir
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        beats = "://" in (self.storage_url or "") and self.heartbeat_interval is not None   # RDB storages only
        heartbeat = (self.heartbeat_interval, self.grace_period) if beats else (None, None)
        try:
            study = make_study(self.study_name or "mnist-sweeper", self.storage_url, self.directions,
                               self.sampler_cfg, self.pruner_cfg, space, heartbeat)
            check_identity(study, sp.identity(space, fixed), self.accept_changes)
        except (StudyError, sp.SpaceError) as e:
            raise SweepError(str(e)) from None
        self.ledger = ledger = Ledger(study, self.n_trials, extend)
        ledger.recover()
        log.info(f"study {study.study_name!r} in {self.storage_url or 'memory'}: {len(ledger.finished())} of "
                 f"{self.n_trials} trials done; {self.n_jobs} at a time; trial dirs under {self.sweep_dir}")
        if not self.basic and self.n_jobs > 1:
            launchers.warm_up(self.launcher)
        try:
            with mps.daemon(self.cuda_mps, self.sweep_dir, self.n_jobs, OmegaConf.select(self.config, "device")), \
                    Heartbeat(study._storage, self.heartbeat_interval) if beats else contextlib.nullcontext() as hb:
                self.heartbeat = hb
                self.slots(study)
            if ledger.stop_reason == "interrupted":
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.interrupted(study)
        with self.lock:
            results.write_outputs(study, self.sweep_dir, self.objectives)
        done = ledger.finished()
        hits = [t for t in done if t.user_attrs.get("hit")]
        if ledger.stop_reason:
            log.info(f"stopped early: {ledger.stop_reason}")
        log.info(f"{len(done)} trials" + (f" ({len(hits)} met the target)" if self.budget is not None else "")
                 + f", results in {self.sweep_dir}")
        if self.too_many_failures(done):
            failed = [t for t in done if t.state == TrialState.FAIL]
            last = self.last_failure or f"trial {failed[-1].number}: {failed[-1].user_attrs.get('reason')}"
            raise SweepError(f"{len(failed)} failed trials exceed max_failure_rate={self.max_failure_rate} of "
                             f"n_trials={self.n_trials}; last failure: {last}", exit_code=1)
        return study

    def slots(self, study):
        if self.n_jobs == 1:
            return self.work(study)
        threads = [threading.Thread(target=self.work, args=(study,), daemon=True) for _ in range(self.n_jobs)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # short joins keep the main thread responsive to Ctrl-C

    def work(self, study):
        """One slot: ask for a trial, run it, tell how it ended; until the ledger says the sweep is done."""
        while True:
            with self.lock:
                trial = self.ledger.ask(self.space)
                others = self.ledger.others_beating() if trial is None and not self.ledger.stop_reason else []
            if trial is None:
                if not (others and self.heartbeat):
                    return
                # the last trials run in other sweeps: if one of them dies, its trial goes stale and runs here
                if not self.waiting:
                    log.info(f"waiting for {len(others)} trial(s) of other sweeps to end")
                    self.waiting = True
                time.sleep(min(self.heartbeat_interval, 5))
                continue
            if self.heartbeat:
                self.heartbeat.add(trial)
            try:
                self.run_trial(study, trial)
            except KeyboardInterrupt:   # Ctrl-C reached this slot's worker process: the whole sweep stops
                with self.lock:
                    self.ledger.stop("interrupted")
                return
            except Exception as e:  # a broken trial never kills the sweep
                log.exception(f"trial {trial.number} crashed the sweeper's side")
                with self.lock:
                    if study.get_trials(deepcopy=False)[trial.number].state == TrialState.RUNNING:
                        self.tell(study, trial, [(worker.JobResult("failed", error=worker.describe(e)), None)])
            finally:
                if self.heartbeat:
                    self.heartbeat.discard(trial)

    def interrupted(self, study):
        """Ctrl-C: fail and re-queue this sweep's running trials, keep the finished ones, say how to resume."""
        with self.lock:
            self.ledger.stop("interrupted")
            for t in self.ledger.running(mine=True):
                self.ledger.requeue(t, "interrupted by Ctrl-C")
            results.write_outputs(study, self.sweep_dir, self.objectives)
        where = f"in {self.storage_url}; run the same command again to continue" if self.storage_url else \
            f"in {self.sweep_dir}; set hydra.sweeper.storage to make a sweep resumable"
        log.warning(f"interrupted: finished trials are kept {where}")
        raise SystemExit(130)

    # ------------------------------------------------------------ one trial
    def run_trial(self, study, trial):
        overrides = sp.overrides(trial, self.space, self.config) + self.fixed
        job_dir = self.sweep_dir / str(trial.number)
        trial.set_user_attr("dir", str(job_dir.absolute()))  # compare may run from another folder
        if self.budget is not None and self.reject_over_budget(study, trial, overrides, job_dir):
            return
        spec = worker.spec(self.storage_url, study, trial, _plain(self.pruner_cfg), self.prune_guard) \
            if self.storage_url else None
        _clear(job_dir)
        result, ran_in = self.launch(overrides, job_dir, trial.number, trial, spec)
        runs = [(result, mx.read(ran_in))]
        if self.confirm_seeds and mx.metrics_hit(runs[0][1]):
            runs += self.confirm(trial, overrides, job_dir, runs[0][1])
        with self.lock:
            if self.ledger.stop_reason == "interrupted":
                return  # the interrupt handler re-queues this trial
            self.tell(study, trial, runs)
            results.write_outputs(study, self.sweep_dir, self.objectives)

    def launch(self, overrides, job_dir, number, trial=None, spec=None):
        """One job, in a worker process (basic launcher, n_jobs > 1) or through Hydra's launcher -> (JobResult, the
        dir it ran in). `job_dir` is under self.sweep_dir. Only a trial's own run reports to it (`trial`, `spec`);
        its confirmation runs do not. Other launchers get one job per call, from n_jobs slots at once."""
        if self.n_jobs > 1 and self.basic:
            return worker.run(self.config, overrides, job_dir, number, spec or ""), job_dir
        if spec and not self.in_process:   # another launcher runs the job elsewhere: Hydra sets this there
            overrides = overrides + [f"++hydra.job.env_set.{worker.TRIAL_ENV}='{spec}'"]
        if job_dir.parent != self.sweep_dir:   # a confirmation run, inside its trial's dir
            overrides = overrides + [f"hydra.sweep.subdir={job_dir.relative_to(self.sweep_dir)}"]
        with worker.bound(trial, self.prune_guard) if trial else contextlib.nullcontext():
            [ret] = self.launcher.launch([overrides], initial_job_idx=number)   # the basic one: in this process
        return worker.from_job_return(ret), Path(ret.hydra_cfg.hydra.runtime.output_dir)

    def confirm(self, trial, overrides, job_dir, m):
        """A hit runs again on seeds seed+1 ... seed+confirm_seeds, in <trial dir>/seed<N>/; the first miss ends it."""
        runs = []
        for seed in range(m["seed"] + 1, m["seed"] + 1 + self.confirm_seeds):
            log.info(f"trial {trial.number}: hit ({m['final_test_acc']:.4f}) on seed {m['seed']}; "
                     f"confirming on seed {seed}")
            result, run_dir = self.launch([*overrides, f"seed={seed}"], job_dir / f"seed{seed}", trial.number)
            runs.append((result, mx.read(run_dir)))
            acc = (runs[-1][1] or {}).get("final_test_acc")
            hit = mx.metrics_hit(runs[-1][1])
            log.info(f"trial {trial.number}: seed {seed}: {acc} -> {'hit' if hit else 'miss, not confirmed'}")
            if not hit:
                break
        return runs

    def reject_over_budget(self, study, trial, overrides, job_dir):
        """Count the proposal's model from its composed config (no weights allocated) and, over budget, reject
        it here: no process starts and no n_jobs slot waits. Its job dir still gets a `rejected` metrics.json."""
        from sweeper.mnist.model import count   # torch: only for apps with a budget
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            max_params = OmegaConf.select(cfg, "budget.max_params")
            if OmegaConf.select(cfg, "model._target_") is None or not isinstance(max_params, int):
                return False   # a budget this sweeper cannot count: the job judges itself
            n_params = count(cfg.model)
        except Exception:   # a bad override or model: the job fails on it with its own one-line message
            return False
        reason = mx.over_budget(n_params, max_params)
        if reason is None:
            return False
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")
        m = mx.new(cfg.get("seed"), overrides, cfg.budget)
        m.update(status="rejected", reason=reason, params=n_params, ended_at=m["started_at"], wall_seconds=0.0)
        mx.write_json(job_dir / "metrics.json", m)
        log.info(f"trial {trial.number}: rejected before it started: {reason}")
        with self.lock:
            if self.ledger.stop_reason == "interrupted":
                return True   # the interrupt handler re-queues this trial
            # the value a rejected MNIST trial returns: accuracy 0, never a good trial
            self.tell(study, trial, [(worker.JobResult("completed", [0.0] * len(self.directions)), m)])
            results.write_outputs(study, self.sweep_dir, self.objectives)
        return True

    def tell(self, study, trial, runs):
        """Tell Optuna how a trial ended: from its metrics.json where it wrote one, else from what the task did.
        `runs`: (JobResult, metrics or None) of its own run, then of its confirmation runs, if any. A confirmed
        trial is told the mean over its seeds; it is a hit only if every seed hits."""
        result, m = runs[0]
        status, values, reason = outcome(result, m, self.objectives, len(self.directions))
        if values is not None and len(runs) > 1:
            more = [outcome(r, mi, self.objectives, len(self.directions))[1] for r, mi in runs[1:]]
            seeded = [values] + [v for v in more if v is not None]
            values = [sum(column) / len(seeded) for column in zip(*seeded)]
        attrs = {key: m[key] for key in ("params", "final_test_acc", "best_test_acc", "first_epoch_at_target")
                 if m and key in m}
        attrs["status"] = status
        if m:
            attrs["epochs"] = len(m.get("epochs") or [])
            summary = mx.over_seeds([mi for _, mi in runs])
            attrs.update({key: summary[key] for key in ("hit", "seeds", "min_final_test_acc", "mean_final_test_acc")})
        if reason:
            attrs["reason"] = reason
        constraints = {}
        if status == "pruned":
            told = self.ledger.tell(trial, state=TrialState.PRUNED, attrs=attrs)
        elif values is not None:
            if self.budget is not None and m and m.get("params") is not None:
                budget = {**OmegaConf.to_container(self.budget), **(m.get("budget") or {})}  # the trial's own
                # feasible when <= 0; TPE, NSGA-II and GP prefer feasible trials
                constraints["params_over_budget"] = m["params"] - budget["max_params"]
                if self.require_target:   # judged on the worst seed, as the hit rule is
                    worst = mx.over_seeds([mi for _, mi in runs])["min_final_test_acc"]
                    constraints["acc_below_target"] = budget["target_acc"] - (worst or 0.0)
            told = self.ledger.tell(trial, values, attrs=attrs, constraints=constraints)
        else:
            told = self.ledger.tell(trial, state=TrialState.FAIL, attrs=attrs)
            if told:
                self.last_failure = f"trial {trial.number}: {result.error or reason}"
                log.warning(f"trial {trial.number} failed: {result.error or reason}")
        if told and status != "failed":
            shown = m.get("final_test_acc") if m else values[0] if values and len(values) == 1 else values
            log.info(f"trial {trial.number}: {status} {trial.params} -> {shown}"
                     + (f", {m.get('params')} params" if m else ""))
        done = self.ledger.finished()
        if self.too_many_failures(done):
            failed = sum(t.state == TrialState.FAIL for t in done)
            self.ledger.stop(f"{failed} failed trials exceed max_failure_rate={self.max_failure_rate} of "
                             f"n_trials={self.n_trials}")
        hits = sum(bool(t.user_attrs.get("hit")) for t in done)
        if self.stop_after_hits and hits >= self.stop_after_hits:
            confirmed = f", each on {self.confirm_seeds + 1} seeds" if self.confirm_seeds else ""
            self.ledger.stop(f"{hits} trials reached the target{confirmed} (stop_after_hits={self.stop_after_hits})")

    def too_many_failures(self, done):
        return sum(t.state == TrialState.FAIL for t in done) > self.max_failure_rate * self.n_trials


def _clear(job_dir):
    """Results an earlier sweep left in a reused trial dir (same sweep dir, in-memory study) must not be read as
    this trial's when its job dies before writing its own."""
    (job_dir / "metrics.json").unlink(missing_ok=True)
    for d in mx.confirmation_dirs(job_dir):
        shutil.rmtree(d)


def _check(ok, key, value, allowed):
    if not ok:
        raise ValueError(f"hydra.sweeper.{key}={value!r} is not allowed: {allowed}")


def _plain(cfg):
    return OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else cfg
