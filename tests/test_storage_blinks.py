"""The storage may blink (sweeper/engine/retry.py): a database that restarts, fails over or is locked for a moment
costs a sweep a wait, never a trial; one gone for longer than storage_timeout stops it with one line, exit 1.

The retry, the heartbeat and the ledger's calls that must not happen twice are tested in milliseconds, on storages
that fail on cue and a clock that never waits. The sweeps are the plain app's (tests/apps/plainapp), typed as a user
types them, against a real PostgreSQL server that the test restarts or stops and a real SQLite file it locks.
"""
import datetime
import logging
import os
import re
import sqlite3
import subprocess
import time

import optuna
import psycopg
import pytest
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from conftest import counted
from servers import create_database
from sweeper.engine.heartbeat import Heartbeat
from sweeper.engine.ledger import Ledger
from sweeper.engine.retry import MAX_DELAY, Retry, StorageLost
from test_cluster import env, sweep_cmd
from test_plain_apps import APPS, rows

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


# ---------------------------------------------------------------- real sweeps, real servers
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def stamped(out, text):
    """The times (unix seconds) of the log lines of `out` that hold `text`."""
    return [datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for line in out.splitlines() if text in line and (m := STAMP.match(line))]


def wait_for_files(folder, pattern, n, procs, timeout=60):
    end = time.time() + timeout
    while len(list(folder.glob(pattern))) < n:
        assert time.time() < end and all(p.poll() is None for p in procs), "the sweeps never got that far"
        time.sleep(0.05)


def no_trial_lost_or_doubled(storage, n_trials):
    study = optuna.load_study(study_name="sphere", storage=storage)
    trials = counted(study)
    assert len(trials) == n_trials and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials
    assert TrialState.RUNNING not in [t.state for t in study.trials]


@pytest.mark.slow
def test_two_sweeps_ride_out_a_postgres_restart(tmp_path, pg_server):
    url = create_database(pg_server.url)
    procs = [subprocess.Popen(sweep_cmd(tmp_path, url, "hydra.sweeper.n_trials=6", "x=interval(-5.0, 5.0)",
                                        "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=30",
                                        name=f"sweep{i}"),
                              cwd=APPS, env=env(1.0), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        wait_for_files(tmp_path, "ran-*.json", 2, procs)   # each sweep has finished a job and runs the next
        down = time.time()
        pg_server.restart(down=1.5)   # the trials running now end while the server is down
        up = time.time()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    no_trial_lost_or_doubled(url, 6)
    noticed = []
    for out in outs:
        assert not re.search(r"Traceback|crashed|trial \d+ failed", out), out[-3000:]
        gone, back = stamped(out, "storage unreachable ("), stamped(out, "storage back after")
        assert len(gone) == len(back) <= 1, out[-3000:]   # one line each way, however many calls waited
        noticed += [(g - down, b - up, b - g) for g, b in zip(gone, back)]
    assert noticed, "neither sweep noticed the restart"
    print(f"\nrestart: server down {up - down:.2f} s; per sweep that noticed: (noticed after, back after the server "
          f"was up, outage seen) = {[tuple(round(x, 2) for x in n) for n in noticed]}")


@pytest.mark.slow
def test_a_locked_sqlite_study_costs_four_slots_a_wait_not_a_trial(tmp_path):
    # SQLite waits 5 s for a lock, then says "database is locked": this lock is held longer, while trials end and
    # the heartbeat thread beats every second
    db = f"sqlite:///{tmp_path}/study.db"
    p = subprocess.Popen(sweep_cmd(tmp_path, db, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4",
                                   "x=interval(-5.0, 5.0)", "hydra.sweeper.heartbeat_interval=1",
                                   "hydra.sweeper.grace_period=60"),
                         cwd=APPS, env=env(0), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_files(tmp_path, "ran-*.json", 2, [p])
        with sqlite3.connect(f"{tmp_path}/study.db", isolation_level=None) as lock:
            lock.execute("BEGIN EXCLUSIVE")
            time.sleep(7)
            lock.execute("COMMIT")
        out = p.communicate(timeout=60)[0]
    finally:
        p.kill()
    assert p.returncode == 0, out[-3000:]
    assert len(stamped(out, "storage unreachable (OperationalError: database is locked)")) == 1, out[-3000:]
    assert len(stamped(out, "storage back after")) == 1 and not re.search(r"Traceback|crashed|trial \d+ failed", out)
    no_trial_lost_or_doubled(db, 8)


@pytest.mark.slow
def test_a_storage_gone_for_longer_than_storage_timeout_stops_the_sweep_with_one_line(tmp_path, pg_server):
    url = create_database(pg_server.url)
    p = subprocess.Popen(sweep_cmd(tmp_path, url, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=2",
                                   "x=interval(-5.0, 5.0)", "hydra.sweeper.storage_timeout=3"),
                         cwd=APPS, env=env(1.0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_files(tmp_path, "sweep/*/job_return.json", 2, [p])   # two trials have ended
        time.sleep(0.3)   # and been told
        finished = {r["number"] for r in rows(tmp_path) if r["state"] == "COMPLETE"}
        pg_server.stop()
        gone = time.time()
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 1 and time.time() - gone < 10, out[-2000:] + err[-2000:]
    [error] = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith("error: the storage was unreachable for 3 s (hydra.sweeper.storage_timeout=3): ")
    assert error.endswith("run the same command again once it is back") and "Traceback" not in out + err
    assert finished and finished <= {r["number"] for r in rows(tmp_path) if r["state"] == "COMPLETE"}
    for r in rows(tmp_path):   # the trials it stopped say so
        if r["state"] == "RUNNING" and not (tmp_path / "sweep" / r["number"] / "job_return.json").exists():
            pytest.fail(f"trial {r['number']} was stopped without a record")


@pytest.mark.slow
def test_a_crash_in_a_slot_stops_the_sweep_with_one_line_and_keeps_what_finished(tmp_path):
    db = f"sqlite:///{tmp_path}/study.db"
    r = subprocess.run(sweep_cmd(tmp_path, db, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
                                 "x=interval(-5.0, 5.0)", "hydra.sweeper.custom_search_space=plainapp.space.broken"),
                       cwd=APPS, env=env(0.5), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    [error] = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: a slot of the sweep crashed (KeyError: 'z'): no more trials were started")
    assert "Traceback" not in r.stdout + r.stderr
    assert "KeyError" in (tmp_path / "sweep" / "sweep.log").read_text()          # its traceback is there
    study = optuna.load_study(study_name="sphere", storage=db)
    assert [t.number for t in counted(study)] == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in counted(study))
    assert TrialState.RUNNING not in [t.state for t in study.trials]             # the ask it cut off is closed
    assert [r["number"] for r in rows(tmp_path)] == ["0", "1"]                   # outputs written
    assert os.path.exists(tmp_path / "sweep" / "optimization_results.yaml")
