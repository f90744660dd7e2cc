"""Handling each delivery once: a small store protocol, in memory and in Redis.

Svix delivers at least once and retries any non-2xx for about 28 hours, so one
``webhook-id`` can arrive many times, and two attempts can reach two workers at once.
The dispatcher asks the store for a *lease* on the id before running handlers:

- ``acquire``: take the lease (``SET NX`` with an expiry). Another holder means the id
  is in flight (answer 409, Svix retries later); a finished id means a duplicate
  (answer 2xx, run nothing).
- ``complete``: the handlers succeeded: keep the id as done for longer than Svix's
  whole retry window.
- ``release``: a handler failed: free the id so that Svix's retry runs it again.

A worker that dies mid-handler never releases its lease; it expires after ``lease``,
and the next retry runs the handlers. Only the lease's holder (its token) can release it,
and ``complete`` never overwrites another holder's lease, so a worker whose lease expired
cannot clobber another's. An id whose lease expired and that nobody took since is still
marked done: its handlers did run.

Every step must answer, or fail, well within the 15 s Svix waits for a response: the
Redis store (in `_redis.py`) gives each call a deadline of its own, since a client's
retries multiply its socket timeout.

There are two protocols, as httpx has a transport and an async transport:
`IdempotencyStore` for `Dispatcher.handle` and `AsyncIdempotencyStore` for
`Dispatcher.handle_async`. A store may implement both (every store of this package does).

A *transactional* store (`TransactionalIdempotencyStore`) runs each delivery in one database
transaction instead of a lease: ``acquire`` begins it, the handlers write in it, ``complete``
commits it with the done mark, ``release`` rolls it back. Its three calls and the handlers
between them run in one thread; ``handle_async`` hands that whole delivery to the store's
``run_delivery_async``. A commit that fails is `CommitFailed`: the handlers' writes
are gone, so the delivery is answered 503 and Svix retries it.

*Customer order* (``Dispatcher(skip_out_of_order=True)``): a store that keeps it
(`OrderedIdempotencyStore`, every store of this package) takes an `Order` with the lease of
a customer event. ``acquire`` then also answers ``"stale"`` when a newer update of that
customer was processed already, and ``"in_flight"`` while another delivery of the same
customer holds its lease; ``complete`` moves the customer's newest mark forward (never
back) in the same step as the done mark; ``release`` frees the customer's lease and
leaves the mark as it was. So two workers racing with an old and a new update never end
with the old one applied last: they run one after the other, and the older one, second,
is stale.
"""

from __future__ import annotations

import datetime
import itertools
import os
import secrets
import threading
import time
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_DONE_TTL",
    "DEFAULT_LEASE",
    "AsyncIdempotencyStore",
    "AsyncOrderedIdempotencyStore",
    "Claim",
    "CommitFailed",
    "IdempotencyStore",
    "InMemoryIdempotencyStore",
    "Order",
    "OrderedIdempotencyStore",
    "TransactionalIdempotencyStore",
    "serves",
]

_T = TypeVar("_T")

DEFAULT_LEASE = datetime.timedelta(minutes=2)
"""How long a worker holds a delivery while its handlers run; longer than any handler should take."""

DEFAULT_DONE_TTL = datetime.timedelta(hours=48)
"""How long a processed ``webhook-id`` is remembered: longer than Svix's ~28 hours of retries."""

# Lease tokens: unique across processes and machines (a random prefix per process) and
# cheap (a counter, not a system call per delivery).
_token_prefix = secrets.token_hex(8)
_token_numbers = itertools.count()


def new_token() -> str:
    return f"{_token_prefix}-{next(_token_numbers)}"


def _new_token_prefix() -> None:
    # A forked worker (gunicorn --preload, multiprocessing) starts with its parent's prefix
    # and count: it draws its own, or two workers would hold one lease with the same token.
    global _token_prefix, _token_numbers  # noqa: PLW0603 - redrawn once per forked process
    _token_prefix = secrets.token_hex(8)
    _token_numbers = itertools.count()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_token_prefix)


class Claim(NamedTuple):
    """The answer of `IdempotencyStore.acquire` (a named tuple: cheap, on every delivery).

    Attributes:
        status: ``"acquired"``: run the handlers; ``"in_flight"``: another worker holds the
            lease right now; ``"done"``: this id was already processed successfully;
            ``"stale"`` (only when given an `Order`): a newer update of the same customer
            was processed already.
        token: Proves ownership of an acquired lease to `complete` and `release`.
    """

    status: Literal["acquired", "in_flight", "done", "stale"]
    token: str = ""


class Order(NamedTuple):
    """Where a customer event stands in its customer's history (``skip_out_of_order``).

    Attributes:
        key: Whose history: the customer's id, scoped by the tenant when there is one.
        position: The event's ``updatedAt``, in microseconds since the epoch (UTC).
    """

    key: str
    position: int


class CommitFailed(Exception):  # noqa: N818 - says what happened, as TimeoutError does
    """Raised by a transactional store's ``complete``: the delivery's transaction did not commit.

    A store such as `carecycle_webhooks.postgres.PostgresIdempotencyStore` commits the
    handlers' own writes and the done mark in one transaction. When that commit fails,
    the handlers' writes are rolled back with it: answering 2xx would lose the event for
    good, and trying ``complete`` again would mark it done without its effects. So the
    dispatcher answers 503 (Svix retries, and the retry runs the handlers again), does not
    call ``complete`` again and keeps no missed mark.

    Raise it too when the commit's outcome is unknown (the connection was lost while the
    ``COMMIT`` was on its way): the store's own record is the truth, and Svix's retry
    finds the done mark (answered as a duplicate) or does not (the handlers run again).

    Its message must hold no payload value: a store says what failed (an error class, an
    SQLSTATE), never the database's detail, which may quote the handlers' rows.
    """


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where `Dispatcher.handle` records which deliveries are in flight or done.

    An exception from `acquire` (a Redis outage, say) makes the dispatcher answer 503, so
    that Svix retries; no handler runs. When `complete` fails after the handlers
    succeeded, the delivery is answered 2xx and the dispatcher calls `complete` again
    until the store records it; unless it raised `CommitFailed` (a transactional store:
    the handlers' writes were rolled back), which is answered 503, with no retry. A
    method must return or raise well within Svix's 15 s request timeout, also when its
    backend stalls. `AsyncIdempotencyStore` is the same
    for `Dispatcher.handle_async`.
    """

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """Take the lease on ``key`` for ``lease``, or say who has it."""
        ...

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """Mark ``key`` as done for ``ttl``, unless another token holds its lease now.

        ``token``'s own lease may have expired meanwhile (the store was unreachable when
        the dispatcher first called this): if nobody took ``key`` since, mark it done
        anyway, as its handlers did run. Called again after a failure, so a repeated call
        must change nothing.
        """
        ...

    def release(self, key: str, token: str) -> None:
        """Free ``key``, if ``token`` still holds its lease."""
        ...


@runtime_checkable
class AsyncIdempotencyStore(Protocol):
    """`IdempotencyStore` for the event loop: what `Dispatcher.handle_async` calls.

    The methods carry an ``_async`` suffix, so that one class can implement both
    protocols. They must not block the event loop.
    """

    async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """`IdempotencyStore.acquire`, for the event loop."""
        ...

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """`IdempotencyStore.complete`, for the event loop."""
        ...

    async def release_async(self, key: str, token: str) -> None:
        """`IdempotencyStore.release`, for the event loop."""
        ...


@runtime_checkable
class TransactionalIdempotencyStore(IdempotencyStore, Protocol):
    """An `IdempotencyStore` that runs each delivery in one database transaction, in one thread.

    ``acquire`` begins the transaction and holds the id in it (a concurrent copy is
    answered ``"in_flight"`` at once), the handlers write in it, ``complete`` adds the done
    mark and commits (or raises `CommitFailed`), ``release`` rolls it back. A
    worker that dies mid-handler leaves nothing behind: the database ends its transaction.

    `Dispatcher.handle` calls all of this in the calling thread. `Dispatcher.handle_async`
    gives the whole delivery, a synchronous function, to `run_delivery_async`, which runs
    it in one thread of the store's choosing, so that the sync handlers' writes are in
    the transaction too. `DjangoIdempotencyStore` is one.
    """

    async def run_delivery_async(self, deliver: Callable[[], _T]) -> _T:
        """Run ``deliver`` (acquire, the handlers, complete or release) in one thread, off the loop."""
        ...


@runtime_checkable
class OrderedIdempotencyStore(IdempotencyStore, Protocol):
    """An `IdempotencyStore` that also keeps each customer's newest ``updatedAt``.

    ``acquire``, ``complete`` and ``release`` take an optional `Order`; with one, each
    does its customer's part in the same atomic step as the delivery's own (see the
    module's docstring). ``keeps_order`` is ``True``: `Dispatcher` checks it when built
    with ``skip_out_of_order=True``. The marks expire with the done marks (``ttl``),
    which outlast Svix's retries.
    """

    keeps_order: bool

    def acquire(self, key: str, *, lease: datetime.timedelta, order: Order | None = None) -> Claim:
        """`IdempotencyStore.acquire`; with ``order``, also ``"stale"`` or the customer's lease."""
        ...

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        """`IdempotencyStore.complete`; with ``order``, also the customer's newest mark."""
        ...

    def release(self, key: str, token: str, *, order: Order | None = None) -> None:
        """`IdempotencyStore.release`; with ``order``, also the customer's lease."""
        ...


@runtime_checkable
class AsyncOrderedIdempotencyStore(AsyncIdempotencyStore, Protocol):
    """`OrderedIdempotencyStore`, for the event loop."""

    keeps_order: bool

    async def acquire_async(
        self, key: str, *, lease: datetime.timedelta, order: Order | None = None
    ) -> Claim:
        """`OrderedIdempotencyStore.acquire`, for the event loop."""
        ...

    async def complete_async(
        self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None
    ) -> None:
        """`OrderedIdempotencyStore.complete`, for the event loop."""
        ...

    async def release_async(self, key: str, token: str, *, order: Order | None = None) -> None:
        """`OrderedIdempotencyStore.release`, for the event loop."""
        ...


def keeps_order(store: object) -> bool:
    """Whether ``store`` keeps customer order (``skip_out_of_order``)."""
    return getattr(store, "keeps_order", False) is True


def serves(store: object, *, synchronous: bool) -> bool:
    """Whether ``store`` can serve `Dispatcher.handle` (or, if not ``synchronous``, `handle_async`).

    A store that has both sets of methods but can use only one says so with an ``is_async``
    property: `RedisIdempotencyStore` with an asyncio client serves only ``handle_async``.
    A `TransactionalIdempotencyStore` serves both.
    """
    if not synchronous:
        return isinstance(store, (AsyncIdempotencyStore, TransactionalIdempotencyStore))
    return isinstance(store, IdempotencyStore) and getattr(store, "is_async", False) is not True


DONE = "done"
"""What a store keeps for an id whose handlers succeeded (a lease keeps its holder's token)."""

CLAIM_DONE = Claim("done")
CLAIM_IN_FLIGHT = Claim("in_flight")
CLAIM_STALE = Claim("stale")


def claim_from(existing: str | None, token: str) -> Claim:
    """The claim, from what the store held for the id before ``token`` tried to take it."""
    if existing is None:
        return Claim("acquired", token)
    return CLAIM_DONE if existing == DONE else CLAIM_IN_FLIGHT


def _warn_if_several_workers() -> None:
    from ._workers import several_workers

    server = several_workers()
    if server is not None:
        import logging

        logging.getLogger("carecycle_webhooks").warning(
            "InMemoryIdempotencyStore in a process that serves with several workers (%s): each worker "
            "remembers its own ids, so a retry that reaches another worker runs the handlers again, "
            "and a restart forgets them all. Use SQLiteIdempotencyStore (one machine) or "
            "RedisIdempotencyStore (many machines)",
            server,
        )


class InMemoryIdempotencyStore:
    """An idempotency store for one process: thread-safe, bounded, with expiry.

    It keeps customer order too (``Dispatcher(skip_out_of_order=True)``).

    Enough for a single worker process. With several processes or machines behind a
    load balancer, use `SQLiteIdempotencyStore` (one machine) or `RedisIdempotencyStore`: each
    process would otherwise have its own memory. Built inside gunicorn or uvicorn with several
    workers (or with ``WEB_CONCURRENCY`` over 1), it logs a warning that says so.

    Args:
        max_entries: At most this many ids are remembered; past it, the oldest 1 % of the
            done (or expired) ones are forgotten. A lease in flight is never forgotten, so
            that a concurrent duplicate still gets 409: when the bound is full of them, the
            store holds more until they end (they are as many as the deliveries in flight).
            Customer order marks are bounded the same way: past ``max_entries`` customers,
            the oldest marks go, and an older update of such a customer runs again.
        clock: Returns monotonic seconds; for tests.
    """

    keeps_order = True
    """It keeps customer order: see `OrderedIdempotencyStore`."""

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            from ._errors import WebhookConfigurationError

            raise WebhookConfigurationError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        _warn_if_several_workers()
        self._lock = threading.Lock()
        # key -> (holder token or "done", expiry). A plain dict, whose insertion order is
        # age order: half the memory of an OrderedDict per id, and fewer writes per delivery.
        self._entries: dict[str, tuple[str, float]] = {}
        # The oldest are forgotten in batches of 1 %: a dict deleted from the front one
        # key at a time would scan ever more deleted slots to find its oldest key.
        self._forget_batch = max(1, max_entries // 100)
        # skip_out_of_order: each customer's newest updatedAt (position, expiry), oldest
        # first, bounded like the ids; and which delivery holds each customer now.
        self._marks: dict[str, tuple[int, float]] = {}
        self._customer_leases: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        """The number of ids remembered, in flight or done (expired ones may still count)."""
        return len(self._entries)

    def clear(self) -> None:
        """Forget every id, in flight or done: a fresh store, for the next test.

        In production it would make Svix's next retry of a processed delivery run its
        handlers again.
        """
        with self._lock:
            self._entries.clear()
            self._marks.clear()
            self._customer_leases.clear()

    # acquire/complete/release run on every delivery: each is one lock and a few
    # dictionary operations, written out rather than split into helpers.

    def acquire(self, key: str, *, lease: datetime.timedelta, order: Order | None = None) -> Claim:
        """Take the lease on ``key``, or report it in flight, done or (with ``order``) stale."""
        seconds = lease.total_seconds()
        with self._lock:
            entries = self._entries
            now = self._clock()
            entry = entries.get(key)
            if entry is not None:
                if entry[1] > now:
                    return CLAIM_DONE if entry[0] == DONE else CLAIM_IN_FLIGHT
                del entries[key]  # expired
            if order is not None:
                refused = self._customer_refuses(order, now)
                if refused is not None:
                    return refused
            token = new_token()
            entries[key] = (token, now + seconds)  # a new key: appended, the youngest
            if order is not None:
                self._customer_leases[order.key] = (token, now + seconds)
            if len(entries) > self._max_entries:
                self._forget_oldest()
            return Claim("acquired", token)

    def _customer_refuses(self, order: Order, now: float) -> Claim | None:
        """In flight while another delivery of the customer runs; stale if a newer one ran."""
        held = self._customer_leases.get(order.key)
        if held is not None and held[1] > now:
            return CLAIM_IN_FLIGHT
        mark = self._marks.get(order.key)
        if mark is not None and mark[1] > now and mark[0] > order.position:
            return CLAIM_STALE
        return None

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        """Mark ``key`` done, unless another worker took it since ``token``'s lease expired.

        With ``order``, the customer's newest mark moves forward to ``order.position``
        (never back), and the customer's lease, if still ``token``'s, is freed.
        """
        seconds = ttl.total_seconds()
        with self._lock:
            entries = self._entries
            now = self._clock()
            entry = entries.get(key)
            if entry is not None:
                if entry[0] != token and entry[1] > now:
                    return  # another holder's lease, or done already: left as it is
                del entries[key]  # then re-added as the youngest
            # Ours, or free (expired, released or forgotten): the handlers did run.
            entries[key] = (DONE, now + seconds)
            if order is not None:
                self._mark_customer(order, token, now + seconds, now)
            if entry is None and len(entries) > self._max_entries:
                self._forget_oldest()

    def _mark_customer(self, order: Order, token: str, expiry: float, now: float) -> None:
        marks = self._marks
        mark = marks.pop(order.key, None)  # re-added as the youngest
        position = order.position if mark is None or mark[1] <= now else max(mark[0], order.position)
        marks[order.key] = (position, expiry)
        if len(marks) > self._max_entries:  # the oldest marks first: they expire first too
            for forgotten in list(itertools.islice(marks, self._forget_batch)):
                del marks[forgotten]
        held = self._customer_leases.get(order.key)
        if held is not None and held[0] == token:
            del self._customer_leases[order.key]

    def _forget_oldest(self) -> None:
        """Over the bound: forget the oldest batch of done or expired ids (with the lock held).

        Never a live lease: its holder's handlers are running, and a duplicate arriving
        now must still be answered 409. Leases are few (one per delivery in flight) and
        expire, so the scan past them is short; when nothing else is left, the store
        stays over its bound until they end.
        """
        entries = self._entries
        now = self._clock()
        # After live leases held it over its bound, the store shrinks back at once.
        batch = max(self._forget_batch, len(entries) - self._max_entries)
        forgotten: list[str] = []
        for key, (holder, expiry) in entries.items():
            if holder == DONE or expiry <= now:
                forgotten.append(key)
                if len(forgotten) == batch:
                    break
        for key in forgotten:
            del entries[key]

    def release(self, key: str, token: str, *, order: Order | None = None) -> None:
        """Free ``key`` (and, with ``order``, its customer), if ``token`` still holds it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == token:
                del self._entries[key]
            if order is not None:
                held = self._customer_leases.get(order.key)
                if held is not None and held[0] == token:
                    del self._customer_leases[order.key]

    # The lock is only held for dictionary operations, so the event loop may take it. An
    # order is passed on only when there is one: a subclass's own acquire may not take it.
    async def acquire_async(
        self, key: str, *, lease: datetime.timedelta, order: Order | None = None
    ) -> Claim:
        """`acquire`, for the event loop."""
        if order is None:
            return self.acquire(key, lease=lease)
        return self.acquire(key, lease=lease, order=order)

    async def complete_async(
        self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None
    ) -> None:
        """`complete`, for the event loop."""
        if order is None:
            self.complete(key, token, ttl=ttl)
        else:
            self.complete(key, token, ttl=ttl, order=order)

    async def release_async(self, key: str, token: str, *, order: Order | None = None) -> None:
        """`release`, for the event loop."""
        if order is None:
            self.release(key, token)
        else:
            self.release(key, token, order=order)
