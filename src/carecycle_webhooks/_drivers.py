"""The drivers of a delivery's flow: they carry its steps out, and decide nothing.

`_flow.delivery_flow` says what to do next (acquire, run a handler, complete...). `drive`
does each step in the calling thread; `_drivers_async.drive_async` does each on the event
loop, where a cancelled request can hand the rest of its delivery over to a task of its
own. What a driver needs from its dispatcher is built once, as `Wiring`; what it needs of
one delivery travels as one `Run`.

This module does not import asyncio: a synchronous process (a WSGI app, an AWS Lambda
function) never pays for it, unless a handler is ``async def``.
"""

from __future__ import annotations

import contextvars
import datetime
import hashlib
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ._flow import (
    Acquire,
    Complete,
    Failed,
    KeepMissed,
    Note,
    Release,
    RunHandler,
    StoreFailed,
    Wait,
    delivery_flow,
)
from ._idempotency import Order
from ._logs import log_note
from ._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent
from ._running import PROPAGATED, run_to_completion
from ._telemetry import handler_started, store_failed

if TYPE_CHECKING:
    from ._flow import Flow, Step
    from ._idempotency import AsyncIdempotencyStore, Claim, IdempotencyStore, OrderedIdempotencyStore
    from ._missed import MissedDoneMarks
    from ._models import Event
    from ._responses import WebhookResponse
    from ._verify import WebhookDelivery

__all__ = ["Handler", "Run", "Wiring", "current_delivery", "drive", "take_note"]

Handler = Callable[..., object]

_current: contextvars.ContextVar[WebhookDelivery] = contextvars.ContextVar("carecycle_webhooks_delivery")


def current_delivery() -> WebhookDelivery:
    """The delivery whose handlers are running: its ``webhook-id``, timestamp, attempt and tenant.

    Call it from inside a handler, sync or async (it follows the handler into worker
    threads and tasks)::

        @webhooks.on("call.completed")
        def store_call(event: CallCompletedEvent) -> None:
            delivery = current_delivery()
            save(event, idempotency_key=delivery.webhook_id)

    Raises:
        LookupError: Called outside a handler run by a `Dispatcher`.
    """
    try:
        return _current.get()
    except LookupError:
        pass
    raise LookupError("current_delivery() is only available inside a webhook handler")


class Wiring:
    """What the drivers need from their dispatcher, built once with it."""

    __slots__ = (
        "async_handlers",
        "async_store",
        "done_ttl",
        "lease",
        "missed",
        "skip_out_of_order",
        "skip_test_customers",
        "sync_store",
        "with_messages",
    )

    def __init__(  # noqa: PLR0913 - the dispatcher's options, once
        self,
        *,
        sync_store: IdempotencyStore | None,
        async_store: AsyncIdempotencyStore | None,
        lease: datetime.timedelta,
        done_ttl: datetime.timedelta,
        missed: MissedDoneMarks,
        with_messages: bool,
        async_handlers: set[int],
        skip_out_of_order: bool = False,
        skip_test_customers: bool = False,
    ) -> None:
        self.sync_store = sync_store
        self.async_store = async_store
        self.lease = lease
        self.done_ttl = done_ttl
        self.missed = missed  # done marks the store missed, recorded by the next delivery
        self.with_messages = with_messages  # log handlers' exception messages
        self.async_handlers = async_handlers  # id() of the async def handlers
        self.skip_out_of_order = skip_out_of_order  # customer events carry an Order to the store
        self.skip_test_customers = skip_test_customers


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MAX_KEY_LENGTH = 200  # a tenant key (128) and "/sha256:" and 64 hex digits fit too
_MICROSECOND = datetime.timedelta(microseconds=1)


def store_key(delivery: WebhookDelivery) -> str:
    """The delivery's key in the store: its ``webhook-id``, within its tenant if it has one.

    A tenant key holds no ``/`` (see `_tenants.is_tenant_key`), so no two tenants share a key.
    """
    tenant = delivery.tenant
    if tenant is None:
        return delivery.webhook_id
    key = f"{tenant}/{delivery.webhook_id}"
    if len(key) <= _MAX_KEY_LENGTH:
        return key
    # A store's key column holds 256 characters (Django's): a long tenant key and a long
    # webhook-id are kept apart by the id's digest instead (64 hex digits).
    return f"{tenant}/sha256:{hashlib.sha256(delivery.webhook_id.encode()).hexdigest()}"


def customer_order(event: Event, tenant: str | None) -> Order | None:
    """A customer event's place in its customer's history, within its tenant; else ``None``."""
    if type(event) is not CustomerUpdatedEvent and type(event) is not CustomerCreatedEvent:
        return None
    customer = str(event.id)
    return Order(
        customer if tenant is None else f"{tenant}/{customer}", (event.updated_at - _EPOCH) // _MICROSECOND
    )


def is_test_customer(event: Event) -> bool:
    """Whether the event is about a customer marked ``testCustomer``."""
    if type(event) is CallCompletedEvent:
        return event.customer is not None and event.customer.test_customer is True
    if type(event) is CustomerUpdatedEvent or type(event) is CustomerCreatedEvent:
        return event.test_customer is True
    return False


class Run:
    """One delivery on its way through the flow."""

    __slots__ = ("delivery", "event", "flow", "handlers", "key", "order", "wiring")

    def __init__(
        self,
        wiring: Wiring,
        flow: Flow,
        handlers: tuple[Handler, ...],
        event: Event,
        delivery: WebhookDelivery,
    ) -> None:
        self.wiring = wiring
        self.flow = flow
        self.handlers = handlers
        self.event = event
        self.delivery = delivery
        self.key = store_key(delivery)
        self.order = customer_order(event, delivery.tenant) if wiring.skip_out_of_order else None


def flow_for(wiring: Wiring, handlers: tuple[Handler, ...], event: Event, *, with_store: bool) -> Flow:
    test_customer = wiring.skip_test_customers and is_test_customer(event)
    return delivery_flow(len(handlers), with_store=with_store, test_customer=test_customer)


def drive(
    wiring: Wiring, handlers: tuple[Handler, ...], event: Event, delivery: WebhookDelivery
) -> WebhookResponse:
    """Handle a verified delivery in the calling thread (`Dispatcher.dispatch`)."""
    store = wiring.sync_store
    if store is not None and handlers and wiring.missed.marks:
        wiring.missed.record(store, wiring.done_ttl)
    flow = flow_for(wiring, handlers, event, with_store=store is not None)
    run = Run(wiring, flow, handlers, event, delivery)
    token = _current.set(delivery)
    try:
        step = next(flow)
        while True:
            outcome: Claim | Failed | None = None
            if type(step) is RunHandler:
                try:
                    outcome = _run_sync(handlers[step.index], event)
                except PROPAGATED as error:  # raised on by the flow, once the lease is freed
                    step = flow.throw(error)
                    continue
            elif isinstance(step, Note):
                take_note(run, step)
            elif isinstance(step, Wait):
                time.sleep(step.seconds)
            else:
                outcome = _store_call(run, cast("IdempotencyStore", store), step)
            step = flow.send(outcome)
    except StopIteration as stop:
        return cast("WebhookResponse", stop.value)
    finally:
        _current.reset(token)


def take_note(run: Run, note: Note) -> None:
    """Carry out a step of the flow that takes no time: a log line, a missed mark kept."""
    if isinstance(note, KeepMissed):
        run.wiring.missed.add(run.key, note.claim.token, run.order)
    else:
        if isinstance(note, StoreFailed):
            store_failed(note.action, note.error)
        log_note(note, run.handlers, run.event, run.delivery, with_messages=run.wiring.with_messages)


def _store_call(run: Run, store: IdempotencyStore, step: Step) -> Claim | Failed | None:
    wiring, key, order = run.wiring, run.key, run.order
    try:
        if order is not None:  # only a store that keeps order is given one (see Dispatcher)
            ordered = cast("OrderedIdempotencyStore", store)
            if isinstance(step, Acquire):
                return ordered.acquire(key, lease=wiring.lease, order=order)
            if isinstance(step, Complete):
                ordered.complete(key, step.claim.token, ttl=wiring.done_ttl, order=order)
            else:
                ordered.release(key, cast("Release", step).claim.token, order=order)
        elif isinstance(step, Acquire):
            return store.acquire(key, lease=wiring.lease)
        elif isinstance(step, Complete):
            store.complete(key, step.claim.token, ttl=wiring.done_ttl)
        else:
            store.release(key, cast("Release", step).claim.token)
    except Exception as error:  # noqa: BLE001 - any store failure: the flow decides
        return Failed(error, time.monotonic())
    return None


def _run_sync(handler: Handler, event: Event) -> Failed | None:
    """Run one handler from synchronous code: ``None``, or its failure."""
    watch = handler_started(handler)  # None without telemetry
    if watch is None:
        return _run_plain(handler, event)
    try:  # its span current around the handler (and asyncio.run of an async one)
        outcome = watch.call(_run_plain, handler, event)
    except PROPAGATED as error:
        watch.ended(error)
        raise
    watch.ended(None if outcome is None else outcome.error)
    return outcome


def _run_plain(handler: Handler, event: Event) -> Failed | None:
    try:
        result = handler(event)
        if result is not None and inspect.isawaitable(result):
            run_to_completion(result)
    except PROPAGATED:
        raise
    except BaseException as error:  # noqa: BLE001 - reported as a 500, never raised to the caller
        return Failed(error)
    return None
