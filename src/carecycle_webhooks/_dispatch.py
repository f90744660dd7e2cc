"""The dispatcher: verify, parse, deduplicate and route deliveries to typed handlers.

Framework-neutral: `Dispatcher.handle` and `Dispatcher.handle_async` take the raw body
and the headers and return a `WebhookResponse`; the framework adapters only convert
requests and responses around them.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar, cast, overload

from ._budget import DEFAULT_BODY_BUDGET, BodyBudget, process_budget
from ._errors import WebhookConfigurationError, WebhookPayloadError, WebhookVerificationError
from ._flow import (
    Acquire,
    Complete,
    Failed,
    KeepMissed,
    Note,
    Release,
    RunHandler,
    Wait,
    delivery_flow,
)
from ._idempotency import DEFAULT_DONE_TTL, DEFAULT_LEASE, Claim, IdempotencyStore
from ._logs import log_note
from ._missed import MissedDoneMarks
from ._models import (
    EVENT_MODELS,
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    EventType,
    UnknownEvent,
    event_type_key,
)
from ._parse import parse_unverified_event
from ._responses import JSON_HEADERS, NOT_BYTES, WebhookResponse, body_too_large, invalid_payload, rejected
from ._running import PROPAGATED, cancel_requested, keep_handed_over, outlast_cancellation, run_to_completion
from ._verify import DEFAULT_TOLERANCE, Headers, WebhookDelivery, WebhookVerifier, body_exceeds

if TYPE_CHECKING:
    from ._flow import Flow, Step
    from ._models import Event

__all__ = ["DEFAULT_MAX_BODY_SIZE", "JSON_HEADERS", "Dispatcher", "WebhookResponse", "current_delivery"]

logger = logging.getLogger("carecycle_webhooks")

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
"""Bodies larger than this (10 MiB) are answered 413 before any parsing."""

# Bodies above this are verified and parsed in a worker thread by handle_async.
_PREPARE_IN_THREAD_ABOVE = 256 * 1024

_CreatedHandler = TypeVar("_CreatedHandler", bound=Callable[[CustomerCreatedEvent], object])
_UpdatedHandler = TypeVar("_UpdatedHandler", bound=Callable[[CustomerUpdatedEvent], object])
_CallHandler = TypeVar("_CallHandler", bound=Callable[[CallCompletedEvent], object])
_UnknownHandler = TypeVar("_UnknownHandler", bound=Callable[[UnknownEvent], object])
_AnyHandler = TypeVar(
    "_AnyHandler",
    bound=Callable[[CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent | UnknownEvent], object],
)

_Handler = Callable[..., object]
_H = TypeVar("_H", bound=_Handler)

_current: contextvars.ContextVar[WebhookDelivery] = contextvars.ContextVar("carecycle_webhooks_delivery")


def current_delivery() -> WebhookDelivery:
    """The delivery whose handlers are running: its ``webhook-id``, timestamp and attempt.

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


class Dispatcher:
    """Receives careCycle deliveries and routes each event to its typed handlers.

    Build one per endpoint, register handlers with `on` (and optionally `catch_all`), and
    call `handle` or `handle_async` from your framework, or use a framework adapter::

        webhooks = Dispatcher("whsec_...", idempotency_store=InMemoryIdempotencyStore())

        @webhooks.on("customer.created")
        def created(event: CustomerCreatedEvent) -> None: ...

    Several handlers may be registered for one event type: they run one after the
    other, in registration order, and the first that raises stops the rest and makes
    the delivery fail (500), so that Svix retries it and every handler runs again: keep
    handlers idempotent, or register one per event type. The catch-all runs for events
    with no handler of their own, `UnknownEvent` included.

    With an idempotency store, a delivery is handled once: see the docs' status table.
    When the store goes down after the handlers succeeded, the delivery is still answered
    2xx (it was handled): its "done" mark is tried again within the request for a few
    seconds, and past that recorded by the dispatcher's next delivery, while the lease
    still keeps duplicates out. Nothing of ours runs in the background.

    Args:
        secret: The endpoint's ``whsec_...`` secret, or several during a rotation.
        tolerance: How far a delivery's timestamp may be from now.
        idempotency_store: Where processed ``webhook-id`` s are remembered; ``None``
            runs the handlers for every delivery, duplicates included.
        max_body_size: Larger bodies are answered 413 before any parsing.
        body_budget: How many bytes of request bodies the framework adapters may hold
            at once. A delivery that does not fit is answered 503 with ``Retry-After``
            before its body is read, so Svix retries it. By default 32 MiB
            (`DEFAULT_BODY_BUDGET`), shared by every dispatcher of the process that keeps
            the default; ``max_body_size`` if that is larger. A number given here is
            this dispatcher's own budget.
        lease: How long one worker holds a delivery while its handlers run.
        done_ttl: How long a processed ``webhook-id`` is remembered.
        log_exception_messages: Also log handlers' exception messages and tracebacks
            in full. Off by default: messages may hold PHI.
        clock: Current time in seconds since the epoch, for the tolerance; for tests.

    Raises:
        WebhookConfigurationError: An invalid secret, tolerance or option.
    """

    def __init__(  # noqa: PLR0913 - every option is keyword-only and has a safe default
        self,
        secret: str | Sequence[str],
        *,
        tolerance: datetime.timedelta = DEFAULT_TOLERANCE,
        idempotency_store: IdempotencyStore | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_budget: int | None = None,
        lease: datetime.timedelta = DEFAULT_LEASE,
        done_ttl: datetime.timedelta = DEFAULT_DONE_TTL,
        log_exception_messages: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = WebhookVerifier(secret, tolerance=tolerance, clock=clock)
        if idempotency_store is not None and not isinstance(idempotency_store, IdempotencyStore):
            raise WebhookConfigurationError(
                "idempotency_store must implement IdempotencyStore "
                "(InMemoryIdempotencyStore, RedisIdempotencyStore, or your own)"
            )
        size: object = max_body_size  # options are checked at runtime too
        if not isinstance(size, int) or size < 1:
            raise WebhookConfigurationError("max_body_size must be a positive number of bytes")
        budget: object = max(DEFAULT_BODY_BUDGET, max_body_size) if body_budget is None else body_budget
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < max_body_size:
            raise WebhookConfigurationError(
                "body_budget must be a number of bytes at least max_body_size, "
                "or one delivery of the largest size could never be read"
            )
        durations: dict[str, object] = {"lease": lease, "done_ttl": done_ttl}
        for name, value in durations.items():
            if not isinstance(value, datetime.timedelta) or value <= datetime.timedelta(0):
                raise WebhookConfigurationError(f"{name} must be a positive datetime.timedelta")
        # Read-only once built (see the properties below): a delivery in progress never
        # sees its options change.
        self._store = idempotency_store
        self._max_body_size = max_body_size
        self._body_budget: int = budget
        # What the adapters hold now, against body_budget (they reach it by reservation_for).
        # By default, every dispatcher of the process shares one budget: it bounds the process.
        self._bodies = (
            process_budget() if budget == DEFAULT_BODY_BUDGET and body_budget is None else BodyBudget(budget)
        )
        self._lease = lease
        self._done_ttl = done_ttl
        self._log_exception_messages = log_exception_messages
        # Tuples, rebuilt on registration: a delivery only looks its handlers up.
        self._handlers: dict[str, tuple[_Handler, ...]] = {}
        # Deliveries whose handlers succeeded but whose "done" mark the store could not
        # record, even when tried again within the request: the next delivery records them.
        self._missed = MissedDoneMarks()
        self._catch_all: tuple[_Handler, ...] = ()
        self._coroutine_functions: set[int] = set()  # id() of the async def handlers

    @property
    def verifier(self) -> WebhookVerifier:
        """The verifier of the endpoint's secrets and tolerance, for work queues."""
        return self._verifier

    @property
    def idempotency_store(self) -> IdempotencyStore | None:
        """Where processed ``webhook-id`` s are remembered, or ``None``."""
        return self._store

    @property
    def max_body_size(self) -> int:
        """Bodies larger than this many bytes are answered 413."""
        return self._max_body_size

    @property
    def body_budget(self) -> int:
        """How many bytes of request bodies the adapters hold at once, at most."""
        return self._body_budget

    @property
    def lease(self) -> datetime.timedelta:
        """How long one worker holds a delivery while its handlers run."""
        return self._lease

    @property
    def done_ttl(self) -> datetime.timedelta:
        """How long a processed ``webhook-id`` is remembered."""
        return self._done_ttl

    @property
    def log_exception_messages(self) -> bool:
        """Whether handlers' exception messages are logged (off by default: they may hold PHI)."""
        return self._log_exception_messages

    def __repr__(self) -> str:
        types_ = ", ".join(sorted(self._handlers)) or "none"
        return f"Dispatcher(handlers for: {types_}; catch-all: {bool(self._catch_all)})"

    # ------------------------------------------------------------------ registration

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        event_type: Literal["customer.created", EventType.CUSTOMER_CREATED] | type[CustomerCreatedEvent],
        /,
    ) -> Callable[[_CreatedHandler], _CreatedHandler]: ...
    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        event_type: Literal["customer.updated", EventType.CUSTOMER_UPDATED] | type[CustomerUpdatedEvent],
        /,
    ) -> Callable[[_UpdatedHandler], _UpdatedHandler]: ...
    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        event_type: Literal["call.completed", EventType.CALL_COMPLETED] | type[CallCompletedEvent],
        /,
    ) -> Callable[[_CallHandler], _CallHandler]: ...
    @overload
    def on(self, event_type: EventType, /) -> Callable[[_AnyHandler], _AnyHandler]: ...  # type: ignore[overload-overlap]
    @overload
    def on(self, event_type: str, /) -> Callable[[_UnknownHandler], _UnknownHandler]: ...
    def on(self, event_type: str | type[object], /) -> Callable[[_H], _H]:
        """Register the decorated function as a handler of one event type.

        Args:
            event_type: ``"customer.created"``, ``EventType.CUSTOMER_CREATED`` or
                ``CustomerCreatedEvent`` (likewise for the other events). A string this
                version does not know registers a handler of `UnknownEvent` s of that type.

        Returns:
            A decorator that registers the handler and returns it unchanged. Type checkers
            reject a handler whose parameter does not accept the event.

        Raises:
            WebhookConfigurationError: Not an event type, or the decorated object is not callable.
        """
        key = self._key(event_type)

        def register(handler: _H) -> _H:
            if not callable(handler):
                raise WebhookConfigurationError(f"a handler must be callable, not {type(handler).__name__}")
            self._handlers[key] = (*self._handlers.get(key, ()), handler)
            self._note_coroutine_function(handler)
            return handler

        return register

    @staticmethod
    def _key(event_type: object) -> str:
        if (isinstance(event_type, str) and event_type) or event_type in EVENT_MODELS.values():
            # Any string: an event type this version does not know reaches UnknownEvent handlers.
            return event_type_key(event_type, catalog_only=False)
        raise WebhookConfigurationError(
            "on() takes an event type such as 'customer.created', EventType.CUSTOMER_CREATED "
            f"or CustomerCreatedEvent, not {event_type!r}; use catch_all for everything else"
        )

    def catch_all(self, handler: _AnyHandler) -> _AnyHandler:
        """Register the decorated function for every event that has no handler of its own.

        That includes `UnknownEvent` s, so the handler's parameter must accept `Event`.

        Returns:
            The handler, unchanged.

        Raises:
            WebhookConfigurationError: The decorated object is not callable.
        """
        if not callable(handler):
            raise WebhookConfigurationError(f"a handler must be callable, not {type(handler).__name__}")
        self._catch_all = (*self._catch_all, handler)
        self._note_coroutine_function(handler)
        return handler

    def _note_coroutine_function(self, handler: _Handler) -> None:
        # Looked up once here rather than on every delivery by handle_async. The
        # handler tuples keep every handler alive, so its id() stays its own.
        if inspect.iscoroutinefunction(handler):
            self._coroutine_functions.add(id(handler))

    def handlers_for(self, event: Event) -> tuple[Callable[..., object], ...]:
        """The handlers a delivery of ``event`` runs, in order."""
        return self._handlers.get(event.event_type) or self._catch_all

    # ------------------------------------------------------------------ handling

    def _prepare(
        self, body: bytes | str, headers: Headers
    ) -> WebhookResponse | tuple[Event, WebhookDelivery]:
        data: object = body  # checked at runtime too: callers are not always type-checked
        if not isinstance(data, (bytes, str, bytearray, memoryview)):
            return NOT_BYTES
        if body_exceeds(body, self._max_body_size):  # a str by its UTF-8 size
            return body_too_large(self._max_body_size)
        try:
            delivery = self._verifier.verify(body, headers)
        except WebhookVerificationError as error:
            logger.warning("webhook rejected (%s): %s", error.reason, error)
            return rejected(error)
        try:
            event = parse_unverified_event(body)
        except WebhookPayloadError as error:
            logger.warning(
                "webhook %s is correctly signed but not a valid event: %s", delivery.webhook_id, error
            )
            return invalid_payload(error)
        return event, delivery

    def _note(
        self, note: Note, handlers: tuple[_Handler, ...], event: Event, delivery: WebhookDelivery
    ) -> None:
        """Carry out a step of the flow that takes no time: a log line, a missed mark kept."""
        if isinstance(note, KeepMissed):
            self._missed.add(delivery.webhook_id, note.claim.token)
        else:
            log_note(note, handlers, event, delivery, with_messages=self._log_exception_messages)

    def handle(self, body: bytes | str, headers: Headers) -> WebhookResponse:
        """Verify, parse, deduplicate and dispatch one delivery, synchronously.

        Async handlers run too: with ``asyncio.run`` when no event loop is running in this
        thread, otherwise on a loop of their own in a helper thread (this call blocks
        until they finish). Under an event loop, prefer `handle_async`.

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers.

        Returns:
            The response for Svix; see the status table in the docs. Never raises for
            any delivery: bad input and failing handlers become 4xx/5xx responses.
        """
        prepared = self._prepare(body, headers)
        if isinstance(prepared, WebhookResponse):
            return prepared
        return self.dispatch(*prepared)

    def dispatch(self, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        """Deduplicate and run the handlers of an event that was verified already.

        For work queues: the endpoint verifies the delivery (`WebhookVerifier.verify`) and
        queues the raw body with its `WebhookDelivery`; a worker parses the body with
        `parse_unverified_event` and calls this. The answer says what happened: 2xx done
        (or a duplicate), 409 in flight elsewhere, 500 a handler failed, 503 store down:
        retry the job on anything but 2xx.

        Args:
            event: The parsed event.
            delivery: Its delivery's id, timestamp and attempt, as verified.

        Returns:
            The response `handle` would have given after verification and parsing.
        """
        # The sync driver of the delivery's flow (see _flow): it only carries steps out.
        handlers = self.handlers_for(event)
        store = self._store
        if store is not None and handlers and self._missed.marks:
            self._missed.record(store, self._done_ttl)
        flow = delivery_flow(len(handlers), with_store=store is not None)
        webhook_id = delivery.webhook_id
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
                    self._note(step, handlers, event, delivery)
                elif isinstance(step, Wait):
                    time.sleep(step.seconds)
                else:
                    outcome = self._store_call(cast("IdempotencyStore", store), step, webhook_id)
                step = flow.send(outcome)
        except StopIteration as stop:
            return cast("WebhookResponse", stop.value)
        finally:
            _current.reset(token)

    async def handle_async(self, body: bytes | str, headers: Headers) -> WebhookResponse:
        """Verify, parse, deduplicate and dispatch one delivery, on the event loop.

        Async handlers are awaited; sync handlers run in a worker thread
        (``asyncio.to_thread``), so they never block the loop. Bodies over 256 KiB are
        verified and parsed in a worker thread too.

        Cancelling this call (a timeout around it, a server shutting down) cancels an async
        handler that is running, and frees the lease so that Svix's retry runs the
        delivery again. A sync handler's thread cannot be stopped: the call ends at once,
        and a task of the delivery's own waits for that thread and records its outcome as
        the call would have (the remaining handlers run, then the id is marked done; or a
        failure is logged and the lease freed), so a retry never runs it beside the thread,
        nor again after it succeeded.

        A handler's ``KeyboardInterrupt`` and ``SystemExit`` propagate (the lease is freed
        first); every other exception, ``BaseException`` subclasses included, is a handler
        failure (500). Neither is logged with its message.

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers.

        Returns:
            The response for Svix. Never raises for any delivery.
        """
        data: object = body  # checked at runtime too: callers are not always type-checked
        if isinstance(data, (bytes, str, bytearray)) and len(data) > _PREPARE_IN_THREAD_ABOVE:
            # The HMAC and the parse of a large body take milliseconds: not on the loop.
            prepared = await asyncio.to_thread(self._prepare, body, headers)
        else:
            prepared = self._prepare(body, headers)
        if isinstance(prepared, WebhookResponse):
            return prepared
        return await self.dispatch_async(*prepared)

    def _store_call(self, store: IdempotencyStore, step: Step, webhook_id: str) -> Claim | Failed | None:
        try:
            if isinstance(step, Acquire):
                return store.acquire(webhook_id, lease=self._lease)
            if isinstance(step, Complete):
                store.complete(webhook_id, step.claim.token, ttl=self._done_ttl)
            else:
                store.release(webhook_id, cast("Release", step).claim.token)
        except Exception as error:  # noqa: BLE001 - any store failure: the flow decides
            return Failed(error, time.monotonic())
        return None

    async def dispatch_async(self, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        """`dispatch`, on the event loop (as `handle_async` runs handlers).

        Args:
            event: The parsed event.
            delivery: Its delivery's id, timestamp and attempt, as verified.

        Returns:
            The response `handle_async` would have given after verification and parsing.
        """
        handlers = self.handlers_for(event)
        store = self._store
        if store is not None and handlers and self._missed.marks:
            await self._missed.record_async(store, self._done_ttl)
        flow = delivery_flow(len(handlers), with_store=store is not None)
        return await self._drive_async(flow, next(flow), handlers, event, delivery)

    async def _drive_async(  # noqa: C901, PLR0912, PLR0913, PLR0915, PLR0917 - the async driver: every step, one loop, on every delivery
        self,
        flow: Flow,
        step: Step,
        handlers: tuple[_Handler, ...],
        event: Event,
        delivery: WebhookDelivery,
        thread: asyncio.Future[object] | None = None,
    ) -> WebhookResponse:
        """Carry the flow's steps out on the event loop, from ``step`` to the answer.

        ``thread`` is the running thread of the handler of ``step``, when a cancelled
        request handed the rest of its delivery over to this call, in a task of its own.
        """
        store = cast("IdempotencyStore", self._store)
        webhook_id = delivery.webhook_id
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
                        elif id(handler) in self._coroutine_functions:  # async def: noted at registration
                            result = await cast("Awaitable[object]", handler(event))
                        else:
                            # Sync handlers never block the loop; the thread runs in this context.
                            running = asyncio.get_running_loop().run_in_executor(
                                None, functools.partial(contextvars.copy_context().run, handler, event)
                            )
                            try:
                                result = await asyncio.shield(running)
                            except asyncio.CancelledError as error:
                                raised = running.done() and not running.cancelled() and running.exception()
                                if raised is not error:
                                    # The thread cannot be stopped: a task waits for it and finishes
                                    # the delivery, so its outcome is recorded; this request ends now.
                                    self._hand_over(flow, step, handlers, event, delivery, running)
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
                elif isinstance(step, Note):
                    self._note(step, handlers, event, delivery)
                elif isinstance(step, Wait):
                    try:
                        await asyncio.sleep(step.seconds)
                    except asyncio.CancelledError as error:
                        thrown = error
                elif isinstance(step, Acquire):
                    try:
                        outcome = await store.acquire_async(webhook_id, lease=self._lease)
                    except Exception as error:  # noqa: BLE001 - any store failure: the flow decides
                        outcome = Failed(error, time.monotonic())
                else:
                    record = step
                    call = (
                        store.complete_async(webhook_id, record.claim.token, ttl=self._done_ttl)
                        if isinstance(record, Complete)
                        else store.release_async(webhook_id, record.claim.token)
                    )
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

    def _hand_over(  # noqa: PLR0913, PLR0917 - the delivery's whole state
        self,
        flow: Flow,
        step: Step,
        handlers: tuple[_Handler, ...],
        event: Event,
        delivery: WebhookDelivery,
        thread: asyncio.Future[object],
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._drive_async(flow, step, handlers, event, delivery, thread),
            name=f"carecycle-webhooks: finishing {delivery.webhook_id}",
        )
        keep_handed_over(task)


def _run_sync(handler: _Handler, event: Event) -> Failed | None:
    """Run one handler from synchronous code: ``None``, or its failure."""
    try:
        result = handler(event)
        if result is not None and inspect.isawaitable(result):
            run_to_completion(result)
    except PROPAGATED:
        raise
    except BaseException as error:  # noqa: BLE001 - reported as a 500, never raised to the caller
        return Failed(error)
    return None
