"""An Optuna sweeper for Hydra: `python -m sweeper.train --multirun hparams_search=budget`.

Config keys are hydra-optuna-sweeper's (sampler, direction, study_name, storage, n_trials, n_jobs,
max_failure_rate, params, custom_search_space) plus `pruner`, `stop_after_hits`, `objectives` and
`require_target`. What it does that the official plugin cannot (on stable hydra-core 1.3 + Optuna >= 4):

- prunes: each epoch's test accuracy reaches the Optuna trial (in-process through `reporter()`,
  in worker processes through the storage and the SWEEPER_TRIAL environment variable);
- respects the budget: a trial whose model is over budget.max_params is rejected untrained and told to
  Optuna with the worst accuracy and a violated constraint, so the sampler learns to avoid it;
- resumes: `n_trials` is the study's total, trial dirs are named by trial number, trials left RUNNING by a
  dead sweep are marked FAIL and re-queued, and a seeded sampler is re-seeded past the trials it has seen;
- runs `n_jobs` trials at once as separate processes and starts a new one as soon as one ends.

The hydra_plugins shim (hydra_plugins/mnist_optuna_sweeper) only registers these configs and forwards to
`OptunaSweep`.
"""
import csv
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.utils import get_method, instantiate
from omegaconf import MISSING, ListConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sweeper.compare import from_metrics, is_hit, new_record

log = logging.getLogger(__name__)
TRIAL_ENV = "SWEEPER_TRIAL"  # {"storage", "study", "trial_id", "pruner"} for a trial in a worker process
WORKER = f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------- config: hydra/sweeper, .../sampler, .../pruner
@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 1
    sigma0: Optional[float] = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10


@dataclass
class GridSamplerConf:
    # the grid is every value of every choice()/range() param; intervals cannot be gridded
    _target_: str = "optuna.samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 4           # finished trials before anything is pruned
    n_warmup_steps: int = 2             # epochs a trial always runs (OneCycle's early epochs are noisy)
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_optuna_sweeper.mnist_optuna_sweeper.MnistOptunaSweeper"
    _recursive_: bool = False            # sampler and pruner are built in make_study (re-seeded, constrained)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "maximize"          # a list means multi-objective
    study_name: Optional[str] = None
    storage: Optional[str] = None        # "sqlite:///study.db" (any SQLAlchemy URL) or a journal file path
    n_trials: int = 20                   # the study's total: a re-run continues up to it
    n_jobs: int = 1                      # > 1: that many trial processes at once
    max_failure_rate: float = 0.25       # stop once failed trials exceed this fraction of n_trials
    params: Optional[Dict[str, str]] = None
    custom_search_space: Optional[str] = None      # "module.fn": fn(cfg, trial) suggests more params
    stop_after_hits: Optional[int] = None          # stop once this many trials meet all three constraints
    objectives: List[str] = field(default_factory=lambda: ["final_test_acc"])  # metrics.json fields, one per direction
    require_target: bool = False         # make final_test_acc >= budget.target_acc a constraint


SAMPLERS = dict(tpe=TPESamplerConf, random=RandomSamplerConf, cmaes=CmaEsSamplerConf, nsgaii=NSGAIISamplerConf,
                gp=GPSamplerConf, grid=GridSamplerConf)
PRUNERS = dict(median=MedianPrunerConf, hyperband=HyperbandPrunerConf, none=NopPrunerConf)


def register_configs():
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="mnist_optuna", node=OptunaSweeperConf, provider="mnist_sweeper")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="mnist_sweeper")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="mnist_sweeper")


def by_name(key, value, options):
    """`hydra.sweeper.pruner=hyperband` (a plain value) means the group option of that name, at its defaults."""
    if not isinstance(value, str):
        return value
    if value not in options:
        raise ValueError(f"hydra.sweeper.{key}={value!r} is not allowed: one of {', '.join(options)}")
    return OmegaConf.structured(options[value])


# ---------------------------------------------------------------- the task's side: report epochs to the trial
_current_trial = None  # the in-process trial (n_jobs=1, Hydra's basic launcher)


def reporter():
    """Return `report(epoch, test_acc) -> should the trial stop?` for the running trial, or None outside a sweep."""
    trial = _current_trial
    if trial is None and os.environ.get(TRIAL_ENV):
        spec = json.loads(os.environ[TRIAL_ENV])
        study = optuna.load_study(study_name=spec["study"], storage=open_storage(spec["storage"]),
                                  pruner=instantiate(spec["pruner"]))
        trial = optuna.Trial(study, spec["trial_id"])
    if trial is None:
        return None

    def report(epoch, test_acc):
        trial.report(test_acc, epoch)
        return trial.should_prune()
    return report


# ---------------------------------------------------------------- the sweeper
def open_storage(storage):
    """None (in memory), an SQLAlchemy URL, or a journal file path -> what optuna.create_study takes."""
    if storage is None:
        return None
    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def distribution(override):
    """One Hydra sweep override (choice/range/interval, tag(log, ...)) -> an Optuna distribution."""
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())  # Hydra's range excludes its stop, as Python's does
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(values[0], values[-1], step=value.step)
    if override.is_interval_sweep():
        log_ = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_)
        return FloatDistribution(value.start, value.end, log=log_)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample (use choice, range or interval)")


def grid_values(key, d):
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if d.step is None:
        raise ValueError(f"{key}: sampler=grid needs choice() or range() params, not an interval")
    n = int(round((d.high - d.low) / d.step))
    return [d.low + i * d.step for i in range(n + 1)]


class OptunaSweep:
    def __init__(self, sampler, pruner, direction, study_name, storage, n_trials, n_jobs, max_failure_rate,
                 params, custom_search_space, stop_after_hits, objectives, require_target):
        self.sampler_cfg, self.pruner_cfg = by_name("sampler", sampler, SAMPLERS), by_name("pruner", pruner, PRUNERS)
        self.directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, n_jobs
        self.max_failure_rate, self.stop_after_hits = max_failure_rate, stop_after_hits
        self.params = dict(params or {})
        self.extend = get_method(custom_search_space) if custom_search_space else None
        self.objectives, self.require_target = list(objectives), require_target
        if len(self.objectives) != len(self.directions):
            raise ValueError(f"hydra.sweeper.objectives={self.objectives} needs one entry per direction "
                             f"{self.directions}")
        self.lock = threading.Lock()
        self.stop_reason = None

    def setup(self, *, hydra_context, task_function, config):
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.budget = config.budget

    # -- the search space: config `params` and command-line sweeps; the rest passes through to every trial
    def parse(self, arguments):
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        merged = {}
        for o in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments)):
            merged[o.get_key_element()] = o   # the command line wins over the config's params
        space = {k: distribution(o) for k, o in merged.items() if o.is_sweep_override()}
        fixed = [f"{k}={o.get_value_element_as_str()}" for k, o in merged.items() if not o.is_sweep_override()]
        return space, fixed

    def make_study(self, space):
        for attempt in range(5):
            try:
                return self._make_study(space)
            except Exception:  # another sweep creating the same storage tables or study at this moment
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)

    def _make_study(self, space):
        storage = open_storage(self.storage_url)
        name = self.study_name or "mnist-sweeper"
        seen = 0
        if storage is not None and name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            seen = len(optuna.load_study(study_name=name, storage=storage).trials)
        kwargs = {}
        sampler_cls = get_method(self.sampler_cfg._target_)
        if sampler_cls is optuna.samplers.GridSampler:
            kwargs["search_space"] = {k: grid_values(k, d) for k, d in space.items()}
        sampler_cfg = OmegaConf.to_container(self.sampler_cfg)
        if sampler_cfg.get("seed") is not None:
            # a resumed study would otherwise replay the first run's random proposals
            sampler_cfg["seed"] += seen
        sampler = instantiate(sampler_cfg, **kwargs)
        return optuna.create_study(storage=storage, sampler=sampler, pruner=instantiate(self.pruner_cfg),
                                   study_name=name, directions=self.directions, load_if_exists=True)

    # -- bookkeeping shared by every worker, always under self.lock
    def counted(self, study):
        """Trials that use up n_trials: all but those failed by a dead sweep (re-queued), surplus or duplicates."""
        return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("uncounted")]

    def fail_orphans(self, study):
        """Mark FAIL (and re-queue) trials left RUNNING by a sweep process on this host that is gone."""
        host = socket.gethostname()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker", "")
            h, _, pid = worker.partition(":")
            if h == host and pid.isdigit() and not _alive(int(pid)):
                self.requeue(study, t, f"interrupted: its sweep ({worker}) died")
                log.warning(f"trial {t.number} was left RUNNING by a dead sweep: marked FAIL and re-queued")

    def requeue(self, study, frozen, reason):
        """FAIL an interrupted trial without counting it, and queue its params to run again."""
        self.uncount(study, optuna.Trial(study, frozen._trial_id), reason)
        study.enqueue_trial(frozen.params)

    def next_trial(self, study, space):
        """Ask for a trial, or return None when the sweep is done (n_trials, hits, failures)."""
        with self.lock:
            if self.stop_reason:
                return None
            if len(self.counted(study)) >= self.n_trials:
                return None
            for _ in range(20):
                trial = study.ask(space)
                if self.extend is not None:
                    self.extend(self.config, trial)
                trial.set_user_attr("worker", WORKER)
                # fetched after asking, so asks by other sweeps on the same study are seen too
                others = [t for t in self.counted(study) if t.number != trial.number]
                if sum(t.number < trial.number for t in others) >= self.n_trials:
                    self.uncount(study, trial, "surplus: n_trials already reached by another worker")
                    return None
                # the same params finished, or asked earlier by another sweep (a re-queued trial is asked as
                # itself): of two identical asks the later one gives way
                if not any(t.params == trial.params and (t.number < trial.number or t.state.is_finished())
                           for t in others if t.state != TrialState.FAIL):
                    return trial
                self.uncount(study, trial, "duplicate of another trial's params")
            self.stop_reason = "the sampler keeps proposing params already tried: the search space looks exhausted"
            return None

    def uncount(self, study, trial, reason):
        trial.set_user_attr("uncounted", True)
        trial.set_user_attr("reason", reason)
        self.finish(study, trial, state=TrialState.FAIL)

    def finish(self, study, trial, values=None, state=None):
        try:
            study.tell(trial, values, state=state)
        except RuntimeError as e:
            # GridSampler calls study.stop() once every grid point has run: outside study.optimize that raises
            if "Study.stop" not in str(e):
                raise
            self.stop_reason = self.stop_reason or "every point of the grid has been tried"

    # -- one trial, in this process (n_jobs=1, through Hydra's launcher) or in a worker process
    def run_trial(self, study, trial, fixed):
        overrides = [f"{k}={v}" for k, v in trial.params.items()] + fixed
        job_dir = self.sweep_dir / str(trial.number)
        trial.set_user_attr("dir", str(job_dir.absolute()))  # compare may run from another folder
        error = None
        if self.n_jobs == 1:
            global _current_trial
            _current_trial = trial  # Hydra's basic launcher runs the job in this process
            if self.storage_url:    # another launcher may run it elsewhere: Hydra sets this in the job's process
                overrides.append(f"++hydra.job.env_set.{TRIAL_ENV}='{self.trial_spec(study, trial)}'")
            try:
                [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
                job_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
                if ret.status.name == "FAILED":
                    error = ret._return_value
            finally:
                _current_trial = None
        else:
            error = self.run_in_worker(study, trial, overrides, job_dir)
        metrics = _read_metrics(job_dir)
        with self.lock:
            if self.stop_reason == "interrupted" or isinstance(error, KeyboardInterrupt):
                return  # the interrupt handler re-queues this trial
            self.tell(study, trial, metrics, error)
            self.write_outputs(study)

    def trial_spec(self, study, trial):
        """What a job in another process needs to report to its trial (see `reporter`)."""
        return json.dumps(dict(storage=self.storage_url, study=study.study_name, trial_id=trial._trial_id,
                               pruner=OmegaConf.to_container(self.pruner_cfg)))

    def run_in_worker(self, study, trial, overrides, job_dir):
        """Run `python -m <app> overrides` for one trial; the child reaches its trial through the storage."""
        job_dir.mkdir(parents=True, exist_ok=True)
        main = sys.modules["__main__"]
        app = ["-m", main.__spec__.name] if getattr(main, "__spec__", None) else [sys.argv[0]]
        hc = self.config.hydra
        # the child must compose the same config: extra config dirs, config name and Hydra's own overrides
        app += [arg for src in hc.runtime.config_sources if src.provider == "command-line"
                for arg in ("--config-dir", src.path.replace("file://", "", 1))]
        app += ["--config-name", hc.job.config_name]
        app += [o for o in hc.overrides.hydra
                if not o.lstrip("+~").startswith(("hydra.sweep", "hydra/sweeper", "hydra.mode", "hydra.run.dir",
                                                  "hydra.job.num"))]
        env = {**os.environ, TRIAL_ENV: self.trial_spec(study, trial)}
        with open(job_dir / "console.log", "w") as out:
            p = subprocess.run([sys.executable, *app, *overrides,
                                f"hydra.run.dir={job_dir}", f"hydra.job.num={trial.number}"],
                               stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        if p.returncode == 0:
            return None
        if p.returncode in (-signal.SIGINT, 130):  # Ctrl-C reached the worker too
            return KeyboardInterrupt()
        lines = (job_dir / "console.log").read_text(errors="replace").strip().splitlines()
        return RuntimeError(lines[-1] if lines else f"worker exited with code {p.returncode}")

    def tell(self, study, trial, metrics, error):
        m = metrics or {}  # a worker that died before writing metrics.json leaves only `error`
        status = m.get("status")
        reason = m.get("reason") or (str(error) if error else None)
        for key in ("status", "params", "final_test_acc", "best_test_acc", "first_epoch_at_target"):
            if key in m:
                trial.set_user_attr(key, m[key])
        trial.set_user_attr("epochs", len(m.get("epochs") or []))
        trial.set_user_attr("hit", bool(m) and is_hit(new_record(**from_metrics(m))))
        if reason:
            trial.set_user_attr("reason", reason)
        if status == "pruned":
            self.finish(study, trial, state=TrialState.PRUNED)
        elif status in ("ok", "rejected"):
            # feasible when <= 0; TPE, NSGA-II and GP prefer feasible trials
            b = self.budget
            trial.set_constraint("params_over_budget", m["params"] - b.max_params)
            if self.require_target:
                trial.set_constraint("acc_below_target", b.target_acc - (m.get("final_test_acc") or 0.0))
            # an untrained (rejected) model gets accuracy 0: the worst value, never a good trial
            self.finish(study, trial, [float(m.get(k) or 0.0) for k in self.objectives])
        else:
            self.finish(study, trial, state=TrialState.FAIL)
            log.warning(f"trial {trial.number} failed: {reason}")
        log.info(f"trial {trial.number}: {status or 'failed'} {trial.params} "
                 f"acc={m.get('final_test_acc')} params={m.get('params')}")
        trials = [t for t in self.counted(study) if t.state.is_finished()]
        failed = sum(t.state == TrialState.FAIL for t in trials)
        if failed > self.max_failure_rate * self.n_trials and not self.stop_reason:
            self.stop_reason = (f"{failed} failed trials exceed max_failure_rate={self.max_failure_rate} of "
                                f"n_trials={self.n_trials}")
        hits = sum(bool(t.user_attrs.get("hit")) for t in trials)
        if self.stop_after_hits and hits >= self.stop_after_hits and not self.stop_reason:
            self.stop_reason = f"{hits} trials reached the target (stop_after_hits={self.stop_after_hits})"

    def write_outputs(self, study):
        """trials.csv (every trial) and optimization_results.yaml (best or Pareto set), rewritten after each trial."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        # WAITING trials are re-queued params that have not run yet: not trials to report
        trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        names = sorted({k for t in trials for k in t.params})
        tmp = self.sweep_dir / "trials.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["number", "state", "status", *names, *self.objectives, "param_count", "epochs", "hit",
                        "reason"])
            for t in trials:
                values = t.values if t.values is not None else [None] * len(self.objectives)
                w.writerow([t.number, t.state.name, t.user_attrs.get("status"), *[t.params.get(n) for n in names],
                            *values, t.user_attrs.get("params"), t.user_attrs.get("epochs"),
                            t.user_attrs.get("hit"), t.user_attrs.get("reason")])
        os.replace(tmp, self.sweep_dir / "trials.csv")
        if not any(t.state == TrialState.COMPLETE for t in trials):
            return
        if len(self.directions) == 1:
            best = study.best_trial
            results = dict(name="optuna", best_params=best.params, best_value=best.value,
                           best_trial=best.number)
        else:
            results = dict(name="optuna", solutions=[dict(params=t.params, values=t.values, number=t.number)
                                                     for t in study.best_trials])
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")

    def sweep(self, arguments):
        space, fixed = self.parse(arguments)
        self.storage_url = self.storage
        in_process = self.n_jobs == 1 and type(self.launcher).__name__ == "BasicLauncher"
        if self.storage is None and not in_process:
            # trials in other processes reach their Optuna trial through the storage: give this sweep one
            self.storage_url = str(self.sweep_dir / "study.journal")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        study = self.make_study(space)
        self.fail_orphans(study)
        done = len([t for t in self.counted(study) if t.state.is_finished()])
        log.info(f"study {study.study_name!r} in {self.storage_url or 'memory'}: {done} of {self.n_trials} trials "
                 f"done; {self.n_jobs} at a time; trial dirs under {self.sweep_dir}")

        def worker():
            while (trial := self.next_trial(study, space)) is not None:
                try:
                    self.run_trial(study, trial, fixed)
                except Exception as e:  # a broken trial never kills the sweep
                    log.exception(f"trial {trial.number} crashed the sweeper's side")
                    with self.lock:
                        if study.get_trials(deepcopy=False)[trial.number].state == TrialState.RUNNING:
                            self.tell(study, trial, None, e)

        try:
            if self.n_jobs == 1:
                worker()
            else:
                threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.n_jobs)]
                for t in threads:
                    t.start()
                for t in threads:
                    while t.is_alive():
                        t.join(0.5)  # short joins keep the main thread responsive to Ctrl-C
        except KeyboardInterrupt:
            with self.lock:
                self.stop_reason = "interrupted"
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if t.user_attrs.get("worker") == WORKER:
                        self.requeue(study, t, "interrupted by Ctrl-C")
                self.write_outputs(study)
            where = f"in {self.storage_url}; run the same command again to continue" if self.storage else \
                f"in {self.sweep_dir}; set hydra.sweeper.storage to make a sweep resumable"
            log.warning(f"interrupted: finished trials are kept {where}")
            raise SystemExit(130)
        with self.lock:
            self.write_outputs(study)
        if self.stop_reason:
            log.info(f"stopped early: {self.stop_reason}")
        trials = [t for t in self.counted(study) if t.state.is_finished()]
        hits = [t for t in trials if t.user_attrs.get("hit")]
        log.info(f"{len(trials)} trials ({len(hits)} met the target), results in {self.sweep_dir}")
        return study


def _read_metrics(job_dir):
    try:
        return json.loads((Path(job_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent():
    """Linux: a worker process gets SIGKILL when its sweep dies, so no orphan keeps training."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
