"""The storage may blink (sweeper/engine/retry.py): a database that restarts, fails over or is locked for a moment
costs a sweep a wait, never a trial; one gone for longer than storage_timeout stops it with one line, exit 1.

The retry, the heartbeat and the ledger's calls that must not happen twice are tested in milliseconds, on storages
that fail on cue and a clock that never waits.
"""
import logging
import sqlite3

import optuna
import psycopg
import pytest
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from sweeper.engine.heartbeat import Heartbeat
from sweeper.engine.ledger import Ledger
from sweeper.engine.retry import MAX_DELAY, Retry, StorageLost

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x": FloatDistribution(-5.0, 5.0)}


def locked():
    return sqlalchemy.exc.OperationalError("UPDATE trials", {}, sqlite3.OperationalError("database is locked"))


def dropped(invalidated=False):
    """A connection the server closed, as Optuna raises it: SQLAlchemy's error wrapped in Optuna's own."""
    try:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(
            "server closed the connection unexpectedly"), connection_invalidated=invalidated)
    except sqlalchemy.exc.OperationalError as e:
        try:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
        except optuna.exceptions.StorageInternalError as wrapped:
            return wrapped


class Clock:
    """time.monotonic and sleep for a Retry: sleeps are recorded and move the clock, never waited out."""

    def __init__(self):
        self.now, self.slept = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def retry(clock, timeout=600):
    return Retry(timeout, sleep=clock.sleep, clock=clock)


def failing(times, error):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise error() if callable(error) else error
        return "done"
    call.calls = calls
    return call


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name.startswith("sweeper")]


# ---------------------------------------------------------------- the retry
def test_a_lock_error_is_tried_again_until_it_goes_through_with_one_line_each_way(clock, caplog):
    caplog.set_level(logging.INFO)
    call = failing(3, locked)
    assert retry(clock)(call) == "done" and len(call.calls) == 4
    assert len(clock.slept) == 3 and all(0 < s <= MAX_DELAY * 1.5 for s in clock.slept)
    assert lines(caplog) == [
        "storage unreachable (OperationalError: database is locked): retrying for up to 600 s "
        "(hydra.sweeper.storage_timeout)",
        f"storage back after {sum(clock.slept):.1f} s: the sweep goes on"]


@pytest.mark.parametrize("error", [ValueError("Cannot tell a COMPLETE trial."),
                                   sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError(
                                       "no such table: trials")),
                                   optuna.exceptions.UpdateFinishedTrialError("finished")],
                         ids=["a value error", "sqlite's no such table", "a finished trial"])
def test_an_error_no_wait_cures_is_raised_at_once(clock, caplog, error):
    call = failing(1, error)
    with pytest.raises(type(error)):
        retry(clock)(call)
    assert len(call.calls) == 1 and clock.slept == [] and lines(caplog) == []


def test_a_pooled_connection_closed_by_a_restart_is_tried_again_at_once_and_silently(clock, caplog):
    call = failing(1, lambda: dropped(invalidated=True))
    assert retry(clock)(call) == "done"
    assert clock.slept == [] and lines(caplog) == []


def test_past_storage_timeout_the_call_raises_storage_lost(clock):
    call = failing(10 ** 6, dropped)
    with pytest.raises(StorageLost) as e:
        retry(clock, timeout=30)(call)
    assert clock.now == pytest.approx(30)   # its last wait ends at the timeout, not past it
    assert str(e.value) == ("the storage was unreachable for 30 s (hydra.sweeper.storage_timeout=30): "
                            "OperationalError: server closed the connection unexpectedly; finished trials are kept in "
                            "it: run the same command again once it is back")


def test_a_call_that_fails_later_in_an_outage_gets_only_what_is_left_of_the_timeout(clock):
    r = retry(clock, timeout=30)
    first = failing(1, dropped)

    def call():
        first()                                  # fails once: the outage begins at 0 s
        return r(failing(10 ** 6, dropped))      # another call fails in the same outage, a moment later

    with pytest.raises(StorageLost):
        r(call)
    assert clock.now == pytest.approx(30)


# ---------------------------------------------------------------- the heartbeat
class Beats:
    def __init__(self, fail):
        self.fail, self.beats = fail, []

    def record_heartbeat(self, trial_id):
        if self.fail:
            self.fail -= 1
            raise dropped()
        self.beats.append(trial_id)


class Trial:
    _trial_id, number = 7, 3

    def __init__(self):
        self.user_attrs = {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


def test_a_heartbeat_rides_out_a_blink_and_tells_the_sweep_when_the_storage_is_gone(clock, caplog):
    beats, lost = Beats(fail=2), []
    hb = Heartbeat(beats, 3600, retry(clock), lost.append)   # its thread is not started: the test beats
    hb.add(Trial())
    assert beats.beats == [7] and len(clock.slept) == 2 and hb.now.is_set()   # back: the thread beats at once
    beats.fail = 10 ** 6
    hb.beat(7)
    assert [type(e) for e in lost] == [StorageLost]
    assert not [m for m in lines(caplog) if "heartbeat" in m]   # no line per failed beat


# ---------------------------------------------------------------- the ledger: nothing done twice, nothing left
class FlakyStorage(InMemoryStorage):
    """An in-memory storage whose next call of a method named in `plan` fails as a dropped connection does:
    `before` doing it, or `after` (it went through, but its reply was lost)."""

    def __init__(self):
        super().__init__()
        self.plan = {}

    def cue(self, name, when):
        if self.plan.get(name) == when:
            del self.plan[name]
            raise dropped()

    def set_trial_state_values(self, trial_id, state, values=None):
        self.cue("set_trial_state_values", "before")
        changed = super().set_trial_state_values(trial_id, state, values)
        self.cue("set_trial_state_values", "after")
        return changed

    def get_trial(self, trial_id):
        self.cue("get_trial", "before")
        return super().get_trial(trial_id)


@pytest.fixture
def flaky(clock):
    storage = FlakyStorage()
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    return storage, study, Ledger(study, 3, worker="host:1", retry=retry(clock))


def test_a_tell_whose_reply_was_lost_counts_once_and_is_not_taken_for_another_sweeps(flaky, caplog):
    storage, study, ledger = flaky
    trial = ledger.ask(SPACE)
    storage.plan["set_trial_state_values"] = "after"
    assert ledger.tell(trial, 1.5, attrs={"status": "ok"}) is True
    assert study.trials[trial.number].state == TrialState.COMPLETE and study.trials[trial.number].value == 1.5
    assert not [m for m in lines(caplog) if "another sweep" in m]
    while (t := ledger.ask(SPACE)) is not None:
        ledger.tell(t, 0.5)
    assert len(ledger.finished()) == 3 and len(study.trials) == 3


def test_an_ask_cut_off_after_creating_its_trial_closes_it_uncounted_and_asks_again(flaky):
    storage, study, ledger = flaky
    storage.plan["get_trial"] = "before"   # study.ask created trial 0, then lost the storage
    trial = ledger.ask(SPACE)
    cut = study.trials[0]
    assert trial.number == 1 and trial.user_attrs["worker"] == "host:1"
    assert cut.state == TrialState.FAIL and cut.user_attrs == {"uncounted": True,
                                                               "reason": "its ask was cut off by a storage outage"}
    assert [t.number for t in ledger.counted()] == [1]


def test_an_ask_cut_off_after_taking_a_requeued_trial_queues_its_params_again(flaky):
    storage, study, ledger = flaky
    first = ledger.ask(SPACE)
    ledger.requeue(study.trials[first.number], "interrupted by Ctrl-C")   # trial 1 waits with first's params
    storage.plan["get_trial"] = "before"   # study.ask took trial 1 from the queue, then lost the storage
    rerun = ledger.ask(SPACE)
    assert study.trials[1].state == TrialState.FAIL and study.trials[1].user_attrs["uncounted"]
    assert rerun.number == 2 and rerun.params == first.params and rerun.user_attrs["requeued_from"] == first.number
    assert [t.number for t in ledger.counted()] == [2]
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 1
