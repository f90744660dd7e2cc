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
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import itertools
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_DONE_TTL",
    "DEFAULT_LEASE",
    "Claim",
    "IdempotencyStore",
    "InMemoryIdempotencyStore",
    "RedisIdempotencyStore",
]

DEFAULT_LEASE = datetime.timedelta(minutes=2)
"""How long a worker holds a delivery while its handlers run; longer than any handler should take."""

DEFAULT_DONE_TTL = datetime.timedelta(hours=48)
"""How long a processed ``webhook-id`` is remembered: longer than Svix's ~28 hours of retries."""

# Lease tokens: unique across processes and machines (a random prefix per process) and
# cheap (a counter, not a system call per delivery).
_TOKEN_PREFIX = secrets.token_hex(8)
_token_numbers = itertools.count()


def _new_token() -> str:
    return f"{_TOKEN_PREFIX}-{next(_token_numbers)}"


class Claim(NamedTuple):
    """The answer of `IdempotencyStore.acquire` (a named tuple: cheap, on every delivery).

    Attributes:
        status: ``"acquired"``: run the handlers; ``"in_flight"``: another worker holds the
            lease right now; ``"done"``: this id was already processed successfully.
        token: Proves ownership of an acquired lease to `complete` and `release`.
    """

    status: Literal["acquired", "in_flight", "done"]
    token: str = ""


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where the dispatcher records which deliveries are in flight or done.

    Every method has a synchronous and an ``async`` form: `Dispatcher.handle` uses the
    first, `Dispatcher.handle_async` the second. An exception from `acquire` (a Redis
    outage, say) makes the dispatcher answer 503, so that Svix retries; no handler runs.
    When `complete` fails after the handlers succeeded, the delivery is answered 2xx and
    the dispatcher calls `complete` again until the store records it.
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

    async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """`acquire`, for the event loop."""
        ...

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """`complete`, for the event loop."""
        ...

    async def release_async(self, key: str, token: str) -> None:
        """`release`, for the event loop."""
        ...


_DONE = "done"
_CLAIM_DONE = Claim("done")
_CLAIM_IN_FLIGHT = Claim("in_flight")


class InMemoryIdempotencyStore:
    """An idempotency store for one process: thread-safe, bounded, with expiry.

    Enough for a single worker process. With several processes or machines behind a
    load balancer, use `RedisIdempotencyStore`: each process would otherwise have its own memory.

    Args:
        max_entries: At most this many ids are remembered; past it, the oldest 1 % are forgotten.
        clock: Returns monotonic seconds; for tests.
    """

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            from ._errors import WebhookConfigurationError

            raise WebhookConfigurationError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (holder token or "done", expiry). A plain dict, whose insertion order is
        # age order: half the memory of an OrderedDict per id, and fewer writes per delivery.
        self._entries: dict[str, tuple[str, float]] = {}
        # The oldest are forgotten in batches of 1 %: a dict deleted from the front one
        # key at a time would scan ever more deleted slots to find its oldest key.
        self._forget_batch = max(1, max_entries // 100)

    def __len__(self) -> int:
        """The number of ids remembered, in flight or done (expired ones may still count)."""
        return len(self._entries)

    # acquire/complete/release run on every delivery: each is one lock and a few
    # dictionary operations, written out rather than split into helpers.

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """Take the lease on ``key``, or report it in flight or done."""
        seconds = lease.total_seconds()
        with self._lock:
            entries = self._entries
            now = self._clock()
            entry = entries.get(key)
            if entry is not None:
                if entry[1] > now:
                    return _CLAIM_DONE if entry[0] == _DONE else _CLAIM_IN_FLIGHT
                del entries[key]  # expired
            token = _new_token()
            entries[key] = (token, now + seconds)  # a new key: appended, the youngest
            if len(entries) > self._max_entries:
                self._forget_oldest()
            return Claim("acquired", token)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """Mark ``key`` done, unless another worker took it since ``token``'s lease expired."""
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
            entries[key] = (_DONE, now + seconds)
            if entry is None and len(entries) > self._max_entries:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Over the bound: forget the oldest batch of ids (called with the lock held)."""
        entries = self._entries
        for oldest in list(itertools.islice(entries, self._forget_batch)):
            del entries[oldest]

    def release(self, key: str, token: str) -> None:
        """Free ``key``, if ``token`` still holds it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == token:
                del self._entries[key]

    # The lock is only held for dictionary operations, so the event loop may take it.
    async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """`acquire`, for the event loop."""
        return self.acquire(key, lease=lease)

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """`complete`, for the event loop."""
        self.complete(key, token, ttl=ttl)

    async def release_async(self, key: str, token: str) -> None:
        """`release`, for the event loop."""
        self.release(key, token)


# One round trip each, atomic in Redis.
_ACQUIRE = """
local value = redis.call('GET', KEYS[1])
if value then return value end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
_COMPLETE = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] or not value then
  return redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _milliseconds(delta: datetime.timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


def _as_text(value: object) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class RedisIdempotencyStore:
    """An idempotency store shared by many workers and machines, in Redis.

    Each id is one Redis key (``SET NX PX`` semantics, through small Lua scripts so that
    every step is one atomic round trip). Works with a synchronous ``redis.Redis`` and an
    asyncio ``redis.asyncio.Redis`` client (``pip install 'carecycle-webhooks[redis]'``):
    a synchronous client serves `Dispatcher.handle` and, in a worker thread,
    `Dispatcher.handle_async`; an asyncio client serves only `Dispatcher.handle_async`.

    Configure the client with socket timeouts, so that an unreachable Redis answers 503
    quickly rather than holding the request.

    Args:
        client: A ``redis.Redis`` or ``redis.asyncio.Redis`` (or a compatible client).
        prefix: Prepended to every key, to share a Redis database with other data.
    """

    def __init__(self, client: Any, *, prefix: str = "carecycle-webhooks:") -> None:  # noqa: ANN401 - any redis-py compatible client
        self._client = client
        self._prefix = prefix
        self._is_async = _is_async_client(client)

    @property
    def is_async(self) -> bool:
        """Whether the client is an asyncio client (usable only from `Dispatcher.handle_async`)."""
        return self._is_async

    def _eval_sync(self, *args: object) -> object:
        if self._is_async:
            raise _asyncio_client_error()
        result: object = self._client.eval(*args)
        if inspect.isawaitable(result):
            # An asyncio client that the constructor did not recognise: never sent.
            if inspect.iscoroutine(result):
                result.close()
            self._is_async = True
            raise _asyncio_client_error()
        return result

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """Take the lease on ``key``, or report it in flight or done."""
        token = _new_token()
        value = self._eval_sync(_ACQUIRE, 1, self._prefix + key, token, _milliseconds(lease))
        return _claim(_as_text(value), token)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """Mark ``key`` done, unless another worker took it since ``token``'s lease expired."""
        self._eval_sync(_COMPLETE, 1, self._prefix + key, token, _milliseconds(ttl))

    def release(self, key: str, token: str) -> None:
        """Free ``key``, if ``token`` still holds it."""
        self._eval_sync(_RELEASE, 1, self._prefix + key, token)

    async def _eval(self, *args: object) -> object:
        if self._is_async:
            result: object = self._client.eval(*args)
        else:
            result = await asyncio.to_thread(self._client.eval, *args)
        if inspect.isawaitable(result):
            awaitable: Awaitable[object] = result
            return await awaitable
        return result

    async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        """`acquire`, for the event loop."""
        token = _new_token()
        value = await self._eval(_ACQUIRE, 1, self._prefix + key, token, _milliseconds(lease))
        return _claim(_as_text(value), token)

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        """`complete`, for the event loop."""
        await self._eval(_COMPLETE, 1, self._prefix + key, token, _milliseconds(ttl))

    async def release_async(self, key: str, token: str) -> None:
        """`release`, for the event loop."""
        await self._eval(_RELEASE, 1, self._prefix + key, token)


def _is_async_client(client: object) -> bool:
    # redis.asyncio.Redis.eval is a plain method that returns a coroutine (so is its
    # cluster client's): its execute_command is the coroutine function that tells.
    return any(
        inspect.iscoroutinefunction(getattr(client, name, None)) for name in ("eval", "execute_command")
    )


def _asyncio_client_error() -> Exception:
    from ._errors import WebhookConfigurationError

    return WebhookConfigurationError(
        "this RedisIdempotencyStore has an asyncio client: use Dispatcher.handle_async "
        "(or a synchronous redis.Redis client)"
    )


def _claim(existing: str | None, token: str) -> Claim:
    if existing is None:
        return Claim("acquired", token)
    return _CLAIM_DONE if existing == _DONE else _CLAIM_IN_FLIGHT
