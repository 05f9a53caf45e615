"""The sweep's heartbeat: proof, in the storage, that the sweep running a trial is alive.

Optuna records heartbeats by itself only inside `study.optimize`; a sweep asks and tells, so it beats for its own
trials here: one thread, one `record_heartbeat` per running trial every `interval` seconds. A sweep on any host
that finds a trial silent for longer than the grace period fails and re-queues it (sweeper/engine/ledger.py).
"""
import logging
import threading

log = logging.getLogger(__name__)
BEATS = "heartbeat_interval"   # user_attr of a trial that has had its first heartbeat


class Heartbeat:
    def __init__(self, storage, interval):
        self.storage, self.interval = storage, interval
        self.trials = {}              # trial_id -> number, of this sweep's running trials
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="heartbeat")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()

    def add(self, trial):
        """Beat for `trial` from now on, starting at once: a trial with no heartbeat yet is never taken as stale."""
        with self.lock:
            self.trials[trial._trial_id] = trial.number
        self.beat(trial._trial_id)
        # only now can it go stale, so other sweeps may wait for it to end (Ledger.others_beating)
        trial.set_user_attr(BEATS, self.interval)

    def discard(self, trial):
        with self.lock:
            self.trials.pop(trial._trial_id, None)

    def beat(self, trial_id):
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as e:   # a database hiccup: the next beat may get through before the grace period ends
            log.warning(f"heartbeat for trial {self.trials.get(trial_id)} not recorded: {str(e).splitlines()[0]}")

    def run(self):
        while not self.stopping.wait(self.interval):
            with self.lock:
                ids = list(self.trials)
            for trial_id in ids:
                self.beat(trial_id)
