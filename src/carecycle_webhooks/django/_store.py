"""`DjangoIdempotencyStore`: a delivery's handlers and its done mark in one Django transaction.

The store is a `TransactionalIdempotencyStore`: there is no lease. ``acquire`` enters
``transaction.atomic()`` and holds the ``webhook-id`` inside it; the handlers run in that
transaction (the same thread, the same connection), so their ORM writes are part of it;
``complete`` inserts the done mark and commits, ``release`` rolls everything back. The three
calls are separate calls of the store protocol, so the atomic block is entered in one and
left in another, in the same thread: the driver calls them in order, in the calling
thread (`_drivers.drive`).

How an id is held, so that a concurrent copy never runs its handlers beside the first:

- PostgreSQL: ``pg_try_advisory_xact_lock`` on a hash of the id. It never waits: a copy
  that finds it taken is answered ``in_flight`` (409) at once. (An ``INSERT`` of the id
  would wait for the first transaction instead: a duplicate key blocks on an uncommitted
  insert.) The lock ends with the transaction: a commit, a rollback, or the connection of
  a killed worker closing. It is taken before the done mark is read, and under READ
  COMMITTED each statement sees what committed before it: a copy that gets the lock
  after the first delivery committed sees its mark.
- SQLite: one writer at a time for the whole file. The first statement writes (it deletes
  the id's expired mark, if any), which takes the write lock, as ``BEGIN IMMEDIATE``
  would; a copy in another process waits for it up to the connection's busy timeout
  (Django's ``OPTIONS["timeout"]``, 5 s by default), then reads the mark the first
  delivery committed (answered as a duplicate) or fails with "database is locked"
  (answered 503: Svix retries). So do deliveries of other ids: SQLite runs them one at a
  time. Copies in the same process are answered 409 at once, without waiting.

A commit that fails raises `CommitFailed` (the dispatcher answers 503, and Svix's retry
runs the handlers again), as does a transaction a handler broke and left (a database
error caught without a savepoint): Django would roll it back without a word.

Customer order (``Dispatcher(skip_out_of_order=True)``): with an `Order`, the customer is
held as the id is (an advisory lock of its own on PostgreSQL, taken in the same statement;
on SQLite the write lock holds every delivery), and its newest mark (`CustomerMark`) is read
with the done mark, after the locks: ``"in_flight"`` while another delivery of the customer
runs, ``"stale"`` if a newer update committed. ``complete`` moves the mark forward (never
back) in the delivery's transaction; ``release`` leaves it as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
import time
from typing import TYPE_CHECKING, TypeVar

from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from carecycle_webhooks._errors import WebhookConfigurationError
from carecycle_webhooks._idempotency import (
    CLAIM_DONE,
    CLAIM_IN_FLIGHT,
    CLAIM_STALE,
    Claim,
    CommitFailed,
    Order,
    new_token,
)

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable, Generator

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from django.db.transaction import Atomic

__all__ = ["DjangoIdempotencyStore"]

_T = TypeVar("_T")

_VENDORS = ("postgresql", "sqlite")

_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"
_LOCK_AND_BOUND_IDLE = (
    "SELECT pg_try_advisory_xact_lock(%s), set_config('idle_in_transaction_session_timeout', %s, true)"
)
# With an order: the customer's lock too, in the same statement.
_LOCKS = "SELECT pg_try_advisory_xact_lock(%s), pg_try_advisory_xact_lock(%s)"
_LOCKS_AND_BOUND_IDLE = (
    "SELECT pg_try_advisory_xact_lock(%s), pg_try_advisory_xact_lock(%s), "
    "set_config('idle_in_transaction_session_timeout', %s, true)"
)


class _Released(Exception):  # noqa: N818 - never raised: what rolls a delivery's atomic block back
    """Handed to ``Atomic.__exit__`` to roll a delivery back."""


_RELEASED = _Released()


class DjangoIdempotencyStore:
    """Exactly-once effects through Django's ORM: each delivery is one ``transaction.atomic()``.

    It keeps customer order too (``Dispatcher(skip_out_of_order=True)``): each customer's
    newest ``updatedAt`` is a `CustomerMark` row, written in the delivery's transaction.

    Add the app and create its table::

        # settings.py
        INSTALLED_APPS = [..., "carecycle_webhooks.django"]

        # then: python manage.py migrate

        # webhooks.py
        webhooks = Dispatcher(secret, idempotency_store=DjangoIdempotencyStore())

    Plain ``def`` handlers then write with the ORM as usual: their writes and the
    delivery's done mark commit together, or not at all. A handler that raises rolls its
    writes back and frees the id, so that Svix's retry runs it once; a worker killed
    mid-handler leaves nothing behind (the database ends its transaction); a concurrent
    copy of the delivery is answered 409 (on SQLite, see the module notes: a copy in another
    process waits for the write lock). A commit that fails is answered 503.

    Supported databases: PostgreSQL (at Django's default isolation, READ COMMITTED) and
    SQLite. Building the store touches no database and needs no settings.

    Args:
        using: The database alias whose transaction the delivery runs in; the handlers'
            writes must go to it too (``Model.objects.using(...)`` or a router), or they
            are not part of the delivery.
        prune_every: Every this many completed deliveries (per process), up to
            ``2 * prune_every`` expired done marks are deleted, oldest first.

    Raises:
        WebhookConfigurationError: ``prune_every`` is not a positive number.
    """

    keeps_order = True
    """It keeps customer order: see `OrderedIdempotencyStore`."""

    def __init__(self, *, using: str = "default", prune_every: int = 100) -> None:
        value: object = prune_every
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WebhookConfigurationError("prune_every must be a positive number of deliveries")
        self._using = using
        self._prune_every = prune_every
        self._completed = itertools.count(1)
        self._sql: _Statements | None = None
        # Ids being delivered by this process, until when at most: a copy is answered 409
        # without touching the database (on SQLite, it would wait for the write lock). The
        # database is what holds the id: an entry left behind (a delivery whose complete or
        # release was never called) only counts for the lease, then the database decides.
        self._in_flight: dict[str, float] = {}
        self._customers: dict[str, float] = {}  # the same, for customers (skip_out_of_order)
        self._lock = threading.Lock()
        # Per thread: the open atomic block of each delivery acquired in it, by token.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"DjangoIdempotencyStore(using={self._using!r})"

    @property
    def using(self) -> str:
        """The database alias the deliveries' transactions run on."""
        return self._using

    # ------------------------------------------------------------------ the protocol

    def acquire(self, key: str, *, lease: datetime.timedelta, order: Order | None = None) -> Claim:
        """Begin the delivery's transaction and hold ``key`` in it, or say who has it.

        ``lease`` bounds how long a PostgreSQL transaction may stay idle (a handler stuck
        without querying): past it, the server ends the session, which frees the id, and
        the delivery's commit fails (503). With ``order``, the customer is held too, and
        a newer mark of it makes the delivery ``"stale"`` (nothing is kept).
        """
        now = time.monotonic()
        with self._lock:
            if self._in_flight.get(key, now) > now:
                return CLAIM_IN_FLIGHT
            if order is not None:
                if self._customers.get(order.key, now) > now:
                    return CLAIM_IN_FLIGHT
                self._customers[order.key] = now + lease.total_seconds()
            self._in_flight[key] = now + lease.total_seconds()
        try:
            claim = self._begin(key, lease, order)
        except BaseException:
            self._forget(key, order)
            raise
        if claim.status != "acquired":
            self._forget(key, order)
        return claim

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        """Insert the done mark and commit it with the handlers' writes.

        With ``order``, the customer's newest mark moves forward (never back) in the same
        transaction.

        Raises:
            CommitFailed: Nothing was committed (or, the connection lost during the
                ``COMMIT``, it is not known): the answer is 503 and Svix retries.
        """
        atomic = self._open().pop(token, None)
        if atomic is None:  # not this thread's delivery: nothing here to commit
            raise CommitFailed(
                "DjangoIdempotencyStore: no transaction of this delivery is open in this thread"
            )
        try:
            failure = self._commit(atomic, key, ttl, order)
        finally:
            self._forget(key, order)
        if failure is not None:
            # By type only, and no chained cause: a database error may quote the handlers' rows.
            raise CommitFailed(f"DjangoIdempotencyStore: {failure}")
        if next(self._completed) % self._prune_every == 0:
            self.prune(limit=2 * self._prune_every)

    def release(self, key: str, token: str, *, order: Order | None = None) -> None:
        """Roll the delivery back: the handlers' writes are undone and ``key`` is free again.

        So is ``order``'s customer; its newest mark stays as it was.
        """
        atomic = self._open().pop(token, None)
        if atomic is None:  # not this thread's delivery: nothing here to roll back
            return
        try:
            atomic.__exit__(_Released, _RELEASED, None)
        finally:
            self._forget(key, order)

    async def run_delivery_async(self, deliver: Callable[[], _T]) -> _T:
        """Run a whole delivery for `Dispatcher.handle_async` in a worker thread.

        Django's ORM is synchronous, and the delivery's transaction lives on one thread's
        connection: acquire, the handlers and complete (or release) all run there. As for a
        request, the thread's connections are closed before and after, if unusable or past
        ``CONN_MAX_AGE``.
        """
        return await asyncio.to_thread(_in_fresh_connections, deliver)

    # ------------------------------------------------------------------ upkeep

    def prune(self, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired done marks, oldest first; how many were deleted.

        Expired customer marks too (up to ``limit`` more), counted with them. Called every
        ``prune_every`` completed deliveries, in autocommit after the delivery's commit (a
        failure is ignored: the next prune tries again). Also for a periodic job.
        """
        deleted = 0
        try:
            connection, sql = self._statements()
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            for statement in (sql.prune, sql.prune_marks):  # each on its own: a failure spares the other
                with transaction.atomic(using=self._using), _cursor(connection) as cursor:
                    cursor.execute(statement, [now, limit])
                    deleted += cursor.rowcount
        except Exception:  # noqa: BLE001 - pruning is upkeep: a busy or absent database is tried again later
            return deleted
        return deleted

    # ------------------------------------------------------------------ inside

    def _open(self) -> dict[str, Atomic]:
        """This thread's open atomic blocks, by token."""
        local = self._local
        try:
            opened: dict[str, Atomic] = local.open
        except AttributeError:
            opened = local.open = {}
        return opened

    def _forget(self, key: str, order: Order | None) -> None:
        with self._lock:
            self._in_flight.pop(key, None)
            if order is not None:
                self._customers.pop(order.key, None)

    def _statements(self) -> tuple[BaseDatabaseWrapper, _Statements]:
        """The connection of this thread, and the store's SQL for it (built on first use)."""
        connection = connections[self._using]
        sql = self._sql
        if sql is None:
            if connection.vendor not in _VENDORS:
                raise WebhookConfigurationError(
                    f"DjangoIdempotencyStore supports PostgreSQL and SQLite; database {self._using!r} "
                    f"is {connection.vendor}"
                )
            try:
                from .models import CustomerMark, ProcessedWebhook
            except RuntimeError:  # the app is not installed
                raise WebhookConfigurationError(
                    "DjangoIdempotencyStore needs its app: add 'carecycle_webhooks.django' to "
                    "INSTALLED_APPS, then run manage.py migrate"
                ) from None
            table = ProcessedWebhook._meta.db_table  # noqa: SLF001  # pyright: ignore[reportUnknownMemberType] - Django's documented model API
            marks = CustomerMark._meta.db_table  # noqa: SLF001  # pyright: ignore[reportUnknownMemberType]
            sql = self._sql = _Statements(connection, table, marks)
        return connection, sql

    def _begin(self, key: str, lease: datetime.timedelta, order: Order | None) -> Claim:
        """Enter the delivery's atomic block and hold ``key`` (and ``order``'s customer) in it."""
        connection, sql = self._statements()
        outermost = not connection.in_atomic_block
        atomic = transaction.atomic(using=self._using)
        atomic.__enter__()
        try:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            with _cursor(connection) as cursor:
                held, customer_held = self._hold(cursor, sql, (key, lease, order, now), outermost=outermost)
                if not held:
                    claim: Claim | None = CLAIM_IN_FLIGHT
                elif order is None:
                    cursor.execute(sql.is_done, [key, now])
                    claim = CLAIM_DONE if cursor.fetchone() is not None else None
                else:  # after the locks: it sees what committed before they were free
                    cursor.execute(sql.is_done_and_mark, [key, now, order.key, now])
                    done, mark = cursor.fetchone() or (None, None)
                    claim = (
                        CLAIM_DONE
                        if done is not None
                        else CLAIM_IN_FLIGHT
                        if not customer_held
                        else CLAIM_STALE
                        if mark is not None and mark > order.position
                        else None
                    )
        except BaseException as error:
            atomic.__exit__(type(error), error, error.__traceback__)
            raise
        if claim is not None:
            atomic.__exit__(_Released, _RELEASED, None)
            return claim
        token = new_token()
        self._open()[token] = atomic
        return Claim("acquired", token)

    @staticmethod
    def _hold(
        cursor: CursorWrapper,
        sql: _Statements,
        delivery: tuple[str, datetime.timedelta, Order | None, str | None],
        *,
        outermost: bool,
    ) -> tuple[bool, bool]:
        """Hold the key and the order's customer in the delivery's transaction: whether each is held.

        ``delivery`` is its key, lease, order and the database's ``now``.
        """
        key, lease, order, now = delivery
        if not sql.postgresql:
            # SQLite: a write first takes the database's write lock, as BEGIN IMMEDIATE
            # does, before anything is read; and forgets an expired mark. It holds all.
            cursor.execute(sql.forget_expired, [key, now])
            return True, True
        # Never waits: taken, or held by another transaction right now. An idle
        # transaction (a stuck handler) is ended by the server after the lease.
        locks = [_lock_id(sql.table, key)]
        if order is not None:  # the customer's, in the same round trip; a header holds no NUL
            locks.append(_lock_id(sql.table, f"customer\0{order.key}"))
        if outermost:  # SET LOCAL would last until the end of the caller's transaction
            idle = f"{max(1, int(lease.total_seconds() * 1000))}ms"
            cursor.execute(_LOCK_AND_BOUND_IDLE if order is None else _LOCKS_AND_BOUND_IDLE, [*locks, idle])
        else:
            cursor.execute(_LOCK if order is None else _LOCKS, locks)
        row = cursor.fetchone()
        held = row is not None and row[0] is True
        return held, order is None or (row is not None and row[1] is True)

    def _commit(self, atomic: Atomic, key: str, ttl: datetime.timedelta, order: Order | None) -> str | None:
        """Insert the done mark (and the customer's) and commit; or roll back and say why."""
        try:
            failure = self._mark_done(key, ttl, order)
        except BaseException as error:
            atomic.__exit__(type(error), error, error.__traceback__)  # rolled back
            if not isinstance(error, Exception):
                raise
            return f"rolled back: the done mark could not be written ({type(error).__qualname__})"
        if failure is not None:
            atomic.__exit__(_Released, _RELEASED, None)
            return failure
        try:
            atomic.__exit__(None, None, None)  # the commit (Django rolls back if it fails)
        except Exception as error:  # noqa: BLE001 - reported by type only, as CommitFailed
            # Django rolled back; or the connection went during COMMIT, and nobody knows.
            return f"the commit failed ({type(error).__qualname__}): rolled back, or its outcome unknown"
        return None

    def _mark_done(self, key: str, ttl: datetime.timedelta, order: Order | None) -> str | None:
        """Insert the done mark in the delivery's transaction (over an expired one); or say why not."""
        connection, sql = self._statements()
        if connection.needs_rollback or connection.closed_in_transaction:
            # A handler's database error left the transaction broken (caught without a
            # savepoint): Django would roll it back without a word on leaving the block.
            return "rolled back: a handler left the transaction broken"
        now = timezone.now()
        adapt = connection.ops.adapt_datetimefield_value
        with _cursor(connection) as cursor:
            cursor.execute(sql.mark_done, [key, adapt(now), adapt(now + ttl)])
            if cursor.rowcount != 1:
                # Marked done by a transaction this one could not see (an isolation level
                # above READ COMMITTED): this run is rolled back.
                return "rolled back: another worker marked it done meanwhile"
            if order is not None:
                expires = adapt(now + ttl)
                cursor.execute(sql.keep_mark, [order.key, order.position, expires, adapt(now)])
        return None


class _Statements:
    """The store's SQL for its table, quoted for one database; built once."""

    __slots__ = (
        "forget_expired",
        "is_done",
        "is_done_and_mark",
        "keep_mark",
        "mark_done",
        "postgresql",
        "prune",
        "prune_marks",
        "table",
    )

    def __init__(self, connection: BaseDatabaseWrapper, table: str, marks_table: str) -> None:
        self.table = table
        self.postgresql = connection.vendor == "postgresql"
        # The model's own table name, quoted by the backend: no input reaches these strings.
        quoted = connection.ops.quote_name(table)
        self.forget_expired = f"DELETE FROM {quoted} WHERE webhook_id = %s AND expires_at <= %s"  # noqa: S608
        self.is_done = f"SELECT 1 FROM {quoted} WHERE webhook_id = %s AND expires_at > %s"  # noqa: S608
        # Over an expired mark only: a live one is another worker's, and this run is rolled back.
        self.mark_done = (
            f"INSERT INTO {quoted} (webhook_id, done_at, expires_at) VALUES (%s, %s, %s) "  # noqa: S608
            "ON CONFLICT (webhook_id) DO UPDATE SET done_at = excluded.done_at, "
            f"expires_at = excluded.expires_at WHERE {quoted}.expires_at <= excluded.done_at"
        )
        # SKIP LOCKED: a prune never waits for a row another transaction is writing.
        skip = " FOR UPDATE SKIP LOCKED" if self.postgresql else ""
        self.prune = (
            f"DELETE FROM {quoted} WHERE webhook_id IN (SELECT webhook_id FROM {quoted} "  # noqa: S608
            f"WHERE expires_at <= %s ORDER BY expires_at LIMIT %s{skip})"
        )
        # skip_out_of_order: the customer's newest mark, read in the done mark's statement.
        marks = connection.ops.quote_name(marks_table)
        self.is_done_and_mark = (
            f"SELECT (SELECT 1 FROM {quoted} WHERE webhook_id = %s AND expires_at > %s), "  # noqa: S608
            f"(SELECT updated_at_us FROM {marks} WHERE customer_key = %s AND expires_at > %s)"
        )
        # Forward only, unless the old mark expired (then it no longer counts).
        greatest = "greatest" if self.postgresql else "max"
        self.keep_mark = (
            f"INSERT INTO {marks} (customer_key, updated_at_us, expires_at) VALUES (%s, %s, %s) "  # noqa: S608
            f"ON CONFLICT (customer_key) DO UPDATE SET updated_at_us = CASE WHEN {marks}.expires_at > %s "
            f"THEN {greatest}({marks}.updated_at_us, excluded.updated_at_us) "
            "ELSE excluded.updated_at_us END, expires_at = excluded.expires_at"
        )
        self.prune_marks = (
            f"DELETE FROM {marks} WHERE customer_key IN (SELECT customer_key FROM {marks} "  # noqa: S608
            f"WHERE expires_at <= %s ORDER BY expires_at LIMIT %s{skip})"
        )


def _lock_id(table: str, key: str) -> int:
    """The advisory lock of ``key``: a signed 64-bit hash, per table."""
    digest = hashlib.blake2b(f"{table}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def _cursor(connection: BaseDatabaseWrapper) -> Generator[CursorWrapper, None, None]:
    """``with connection.cursor()``, typed: django-stubs' ``__enter__`` returns ``typing.Self`` (3.11)."""
    cursor = connection.cursor()
    try:
        yield cursor
    finally:
        cursor.__exit__(None, None, None)  # Django's own: closes, ignoring a closed connection


def _in_fresh_connections(deliver: Callable[[], _T]) -> _T:
    # As Django does around a request: drop connections that broke or outlived CONN_MAX_AGE.
    close_old_connections()
    try:
        return deliver()
    finally:
        close_old_connections()
