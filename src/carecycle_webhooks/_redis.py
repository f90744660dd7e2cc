"""`RedisIdempotencyStore`: the idempotency store for many workers and machines.

Each ``webhook-id`` is one Redis key, changed by small Lua scripts, so that every step is
one atomic round trip. Every call has a deadline of its own: a client's retries multiply
its socket timeout, and Svix stops waiting for an answer after 15 s. A synchronous
client's calls run in a few threads of the store (`_Runner`), so that the caller can stop
waiting when the deadline passes. Customer order (``skip_out_of_order``): `_redis_order`'s
scripts, which change a delivery's key and its customer's in one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import functools
import inspect
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from ._idempotency import Claim, claim_from, new_token
from ._redis_order import ACQUIRE_ORDERED, COMPLETE_ORDERED, RELEASE_ORDERED, ordered_claim

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._idempotency import Order

__all__ = ["RedisIdempotencyStore"]


# One round trip each, atomic in Redis. A client may send a script again with the same
# arguments when a reply is lost (redis-py retries on a timeout or a dropped connection):
# every script answers a repeat as it answered the first. So acquire treats a key that
# holds its own token as acquired: the first attempt took the lease.
_ACQUIRE = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then return false end
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

_FALLBACK_TIMEOUT = 5.0
"""Seconds a call may take when the client does not say its socket timeout."""

_MAX_DEFAULT_TIMEOUT = 10.0
"""The default deadline never exceeds this: Svix stops waiting for an answer after 15 s."""

_THREADS = 16
"""At most this many calls of one store's synchronous client run at once (in its threads)."""

_MAX_OVERDUE = 16
"""While this many calls that timed out still wait for Redis, new calls fail at once."""

_FREE_LOST_LEASE_DELAYS = (0.0, 1.0)
"""When a failed acquire's lease is released: at once, then once more a second later."""

_IDLE_SECONDS = 30.0
"""A thread of a store that has had no call for this long ends."""


def _milliseconds(delta: datetime.timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


def _as_text(value: object) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _took_lease(result: object, token: str) -> bool:
    """Whether an acquire with ``token`` that answered ``result`` holds the lease now."""
    return bool(token) and claim_from(_as_text(result), token).status == "acquired"


def _release_args(call: _Call) -> tuple[object, ...]:
    """The release of the lease an acquire ``call`` may have taken (with its customer's, if ordered)."""
    args = call.args
    if args[1] == 1:
        return (_RELEASE, 1, args[2], call.token)
    return (RELEASE_ORDERED, 2, args[2], args[3], call.token)


# The life of one call: queued (threads only), running, then finished, or given up by its
# caller: dropped if it had not started (never sent), overdue if it had.
_QUEUED, _RUNNING, _FINISHED, _DROPPED, _OVERDUE = range(5)


class _Call:
    """One script call, and what its caller and the thread or task running it know of it."""

    __slots__ = ("args", "context", "error", "result", "state", "token", "wake")

    def __init__(self, args: tuple[object, ...], token: str, wake: Callable[[], object], state: int) -> None:
        self.args = args
        self.token = token  # an acquire's: its lease is freed if taken after its caller gave up
        self.wake = wake  # tells the caller that the call finished
        self.state = state
        self.context = contextvars.copy_context()  # the caller's (tracing, logging)
        self.result: object = None
        self.error: BaseException | None = None

    def outcome(self) -> object:
        """The finished call's result, or its exception raised."""
        error = self.error
        if error is not None:
            self.error = None  # no cycle through the traceback
            raise error
        return self.result


class _Runner:
    """Runs one store's calls so that their callers can stop waiting at the deadline.

    A synchronous client's calls run in a few threads (at most `_THREADS`, started when
    needed, ending after `_IDLE_SECONDS` without work); the caller waits for the reply with
    a timeout. A call still queued when its caller gives up is never sent. One already sent
    goes on until the client itself gives up (its own timeouts and retries): an acquire
    that takes the lease after its caller gave up (503) then frees it, so that Svix's
    retry is not answered 409 for a whole lease. While `_MAX_OVERDUE` such calls are still
    running (asyncio tasks, for an asyncio client), Redis is evidently not answering, and
    new calls fail at once rather than pile up.
    """

    def __init__(self, client: Any) -> None:  # noqa: ANN401 - any redis-py compatible client
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.overdue = 0
        self._client = client
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0  # threads free for a call that nobody has claimed yet
        self._waiting = 0  # calls queued with no thread free, each taken by the next one freed
        self._tasks: set[asyncio.Task[object]] = set()  # overdue: the loop keeps weak references

    def submit(self, call: _Call) -> None:
        """Queue ``call`` for a thread, starting one when none is idle."""
        with self.lock:
            if self.overdue >= _MAX_OVERDUE:
                raise _busy(self.overdue)
            if self._idle:
                self._idle -= 1  # an idle thread will take it
            elif self._threads < _THREADS:
                # Started under the lock, so that the count stays true; the thread needs no lock to start.
                threading.Thread(target=self._work, name=_THREAD_NAME, daemon=True).start()
                self._threads += 1
            else:
                self._waiting += 1  # the next thread to finish a call takes it
        self._queue.put(call)

    def _work(self) -> None:
        get, lock = self._queue.get, self.lock
        while True:
            try:
                call = get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with lock:
                    if self._idle:  # else a call is on its way to this thread
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            with lock:
                start = call.state == _QUEUED
                if start:
                    call.state = _RUNNING
            if start:
                self._run(call)
            with lock:
                if self._waiting:
                    self._waiting -= 1  # a call queued while every thread was busy: take it next
                else:
                    self._idle += 1

    def _run(self, call: _Call) -> None:
        result: object = None
        error: BaseException | None = None
        try:
            result = call.context.run(self._client.eval, *call.args)
        except BaseException as caught:  # noqa: BLE001 - handed to the caller's thread
            error = caught
        with self.lock:
            overdue = call.state == _OVERDUE
            if not overdue:
                call.state = _FINISHED
                call.result, call.error = result, error
        if not overdue:
            call.wake()
            if error is not None and call.token:
                self._free_lost_lease(call)
            return
        try:  # nobody waits for this reply
            if inspect.iscoroutine(result):
                result.close()  # an asyncio client used synchronously: never sent
            elif error is None and _took_lease(result, call.token):
                call.context.run(self._client.eval, *_release_args(call))
            elif error is not None and call.token:  # its reply lost too: Redis may have run it
                self._free_lost_lease(call)
        except Exception:  # noqa: BLE001, S110 - the lease expires on its own
            pass
        finally:
            with self.lock:
                self.overdue -= 1

    def _free_lost_lease(self, call: _Call) -> None:
        """An acquire failed (a socket timeout, say): free the lease it may have taken anyway.

        Redis may still run a script whose reply was lost, taking a lease under a token
        that nobody holds: Svix's retries would get 409 until it expires. Its release is
        harmless if it did not; it is tried now and once more a second later (Redis may
        still be stalled), in this thread, after the caller was answered.
        """
        with self.lock:
            self.overdue += 1
        try:
            for delay in _FREE_LOST_LEASE_DELAYS:
                time.sleep(delay)
                try:
                    call.context.run(self._client.eval, *_release_args(call))
                except Exception:  # noqa: BLE001, S112 - not yet: tried once more, then it expires
                    continue
                return
        finally:
            with self.lock:
                self.overdue -= 1

    def give_up(self, call: _Call) -> bool:
        """The caller stops waiting for ``call``; whether it finished meanwhile (then use it)."""
        with self.lock:
            if call.state == _FINISHED:
                return True
            if call.state == _QUEUED:
                call.state = _DROPPED
            else:
                call.state = _OVERDUE
                self.overdue += 1
            return False

    def leave(self, call: _Call, task: asyncio.Task[object]) -> None:
        """The caller stops waiting for an asyncio call: it goes on in ``task``, counted."""
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved: asyncio must not log it
            return
        self.give_up(call)
        with self.lock:
            self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a task that works for a call nobody waits for, counted as overdue until it ends."""
        with self.lock:
            self.overdue += 1
            self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def forget_closed_loops(self) -> None:
        """Forget overdue tasks of event loops that were closed without cancelling them.

        Such a task never runs again, so it would count as overdue for good (and, at
        fourteen more, make every call fail at once). Nobody is left to await it either:
        asyncio is told not to log it when it is collected.
        """
        if not self._tasks:
            return
        with self.lock:
            closed = [task for task in self._tasks if task.get_loop().is_closed()]
            for task in closed:
                self._tasks.discard(task)
                self.overdue -= 1
                with contextlib.suppress(AttributeError):
                    task._log_destroy_pending = False  # type: ignore[attr-defined]  # noqa: SLF001  # pyright: ignore[reportAttributeAccessIssue]

    def _task_done(self, task: asyncio.Task[object]) -> None:
        with self.lock:
            # The set and the count change together, under the lock: one store may serve
            # several threads' event loops, and a task forgotten with its closed loop is
            # counted out once only.
            if task in self._tasks:
                self._tasks.discard(task)
                self.overdue -= 1
        if not task.cancelled():
            task.exception()  # None: an overdue attempt keeps its failure to itself


_THREAD_NAME = "carecycle-webhooks: redis calls"


def _busy(overdue: int) -> TimeoutError:
    return TimeoutError(
        f"Redis has not answered {overdue} calls that timed out yet: "
        "this RedisIdempotencyStore sends no more until it does"
    )


def _settle(waiter: asyncio.Future[bool], answered: bool) -> None:  # noqa: FBT001 - a callback's argument
    if not waiter.done():
        waiter.set_result(answered)


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[bool]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, waiter, True)  # noqa: FBT003 - a callback's argument


def _default_timeout(client: object) -> float:
    """Twice the client's socket timeout, if it tells (redis-py does), at most 10 s; else 5 s."""
    value: object = None
    try:
        kwargs: object = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
        if isinstance(kwargs, dict):
            value = cast("dict[str, object]", kwargs).get("socket_timeout")
    except Exception:  # noqa: BLE001, S110 - any client: then the fallback
        pass
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return min(2.0 * value, _MAX_DEFAULT_TIMEOUT)
    return _FALLBACK_TIMEOUT


class RedisIdempotencyStore:
    """An idempotency store shared by many workers and machines, in Redis.

    Each id is one Redis key (``SET NX PX`` semantics, through small Lua scripts so that
    every step is one atomic round trip). Works with a synchronous ``redis.Redis`` and an
    asyncio ``redis.asyncio.Redis`` client (``pip install 'carecycle-webhooks[redis]'``):
    a synchronous client serves `Dispatcher.handle` and `Dispatcher.handle_async`; an
    asyncio client serves only `Dispatcher.handle_async`.

    Every call has a deadline, ``timeout``, whatever the client's own timeouts and
    retries: a Redis that is stalled or unreachable raises `TimeoutError` by then, and the
    dispatcher answers 503 before Svix stops waiting (15 s). Configure the client with
    socket timeouts too (``socket_timeout=2, socket_connect_timeout=2``): the default
    deadline follows them. A synchronous client's calls run in a few threads of the store
    (at most 16 at once), so that the caller can stop waiting; a call that timed out after
    it was sent finishes there (or in a task, for an asyncio client), and an acquire that
    took its lease meanwhile frees it. While 16 calls that timed out still wait for Redis,
    new calls fail at once.

    Args:
        client: A ``redis.Redis`` or ``redis.asyncio.Redis`` (or a compatible client).
        prefix: Prepended to every key, to share a Redis database with other data.
        timeout: How long one call may take. By default twice the client's socket timeout
            (one attempt, and one retry on a dropped connection), at most 10 s; 5 s when the
            client does not say it.

    Raises:
        WebhookConfigurationError: ``timeout`` is not a positive `datetime.timedelta`.
    """

    keeps_order = True
    """It keeps customer order (``skip_out_of_order``): see `OrderedIdempotencyStore`."""

    def __init__(
        self,
        client: Any,  # noqa: ANN401 - any redis-py compatible client
        *,
        prefix: str = "carecycle-webhooks:",
        timeout: datetime.timedelta | None = None,
    ) -> None:
        if timeout is None:
            seconds = _default_timeout(client)
        else:
            value: object = timeout  # checked at runtime too
            if not isinstance(value, datetime.timedelta) or value <= datetime.timedelta(0):
                from ._errors import WebhookConfigurationError

                raise WebhookConfigurationError("timeout must be a positive datetime.timedelta")
            seconds = timeout.total_seconds()
        self._client = client
        self._prefix = prefix
        self._seconds = seconds
        self._is_async = _is_async_client(client)
        self._runner = _Runner(client)

    def _ordered(self, script: str, key: str, order: Order, *args: object) -> tuple[object, ...]:
        """A script's arguments: the id's key, its customer's lease and mark (`_redis_order`)."""
        prefix = self._prefix
        customer = order.key
        keys = (prefix + key, prefix + "customer-lease:" + customer, prefix + "customer-mark:" + customer)
        return (script, 3, *keys, *args, order.position)

    @property
    def is_async(self) -> bool:
        """Whether the client is an asyncio client (usable only from `Dispatcher.handle_async`)."""
        return self._is_async

    @property
    def timeout(self) -> datetime.timedelta:
        """How long one call may take before it raises `TimeoutError`."""
        return datetime.timedelta(seconds=self._seconds)

    def _current_runner(self) -> _Runner:
        runner = self._runner
        if runner.pid != os.getpid():
            # A forked child (gunicorn --preload, multiprocessing) has none of its parent's
            # threads, and maybe a lock a parent's thread held: a runner of its own.
            runner = self._runner = _Runner(self._client)
        return runner

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(
            f"Redis did not answer within {self._seconds:g} s (RedisIdempotencyStore timeout)"
        )

    def _eval_sync(self, args: tuple[object, ...], token: str = "") -> object:
        if self._is_async:
            raise _asyncio_client_error()
        runner = self._current_runner()
        done = threading.Lock()
        done.acquire()
        call = _Call(args, token, done.release, _QUEUED)
        runner.submit(call)
        try:
            answered = done.acquire(timeout=self._seconds)
        except BaseException:
            runner.give_up(call)  # interrupted: the call goes on without us
            raise
        if not answered and not runner.give_up(call):
            raise self._timed_out()
        result = call.outcome()
        if inspect.isawaitable(result):
            # An asyncio client that the constructor did not recognise: never sent.
            if inspect.iscoroutine(result):
                result.close()
            self._is_async = True
            raise _asyncio_client_error()
        return result

    def acquire(self, key: str, *, lease: datetime.timedelta, order: Order | None = None) -> Claim:
        """Take the lease on ``key``, or report it in flight, done or (with ``order``) stale."""
        token = new_token()
        if order is None:
            value = self._eval_sync((_ACQUIRE, 1, self._prefix + key, token, _milliseconds(lease)), token)
            return claim_from(_as_text(value), token)
        value = self._eval_sync(
            self._ordered(ACQUIRE_ORDERED, key, order, token, _milliseconds(lease)), token
        )
        return ordered_claim(_as_text(value), token)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        """Mark ``key`` done (with ``order``, its customer's mark too), unless another took it since."""
        if order is None:
            self._eval_sync((_COMPLETE, 1, self._prefix + key, token, _milliseconds(ttl)))
        else:
            self._eval_sync(self._ordered(COMPLETE_ORDERED, key, order, token, _milliseconds(ttl)))

    def release(self, key: str, token: str, *, order: Order | None = None) -> None:
        """Free ``key`` (and, with ``order``, its customer), if ``token`` still holds it."""
        if order is None:
            self._eval_sync((_RELEASE, 1, self._prefix + key, token))
        else:
            self._eval_sync(self._ordered(RELEASE_ORDERED, key, order, token))

    async def _eval(self, args: tuple[object, ...], token: str = "") -> object:
        runner = self._current_runner()
        if self._is_async:
            runner.forget_closed_loops()
            if runner.overdue >= _MAX_OVERDUE:
                raise _busy(runner.overdue)
            return await self._await(runner, self._client.eval(*args), args, token)
        # A synchronous client: in a thread of the runner, which wakes this loop when done.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        call = _Call(args, token, functools.partial(_wake, loop, waiter), _QUEUED)
        runner.submit(call)
        timer = loop.call_later(self._seconds, _settle, waiter, False)  # noqa: FBT003 - a callback's argument
        try:
            answered = await waiter
        except BaseException:
            runner.give_up(call)  # cancelled: the call goes on without us
            raise
        finally:
            timer.cancel()
        if not answered and not runner.give_up(call):
            raise self._timed_out()
        result = call.outcome()
        if inspect.isawaitable(result):  # an asyncio client that the constructor did not recognise
            return await self._await(runner, result, args, token)
        return result

    async def _await(
        self, runner: _Runner, awaitable: Awaitable[object], args: tuple[object, ...], token: str
    ) -> object:
        """Await an asyncio client's call until the deadline; past it, the call goes on in its task."""
        call = _Call(args, token, _nothing, _RUNNING)
        task = asyncio.ensure_future(self._attempt(call, awaitable))
        try:
            await asyncio.wait((task,), timeout=self._seconds)
        except BaseException:
            runner.leave(call, task)  # cancelled
            raise
        if task.done():
            return task.result()
        runner.leave(call, task)
        raise self._timed_out()

    async def _free_lost_lease_async(self, call: _Call) -> None:
        """`_Runner._free_lost_lease`, for an asyncio client."""
        for delay in _FREE_LOST_LEASE_DELAYS:
            await asyncio.sleep(delay)
            try:
                released = self._client.eval(*_release_args(call))
                if inspect.isawaitable(released):
                    await released
            except Exception:  # noqa: BLE001, S112 - not yet: tried once more, then it expires
                continue
            return

    async def _attempt(self, call: _Call, awaitable: Awaitable[object]) -> object:
        # Not cancelled at the deadline: a cancelled redis-py call drops its connection,
        # but Redis may still run the script it sent, taking a lease nobody would free.
        try:
            result = await awaitable
        except Exception:
            if call.token:  # an acquire: free the lease it may have taken anyway
                self._current_runner().track(asyncio.ensure_future(self._free_lost_lease_async(call)))
            if call.state == _OVERDUE:
                return None  # nobody waits for it
            raise
        if call.state == _OVERDUE and _took_lease(result, call.token):
            try:
                released = self._client.eval(*_release_args(call))
                if inspect.isawaitable(released):
                    await released
            except Exception:  # noqa: BLE001, S110 - the lease expires on its own
                pass
        return result

    async def acquire_async(
        self, key: str, *, lease: datetime.timedelta, order: Order | None = None
    ) -> Claim:
        """`acquire`, for the event loop."""
        token = new_token()
        if order is None:
            value = await self._eval((_ACQUIRE, 1, self._prefix + key, token, _milliseconds(lease)), token)
            return claim_from(_as_text(value), token)
        value = await self._eval(
            self._ordered(ACQUIRE_ORDERED, key, order, token, _milliseconds(lease)), token
        )
        return ordered_claim(_as_text(value), token)

    async def complete_async(
        self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None
    ) -> None:
        """`complete`, for the event loop."""
        if order is None:
            await self._eval((_COMPLETE, 1, self._prefix + key, token, _milliseconds(ttl)))
        else:
            await self._eval(self._ordered(COMPLETE_ORDERED, key, order, token, _milliseconds(ttl)))

    async def release_async(self, key: str, token: str, *, order: Order | None = None) -> None:
        """`release`, for the event loop."""
        if order is None:
            await self._eval((_RELEASE, 1, self._prefix + key, token))
        else:
            await self._eval(self._ordered(RELEASE_ORDERED, key, order, token))


def _nothing() -> None:
    pass


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
