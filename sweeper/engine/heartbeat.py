"""The sweep's heartbeat: proof, in the storage, that the sweep running a trial is alive.

Optuna records heartbeats by itself only inside `study.optimize`; a sweep asks and tells, so it beats for its own
trials here: one thread, one `record_heartbeat` per running trial every `interval` seconds. A sweep on any host
that finds a trial silent for longer than the grace period fails and re-queues it (sweeper/engine/ledger.py).

A beat that fails for a blink of the storage is tried again (sweeper/engine/retry.py), and once the storage is
back every trial gets a beat at once, so that an outage costs the trials as little of their grace period as it
can. A storage gone for longer than storage_timeout is `on_lost(StorageLost)`'s to handle (the sweep stops).
"""
import logging
import threading

from sweeper.engine.retry import StorageLost, direct

log = logging.getLogger(__name__)
BEATS = "heartbeat_interval"   # user_attr of a trial that has had its first heartbeat


class Heartbeat:
    def __init__(self, storage, interval, retry=direct, on_lost=None):
        self.storage, self.interval, self.retry, self.on_lost = storage, interval, retry, on_lost
        self.trials = {}              # trial_id -> number, of this sweep's running trials
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.now = threading.Event()  # beat without waiting out the interval: the storage is back
        self.thread = threading.Thread(target=self.run, daemon=True, name="heartbeat")
        if hasattr(retry, "on_back"):
            retry.on_back.append(self.now.set)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.now.set()
        self.thread.join()
        if hasattr(self.retry, "on_back"):
            self.retry.on_back.remove(self.now.set)

    def add(self, trial):
        """Beat for `trial` from now on, starting at once: a trial with no heartbeat yet is never taken as stale."""
        with self.lock:
            self.trials[trial._trial_id] = trial.number
        self.beat(trial._trial_id)
        # only now can it go stale, so other sweeps may wait for it to end (Ledger.others_beating)
        self.retry(trial.set_user_attr, BEATS, self.interval)

    def discard(self, trial):
        with self.lock:
            self.trials.pop(trial._trial_id, None)

    def beat(self, trial_id):
        try:
            self.retry(self.storage.record_heartbeat, trial_id, until=self.stopping)
        except StorageLost as e:
            if self.on_lost is None:
                raise
            self.on_lost(e)
        except Exception as e:   # not a blink (or the sweep is ending): the next beat may get through
            if not self.stopping.is_set():
                log.warning(f"heartbeat for trial {self.trials.get(trial_id)} not recorded: {str(e).splitlines()[0]}")

    def run(self):
        while True:
            self.now.wait(self.interval)
            self.now.clear()
            if self.stopping.is_set():
                return
            with self.lock:
                ids = list(self.trials)
            for trial_id in ids:
                self.beat(trial_id)
