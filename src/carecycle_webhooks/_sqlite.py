"""`SQLiteIdempotencyStore`: the idempotency store for every worker of one machine, in a file.

Standard library only (`sqlite3`). Each ``webhook-id`` is one row of one table, and each
step of the protocol is one SQL statement: a writing statement outside a transaction is
its own write transaction, which takes the database's write lock when it starts (as
``BEGIN IMMEDIATE`` does), so each read-modify-write is atomic across every thread and
process that opens the file. The file is in WAL mode: readers never wait for the writer,
and a commit writes to the log without waiting for the disk (``synchronous=NORMAL``).
Copying the log into the database (a checkpoint) waits for the disk: no request does it.
The store's own thread does, after every few hundred acquires, and restarts a log that
writes kept from emptying, so that it stays bounded under any load (while no other program
holds a read transaction open on the file: SQLite cannot copy past it).

Connections are never shared by two threads at once: each call takes one from a small
pool (`_sqlite_pool`) and gives it back. A forked child (gunicorn ``--preload``,
multiprocessing) never uses, nor closes, a connection its parent opened: SQLite forbids
carrying one across a fork. The async methods run the same calls in a few threads of the store.
Customer order (``skip_out_of_order``): `_sqlite_order`, whose steps the store inherits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from ._idempotency import CLAIM_DONE, CLAIM_IN_FLIGHT, DONE, Claim, new_token
from ._sqlite_file import FileWatch, identity, mispaired_hint
from ._sqlite_order import ORDER_CLEAR, ORDER_SCHEMA, CustomerOrderSteps
from ._sqlite_pool import INHERITED, MAX_IDLE, THREADS, Pool, is_busy

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from ._idempotency import Order

__all__ = ["SQLiteIdempotencyStore"]

logger = logging.getLogger("carecycle_webhooks")

_T = TypeVar("_T")

# The table's name is written out in each statement: no SQL is built from values. One
# b-tree, by key, and no index on expires: keeping one up to date doubled each write's cost.
# Parameters are plain "?" in the order of the values: Python 3.12.0 to 3.12.3 warn about
# numbered ones ("?1") given a sequence (CPython gh-117995), and -W error turns that into a
# failed call.
_SCHEMA = (
    # key: the webhook-id; holder: a lease's token, or "done"; expires: Unix milliseconds.
    "CREATE TABLE IF NOT EXISTS carecycle_webhooks_idempotency "
    "(key TEXT PRIMARY KEY NOT NULL, holder TEXT NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID"
)

# Take the id if it is free or its row expired; otherwise change nothing (0 rows).
_ACQUIRE = (
    "INSERT INTO carecycle_webhooks_idempotency (key, holder, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires = excluded.expires "
    "WHERE expires <= ?"
)
_HOLDER = "SELECT holder, expires FROM carecycle_webhooks_idempotency WHERE key = ?"
# 'done' is `DONE`. Done if the lease is ours (even expired) or nobody's; never over another's
# live lease or a done mark (so a repeated complete changes nothing, its ttl included).
_COMPLETE = (
    "INSERT INTO carecycle_webhooks_idempotency (key, holder, expires) VALUES (?, 'done', ?) "
    "ON CONFLICT (key) DO UPDATE SET holder = 'done', expires = excluded.expires "
    "WHERE holder = ? OR expires <= ?"
)
_RELEASE = "DELETE FROM carecycle_webhooks_idempotency WHERE key = ? AND holder = ?"
_CLEAR = "DELETE FROM carecycle_webhooks_idempotency"

# Pruning sweeps the table in key order, a slice at a time: the end of the slice after
# the last one, then the expired rows in it (the last slice: every row after it).
_SLICE_END = "SELECT key FROM carecycle_webhooks_idempotency WHERE key > ? ORDER BY key LIMIT 1 OFFSET ?"
_PRUNE_SLICE = "DELETE FROM carecycle_webhooks_idempotency WHERE key > ? AND key <= ? AND expires <= ?"
_PRUNE_LAST_SLICE = "DELETE FROM carecycle_webhooks_idempotency WHERE key > ? AND expires <= ?"

_PRUNE_EVERY = 256
"""Every this many acquires (in one process), one slice of the table is pruned..."""

_PRUNE_SLICE_ROWS = 1024
"""...of this many rows: four for each row added meanwhile, so a sweep of the whole table
takes a quarter of the acquires that the table has rows, and an id expired when a sweep
begins is deleted by its end. The table holds at most about 4/3 of the ids within ``done_ttl``."""

_RESTART_FRAMES = 2048
"""A log this many pages long after a checkpoint is restarted (2 MiB with the store's own
1 KiB pages, about 700 deliveries' writes). A checkpoint that runs while requests write never catches up
with them, and SQLite starts the log over only when a write finds it all copied. So the
store's thread then copies the rest while it holds the write lock and waits for the
readers to be done (``wal_checkpoint(RESTART)``: a few milliseconds, once in a while), and
the next write starts the log over."""

_BACKSTOP = 4
"""A log this many times `_RESTART_FRAMES` long is copied by the commit that finds it so
(SQLite's automatic checkpoint): the store's thread fell behind, a disk stalled."""

_RESTART_LOCK_WAIT_MS = 100
"""How long that restart may wait for the locks; if it cannot have them, the next one tries."""

_WAL_BYTES = 64 * 1024 * 1024
"""A log file larger than this, after a burst, is cut back to it when the log starts over."""

_PAGE_SIZE = 1024
"""The page size of a file the store creates. Each commit writes the pages it changed to
the log, a row's leaf page here: 1 KiB pages copy a quarter of what SQLite's default 4 KiB
do, which measured 15 % less CPU for acquire and complete (42 µs rather than 49)."""

_DEFAULT_TIMEOUT = datetime.timedelta(seconds=5)

_THREADS = THREADS  # the pool, and its bounds, named here too
_MAX_IDLE = MAX_IDLE
_Pool = Pool

_MIN_SQLITE = (3, 24, 0)  # INSERT ... ON CONFLICT DO UPDATE


def _now_ms() -> int:
    # Wall-clock time: rows outlive the process, and several processes compare them.
    return int(time.time() * 1000)


def _milliseconds(delta: datetime.timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


def _configuration_error(message: str) -> Exception:
    from ._errors import WebhookConfigurationError

    return WebhookConfigurationError(message)


def _checked_path(path: object) -> str:
    """The database file's absolute path, or a `WebhookConfigurationError` that says what is wrong."""
    if not isinstance(path, (str, os.PathLike)):
        raise _configuration_error(f"path must be a str or os.PathLike, not {type(path).__name__}")
    name: object = os.fspath(cast("str | os.PathLike[str] | os.PathLike[bytes]", path))
    if not isinstance(name, str):
        raise _configuration_error("path must be a str or os.PathLike of str, not bytes")
    if name in ("", ":memory:") or name.startswith("file:"):
        raise _configuration_error(
            f"path {name!r} is not a file that other processes can open: SQLiteIdempotencyStore needs "
            "a file path (an in-memory database would be private to one connection; for one process, "
            "use InMemoryIdempotencyStore)"
        )
    absolute = Path(name).absolute()
    if not absolute.parent.is_dir():
        raise _configuration_error(
            f"the directory of the SQLite idempotency store {str(absolute)!r} does not exist: "
            f"create {str(absolute.parent)!r}"
        )
    if absolute.is_dir():
        raise _configuration_error(f"the SQLite idempotency store's path {str(absolute)!r} is a directory")
    return str(absolute)


class SQLiteIdempotencyStore(CustomerOrderSteps, FileWatch):
    """An idempotency store shared by every worker process and thread of one machine, in a file.

    The embedded choice for gunicorn or uvicorn with several workers on one machine: the
    standard library's `sqlite3`, no server to run, and the done marks survive restarts.
    Each id is one row; each step is one atomic SQL statement, with the same lease, done
    and release semantics as `RedisIdempotencyStore`. It serves both `Dispatcher.handle`
    and `Dispatcher.handle_async` (whose calls run in a few threads of the store, so that
    the event loop never waits for the file's lock).

    Every call waits at most ``timeout`` for a lock that another connection holds (a
    long write, or a writer process that is stopped): then it raises `TimeoutError`, and
    the dispatcher answers 503 before Svix stops waiting (15 s). Expired rows are deleted
    as deliveries come (a bounded batch every 256 acquires), so the file holds about one
    row per id processed within the last ``done_ttl``.

    The file must be on a local filesystem: SQLite's locks do not work reliably over NFS
    or other network filesystems. The constructor creates the file and its table if
    missing, and switches it to WAL mode.

    Args:
        path: The database file (a ``str`` or `os.PathLike`), created if missing; its
            directory must exist. The store's table (``carecycle_webhooks_idempotency``)
            may share a database with other tables. ``":memory:"`` is refused: it would
            not be shared.
        timeout: How long one call may wait for the database's lock (5 s by default).

    Raises:
        WebhookConfigurationError: ``path`` is not a str or os.PathLike, names no file
            (``":memory:"``) or is in a directory that does not exist; ``timeout`` is not a
            positive `datetime.timedelta`; or the file cannot be opened as a database in
            WAL mode.
    """

    keeps_order = True
    """It keeps customer order (``skip_out_of_order``): see `OrderedIdempotencyStore`."""

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: datetime.timedelta = _DEFAULT_TIMEOUT
    ) -> None:
        value: object = timeout  # checked at run time too
        if not isinstance(value, datetime.timedelta) or value <= datetime.timedelta(0):
            raise _configuration_error("timeout must be a positive datetime.timedelta")
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise _configuration_error(
                f"SQLiteIdempotencyStore needs SQLite 3.24 or later; this Python has {sqlite3.sqlite_version}"
            )
        self._path = _checked_path(path)
        self._seconds = timeout.total_seconds()
        self._clock = _now_ms
        self._acquires = 0
        self._sweep_after = ""  # where this process's sweep of expired rows goes on
        self._ordered, self._order_sweep_after = False, ""  # `CustomerOrderSteps`
        self._file = self._setup()
        self._pool = self._new_pool()
        # Why every call fails, once the file was found replaced (see `_reopen_if_replaced`).
        self._gone: str | None = None

    def __repr__(self) -> str:
        return f"SQLiteIdempotencyStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file's absolute path."""
        return self._path

    @property
    def timeout(self) -> datetime.timedelta:
        """How long one call may wait for the database's lock before it raises `TimeoutError`."""
        return datetime.timedelta(seconds=self._seconds)

    def close(self) -> None:
        """Close this process's connections and threads of the store (a later call opens new ones)."""
        self._current_pool().close()

    def clear(self) -> None:
        """Delete every id of the store's table, in flight or done: a fresh store, for the next test.

        Every process that opens the file sees it empty at once. In production it would make
        Svix's next retry of a processed delivery run its handlers again.

        Raises:
            TimeoutError: The database stayed locked for longer than ``timeout``.
        """
        self._call(self._delete_all)
        self._sweep_after = self._order_sweep_after = ""

    def _connect(self, quick: bool = False) -> sqlite3.Connection:  # noqa: FBT001, FBT002 - the pool's argument
        # isolation_level=None: no implicit transactions; each statement is its own.
        connection = sqlite3.connect(
            self._path, timeout=0 if quick else self._seconds, isolation_level=None, check_same_thread=False
        )
        try:
            # In WAL mode, NORMAL writes a commit to the log without waiting for the disk: a
            # crashed process loses nothing; a power cut may lose the last commits.
            connection.execute("PRAGMA synchronous = NORMAL")
            # A checkpoint waits for the disk: the store's thread does them (`_checkpoint`).
            # A commit makes one only when that thread fell far behind (a disk that stalls):
            # the log stays bounded whatever the disk does.
            connection.execute(f"PRAGMA wal_autocheckpoint = {_RESTART_FRAMES * _BACKSTOP}")
            connection.execute(f"PRAGMA journal_size_limit = {_WAL_BYTES}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _setup(self) -> tuple[int, int]:
        """Create the file and its table if missing, in WAL mode; the file's identity."""
        try:
            connection = self._connect()
        except sqlite3.Error as error:
            hint = mispaired_hint(self._path)
            raise _configuration_error(
                f"cannot open the SQLite idempotency store {self._path!r}: {error}{hint}"
            ) from error
        try:
            # Only a new, empty database takes it; an existing file keeps its page size.
            connection.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise _configuration_error(
                    f"the SQLite idempotency store {self._path!r} cannot use WAL mode (it stays {mode!r})"
                )
            connection.execute(_SCHEMA)
            connection.execute(ORDER_SCHEMA)
            return identity(self._path)
        except (sqlite3.Error, OSError) as error:
            hint = mispaired_hint(self._path)
            raise _configuration_error(
                f"cannot set up the SQLite idempotency store {self._path!r}: {error}{hint}"
            ) from error
        finally:
            connection.close()

    def _current_pool(self) -> Pool:
        pool = self._pool
        if pool.forked():
            # A forked child: its parent's connections and threads are not its own.
            INHERITED.append(pool)
            pool = self._pool = self._new_pool()
        return pool

    def _locked(self) -> TimeoutError:
        return TimeoutError(
            f"the SQLite database {self._path!r} stayed locked for {self._seconds:g} s "
            "(SQLiteIdempotencyStore timeout)"
        )

    def _call(self, work: Callable[..., _T], *args: object) -> _T:
        """``work(connection, *args)`` on a connection of this process's pool.

        Positional arguments rather than a closure: one fewer function object per call.
        """
        self._refuse_if_gone()
        try:
            return self._current_pool().run(work, args)
        except sqlite3.OperationalError as error:
            if is_busy(error):
                raise self._locked() from error
            raise

    # The statements, each run on a connection of the pool.

    def _take(self, connection: sqlite3.Connection, key: str, token: str, lease_ms: int) -> Claim:
        for _ in range(3):
            now = self._clock()
            if connection.execute(_ACQUIRE, (key, token, now + lease_ms, now)).rowcount:
                return Claim("acquired", token)
            row = connection.execute(_HOLDER, (key,)).fetchone()
            if row is not None and row[1] > self._clock():
                return CLAIM_DONE if row[0] == DONE else CLAIM_IN_FLIGHT
            # Freed or expired since the insert looked: try again.
        return CLAIM_IN_FLIGHT

    def _housekeeping_due(self) -> bool:
        self._acquires += 1  # not exact across threads: it only spaces the prunes out
        return self._acquires % _PRUNE_EVERY == 0

    def _housekeeping(self, connection: sqlite3.Connection) -> None:
        """Delete the expired rows of the next slice; open the file again if it was replaced."""
        self._reopen_if_replaced()
        start = self._sweep_after
        try:
            row = connection.execute(_SLICE_END, (start, _PRUNE_SLICE_ROWS - 1)).fetchone()
            if row is None:  # the last slice: the next sweep starts again from the first key
                connection.execute(_PRUNE_LAST_SLICE, (start, self._clock()))
                self._sweep_after = ""
            else:
                connection.execute(_PRUNE_SLICE, (start, row[0], self._clock()))
                self._sweep_after = row[0]
            if self._ordered:
                self._prune_customers(connection)
        except sqlite3.OperationalError:
            pass  # busy: the next time does it

    def _checkpoint_in_thread(self, *, prune: bool) -> None:
        """Start a checkpoint in the store's thread (after the housekeeping if ``prune``), unless one runs."""
        pool = self._current_pool()
        if pool.checkpointing:
            if prune:
                self._in_thread(self._housekeeping)
            return
        pool.checkpointing = True
        try:
            pool.executor().submit(self._call, self._checkpoint, pool, prune)
        except RuntimeError:  # the interpreter is exiting
            pool.checkpointing = False

    def _checkpoint(self, connection: sqlite3.Connection, pool: Pool, prune: bool) -> None:  # noqa: FBT001
        """Copy the log into the database; restart a log that the writes kept from emptying."""
        try:
            if prune:
                self._housekeeping(connection)
            # PASSIVE: copies what was committed, without holding up the requests' writes.
            _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames >= _RESTART_FRAMES:
                self._restart(connection, pool)
        except sqlite3.OperationalError:
            pass  # busy: the next time does it
        finally:
            pool.checkpointing = False

    def _restart(self, connection: sqlite3.Connection, pool: Pool) -> None:
        """Copy the rest of the log while holding the write lock, so that the next write starts it over.

        This process's calls wait meanwhile (at most `_PAUSE`): between their statements the
        write lock is free for microseconds, which SQLite's wait for a lock, in steps of
        milliseconds, would seldom find. Those of other processes wait for the lock.
        """
        pool.restarted.clear()
        pool.restarting = True
        try:
            connection.execute(f"PRAGMA busy_timeout = {_RESTART_LOCK_WAIT_MS}")
            connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            pool.restarting = False
            pool.restarted.set()
            connection.execute(f"PRAGMA busy_timeout = {int(self._seconds * 1000)}")

    def _mark_done(self, connection: sqlite3.Connection, key: str, token: str, ttl_ms: int) -> int:
        now = self._clock()
        return connection.execute(_COMPLETE, (key, now + ttl_ms, token, now)).rowcount

    @staticmethod
    def _free(connection: sqlite3.Connection, key: str, token: str) -> None:
        connection.execute(_RELEASE, (key, token))

    @staticmethod
    def _delete_all(connection: sqlite3.Connection) -> None:
        connection.execute(_CLEAR)
        connection.execute(ORDER_CLEAR)

    # IdempotencyStore

    def acquire(self, key: str, *, lease: datetime.timedelta, order: Order | None = None) -> Claim:
        """Take the lease on ``key``, or report it in flight, done or (with ``order``) stale."""
        if self._gone is not None or self._moved():
            self._reopen_if_replaced()
            self._check_file()
        if order is None:
            claim = self._call(self._take, key, new_token(), _milliseconds(lease))
        else:
            claim = self._call(self._take_ordered, key, new_token(), _milliseconds(lease), order)
        if claim.token and self._housekeeping_due():
            # The lease is taken: a failure here must not make the caller answer 503.
            with contextlib.suppress(Exception):
                self._call(self._housekeeping)
            self._checkpoint_in_thread(prune=False)
        return claim

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        """Mark ``key`` done (with ``order``, its customer's mark too), unless another took it since."""
        if order is None:
            self._call(self._mark_done, key, token, _milliseconds(ttl))
        else:
            self._call(self._mark_done_ordered, key, token, _milliseconds(ttl), order)

    def release(self, key: str, token: str, *, order: Order | None = None) -> None:
        """Free ``key`` (and, with ``order``, its customer), if ``token`` still holds it."""
        if order is None:
            self._call(self._free, key, token)
        else:
            self._call(self._free_ordered, key, token, order)

    # AsyncIdempotencyStore. A call first runs on the loop's thread on a quick connection,
    # which does not wait: a statement is tens of microseconds, and a thread hop would cost
    # more. When the database is locked, the call runs in the store's threads, which wait
    # for the lock, and the loop awaits them, at most ``timeout``.

    async def _call_async(self, work: Callable[..., _T], args: tuple[object, ...]) -> _T:
        self._refuse_if_gone()
        pool = self._current_pool()
        try:
            return pool.run(work, args, quick=True)
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
        # Locked: nothing was written. Wait for the lock in a thread.
        return await self._wait_for(pool.executor().submit(self._call, work, *args))

    async def _wait_for(
        self, future: concurrent.futures.Future[_T], gone: threading.Event | None = None
    ) -> _T:
        """Await a call of the store's threads, at most ``timeout``; on giving up, set ``gone``."""
        waiter = asyncio.wrap_future(future)
        done: set[asyncio.Future[_T]] = set()
        try:
            done, _ = await asyncio.wait((waiter,), timeout=self._seconds)
        finally:
            if not done:
                # Cancelled, or queued behind calls that wait for the lock: a call not
                # started yet never runs; one started finishes on its own, within timeout.
                waiter.cancel()
                if gone is not None:
                    gone.set()
        if not done:
            raise self._locked()
        return waiter.result()

    def _take_unless_gone(
        self, connection: sqlite3.Connection, gone: threading.Event, take: Callable[..., Claim], *args: object
    ) -> Claim:
        """``take`` (`_take`; with an order, `_take_customer`) for a caller that may stop waiting.

        Once it has, take nothing: the check and the insert are in one write transaction. So
        a caller that gave up while this thread waited for the lock leaves no lease behind,
        and a retry of the delivery that comes next finds the id free.
        """
        connection.execute("BEGIN IMMEDIATE")  # waits for the lock, at most the store's timeout
        try:
            if gone.is_set():
                return CLAIM_IN_FLIGHT  # nobody reads it
            claim: Claim = take(connection, *args)
            if claim.token:  # else nothing to keep (with an order, the id's lease is rolled back)
                connection.execute("COMMIT")
            return claim
        finally:
            if connection.in_transaction:
                connection.rollback()

    def _free_if_taken(
        self, key: str, token: str, order: Order | None, future: concurrent.futures.Future[Claim]
    ) -> None:
        """An acquire whose caller stopped waiting: free the lease it took, nobody holds its token."""
        if future.cancelled() or future.exception() is not None or future.result().status != "acquired":
            return
        free, more = (self._free, ()) if order is None else (self._free_ordered, (order,))
        self._in_thread(free, key, token, *more)

    def _in_thread(self, work: Callable[..., object], *args: object) -> None:
        """Run ``work(connection, *args)`` in one of the store's threads; nobody waits for it."""
        with contextlib.suppress(RuntimeError):  # the interpreter is exiting: leases expire anyway
            self._current_pool().executor().submit(self._call, work, *args)

    async def acquire_async(
        self, key: str, *, lease: datetime.timedelta, order: Order | None = None
    ) -> Claim:
        """`acquire`, for the event loop."""
        self._refuse_if_gone()
        if self._moved():
            # Opening the file again waits for its lock: in the store's threads, not here.
            await self._wait_for(self._current_pool().executor().submit(self._reopen_if_replaced))
            self._check_file()
        token = new_token()
        lease_ms = _milliseconds(lease)
        pool = self._current_pool()
        try:
            if order is None:
                claim = pool.run(self._take, (key, token, lease_ms), quick=True)
            else:
                claim = pool.run(self._take_ordered, (key, token, lease_ms, order), quick=True)
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
            claim = await self._take_waiting(pool, key, token, lease_ms, order)
        if claim.token and self._housekeeping_due():
            self._checkpoint_in_thread(prune=True)  # a batch of deletes and a checkpoint take a while
        return claim

    async def _take_waiting(
        self, pool: Pool, key: str, token: str, lease_ms: int, order: Order | None
    ) -> Claim:
        """`_take` in one of the store's threads, which waits for the lock."""
        gone = threading.Event()
        take, more = (self._take, ()) if order is None else (self._take_customer, (order,))
        future = pool.executor().submit(
            self._call, self._take_unless_gone, gone, take, key, token, lease_ms, *more
        )
        try:
            return await self._wait_for(future, gone)
        except BaseException:
            # Timed out or cancelled. The thread may have taken the lease just before the
            # caller gave up: free it once the thread is done.
            future.add_done_callback(lambda done: self._free_if_taken(key, token, order, done))
            raise

    async def complete_async(
        self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None
    ) -> None:
        """`complete`, for the event loop."""
        if order is None:
            await self._call_async(self._mark_done, (key, token, _milliseconds(ttl)))
        else:
            await self._call_async(self._mark_done_ordered, (key, token, _milliseconds(ttl), order))

    async def release_async(self, key: str, token: str, *, order: Order | None = None) -> None:
        """`release`, for the event loop."""
        if order is None:
            await self._call_async(self._free, (key, token))
        else:
            await self._call_async(self._free_ordered, (key, token, order))
