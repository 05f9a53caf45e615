"""The trial ledger: which trials of a study count towards `n_trials`, and who may ask for the next one.

Several sweeps (and several threads of one sweep) may share a study. The ledger keeps the count exact:

- counted: every trial that ran or runs, except those closed as `uncounted` (interrupted and re-queued, surplus
  asks past `n_trials`, duplicate params). WAITING trials (re-queued params not yet asked) are not counted.
- an interrupted trial (Ctrl-C, or its sweep died) is closed as FAIL, uncounted, and its params queued again;
  the next ask runs them.
- of two asks racing for the last place, the later one gives way (`surplus`).
- a trial whose sweep is gone is found in two ways: on this host its sweep's pid is dead (`fail_orphans`); on any
  host, with an RDB storage, its heartbeat is older than the grace period (Optuna's `fail_stale_trials`, whose
  callback is `requeue_stale`). Either way it is failed, re-queued, and no longer counted.

Every storage call goes through `retry` (sweeper/engine/retry.py), which waits out a database that blinks, and
each is safe to try again: a tell whose reply was lost but that got through is not told twice (nor taken for
another sweep's doing), and a trial created by an ask the outage cut off is closed once the storage is back.

It only talks to an `optuna.Study`, so it is tested in milliseconds against an in-memory one. It is not
thread-safe: the sweep calls it under its own lock.
"""
import contextlib
import logging
import os
import socket
import threading
import time
import warnings

import optuna
from optuna.trial import TrialState

from sweeper.engine.heartbeat import BEATS
from sweeper.engine.retry import direct, retryable

WORKER = f"{socket.gethostname()}:{os.getpid()}"   # which sweep process runs a trial (user_attrs["worker"])
ASKS = 20   # duplicate proposals in a row before the search space is taken as exhausted

log = logging.getLogger(__name__)


class Ledger:
    def __init__(self, study, n_trials, extend=None, worker=WORKER, retry=direct):
        self.study, self.n_trials, self.worker = study, n_trials, worker
        self.extend = extend          # extend(trial): custom_search_space, suggests more params
        self.retry = retry            # retry(fn, *args): every storage call (sweeper/engine/retry.py)
        self.stop_reason = None       # set once: n_trials reached elsewhere, grid exhausted, failures, hits, ...

    def trials(self, states=None):
        return self.retry(lambda: self.study.get_trials(deepcopy=False, states=states))

    def counted(self):
        """Trials that use up n_trials."""
        trials = self.trials()
        # a trial failed for a stale heartbeat cannot be marked uncounted (it is finished): its re-run names it
        replaced = {t.user_attrs.get("requeued_from") for t in trials}
        return [t for t in trials if t.state != TrialState.WAITING and not t.user_attrs.get("uncounted")
                and t.number not in replaced]

    def finished(self):
        return [t for t in self.counted() if t.state.is_finished()]

    def ask(self, space):
        """A new trial to run, or None when the sweep is done (n_trials, or a stop reason)."""
        self.recover()
        if self.stop_reason or len(self.counted()) >= self.n_trials:
            return None
        for _ in range(ASKS):
            trial = self.new_trial(space)
            # fetched after asking, so asks by other sweeps on the same study are seen too
            others = self.settled_others(trial)
            if sum(t.number < trial.number for t in others) >= self.n_trials:
                self.uncount(trial, "surplus: n_trials already reached by another worker")
                return None
            # the same params finished, or asked earlier by another sweep (a re-queued trial is asked as itself):
            # of two identical asks the later one gives way
            if not any(t.params == trial.params and (t.number < trial.number or t.state.is_finished())
                       for t in others if t.state != TrialState.FAIL):
                return trial
            self.uncount(trial, "duplicate of another trial's params")
        self.stop("the sampler keeps proposing params already tried: the search space looks exhausted")
        return None

    def settled_others(self, trial, tries=20, pause=0.05):
        """The counted trials but `trial`, once the earlier ones other sweeps are still asking have all their
        params: Optuna writes a trial's params one at a time, and the worker attr last. Compared half-written, two
        asks of the same params would each keep theirs. A trial that stays unsettled is waited for ~1 s at most."""
        for _ in range(tries):
            others = [t for t in self.counted() if t.number != trial.number]
            if not any(t.state == TrialState.RUNNING and "worker" not in t.user_attrs and t.number < trial.number
                       for t in others):
                return others
            time.sleep(pause)
        return others

    def new_trial(self, space):
        """study.ask, custom params and the `worker` attr, tried again as one while the storage blinks. A try cut
        off after its trial was created leaves a RUNNING trial no one would run: it is closed (uncounted) before
        the next try. (One whose creation got through but whose reply was lost stays unknown: see the README.)"""
        made = []   # ids of the trials a try created or took from the queue

        def attempt():
            while made:
                self.close_cut_off(made[-1])
                made.pop()
            try:
                with self.recording(made), warnings.catch_warnings():
                    # the sweep beats for its asked trials itself (sweeper/engine/heartbeat.py)
                    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                    trial = self.study.ask(space)
                    if self.extend is not None:
                        self.extend(trial)
                    trial.set_user_attr("worker", self.worker)
            except Exception as e:
                if not retryable(e):   # no retry follows: close what this try left, as far as the storage lets
                    with contextlib.suppress(Exception):
                        for trial_id in made:
                            self.close_cut_off(trial_id)
                raise
            made.clear()
            return trial

        return self.retry(attempt)

    @contextlib.contextmanager
    def recording(self, made):
        """While the block runs, the ids of the trials this thread's study.ask creates, or pops from the queue
        (Optuna sets a WAITING trial RUNNING), are appended to `made`: known even when the ask fails later."""
        storage, me = self.study._storage, threading.get_ident()
        create, set_state = storage.create_new_trial, storage.set_trial_state_values

        def create_new_trial(study_id, template_trial=None):
            trial_id = create(study_id, template_trial)
            if template_trial is None and threading.get_ident() == me:
                made.append(trial_id)
            return trial_id

        def set_trial_state_values(trial_id, state, values=None):
            changed = set_state(trial_id, state, values)
            if changed and state == TrialState.RUNNING and threading.get_ident() == me:
                made.append(trial_id)
            return changed

        own = vars(storage)   # an ask nested in this one (tests race two ledgers) wraps these wrappers
        saved = {name: own.get(name) for name in ("create_new_trial", "set_trial_state_values")}
        storage.create_new_trial, storage.set_trial_state_values = create_new_trial, set_trial_state_values
        try:
            yield
        finally:
            for name, method in saved.items():
                if method is None:
                    del own[name]   # the class's method again
                else:
                    own[name] = method

    def close_cut_off(self, trial_id):
        """Close a trial an ask created but never handed out (uncounted); one taken from the queue is queued again."""
        frozen = self.retry(self.study._storage.get_trial, trial_id)
        if frozen.state != TrialState.RUNNING:
            return
        self.uncount(self.retry(optuna.Trial, self.study, trial_id), "its ask was cut off by a storage outage")
        if "requeued_from" in frozen.user_attrs:
            params = frozen.system_attrs.get("fixed_params") or frozen.params
            self.retry(lambda: self.study.enqueue_trial(params, user_attrs={
                "requeued_from": frozen.user_attrs["requeued_from"]}))

    def stop(self, reason):
        """Ask for no more trials; the first reason given is the one reported."""
        self.stop_reason = self.stop_reason or reason

    def tell(self, trial, values=None, state=None, attrs=None, constraints=None):
        """Record how `trial` ended: its user attrs and constraints, then its values or state. Returns False when
        the result came too late to count (the trial was already finished elsewhere)."""
        tries = 0

        def attempt():
            nonlocal tries
            tries += 1
            for key, value in (attrs or {}).items():
                trial.set_user_attr(key, value)
            for name, value in (constraints or {}).items():
                trial.set_constraint(name, value)
            self.study.tell(trial, values, state=state)

        try:
            self.retry(attempt)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            if not self.retry(self.study._storage.get_trial, trial._trial_id).state.is_finished():
                raise   # a ValueError of Optuna's about the values themselves
            # a try whose reply the storage lost got through: told once, by this sweep
            if tries > 1 and not any(t.user_attrs.get("requeued_from") == trial.number for t in self.trials()):
                return True
            # another sweep found no heartbeat from this one within the grace period, failed the trial and
            # re-queued it: that re-run is the one that counts
            log.warning(f"trial {trial.number} was failed by another sweep (no heartbeat from here within the grace "
                        f"period) and re-queued; this run's result is dropped")
            return False
        except RuntimeError as e:
            # GridSampler calls study.stop() once every grid point has run: outside study.optimize that raises
            if "Study.stop" not in str(e):
                raise
            self.stop("every point of the grid has been tried")
        return True

    def uncount(self, trial, reason):
        """Close a trial as FAIL without using up one of n_trials."""
        self.tell(trial, state=TrialState.FAIL, attrs=dict(uncounted=True, reason=reason))

    def requeue(self, frozen, reason):
        """Close an interrupted trial (uncounted) and queue its params to run again."""
        self.uncount(self.retry(optuna.Trial, self.study, frozen._trial_id), reason)
        self.retry(lambda: self.study.enqueue_trial(frozen.params, user_attrs={"requeued_from": frozen.number}))

    def running(self, mine=False):
        trials = self.trials((TrialState.RUNNING,))
        return [t for t in trials if not mine or t.user_attrs.get("worker") == self.worker]

    def others_beating(self):
        """Running trials of other sweeps that have had a heartbeat: each of them ends, or goes stale and is
        re-queued. (A trial with none, from a sweep without heartbeats, may stay RUNNING for good.)"""
        return [t for t in self.running() if t.user_attrs.get("worker") != self.worker
                and t.user_attrs.get(BEATS)]

    def recover(self):
        """Fail and re-queue the trials of sweeps that are gone: dead pids on this host, stale heartbeats anywhere."""
        for number in self.fail_orphans(alive):
            log.warning(f"trial {number} was left RUNNING by a dead sweep: marked FAIL and re-queued")
        with warnings.catch_warnings():   # "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a no-op unless the storage beats (RDB with an interval)
            self.retry(optuna.storages.fail_stale_trials, self.study)

    def fail_orphans(self, alive):
        """Re-queue trials left RUNNING by a sweep process on this host that is gone; return their numbers.

        alive(pid) -> bool. Only this host's pids can be checked.
        """
        host = socket.gethostname()
        orphans = []
        for t in self.running():
            worker = t.user_attrs.get("worker", "")
            h, _, pid = worker.partition(":")
            if h == host and pid.isdigit() and not alive(int(pid)):
                self.requeue(t, f"interrupted: its sweep ({worker}) died")
                orphans.append(t.number)
        return orphans


def requeue_stale(study, frozen):
    """RDBStorage's heartbeat_stale_trial_callback: Optuna has failed `frozen`; queue its params to run again."""
    study.enqueue_trial(frozen.params, user_attrs={"requeued_from": frozen.number})
    log.warning(f"trial {frozen.number} had no heartbeat from its sweep ({frozen.user_attrs.get('worker')}) within "
                f"the grace period: marked FAIL and re-queued")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
