"""A sweep's n_jobs slots and the runs they take. sweeper/engine/sweep.py asks for trials and tells how they ended;
this module has them run.

A trial runs once, then maybe again: after its own run, its policy's `again` may ask for more runs (the MNIST policy:
a hit on more seeds). Those wait on the board, and the next free slot takes one ahead of a new trial, so with two
free slots seeds +1 and +2 run at once; of two trials that hit, the first to hit is confirmed first. The first run
that settles the trial (`policy.decides`: a seed that misses) cancels the trial's other runs. Whichever slot ends a trial's last run hands the trial's verdict to the sweep.
"""
import itertools
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from optuna.trial import TrialState

from sweeper.engine import policy as pol, worker
from sweeper.engine.retry import StorageLost as Lost

log = logging.getLogger("sweeper.engine.sweep")   # the sweep's own lines, whichever module writes them
WAIT = object()   # what `ask` returns when nothing can be asked now but may be later (other sweeps' last trials)


@dataclass
class Open:
    """A trial this sweep is running: its own run's verdict, and its other runs, waiting, running or ended."""
    trial: Any
    overrides: list
    job_dir: Path
    first: Optional[pol.Verdict] = None
    waiting: list = field(default_factory=list)    # (index, overrides, run dir) not started yet
    running: dict = field(default_factory=dict)    # index -> (overrides, run dir)
    ended: dict = field(default_factory=dict)      # index -> Verdict
    settled: Optional[str] = None                   # why its remaining runs were cancelled
    queued: int = 0                                 # when its runs began to wait: the trial that hit first goes first

    def verdicts(self):
        return [self.first] + [self.ended[i] for i in sorted(self.ended)]


class Board:
    """The trials a sweep has open and the runs of them that wait for a slot; one lock for its slots."""

    def __init__(self):
        self.cond = threading.Condition()
        self.open = {}   # trial number -> Open
        self.asking = 0  # slots between asking for a trial and adding it: a slot that got none must not leave yet
        self.order = itertools.count()

    def add(self, trial, overrides, job_dir):
        with self.cond:
            self.open[trial.number] = Open(trial, overrides, job_dir)

    def more(self, number, first, runs):
        """The trial's own run ended as `first`; `runs` [(overrides, run dir)] wait for free slots."""
        with self.cond:
            o = self.open[number]
            o.first, o.queued = first, next(self.order)
            o.waiting = [(i, overrides, run_dir) for i, (overrides, run_dir) in enumerate(runs, start=1)]
            self.cond.notify_all()

    def take(self):
        """The next waiting run, of the trial whose runs began to wait first (the first hit is the first confirmed):
        (Open, index, overrides, run dir), or None."""
        with self.cond:
            ready = [o for o in self.open.values() if o.waiting and o.settled is None]
            if not ready:
                return None
            o = min(ready, key=lambda o: o.queued)
            index, overrides, run_dir = o.waiting.pop(0)
            o.running[index] = overrides, run_dir
            return o, index, overrides, run_dir

    def ended(self, o, index, verdict, settles):
        """Run `index` of `o` ended as `verdict`; `settles(verdict)` says whether it settles the trial alone.
        -> ([(overrides, run dir)] to cancel, whether the trial is complete: no run of it waits or runs)."""
        with self.cond:
            o.running.pop(index, None)
            cancel = []
            if o.settled is None:
                o.ended[index] = verdict
                if settles(verdict):
                    o.settled = f"cancelled: another run of trial {o.trial.number} settled it"
                    o.waiting.clear()
                    cancel = list(o.running.values())
            complete = not o.waiting and not o.running
            self.cond.notify_all()
            return cancel, complete

    def close(self, number):
        with self.cond:
            self.open.pop(number, None)
            self.cond.notify_all()

    def asks(self, change):
        with self.cond:
            self.asking += change
            self.cond.notify_all()

    def busy(self):
        """Whether a trial is open, or about to be: one whose own run is under way may still add runs."""
        with self.cond:
            return bool(self.open) or self.asking > 0

    def wait(self, seconds):
        with self.cond:
            self.cond.wait(seconds)


class Slots:
    """The slots of `sweep` (an OptunaSweep): each takes a waiting run of an open trial, else a new trial from the
    ledger, until neither is left. An error in a slot stops the whole sweep (exit 1), never the slot alone."""

    def __init__(self, sweep, study):
        self.sweep, self.study, self.board = sweep, study, Board()
        self.dropped = set()   # numbers of trials the sweep re-queued while they ran (`drop`): their results go

    def run(self, n_jobs, jobs, stops):
        if n_jobs == 1:
            return self.work()
        threads = [threading.Thread(target=jobs.in_slot, args=(i, self.work), daemon=True) for i in range(n_jobs)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive() and not isinstance(stops.fatal, Lost):   # then the sweep's finish() stops the slots
                t.join(0.5)  # short joins keep the main thread responsive to Ctrl-C

    def work(self):
        s = self.sweep
        try:
            while (job := self.next()) is not None:
                try:
                    if isinstance(job, tuple):
                        self.again(*job)
                    else:
                        self.first(job)
                except KeyboardInterrupt:   # Ctrl-C reached this slot's worker process: the whole sweep stops
                    with s.lock:
                        s.ledger.stop("interrupted")
                    return
        except Lost as e:
            s.stops.lost(e)
        except Exception as e:
            s.stops.crashed(e, getattr(s, "log_file", None))

    def next(self):
        """A waiting run (a tuple), or a new trial, or None when there is nothing left to run."""
        while True:
            if (run := self.board.take()) is not None:
                return run
            self.board.asks(+1)
            try:
                trial = self.sweep.ask()
                if trial is not WAIT and trial is not None:
                    self.board.add(trial, self.sweep.overrides(trial), self.sweep.sweep_dir / str(trial.number))
            finally:
                self.board.asks(-1)
            if trial is WAIT:
                self.board.wait(min(self.sweep.heartbeat_interval or 5, 5))
            elif trial is not None:
                return trial
            elif self.board.busy():   # an open trial may still add runs for this slot to take
                self.board.wait(1.0)
            else:
                return None

    def first(self, trial):
        """A trial's own run, as its policy says (maybe not at all), then its other runs or its verdict."""
        s, o = self.sweep, self.board.open[trial.number]
        try:
            s.retry(trial.set_user_attr, "dir", str(o.job_dir.absolute()))  # compare may run from another folder
            verdict = s.policy.before(trial.number, o.overrides, o.job_dir)
            if verdict is None:
                verdict = s.policy.judge(*s.jobs.run(o.overrides, o.job_dir, trial.number, trial, self.study))
                runs = s.policy.again(trial.number, verdict, o.overrides, o.job_dir) \
                    if verdict.status != "interrupted" and trial.number not in self.dropped else []
                if runs:
                    self.board.more(trial.number, verdict, runs)
                    return   # the slot that ends its last run tells it
                verdict = s.policy.combine([verdict])
        except (KeyboardInterrupt, Lost):
            raise
        except Exception as e:  # a broken trial never kills the sweep
            log.exception(f"trial {trial.number} crashed the sweeper's side")
            verdict = pol.Verdict("failed", reason=worker.describe(e))
        self.done(o, verdict)

    def again(self, o, index, overrides, run_dir):
        """Another run of an open trial (a confirmation seed): it may settle the trial and cancel its other runs."""
        s, number = self.sweep, o.trial.number
        try:
            verdict = s.policy.judge(*s.jobs.run(overrides, run_dir, number, o.trial, self.study, own=False))
        except (KeyboardInterrupt, Lost):
            raise
        except Exception as e:
            log.exception(f"trial {number} crashed the sweeper's side")
            verdict = pol.Verdict("failed", reason=worker.describe(e))
        settles = lambda v: v.status in ("interrupted", "failed") or s.policy.decides(number, v)  # noqa: E731
        cancel, complete = self.board.ended(o, index, verdict, settles)
        for overrides, d in cancel:
            s.jobs.cancel(d, o.settled, o.trial, self.study)
            worker.mark_interrupted(d, overrides, o.settled, requeued=False)
        if complete:
            runs = o.verdicts()
            interrupted = [v for v in runs if v.status == "interrupted"]
            self.done(o, interrupted[0] if interrupted else s.policy.combine(runs))

    def done(self, o, verdict):
        self.board.close(o.trial.number)
        if o.trial.number not in self.dropped:
            self.sweep.finish_trial(o.trial, o.overrides, o.job_dir, verdict)
        self.sweep.closed(o.trial)

    def drop(self, why, keep=None):
        """Stop every open trial but `keep` and re-queue it (stop_after_hits was met: a resumed study runs them);
        their dirs say `interrupted`. Called under the sweep's lock."""
        s = self.sweep
        with self.board.cond:
            stopping = [o for n, o in self.board.open.items() if n != keep and n not in self.dropped]
            for o in stopping:
                self.dropped.add(o.trial.number)
                o.waiting.clear()
        for o in stopping:
            if s.retry(self.study._storage.get_trial, o.trial._trial_id).state == TrialState.RUNNING:
                s.ledger.requeue(o.trial, why)
            for overrides, d in [(o.overrides, o.job_dir), *o.running.values()]:
                s.jobs.cancel(d, why, o.trial, self.study)
                worker.mark_interrupted(d, overrides, why)
            log.info(f"trial {o.trial.number}: {why}; its params are queued to run again")
        return [o.trial.number for o in stopping]

