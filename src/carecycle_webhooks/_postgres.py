"""The PostgreSQL stores of `carecycle_webhooks.postgres` (documented there), and their context."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

import psycopg
import psycopg_pool

from ._idempotency import CLAIM_DONE, CLAIM_IN_FLIGHT, Claim, CommitFailed, new_token
from ._postgres_context import OpenDelivery, delivery_context
from ._postgres_sql import Statements, customer_claim
from ._watchdog import watchdog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._idempotency import Order

# The public names are listed once, in carecycle_webhooks.postgres, which re-exports them.

logger = logging.getLogger("carecycle_webhooks")

DEFAULT_TABLE = "carecycle_webhook_deliveries"
"""The done marks' table, unless a store is given another name."""

DEFAULT_TIMEOUT = datetime.timedelta(seconds=5)
"""How long a store call may wait for a pooled connection, and then for the server."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
# The delivery's statements before its handlers, in one round trip (a pipeline). The done
# row is read by a statement of its own, after the lock: its snapshot then sees the commit
# of a worker that held the lock (READ COMMITTED: one snapshot per statement).
_BEGIN: Final = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"
_LOCK: Final = "SELECT pg_try_advisory_xact_lock(%s)"
_IDLE: Final = "SELECT set_config('idle_in_transaction_session_timeout', %s, true)"
_CREATE_LOCK: Final = "SELECT pg_advisory_xact_lock(%s)"
_EXISTS: Final = "SELECT to_regclass(%s) IS NOT NULL"
_MAX_FINISHED = 1000  # finished commits kept for a call again, at most
_ATTEMPTS = 3  # a pooled connection the server dropped (a restart) fails at once: take another

_Conn = TypeVar("_Conn", "psycopg.Connection[Any]", "psycopg.AsyncConnection[Any]")
_Pool = TypeVar("_Pool", "psycopg_pool.ConnectionPool[Any]", "psycopg_pool.AsyncConnectionPool[Any]")


def _seconds(delta: datetime.timedelta, name: str) -> float:
    value: object = delta
    if not isinstance(value, datetime.timedelta) or delta <= datetime.timedelta(0):
        from ._errors import WebhookConfigurationError

        raise WebhookConfigurationError(f"{name} must be a positive datetime.timedelta")
    return delta.total_seconds()


def _commit_failed(error: BaseException) -> CommitFailed:
    # The class and SQLSTATE only: the server's message and detail may quote a handler's row.
    state = getattr(getattr(error, "diag", None), "sqlstate", None) or getattr(error, "sqlstate", None)
    return CommitFailed(
        "the delivery's transaction was not committed, or its outcome is unknown: "
        f"{type(error).__qualname__}" + (f" (SQLSTATE {state})" if state else "")
    )


class _Store(Generic[_Pool, _Conn]):
    """What both stores share: the table, its statements, the deadlines, the open deliveries.

    Each store's class says which pool it takes (`_check_pool`): the constructor is written
    once, here, and a type checker sees it typed for that store's pool.
    """

    keeps_order = True
    """It keeps customer order (``Dispatcher(skip_out_of_order=True)``), in the delivery's transaction."""

    def __init__(
        self,
        pool: _Pool,
        *,
        table: str = DEFAULT_TABLE,
        timeout: datetime.timedelta = DEFAULT_TIMEOUT,
        prune_every: int = 100,
        prune_batch: int = 500,
    ) -> None:
        self._check_pool(pool)
        name: object = table  # checked at runtime too
        parts = table.split(".") if isinstance(name, str) else [""]
        if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
            from ._errors import WebhookConfigurationError

            raise WebhookConfigurationError(
                "table must be an identifier, or schema.identifier (letters, digits and "
                "underscores, not starting with a digit, at most 48 characters each)"
            )
        if prune_every < 1 or prune_batch < 1:
            from ._errors import WebhookConfigurationError

            raise WebhookConfigurationError("prune_every and prune_batch must be at least 1")
        self._pool: _Pool = pool
        self._table = table
        self._seconds = _seconds(timeout, "timeout")
        self._prune_every = prune_every
        self._prune_batch = prune_batch
        self._completed = 0
        self._open: dict[str, OpenDelivery[_Conn]] = {}  # lease token -> its delivery's transaction
        self._finishing: dict[str, asyncio.Future[None]] = {}  # the async store's commits under way
        self._sql = Statements(parts)
        self._ordered = False  # this store kept an order: its upkeep prunes the marks too

    @staticmethod
    def _check_pool(pool: object) -> None:
        """Raise `WebhookConfigurationError` unless ``pool`` is this store's kind of pool."""
        raise NotImplementedError

    @property
    def table(self) -> str:
        """The done marks' table, as given."""
        return self._table

    @property
    def timeout(self) -> datetime.timedelta:
        """How long one call may wait for a pooled connection, and then for the server."""
        return datetime.timedelta(seconds=self._seconds)

    def _lock_id(self, key: str) -> int:
        # 64 bits of a hash of table and id: stores of other tables never share a lock.
        digest = hashlib.blake2b(f"{self._table}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(
            f"PostgreSQL did not answer within {self._seconds:g} s (PostgresIdempotencyStore timeout)"
        )

    def _arm(self, conn: _Conn, seconds: float) -> None:
        watchdog().arm(conn, conn.pgconn.socket, time.monotonic() + seconds)

    def _prune_due(self) -> bool:
        # Every prune_every-th commit of this store deletes at most prune_batch expired
        # rows: a few times more than it adds, so the table stays bounded.
        self._completed += 1
        return self._completed % self._prune_every == 0

    def _claim(self, locked: tuple[Any, ...] | None, done: tuple[Any, ...] | None) -> Claim | None:
        if not (locked and locked[0]):
            return CLAIM_IN_FLIGHT
        if done and done[0]:
            return CLAIM_DONE
        return None  # acquired

    def _customer_lock(self, order: Order) -> tuple[int]:
        # Not a webhook-id's lock: a header value holds no NUL.
        return (self._lock_id(f"customer\0{order.key}"),)


def _broken(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return conn.closed or conn.broken


class PostgresIdempotencyStore(_Store["psycopg_pool.ConnectionPool[Any]", "psycopg.Connection[Any]"]):
    """An idempotency store whose done marks commit with the handlers' own writes.

    For a `psycopg_pool.ConnectionPool` and `Dispatcher.handle` (Flask, Django, any WSGI
    server); `AsyncPostgresIdempotencyStore` is the same for an ``AsyncConnectionPool``
    and `Dispatcher.handle_async`. Handlers write through `current_connection`. See the
    module's documentation for the guarantees. It keeps customer order too
    (``Dispatcher(skip_out_of_order=True)``), in the delivery's transaction.

    Each delivery holds one pooled connection from acquire to complete: size the pool for
    the deliveries in flight (a worker's threads). Give its connections a connect timeout
    (``kwargs={"connect_timeout": 5}``); they must not be in autocommit mode's way (the
    store opens its own transaction block) and use READ COMMITTED (the store sets it for
    its transactions).

    Args:
        pool: An open ``psycopg_pool.ConnectionPool`` (or ``NullConnectionPool``).
        table: The done marks' table (``name`` or ``schema.name``); see `create_table`. The
            customer marks' table is its name with ``_marks`` added, in the same schema.
        timeout: How long one call may wait for a connection from the pool, and then for
            the server (a stalled server's socket is shut down): the dispatcher answers
            503 by then. A delivery can take about twice this at worst.
        prune_every: Every this many completed deliveries, one deletes expired done rows.
        prune_batch: At most this many rows per pruning.

    Raises:
        WebhookConfigurationError: ``pool`` is not a synchronous pool, or an argument is
            invalid (the table name is not a plain identifier).
    """

    @staticmethod
    def _check_pool(pool: object) -> None:
        if not isinstance(pool, psycopg_pool.ConnectionPool):
            from ._errors import WebhookConfigurationError

            hint = " (use AsyncPostgresIdempotencyStore)" if _is_async_pool(pool) else ""
            raise WebhookConfigurationError(f"pool must be a psycopg_pool.ConnectionPool{hint}")

    def create_table(self) -> None:
        """Create the tables and their indexes if missing (postgres.sql); safe to call again, concurrently."""
        with self._pool.connection(timeout=self._seconds) as conn:
            conn.execute(_CREATE_LOCK, (self._lock_id("create table"),))
            conn.execute(self._sql.create)

    def acquire(self, key: str, *, lease: datetime.timedelta, order: Order | None = None) -> Claim:
        """Begin the delivery's transaction and lock ``key`` without waiting, or say who has it.

        With ``order``, also lock its customer without waiting (``"in_flight"`` while
        another delivery of the customer holds it) and read the customer's newest mark
        (``"stale"`` if newer than ``order.position``), in the same round trip.
        """
        deadline = time.monotonic() + self._seconds
        for attempt in range(1, _ATTEMPTS + 1):
            conn: psycopg.Connection[Any] = self._pool.getconn(
                timeout=max(0.001, deadline - time.monotonic())
            )
            transaction = _transaction(conn)
            try:
                self._arm(conn, deadline - time.monotonic())
                with conn.pipeline():  # one round trip
                    transaction.__enter__()
                    conn.execute(_BEGIN)
                    locked = conn.execute(_LOCK, (self._lock_id(key),))
                    done = conn.execute(self._sql.check, (key,))
                    conn.execute(_IDLE, (str(int(lease.total_seconds() * 1000) + 1000),))
                    customer = (  # its mark after its lock, a statement of its own: see _LOCK
                        None
                        if order is None
                        else (
                            conn.execute(_LOCK, self._customer_lock(order)),
                            conn.execute(self._sql.read_mark, (order.key,)),
                        )
                    )
                claim = self._claim(locked.fetchone(), done.fetchone())
                if claim is None and customer is not None and order is not None:
                    claim = customer_claim(customer[0].fetchone(), customer[1].fetchone(), order)
                if claim is not None:
                    transaction.__exit__(psycopg.Rollback, psycopg.Rollback(), None)
                    self._put(conn)
                    return claim
            except psycopg.Error as error:
                dropped = _broken(conn) and not isinstance(error, psycopg.errors.QueryCanceled)
                self._discard(conn)
                if time.monotonic() >= deadline:
                    raise self._timed_out() from None
                if attempt < _ATTEMPTS and dropped:
                    continue  # a connection the server dropped (a restart) fails at once: take another
                raise
            except BaseException:
                self._discard(conn)
                raise
            token = new_token()
            self._open[token] = opened = OpenDelivery(conn, transaction)
            self._arm(conn, lease.total_seconds())  # the handlers' bound
            delivery_context.set(opened)
            return Claim("acquired", token)
        raise AssertionError("unreachable")  # pragma: no cover

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        """Insert ``key``'s done row and commit, with the handlers' writes.

        With ``order``, the customer's newest mark moves forward to ``order.position``
        (never back) in the same transaction.

        Raises:
            CommitFailed: Nothing was committed, or the outcome is unknown.
        """
        entry = self._open.pop(token, None)
        delivery_context.set(None)
        if entry is None:
            raise CommitFailed("no open transaction for this delivery: its outcome is unknown")
        if order is not None:
            self._ordered = True  # from now on, the upkeep prunes the marks too
        conn = entry.end()
        try:
            # Inside the try: a connection lost meanwhile (the server gone, a handler that
            # closed it) has no socket to arm, and must go back to the pool all the same.
            self._arm(conn, self._seconds)
            with conn.pipeline():  # one round trip
                for statement, params in self._sql.done(key, ttl.total_seconds(), order):
                    conn.execute(statement, params)
                entry.transaction.__exit__(None, None, None)  # COMMIT
        except BaseException as error:
            self._discard(conn)
            if isinstance(error, Exception):
                raise _commit_failed(error) from None
            raise
        if self._prune_due():
            self._prune_on(conn, self._prune_batch)
        self._put(conn)

    def release(self, key: str, token: str, *, order: Order | None = None) -> None:  # noqa: ARG002 - the token names the transaction
        """Roll the delivery's transaction back: the handlers' writes vanish, ``key`` is free.

        So is ``order``'s customer; its newest mark stays as it was.
        """
        entry = self._open.pop(token, None)
        delivery_context.set(None)
        if entry is None:
            return
        conn = entry.end()
        if _broken(conn):  # lost (the server gone, a handler closed it): the server rolled back
            self._discard(conn)
            return
        try:
            self._arm(conn, self._seconds)
            entry.transaction.__exit__(psycopg.Rollback, psycopg.Rollback(), None)
        except BaseException:
            self._discard(conn)  # closed: the server rolls back
            raise
        self._put(conn)

    def prune(self, *, batch: int | None = None) -> int:
        """Delete at most ``batch`` (default ``prune_batch``) expired done rows now; how many.

        Expired customer marks too (at most ``batch`` more), when their table exists.
        """
        limit = (batch or self._prune_batch,)
        with self._pool.connection(timeout=self._seconds) as conn:
            self._arm(conn, self._seconds)
            try:
                with conn.pipeline():
                    done = conn.execute(self._sql.prune, limit)
                    exists = conn.execute(_EXISTS, (self._sql.marks_name,))
                deleted = int(done.rowcount)
                if cast("tuple[bool]", exists.fetchone())[0]:
                    deleted += int(conn.execute(self._sql.prune_marks, limit).rowcount)
                return deleted
            finally:
                watchdog().disarm(conn)

    def _prune_on(self, conn: psycopg.Connection[Any], batch: int) -> None:
        try:
            with conn.pipeline():
                conn.execute(self._sql.prune, (batch,))
                if self._ordered:
                    conn.execute(self._sql.prune_marks, (batch,))
                conn.commit()
        except psycopg.Error as error:
            logger.info("pruning expired done marks failed: %s", type(error).__qualname__)
            conn.close()  # the pool replaces it

    def _put(self, conn: psycopg.Connection[Any]) -> None:
        watchdog().disarm(conn)
        self._pool.putconn(conn)

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        # Closed: the server rolls back whatever was open; the pool replaces it.
        watchdog().disarm(conn)
        conn.close()
        self._pool.putconn(conn)


class AsyncPostgresIdempotencyStore(
    _Store["psycopg_pool.AsyncConnectionPool[Any]", "psycopg.AsyncConnection[Any]"]
):
    """`PostgresIdempotencyStore` for a `psycopg_pool.AsyncConnectionPool` and `Dispatcher.handle_async`.

    ``async def`` handlers write through `current_async_connection`. A sync handler runs
    in a worker thread, where the event loop's connection cannot be used: it gets a clear
    error from `current_connection`. A call cancelled while it commits or rolls back
    finishes first (a commit half sent would leave its outcome unknown).

    Args:
        pool: An open ``psycopg_pool.AsyncConnectionPool``.
        table: The done marks' table (``name`` or ``schema.name``); see `create_table`.
        timeout: See `PostgresIdempotencyStore`.
        prune_every: See `PostgresIdempotencyStore`.
        prune_batch: See `PostgresIdempotencyStore`.

    Raises:
        WebhookConfigurationError: ``pool`` is not an async pool, or an argument is invalid.
    """

    @staticmethod
    def _check_pool(pool: object) -> None:
        if not _is_async_pool(pool):
            from ._errors import WebhookConfigurationError

            raise WebhookConfigurationError(
                "pool must be a psycopg_pool.AsyncConnectionPool "
                "(for a ConnectionPool, use PostgresIdempotencyStore)"
            )

    async def create_table_async(self) -> None:
        """`PostgresIdempotencyStore.create_table`, for the event loop."""
        async with self._pool.connection(timeout=self._seconds) as conn:
            await conn.execute(_CREATE_LOCK, (self._lock_id("create table"),))
            await conn.execute(self._sql.create)

    async def acquire_async(
        self, key: str, *, lease: datetime.timedelta, order: Order | None = None
    ) -> Claim:
        """`PostgresIdempotencyStore.acquire`, for the event loop."""
        deadline = time.monotonic() + self._seconds
        for attempt in range(1, _ATTEMPTS + 1):
            conn: psycopg.AsyncConnection[Any] = await self._pool.getconn(
                timeout=max(0.001, deadline - time.monotonic())
            )
            transaction = _transaction(conn)
            try:
                self._arm(conn, deadline - time.monotonic())
                async with conn.pipeline():
                    await transaction.__aenter__()
                    await conn.execute(_BEGIN)
                    locked = await conn.execute(_LOCK, (self._lock_id(key),))
                    done = await conn.execute(self._sql.check, (key,))
                    await conn.execute(_IDLE, (str(int(lease.total_seconds() * 1000) + 1000),))
                    customer = (
                        None
                        if order is None
                        else (
                            await conn.execute(_LOCK, self._customer_lock(order)),
                            await conn.execute(self._sql.read_mark, (order.key,)),
                        )
                    )
                claim = self._claim(await locked.fetchone(), await done.fetchone())
                if claim is None and customer is not None and order is not None:
                    claim = customer_claim(await customer[0].fetchone(), await customer[1].fetchone(), order)
                if claim is not None:
                    await transaction.__aexit__(psycopg.Rollback, psycopg.Rollback(), None)
                    await self._put(conn)
                    return claim
            except psycopg.Error as error:
                dropped = _broken(conn) and not isinstance(error, psycopg.errors.QueryCanceled)
                await self._discard(conn)
                if time.monotonic() >= deadline:
                    raise self._timed_out() from None
                if attempt < _ATTEMPTS and dropped:
                    continue
                raise
            except BaseException:
                await self._discard(conn)
                raise
            token = new_token()
            self._open[token] = opened = OpenDelivery(conn, transaction)
            self._arm(conn, lease.total_seconds())
            delivery_context.set(opened)
            return Claim("acquired", token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete_async(
        self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None
    ) -> None:
        """`PostgresIdempotencyStore.complete`, for the event loop.

        Raises:
            CommitFailed: Nothing was committed, or the outcome is unknown.
        """
        delivery_context.set(None)
        await self._finish(token, lambda entry: self._commit(entry, key, ttl, order), missing=True)

    async def release_async(self, key: str, token: str, *, order: Order | None = None) -> None:  # noqa: ARG002 - the token names the transaction
        """`PostgresIdempotencyStore.release`, for the event loop."""
        delivery_context.set(None)
        await self._finish(token, self._rollback, missing=False)

    async def prune_async(self, *, batch: int | None = None) -> int:
        """`PostgresIdempotencyStore.prune`, for the event loop."""
        limit = (batch or self._prune_batch,)
        async with self._pool.connection(timeout=self._seconds) as conn:
            self._arm(conn, self._seconds)
            try:
                async with conn.pipeline():
                    done = await conn.execute(self._sql.prune, limit)
                    exists = await conn.execute(_EXISTS, (self._sql.marks_name,))
                deleted = int(done.rowcount)
                if cast("tuple[bool]", await exists.fetchone())[0]:
                    deleted += int((await conn.execute(self._sql.prune_marks, limit)).rowcount)
                return deleted
            finally:
                watchdog().disarm(conn)

    async def _finish(
        self,
        token: str,
        end: Callable[[OpenDelivery[psycopg.AsyncConnection[Any]]], Awaitable[None]],
        *,
        missing: bool,
    ) -> None:
        """Commit or roll back in a task of its own, which a cancellation does not cut short.

        The flow calls again after a cancellation: that call waits for the same task.
        """
        task = self._finishing.get(token)
        if task is None:
            entry = self._open.pop(token, None)
            if entry is None:
                if missing:
                    raise CommitFailed("no open transaction for this delivery: its outcome is unknown")
                return
            entry.end()
            task = asyncio.ensure_future(end(entry))
            task.add_done_callback(_retrieve)
            self._finishing[token] = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Kept for the call again, which takes its outcome, even when the task has
            # just finished: a forgotten one would read as "outcome unknown".
            if task.done():
                self._forget_finished_beyond(_MAX_FINISHED)
            raise
        except BaseException:
            self._finishing.pop(token, None)
            raise
        self._finishing.pop(token, None)

    def _forget_finished_beyond(self, limit: int) -> None:
        """Forget finished tasks that nobody called again for, past ``limit`` of them.

        The dispatcher always calls again after a cancellation; a caller of its own may not.
        """
        finished = [token for token, task in self._finishing.items() if task.done()]
        for token in finished[: max(0, len(finished) - limit)]:  # the oldest first
            del self._finishing[token]

    async def _commit(
        self,
        entry: OpenDelivery[psycopg.AsyncConnection[Any]],
        key: str,
        ttl: datetime.timedelta,
        order: Order | None,
    ) -> None:
        if order is not None:
            self._ordered = True  # from now on, the upkeep prunes the marks too
        conn = entry.conn
        try:
            self._arm(conn, self._seconds)  # inside the try: see PostgresIdempotencyStore.complete
            async with conn.pipeline():
                for statement, params in self._sql.done(key, ttl.total_seconds(), order):
                    await conn.execute(statement, params)
                await entry.transaction.__aexit__(None, None, None)
        except BaseException as error:
            await self._discard(conn)
            if isinstance(error, Exception):
                raise _commit_failed(error) from None
            raise
        if self._prune_due():
            await self._prune_on(conn, self._prune_batch)
        await self._put(conn)

    async def _rollback(self, entry: OpenDelivery[psycopg.AsyncConnection[Any]]) -> None:
        conn = entry.conn
        if _broken(conn):  # lost: the server rolled back
            await self._discard(conn)
            return
        try:
            self._arm(conn, self._seconds)
            await entry.transaction.__aexit__(psycopg.Rollback, psycopg.Rollback(), None)
        except BaseException:
            await self._discard(conn)
            raise
        await self._put(conn)

    async def _prune_on(self, conn: psycopg.AsyncConnection[Any], batch: int) -> None:
        try:
            async with conn.pipeline():
                await conn.execute(self._sql.prune, (batch,))
                if self._ordered:
                    await conn.execute(self._sql.prune_marks, (batch,))
                await conn.commit()
        except psycopg.Error as error:
            logger.info("pruning expired done marks failed: %s", type(error).__qualname__)
            await conn.close()  # the pool replaces it

    async def _put(self, conn: psycopg.AsyncConnection[Any]) -> None:
        watchdog().disarm(conn)
        await self._pool.putconn(conn)

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        watchdog().disarm(conn)
        await conn.close()
        await self._pool.putconn(conn)


def _transaction(conn: Any) -> Any:  # noqa: ANN401 - a Connection or AsyncConnection, and its block
    # The block object itself, entered inside our pipeline: conn.transaction() is a
    # context manager that would keep the connection in pipeline mode for the handlers.
    if isinstance(conn, psycopg.AsyncConnection):
        return psycopg.AsyncTransaction(cast("psycopg.AsyncConnection[Any]", conn))  # type: ignore[redundant-cast]  # for pyright
    return psycopg.Transaction(conn)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: asyncio must not log what the caller raises or left behind


def _is_async_pool(pool: object) -> bool:
    return isinstance(pool, psycopg_pool.AsyncConnectionPool)
