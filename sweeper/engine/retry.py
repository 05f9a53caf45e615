"""Storage calls that outlast a blink: a database that restarts, fails over, or is locked for a moment.

Every call a sweep makes to its study's storage (asks, tells, user attrs, reads, heartbeats) goes through one
`Retry` of the sweep: a call that fails with a connection or lock error is tried again, with back-off, until it
goes through or the storage has been unreachable for `timeout` seconds (`hydra.sweeper.storage_timeout`); then
it raises `StorageLost`. Any other error is raised at once. The sweep's threads share the `Retry`, so an outage
is logged twice whatever the number of calls waiting it out: one line when the storage stops answering, one
when it answers again.

Whether a call is safe to try again is the caller's business (sweeper/engine/ledger.py): a tell whose reply was
lost may have been recorded, an ask may have created a trial the caller never heard of.
"""
import logging
import random
import sqlite3
import threading
import time

import sqlalchemy.exc

log = logging.getLogger(__name__)

FIRST_DELAY, MAX_DELAY = 0.2, 2.0   # seconds: the back-off doubles from the first, up to the most


class StorageLost(Exception):
    """The storage stayed unreachable for longer than storage_timeout: the message is one line for the user."""


def retryable(e):
    """A connection or lock error, anywhere in `e`'s chain (Optuna wraps SQLAlchemy's errors in its own)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageLost):
            return False
        if isinstance(e, sqlalchemy.exc.DBAPIError):
            if e.connection_invalidated or isinstance(e, sqlalchemy.exc.InterfaceError):
                return True
            if isinstance(e, sqlalchemy.exc.OperationalError):
                # SQLite's OperationalError also says "no such table" and the like, which no wait cures
                return not isinstance(e.orig, sqlite3.Error) or _locked(e.orig)
        if isinstance(e, (sqlalchemy.exc.TimeoutError, sqlalchemy.exc.PendingRollbackError)):
            return True   # no connection free in the pool; a session left over from a dropped connection
        if isinstance(e, sqlite3.OperationalError) and _locked(e):
            return True
        if _psycopg_error(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _invalidated(e):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "connection_invalidated", False):
            return True
        e = e.__cause__ or e.__context__
    return False


def _locked(e):
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _psycopg_error(e):
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))


def describe(e):
    """The database's own words: `AdminShutdown: terminating connection due to administrator command`."""
    found, seen = e, set()
    while e is not None and id(e) not in seen:   # the innermost driver error says most
        seen.add(id(e))
        found = e
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    lines = str(found).strip().splitlines()
    return f"{type(found).__name__}: {lines[0]}" if lines else type(found).__name__


def direct(fn, *args, until=None):
    """No retries: what a Ledger or Heartbeat does unless given a Retry (tests, in-memory studies)."""
    return fn(*args)


class Retry:
    """`retry(fn, *args)`: fn(*args), tried again while the storage blinks. Thread-safe; one per sweep."""

    def __init__(self, timeout=600.0, error=StorageLost, sleep=None, clock=time.monotonic):
        self.timeout, self.error, self.clock = timeout, error, clock   # error: a StorageLost class, raised at timeout
        self.sleep = sleep   # sleep(seconds), for tests; by default a wait that `until` cuts short
        self.lock = threading.Lock()
        self.down_since = None   # when the current outage began: its first failed call
        self.on_back = []        # called (no arguments) when an outage ends, e.g. beat at once

    def __call__(self, fn, *args, until=None):
        """`until`: a threading.Event; once it is set, a call still failing raises its error instead of waiting."""
        delay, first_failure, fresh = FIRST_DELAY, None, True
        while True:
            try:
                result = fn(*args)
            except Exception as e:
                if not retryable(e):
                    raise
                if fresh and _invalidated(e):
                    # a pooled connection the server closed (it restarted since): SQLAlchemy has dropped the pool,
                    # so a try at once gets a new connection. Only if that fails too is the storage unreachable
                    fresh = False
                    continue
                fresh = False
                now = self.clock()
                if first_failure is None:
                    first_failure = now
                with self.lock:
                    if self.down_since is None:
                        self.down_since = now
                        log.warning(f"storage unreachable ({describe(e)}): retrying for up to "
                                    f"{self.timeout:g} s (hydra.sweeper.storage_timeout)")
                    since = min(self.down_since, first_failure)
                if now - since >= self.timeout:
                    raise self.error(f"the storage was unreachable for {now - since:.0f} s (hydra.sweeper."
                                     f"storage_timeout={self.timeout:g}): {describe(e)}; finished trials are kept "
                                     f"in it: run the same command again once it is back") from e
                wait = min(delay * random.uniform(0.5, 1.5), self.timeout - (now - since))
                if self.sleep is not None:
                    self.sleep(wait)
                elif until is not None:
                    if until.wait(wait):
                        raise
                else:
                    time.sleep(wait)
                delay = min(delay * 2, MAX_DELAY)
                continue
            if self.down_since is not None:
                self.back()
            return result

    def back(self):
        with self.lock:
            if self.down_since is None:
                return
            down, self.down_since = self.clock() - self.down_since, None
        log.info(f"storage back after {down:.1f} s: the sweep goes on")
        for hook in self.on_back:
            hook()
