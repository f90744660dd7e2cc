"""The async driver of a delivery's flow: `drive_async`, on the event loop.

The same steps as `_drivers.drive`, each carried out with an ``await``: async def
handlers on the loop, plain ones in a worker thread, the store's ``*_async`` methods. A
cancelled request hands the rest of its delivery over to a task of its own. Kept apart
from `_drivers` so that synchronous processes never import asyncio.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from typing import TYPE_CHECKING, cast

from ._drivers import Run, _current, flow_for, take_note  # pyright: ignore[reportPrivateUsage]
from ._flow import Acquire, Complete, Failed, Note, Release, RunHandler, Wait
from ._running import PROPAGATED, cancel_requested, keep_handed_over, outlast_cancellation
from ._telemetry import handler_started

if TYPE_CHECKING:
    import datetime
    from collections.abc import Awaitable

    from ._drivers import Handler, Wiring
    from ._flow import Step
    from ._idempotency import AsyncIdempotencyStore, AsyncOrderedIdempotencyStore, Claim, Order
    from ._models import Event
    from ._otel import HandlerRun
    from ._responses import WebhookResponse
    from ._verify import WebhookDelivery

__all__ = ["drive_async"]


async def drive_async(
    wiring: Wiring, handlers: tuple[Handler, ...], event: Event, delivery: WebhookDelivery
) -> WebhookResponse:
    """Handle a verified delivery on the event loop (`Dispatcher.dispatch_async`)."""
    store = wiring.async_store
    if store is not None and handlers and wiring.missed.marks:
        await wiring.missed.record_async(store, wiring.done_ttl)
    flow = flow_for(wiring, handlers, event, with_store=store is not None)
    return await _carry_out(Run(wiring, flow, handlers, event, delivery), next(flow))


async def _carry_out(  # noqa: C901, PLR0912, PLR0915 - the async driver: every step, one loop, on every delivery
    run: Run, step: Step, thread: asyncio.Future[object] | None = None, watch: HandlerRun | None = None
) -> WebhookResponse:
    """Carry the flow's steps out on the event loop, from ``step`` to the answer.

    ``thread`` is the running thread of the handler of ``step``, when a cancelled
    request handed the rest of its delivery over to this call, in a task of its own;
    ``watch`` is that handler's telemetry, ended here.
    """
    wiring, flow, handlers, event, delivery = run.wiring, run.flow, run.handlers, run.event, run.delivery
    store = cast("AsyncIdempotencyStore", wiring.async_store)
    key, order = run.key, run.order
    stop: asyncio.CancelledError | None = None  # the loop is closing: start no handler
    handed_over = False
    token = _current.set(delivery)
    try:
        while True:
            outcome: Claim | Failed | None = None
            thrown: BaseException | None = None
            if isinstance(step, RunHandler):
                handler = handlers[step.index]
                try:
                    if thread is not None:
                        # Taken over from a cancelled request: its handler's thread first.
                        if await outlast_cancellation(thread):
                            stop = asyncio.CancelledError()
                        result, thread = thread.result(), None
                    elif stop is not None:
                        raise stop  # noqa: TRY301 - thrown into the flow below
                    elif id(handler) in wiring.async_handlers:  # async def: noted at registration
                        watch = handler_started(handler)
                        awaited = cast("Awaitable[object]", handler(event))
                        result = await (awaited if watch is None else watch.awaiting(awaited))
                    else:
                        # Sync handlers never block the loop; the thread runs in this context.
                        watch = handler_started(handler)
                        target = (handler, event) if watch is None else (watch.call, handler, event)
                        running: asyncio.Future[object] = asyncio.get_running_loop().run_in_executor(
                            None, functools.partial(contextvars.copy_context().run, *target)
                        )
                        try:
                            result = await asyncio.shield(running)
                        except asyncio.CancelledError as error:
                            raised = running.done() and not running.cancelled() and running.exception()
                            if raised is not error:
                                # The thread cannot be stopped: a task waits for it and finishes
                                # the delivery, so its outcome is recorded; this request ends now.
                                _hand_over(run, step, running, watch)
                                handed_over = True
                                raise
                            outcome, result = Failed(error), None  # the handler raised it: a failure
                    if result is not None and inspect.isawaitable(result):
                        await cast("Awaitable[object]", result)
                except PROPAGATED as error:
                    thrown = error
                except asyncio.CancelledError as error:
                    if handed_over:
                        raise
                    if cancel_requested():
                        thrown = error
                    else:  # raised by the handler, not a cancellation
                        outcome = Failed(error)
                except BaseException as error:  # noqa: BLE001 - reported as a 500, never raised to the caller
                    outcome = Failed(error)
                if watch is not None:
                    watch.ended(outcome.error if isinstance(outcome, Failed) else thrown)
                    watch = None
            elif isinstance(step, Note):
                take_note(run, step)
            elif isinstance(step, Wait):
                try:
                    await asyncio.sleep(step.seconds)
                except asyncio.CancelledError as error:
                    thrown = error
            elif isinstance(step, Acquire):
                try:
                    outcome = await (
                        store.acquire_async(key, lease=wiring.lease)
                        if order is None
                        else cast("AsyncOrderedIdempotencyStore", store).acquire_async(
                            key, lease=wiring.lease, order=order
                        )
                    )
                except Exception as error:  # noqa: BLE001 - any store failure: the flow decides
                    outcome = Failed(error, time.monotonic())
            else:
                record = step
                call = _record_async(store, record, key, order, wiring.done_ttl)
                if record.to_the_end:  # cut short once: now whatever cancellations arrive
                    work = asyncio.ensure_future(call)
                    await outlast_cancellation(work)
                    failure = asyncio.CancelledError() if work.cancelled() else work.exception()
                    outcome = None if failure is None else Failed(failure, time.monotonic())
                else:
                    try:
                        await call
                    except asyncio.CancelledError as error:
                        if cancel_requested():
                            thrown = error
                        else:  # the store raised it of its own accord: a failure
                            outcome = Failed(error, time.monotonic())
                    except Exception as error:  # noqa: BLE001 - any store failure: the flow decides
                        outcome = Failed(error, time.monotonic())
            step = flow.send(outcome) if thrown is None else flow.throw(thrown)
    except StopIteration as done:
        return cast("WebhookResponse", done.value)
    finally:
        _current.reset(token)


def _hand_over(run: Run, step: Step, thread: asyncio.Future[object], watch: HandlerRun | None) -> None:
    task = asyncio.get_running_loop().create_task(
        _carry_out(run, step, thread, watch), name=f"carecycle-webhooks: finishing {run.delivery.webhook_id}"
    )
    keep_handed_over(task)


def _record_async(
    store: AsyncIdempotencyStore,
    step: Complete | Release,
    key: str,
    order: Order | None,
    ttl: datetime.timedelta,
) -> Awaitable[None]:
    """The store call of a `Complete` or a `Release`, with the customer's order if any."""
    token = step.claim.token
    if order is not None:
        ordered = cast("AsyncOrderedIdempotencyStore", store)
        if isinstance(step, Complete):
            return ordered.complete_async(key, token, ttl=ttl, order=order)
        return ordered.release_async(key, token, order=order)
    if isinstance(step, Complete):
        return store.complete_async(key, token, ttl=ttl)
    return store.release_async(key, token)
