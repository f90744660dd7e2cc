"""The connections and threads of one process for `SQLiteIdempotencyStore` (`_sqlite`).

A pool belongs to the process that made it: a forked child (gunicorn ``--preload``,
multiprocessing) never uses, nor closes, a connection its parent opened (SQLite forbids
carrying one across a fork); the store makes the child a pool of its own (`Pool.forked`).
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
import threading
import weakref
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")

THREADS = 4
"""Threads of one store for its async methods (SQLite runs one write at a time anyway)."""

MAX_IDLE = 8
"""Connections a store keeps open for the next call, per process."""

_PAUSE = 0.25
"""How long, at most, a call of this process waits for its own store's restart to end (so
that the restart has the write lock at once, not after a race with this process's writes)."""

INHERITED: list[object] = []
"""A forked child's copies of its parent's pools: kept, never used, never closed (SQLite's rule)."""


_forks = 0
"""How many forks made this process (in its line): cheaper to compare than `os.getpid`, a system call."""


def _forked() -> None:
    global _forks  # noqa: PLW0603 - counted once per forked process
    _forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forked)


def _close_all(idle: dict[bool, list[sqlite3.Connection]], pid: int) -> None:
    if os.getpid() != pid:
        return  # a forked child: its parent's connections are not its to close
    for connections in idle.values():
        while connections:
            connections.pop().close()


class Pool:
    """One process's idle connections; a call takes one for itself and gives it back.

    Two kinds: waiting ones (their busy timeout is the store's), and quick ones for the
    event loop's thread, which never wait for a lock: a call that would wait runs again in
    the store's threads. Checkpoints are the store's thread's work, not theirs.
    """

    def __init__(self, connect: Callable[[bool], sqlite3.Connection]) -> None:
        self.pid = os.getpid()
        self.forks = _forks
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: dict[bool, list[sqlite3.Connection]] = {False: [], True: []}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.checkpointing = False  # one checkpoint at a time: a slow disk does not queue them up
        self.restarting = False  # the log is being restarted: this process's calls wait (`_PAUSE`)
        self.restarted = threading.Event()
        self.restarted.set()
        self.reopening = threading.Lock()  # one thread looks at the store's files and opens them again
        weakref.finalize(self, _close_all, self._idle, self.pid)

    def run(self, work: Callable[..., _T], args: tuple[object, ...], *, quick: bool = False) -> _T:
        if self.restarting:
            if quick:
                raise Paused  # the event loop does not wait: the store's threads do
            self.restarted.wait(_PAUSE)
        idle = self._idle[quick]
        # list.pop and list.append are atomic: no lock on the path of every call.
        try:
            connection = idle.pop()
        except IndexError:
            connection = self._connect(quick)
        try:
            return work(connection, *args)
        finally:
            if connection.in_transaction:  # not by our statements; a defence
                connection.rollback()
            if len(idle) < MAX_IDLE:  # may go one or two over when threads race: a bound all the same
                idle.append(connection)
            else:
                connection.close()

    def forked(self) -> bool:
        """Whether this process is a child forked since the pool was made (it must not use it)."""
        return self.forks != _forks

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                        THREADS, thread_name_prefix="carecycle-webhooks: sqlite calls"
                    )
                    weakref.finalize(self, executor.shutdown, wait=False)
        return executor

    def close(self) -> None:
        with self._lock:
            _close_all(self._idle, self.pid)
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


class Paused(sqlite3.OperationalError):
    """A quick call not made while the store's thread restarts the log: run it in a thread."""


def is_busy(error: sqlite3.OperationalError) -> bool:
    if isinstance(error, Paused):
        return True
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
    return "locked" in str(error)
