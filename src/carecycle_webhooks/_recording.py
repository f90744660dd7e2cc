"""Testing an integration: which handlers ran with which events, on a store of the test's own.

Both tools work on a `Dispatcher` that already exists, such as the module-level ``webhooks``
that the guides build, and undo what they did when their ``with`` block ends:

- `record_handlers` wraps the handlers that a delivery runs (sync and async, registered
  before or during the block) and lists each call as a `HandlerCall`;
- `override_idempotency_store` puts another store in the dispatcher's place (a fresh
  `InMemoryIdempotencyStore` per test, typically), so that no test sees another's ids.

The pytest plugin's ``carecycle_handler_calls`` fixture does both for every test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, cast, overload

from ._config import new_secret
from ._drivers import current_delivery

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._dispatch import Dispatcher
    from ._idempotency import AsyncIdempotencyStore, IdempotencyStore
    from ._models import Event
    from ._verify import WebhookDelivery

__all__ = ["HandlerCall", "HandlerCalls", "override_idempotency_store", "record_handlers"]

Handler = Callable[..., object]


@dataclasses.dataclass(frozen=True)
class HandlerCall:
    """One call of a handler by the dispatcher, as `record_handlers` saw it.

    Attributes:
        name: The handler's ``__name__`` (``"sync_customer"``).
        handler: The handler itself, as registered.
        event: The event it was given.
        delivery: The delivery's ``webhook-id``, timestamp and attempt.
        error: What the handler raised (the delivery was then answered 500), or ``None``.
            Kept for the test to look at: the dispatcher's log leaves the message out, as
            it may hold PHI.
    """

    name: str
    handler: Callable[..., object] = dataclasses.field(repr=False)
    event: Event = dataclasses.field(repr=False)
    delivery: WebhookDelivery | None = dataclasses.field(repr=False)
    error: BaseException | None = dataclasses.field(default=None, repr=False)

    def __repr__(self) -> str:
        # Ids and types only: the event's own repr redacts PHI, but a test log needs none of it.
        webhook_id = self.delivery.webhook_id if self.delivery else None
        failed = f", raised {type(self.error).__name__}" if self.error is not None else ""
        return f"HandlerCall({self.name!r}, {self.event.event_type!r}, {webhook_id!r}{failed})"


class HandlerCalls(Sequence[HandlerCall]):  # noqa: PLW1641 - unhashable: the calls change
    """The handler calls that `record_handlers` saw, oldest first (a read-only sequence).

    ::

        assert calls.names == ["sync_customer"]
        assert calls.events("sync_customer")[0].first_name == "Ana"
    """

    def __init__(self) -> None:
        """An empty record."""
        self._calls: list[HandlerCall] = []
        self._lock = threading.Lock()  # sync handlers run in worker threads under handle_async

    def _add(self, call: HandlerCall) -> None:
        with self._lock:
            self._calls.append(call)

    @overload
    def __getitem__(self, index: int) -> HandlerCall: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[HandlerCall]: ...
    def __getitem__(self, index: int | slice) -> HandlerCall | Sequence[HandlerCall]:
        """One call, or a list of them."""
        with self._lock:
            return self._calls[index]

    def __len__(self) -> int:
        """How many calls were recorded."""
        return len(self._calls)

    def __repr__(self) -> str:
        with self._lock:
            return f"HandlerCalls({self._calls!r})"

    def __eq__(self, other: object) -> bool:
        """Equal to a list or tuple of the same calls (``calls == []`` after no delivery).

        Not hashable, then: the calls change as they are recorded.
        """
        if isinstance(other, HandlerCalls):
            other = other[:]
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        with self._lock:
            return self._calls == list(other)  # pyright: ignore[reportUnknownArgumentType]

    @property
    def names(self) -> list[str]:
        """The handlers' names, one per call, in call order."""
        with self._lock:
            return [call.name for call in self._calls]

    def events(self, handler: str | Callable[..., object] | None = None) -> list[Event]:
        """The events handled, in call order; only those of ``handler`` (a name or the function) if given."""
        with self._lock:
            return [call.event for call in self._calls if _matches(call, handler)]

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        with self._lock:
            self._calls.clear()


def _matches(call: HandlerCall, handler: str | Callable[..., object] | None) -> bool:
    if handler is None:
        return True
    if isinstance(handler, str):
        return call.name == handler
    return call.handler is handler


def _name(handler: Handler) -> str:
    name = getattr(handler, "__name__", None)
    return name if isinstance(name, str) else type(handler).__name__


def _delivery() -> WebhookDelivery | None:
    try:
        return current_delivery()
    except LookupError:  # called by hand, outside a dispatcher
        return None


def _recording(handler: Handler, calls: HandlerCalls, *, coroutine_function: bool) -> Handler:
    """``handler``, wrapped so that each call is added to ``calls`` once it returns or raises."""
    name = _name(handler)

    def record(event: Event, error: BaseException | None) -> None:
        calls._add(HandlerCall(name, handler, event, _delivery(), error))  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - our own record

    async def finish(event: Event, awaitable: Awaitable[object]) -> object:
        try:
            result = await awaitable
        except BaseException as error:
            record(event, error)
            raise
        record(event, None)
        return result

    if coroutine_function:

        async def recorded_async(event: Event) -> object:
            return await finish(event, cast("Awaitable[object]", handler(event)))

        wrapper: Handler = recorded_async
    else:

        def recorded(event: Event) -> object:
            try:
                result = handler(event)
            except BaseException as error:
                record(event, error)
                raise
            if result is not None and inspect.isawaitable(result):
                return finish(event, result)  # the driver awaits it: recorded once it is done
            record(event, None)
            return result

        wrapper = recorded
    # The dispatcher's log names a failed handler by these: the handler's own.
    functools.update_wrapper(wrapper, handler, updated=())
    return wrapper


@contextlib.contextmanager
def record_handlers(dispatcher: Dispatcher) -> Generator[HandlerCalls, None, None]:
    """Record which handlers ``dispatcher`` runs, with which events, until the block ends.

    Every handler that a delivery runs is seen: sync and async ones, the catch-all, and
    handlers registered while the block runs. A call is recorded when the handler returns
    or raises; the handlers themselves run unchanged. ``on()`` returned them unchanged, so
    calling a handler by hand is not recorded.

    ::

        with record_handlers(webhooks) as calls:
            client.post("/webhooks", data=delivery.body, headers=dict(delivery.headers))
        assert calls.names == ["sync_customer"]

    Args:
        dispatcher: The dispatcher whose handlers to record.

    Yields:
        The calls, added to as deliveries are handled.
    """
    calls = HandlerCalls()
    # Instance attributes: a recording nested in another finds the outer one's.
    lookup = dispatcher.handlers_for
    shadowed = vars(dispatcher).get("handlers_for")
    wrappers: dict[int, tuple[Handler, Handler]] = {}  # id(handler) -> (handler, its wrapper)
    coroutine_functions: set[int] = dispatcher._coroutine_functions  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - the drivers' set
    lock = threading.Lock()

    def wrapped(handler: Handler) -> Handler:
        with lock:
            known = wrappers.get(id(handler))
            if known is None or known[0] is not handler:
                is_async = id(handler) in coroutine_functions
                wrapper = _recording(handler, calls, coroutine_function=is_async)
                if is_async:
                    # The async driver awaits the handlers noted as async def: the wrapper is one.
                    coroutine_functions.add(id(wrapper))
                known = wrappers[id(handler)] = (handler, wrapper)
            return known[1]

    def handlers_for(event: Event) -> tuple[Handler, ...]:
        return tuple(wrapped(handler) for handler in lookup(event))

    dispatcher.handlers_for = handlers_for  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        if shadowed is None:
            del dispatcher.handlers_for
        else:
            dispatcher.handlers_for = shadowed  # type: ignore[method-assign]
        for _, wrapper in wrappers.values():
            coroutine_functions.discard(id(wrapper))


@contextlib.contextmanager
def override_idempotency_store(
    dispatcher: Dispatcher, store: IdempotencyStore | AsyncIdempotencyStore | None
) -> Generator[None, None, None]:
    """Use ``store`` as ``dispatcher``'s idempotency store until the block ends.

    For a dispatcher built at module level, with the store of production (a SQLite file,
    Redis): each test gets a store of its own, so that a ``webhook-id`` one test sent is
    no duplicate in the next, and the real store is not touched. ``None`` runs the
    handlers for every delivery, duplicates included. The dispatcher's other options stay.

    ::

        with override_idempotency_store(webhooks, InMemoryIdempotencyStore()):
            ...

    Adapters check a store where their view is built: give one that serves the views
    already built (`InMemoryIdempotencyStore` serves them all).

    Args:
        dispatcher: The dispatcher whose store to replace.
        store: The store to use meanwhile, or ``None`` for none.

    Raises:
        WebhookConfigurationError: ``store`` is not an idempotency store, or does not keep
            customer order while the dispatcher skips out-of-order events.
    """
    from ._dispatch import Dispatcher

    # A dispatcher of the same options, built with the new store, says how the drivers call it
    # (its secret, random, is never used).
    model = Dispatcher(
        new_secret(),
        idempotency_store=store,
        lease=dispatcher.lease,
        done_ttl=dispatcher.done_ttl,
        log_exception_messages=dispatcher.log_exception_messages,
        skip_out_of_order=dispatcher.skip_out_of_order,  # a store that cannot keep the order: refused
    )
    wiring = dispatcher._wiring  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - put back below
    new = model._wiring  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    fields = ("_store", "_transactional", "_missed")
    saved = {name: getattr(dispatcher, name) for name in fields}
    saved_wiring = (wiring.sync_store, wiring.async_store, wiring.missed)
    for name in fields:
        setattr(dispatcher, name, getattr(model, name))
    # Done marks the old store missed belong to it, not to the new one.
    wiring.sync_store, wiring.async_store, wiring.missed = new.sync_store, new.async_store, new.missed
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(dispatcher, name, value)
        wiring.sync_store, wiring.async_store, wiring.missed = saved_wiring
