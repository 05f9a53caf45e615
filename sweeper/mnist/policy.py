"""The MNIST trial's sweep policy: `hydra.sweeper.policy: sweeper.mnist.policy.MnistPolicy` (every search in
conf/hparams_search sets it). The interface it implements is sweeper/engine/policy.py's.

- A proposal whose model is over `budget.max_params` is rejected before any process starts: counted from its
  composed config (no weights allocated), recorded with a `rejected` metrics.json and accuracy 0.
- A run's outcome comes from its metrics.json (status, reason, and the `objectives` fields, one per direction);
  a run that wrote none falls back to what its task returned.
- A hit (sweeper/mnist/metrics.py's rule) runs again on seeds +1 ... +confirm_seeds, at once in the sweep's free
  slots; the first miss cancels the others. The trial is told the mean over its seeds that ended, and is a hit
  only if every seed hits (`require_target` makes the worst seed's accuracy a constraint).
- `stop_after_hits` stops the sweep once that many trials are hits: the trials still running are stopped and
  re-queued.
"""
import logging
import shutil

from omegaconf import OmegaConf

from sweeper.engine.policy import TaskValue, Verdict, value_names
from sweeper.engine.worker import JobResult
from sweeper.mnist import metrics as mx

log = logging.getLogger(__name__)
ATTRS = ("params", "final_test_acc", "best_test_acc", "first_epoch_at_target")   # metrics.json -> user attrs


class MnistPolicy(TaskValue):
    columns = ("params", "epochs", "hit", "seeds", "min_final_test_acc")   # trials.csv's, after the values

    def __init__(self, sweep):
        s = sweep.settings
        self.objectives = list(s["objectives"]) if s.get("objectives") else None
        self.stop_after_hits, self.require_target = s.get("stop_after_hits"), s.get("require_target")
        self.confirm_seeds = s.get("confirm_seeds") or 0
        if not (isinstance(self.confirm_seeds, int) and self.confirm_seeds >= 0):
            raise ValueError(f"hydra.sweeper.confirm_seeds={self.confirm_seeds!r} is not allowed: an integer >= 0")
        self.n_values, self.compose = sweep.n_values, sweep.compose
        self.names = value_names(self.objectives, sweep.n_values)   # metrics.json fields, one per direction
        self.budget = OmegaConf.select(sweep.config, "budget")   # None: an app without one is never counted

    # ------------------------------------------------------------ before a trial runs
    def before(self, number, overrides, job_dir):
        """Reject an over-budget model here, so no process starts and no slot waits; else clear what an earlier
        sweep left in a reused trial dir, so it is not read as this trial's when its job dies early."""
        rejected = self.reject_over_budget(number, overrides, job_dir)
        if rejected is None:
            (job_dir / "metrics.json").unlink(missing_ok=True)
            for d in mx.confirmation_dirs(job_dir):
                shutil.rmtree(d)
        return rejected

    def reject_over_budget(self, number, overrides, job_dir):
        if self.budget is None:
            return None
        from sweeper.mnist.model import count   # torch, only once a budget is there to check
        try:
            cfg = self.compose(overrides)
            max_params = OmegaConf.select(cfg, "budget.max_params")
            if OmegaConf.select(cfg, "model._target_") is None or not isinstance(max_params, int):
                return None   # a budget this policy cannot count: the job judges itself
            n_params = count(cfg.model)
        except Exception:   # a bad override or model: the job fails on it with its own one-line message
            return None
        reason = mx.over_budget(n_params, max_params)
        if reason is None:
            return None
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")
        m = mx.new(cfg.get("seed"), overrides, cfg.budget)
        m.update(status="rejected", reason=reason, params=n_params, ended_at=m["started_at"], wall_seconds=0.0)
        mx.write_json(job_dir / "metrics.json", m)
        log.info(f"trial {number}: rejected before it started: {reason}")
        # what the MNIST task returns for a rejected model in a sweep: accuracy 0
        return self.combine([self.judge(JobResult("completed", [0.0] * self.n_values), job_dir)])

    # ------------------------------------------------------------ after each run
    def judge(self, result, run_dir):
        m = mx.read(run_dir)
        if not (m and m.get("status") in ("ok", "rejected", "pruned", "failed")):
            verdict = super().judge(result, run_dir)   # no metrics.json: what the task returned
            verdict.record = m
            return verdict
        status, reason = m["status"], m.get("reason") or result.error
        if status in ("pruned", "failed"):
            return Verdict(status, None, reason, record=m)
        if self.objectives:
            values = [float(m.get(k) or 0.0) for k in self.objectives]   # a rejected model: accuracy 0, never good
            bad = [k for k in self.objectives if isinstance(m.get(k), bool) or not isinstance(m.get(k), (int, float))]
            if bad and status != "rejected":
                return Verdict("failed", None, f"metrics.json has no number for hydra.sweeper.objectives {bad} (it "
                                               f"has {sorted(m)})", record=m)
            return Verdict(status, values, reason, record=m)
        task = super().judge(result, run_dir)   # no objectives: the value is what the task returned
        if task.values is None:
            return Verdict("failed", None, reason or task.reason, record=m)
        return Verdict(status, task.values, reason, record=m)

    def again(self, number, first, overrides, job_dir):
        """A hit runs again on seeds seed+1 ... seed+confirm_seeds, in <trial dir>/seed<N>/."""
        m = first.record
        if not self.confirm_seeds or not mx.metrics_hit(m):
            return []
        seeds = [m["seed"] + i for i in range(1, self.confirm_seeds + 1)]
        log.info(f"trial {number}: hit ({m['final_test_acc']:.4f}) on seed {m['seed']}; confirming on seed"
                 f"{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
        return [([*overrides, f"seed={seed}"], job_dir / f"seed{seed}") for seed in seeds]

    def decides(self, number, run):
        """A seed that misses settles it: the trial is no hit, and its other seeds are cancelled."""
        if not run.record:
            log.info(f"trial {number}: a confirmation run ended {run.status} ({run.reason}): not confirmed")
            return True
        m, hit = run.record, mx.metrics_hit(run.record)
        log.info(f"trial {number}: seed {m.get('seed')}: {m.get('final_test_acc')} -> "
                 f"{'hit' if hit else 'miss, not confirmed'}")
        return not hit

    def combine(self, runs):
        """A trial run on several seeds is told the mean; it is a hit only if every seed hits."""
        verdict, m = runs[0], runs[0].record
        if verdict.values is not None and len(runs) > 1:
            seeded = [verdict.values] + [r.values for r in runs[1:] if r.values is not None]
            verdict.values = [sum(column) / len(seeded) for column in zip(*seeded)]
        if not m:
            return verdict
        attrs = {key: m[key] for key in ATTRS if key in m}
        attrs["epochs"] = len(m.get("epochs") or [])
        summary = mx.over_seeds([r.record for r in runs])
        attrs.update({key: summary[key] for key in ("hit", "seeds", "min_final_test_acc", "mean_final_test_acc")})
        verdict.attrs.update(attrs)
        if verdict.values is not None and self.budget is not None and m.get("params") is not None:
            budget = {**OmegaConf.to_container(self.budget), **(m.get("budget") or {})}  # the trial's own
            # feasible when <= 0; TPE, NSGA-II and GP prefer feasible trials
            verdict.constraints["params_over_budget"] = m["params"] - budget["max_params"]
            if self.require_target:   # judged on the worst seed, as the hit rule is
                verdict.constraints["acc_below_target"] = budget["target_acc"] - (summary["min_final_test_acc"] or 0.0)
        verdict.shown = f"{m.get('final_test_acc')}, {m.get('params')} params"
        return verdict

    # ------------------------------------------------------------ after each trial
    def hits(self, finished):
        return [t for t in finished if t.user_attrs.get("hit")]

    def stop(self, finished):
        hits = len(self.hits(finished))
        if self.stop_after_hits and hits >= self.stop_after_hits:
            confirmed = f", each on {self.confirm_seeds + 1} seeds" if self.confirm_seeds else ""
            return f"{hits} trials reached the target{confirmed} (stop_after_hits={self.stop_after_hits})"
        return None

