"""How a sweep has one job run: in a worker process (basic launcher, n_jobs > 1), in its own process (basic
launcher, n_jobs=1), or as a job of any other Hydra launcher (Ray, submitit, joblib), one job per call from
n_jobs slots at once. Whoever ran it, the job's dir ends up with `job_return.json` (sweeper/engine/worker.py).
"""
import contextlib
import threading
from pathlib import Path

from omegaconf import OmegaConf

from sweeper.engine import launchers, watch, worker
from sweeper.engine.gpus import for_slot, placement


class Jobs:
    def __init__(self, hydra_context, task_function, config, n_jobs, prune_guard, pruner_cfg, timeout=None,
                 gpus="auto"):
        self.config, self.n_jobs, self.prune_guard, self.timeout = config, n_jobs, prune_guard, timeout
        self.pruner = OmegaConf.to_container(pruner_cfg) if OmegaConf.is_config(pruner_cfg) else pruner_cfg
        self.launcher = launchers.make(hydra_context, task_function, config)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.basic = type(self.launcher).__name__ == "BasicLauncher"
        # a job in the sweep's own process cannot be stopped when it hangs: with a timeout, it runs in a worker
        self.in_process = n_jobs == 1 and self.basic and timeout is None
        self.workers = self.basic and not self.in_process
        self.storage_url = None   # set by the sweep once its storage is known: how other processes reach a trial
        self.storage_timeout = 600   # the sweep's: how long a job's own reports wait out a blink of the storage
        # which GPU each worker process gets (sweeper/engine/gpus.py); the slot a thread serves is thread-local
        self.gpus = placement(gpus, n_jobs, OmegaConf.select(config, "device")) if self.workers else None
        self.slot = threading.local()

    def in_slot(self, index, work, *args):
        """Run `work(*args)` as slot `index` (0 ... n_jobs-1): its worker processes get that slot's GPU."""
        self.slot.index = index
        return work(*args)

    def warm_up(self):
        if not self.basic and self.n_jobs > 1:
            launchers.warm_up(self.launcher)

    def run(self, overrides, job_dir, number, trial=None, study=None, own=True):
        """Run one job in `job_dir` (under the sweep dir) -> (JobResult, the dir it ran in). Only a trial's `own`
        run reports to its Optuna trial (`trial`, `study`); more runs of the same trial (another seed) do not.
        Either is stopped after the sweep's trial_timeout, or when `cancel`led."""
        spec = worker.spec(self.storage_url, study, trial, self.pruner, self.prune_guard, self.storage_timeout,
                           self.timeout, run=None if own else job_dir.name) \
            if trial is not None and self.storage_url else ""
        if self.workers:
            env = for_slot(self.gpus, getattr(self.slot, "index", 0))
            return worker.run(self.config, overrides, job_dir, number, spec, self.timeout, env), job_dir
        if spec and not self.in_process:   # another launcher runs the job elsewhere: Hydra sets this there
            overrides = overrides + [f"++hydra.job.env_set.{worker.TRIAL_ENV}='{spec}'"]
        (job_dir / worker.RETURN_FILE).unlink(missing_ok=True)   # its watch's file, if the job is stopped (watch.py)
        if job_dir.parent != self.sweep_dir:   # another run of a trial, inside its trial's dir
            overrides = overrides + [f"hydra.sweep.subdir={job_dir.relative_to(self.sweep_dir)}"]
        with worker.bound(trial, self.prune_guard) if trial is not None and own else contextlib.nullcontext():
            # in this process (n_jobs=1) the runs of a trial come one after another: none is ever cancelled
            try:
                [ret] = self.launcher.launch([overrides], initial_job_idx=number)   # the basic one: in this process
            except Exception:
                if not (job_dir / worker.RETURN_FILE).is_file():
                    raise
                # its watch (watch.py) stopped a job that would not end, and wrote how it ended before its exit
                return worker.read_return(job_dir), job_dir
        result, run_dir = watch.from_job_return(ret), Path(ret.hydra_cfg.hydra.runtime.output_dir)
        if not (run_dir / worker.RETURN_FILE).exists():   # a worker process writes its own
            worker.save_return(run_dir, result)
        return result, run_dir

    def cancel(self, job_dir, why, trial=None, study=None):
        """Stop another run of `trial` (a confirmation seed) that is under way in `job_dir`: a worker process at once,
        a job of another launcher once its watch reads that the trial's CANCELLED attr names it (watch.py)."""
        if self.workers:
            worker.cancel(job_dir, why)
        elif not self.in_process and trial is not None:
            named = study._storage.get_trial(trial._trial_id).system_attrs.get(watch.CANCELLED, [])
            study._storage.set_trial_system_attr(trial._trial_id, watch.CANCELLED, [*named, job_dir.name])
