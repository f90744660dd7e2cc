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
import traceback
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar, cast, overload

from ._budget import DEFAULT_BODY_BUDGET, BodyBudget, process_budget
from ._errors import WebhookConfigurationError, WebhookPayloadError, WebhookVerificationError
from ._idempotency import DEFAULT_DONE_TTL, DEFAULT_LEASE, Claim, IdempotencyStore
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
from ._responses import (
    DUPLICATE,
    HANDLER_FAILED,
    IGNORED,
    IN_FLIGHT,
    JSON_HEADERS,
    NOT_BYTES,
    PROCESSED,
    STORE_UNAVAILABLE,
    WebhookResponse,
    body_too_large,
    invalid_payload,
    rejected,
)
from ._running import PROPAGATED, cancel_requested, keep_handed_over, outlast_cancellation, run_to_completion
from ._verify import DEFAULT_TOLERANCE, Headers, WebhookDelivery, WebhookVerifier, body_exceeds

if TYPE_CHECKING:
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


def _handler_name(handler: _Handler) -> str:
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{name}" if module else str(name)


def _safe_label(value: str) -> str:
    # Event types come from a signed payload, but logs deserve printable, bounded text.
    label = value[:100]
    return label if label.isprintable() else repr(label)


def _frames(error: BaseException) -> str:
    # Where it failed, without the exception's message, which may hold PHI.
    return "".join(traceback.format_list(traceback.extract_tb(error.__traceback__))).rstrip()


def _store_settings(
    ref: weakref.ReferenceType[Dispatcher],
) -> tuple[IdempotencyStore | None, datetime.timedelta] | None:
    """A dispatcher's store and done_ttl now, for its missed done marks; None once it is gone."""
    dispatcher = ref()
    return None if dispatcher is None else (dispatcher.idempotency_store, dispatcher.done_ttl)


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
    2xx (it was handled), and its "done" mark is recorded as soon as the store answers
    again (a background thread or event-loop task retries, at most a second apart),
    while the lease still keeps duplicates out.

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
        # record (it went down meanwhile): recorded as soon as the store answers again.
        self._missed = MissedDoneMarks(functools.partial(_store_settings, weakref.ref(self)))
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

    def _log_failure(
        self,
        error: BaseException,
        handler: _Handler,
        event: Event,
        delivery: WebhookDelivery,
        *,
        propagated: bool = False,
    ) -> None:
        extra = {"webhook_id": delivery.webhook_id, "event_type": event.event_type}
        # KeyboardInterrupt and SystemExit are raised on, to stop the process as asked.
        what = "was interrupted" if propagated else "failed"
        if self._log_exception_messages:
            logger.error(
                "handler %s %s on %s %s (attempt %s)",
                _handler_name(handler),
                what,
                _safe_label(event.event_type),
                delivery.webhook_id,
                delivery.attempt,
                exc_info=error,
                extra=extra,
            )
            return
        logger.error(
            "handler %s %s on %s %s (attempt %s): %s (message hidden: it may hold PHI)\n%s",
            _handler_name(handler),
            what,
            _safe_label(event.event_type),
            delivery.webhook_id,
            delivery.attempt,
            type(error).__qualname__,
            _frames(error),
            extra=extra,
        )

    def _store_failed(self, action: str, error: BaseException, delivery: WebhookDelivery) -> None:
        logger.error(
            "idempotency store failed to %s %s: %s: %s",
            action,
            delivery.webhook_id,
            type(error).__qualname__,
            error,
            extra={"webhook_id": delivery.webhook_id},
        )

    def _not_acquired(self, claim: Claim, delivery: WebhookDelivery) -> WebhookResponse:
        """The answer when the store did not hand this delivery's lease over."""
        status: object = claim.status
        if status == "done":
            logger.info("webhook %s already processed: handlers not run again", delivery.webhook_id)
            return DUPLICATE
        if status == "in_flight":
            logger.info("webhook %s is being processed by another worker: 409", delivery.webhook_id)
            return IN_FLIGHT
        # A store that breaks the protocol is a store failure: run nothing, Svix retries.
        logger.error(
            "idempotency store answered acquire %s with an unknown status %s",
            delivery.webhook_id,
            _safe_label(repr(status)),
            extra={"webhook_id": delivery.webhook_id},
        )
        return STORE_UNAVAILABLE

    def _failed(
        self, failure: tuple[_Handler, BaseException], event: Event, delivery: WebhookDelivery
    ) -> WebhookResponse:
        handler, error = failure
        self._log_failure(error, handler, event, delivery)
        return HANDLER_FAILED

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
        handlers = self.handlers_for(event)
        if not handlers:
            logger.debug("webhook %s: no handler for %s", delivery.webhook_id, _safe_label(event.event_type))
            return IGNORED
        store = self._store
        if store is None:
            failure = self._run(handlers, event, delivery)
            return PROCESSED if failure is None else self._failed(failure, event, delivery)
        if self._missed.marks:
            self._missed.record(store, self._done_ttl)
        try:
            claim = store.acquire(delivery.webhook_id, lease=self._lease)
        except Exception as error:  # noqa: BLE001 - any store failure: answer 503, run nothing
            self._store_failed("acquire", error, delivery)
            return STORE_UNAVAILABLE
        if claim.status != "acquired":
            return self._not_acquired(claim, delivery)
        try:
            failure = self._run(handlers, event, delivery)
        except BaseException:
            self._release(store, claim, delivery)  # KeyboardInterrupt or SystemExit: raised on
            raise
        if failure is not None:
            self._release(store, claim, delivery)
            return self._failed(failure, event, delivery)
        try:
            store.complete(delivery.webhook_id, claim.token, ttl=self._done_ttl)
        except Exception as error:  # noqa: BLE001 - handled already; Svix must not retry it
            self._store_failed("complete", error, delivery)
            self._missed.add(delivery.webhook_id, claim.token)
            self._missed.retry_in_thread()
        return PROCESSED

    def _release(self, store: IdempotencyStore, claim: Claim, delivery: WebhookDelivery) -> None:
        try:
            store.release(delivery.webhook_id, claim.token)
        except Exception as error:  # noqa: BLE001 - the lease expires on its own
            self._store_failed("release", error, delivery)

    def _run(
        self, handlers: tuple[_Handler, ...], event: Event, delivery: WebhookDelivery
    ) -> tuple[_Handler, BaseException] | None:
        token = _current.set(delivery)
        handler = handlers[0]
        try:
            for handler in handlers:
                result = handler(event)
                if result is not None and inspect.isawaitable(result):
                    run_to_completion(result)
        except PROPAGATED as error:
            self._log_failure(error, handler, event, delivery, propagated=True)
            raise
        except BaseException as error:  # noqa: BLE001 - reported as a 500, never raised to the caller
            return handler, error
        finally:
            _current.reset(token)
        return None

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

    async def dispatch_async(self, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        """`dispatch`, on the event loop (as `handle_async` runs handlers).

        Args:
            event: The parsed event.
            delivery: Its delivery's id, timestamp and attempt, as verified.

        Returns:
            The response `handle_async` would have given after verification and parsing.
        """
        handlers = self.handlers_for(event)
        if not handlers:
            logger.debug("webhook %s: no handler for %s", delivery.webhook_id, _safe_label(event.event_type))
            return IGNORED
        store = self._store
        if store is None:
            return await self._deliver_async(handlers, event, delivery, None, None)
        if self._missed.marks:
            await self._missed.record_async(store, self._done_ttl)
        try:
            claim = await store.acquire_async(delivery.webhook_id, lease=self._lease)
        except Exception as error:  # noqa: BLE001 - any store failure: answer 503, run nothing
            self._store_failed("acquire", error, delivery)
            return STORE_UNAVAILABLE
        if claim.status != "acquired":
            return self._not_acquired(claim, delivery)
        return await self._deliver_async(handlers, event, delivery, store, claim)

    async def _deliver_async(  # noqa: C901, PLR0912, PLR0913, PLR0915 - one delivery, start to end, in one coroutine: it runs on every delivery
        self,
        handlers: tuple[_Handler, ...],
        event: Event,
        delivery: WebhookDelivery,
        store: IdempotencyStore | None,
        claim: Claim | None,
        *,
        start: int = 0,
        thread: asyncio.Future[object] | None = None,
    ) -> WebhookResponse:
        """Run ``handlers[start:]``, then record the outcome in the store and answer.

        ``thread`` is the running thread of ``handlers[start]``, when a cancelled request
        handed the rest of its delivery over to this call, in a task of its own.
        """
        coroutine_functions = self._coroutine_functions
        failure: tuple[_Handler, BaseException] | None = None
        handed_over = False
        token = _current.set(delivery)
        handler = handlers[start]
        try:
            for index in range(start, len(handlers)):
                handler = handlers[index]
                if thread is not None:
                    # Taken over from a cancelled request: its handler's thread first.
                    cancelled = await outlast_cancellation(thread)
                    result, thread = thread.result(), None
                    if cancelled and index + 1 < len(handlers):
                        raise asyncio.CancelledError  # noqa: TRY301 - the loop is closing: start nothing more
                elif id(handler) in coroutine_functions:  # async def: noted at registration
                    await cast("Awaitable[object]", handler(event))
                    continue
                else:
                    # Sync handlers never block the loop; the thread runs in this context.
                    running = asyncio.get_running_loop().run_in_executor(
                        None, functools.partial(contextvars.copy_context().run, handler, event)
                    )
                    try:
                        result = await asyncio.shield(running)
                    except asyncio.CancelledError as error:
                        if running.done() and not running.cancelled() and running.exception() is error:
                            failure = handler, error  # the handler raised it: a failure like any other
                            break
                        # The thread cannot be stopped: a task waits for it and finishes
                        # the delivery, so its outcome is recorded; this request ends now.
                        self._hand_over(handlers, event, delivery, store, claim, start=index, thread=running)
                        handed_over = True
                        raise
                if result is not None and inspect.isawaitable(result):
                    await cast("Awaitable[object]", result)
        except (*PROPAGATED, asyncio.CancelledError) as error:
            if handed_over:
                raise  # the task that took the delivery over records its outcome
            if isinstance(error, asyncio.CancelledError) and not cancel_requested():
                failure = handler, error  # raised by the handler, not a cancellation
            else:
                # Cancelled while an async handler ran, or a handler raised KeyboardInterrupt
                # or SystemExit: free the lease, so that Svix's retry runs the handlers.
                if isinstance(error, PROPAGATED):
                    self._log_failure(error, handler, event, delivery, propagated=True)
                if store is not None and claim is not None:
                    await self._release_async(store, claim, delivery)
                raise
        except BaseException as error:  # noqa: BLE001 - reported as a 500, never raised to the caller
            failure = handler, error
        finally:
            _current.reset(token)
        if failure is not None:
            response = self._failed(failure, event, delivery)  # logged before the lease is freed
            if store is not None and claim is not None:
                await self._release_async(store, claim, delivery)
            return response
        if store is not None and claim is not None:
            await self._complete_async(store, claim, delivery)
        return PROCESSED

    async def _complete_async(self, store: IdempotencyStore, claim: Claim, delivery: WebhookDelivery) -> None:
        try:
            await store.complete_async(delivery.webhook_id, claim.token, ttl=self._done_ttl)
        except asyncio.CancelledError as error:
            if not cancel_requested():  # the store raised it of its own accord: a failure
                self._complete_failed(error, claim, delivery)
                return
            # Cut short: the handlers succeeded, so record it anyway (a repeated complete
            # changes nothing), then the cancellation goes on.
            await self._record_through_cancellation("complete", store, claim, delivery)
            raise
        except Exception as error:  # noqa: BLE001 - handled already; Svix must not retry it
            self._complete_failed(error, claim, delivery)

    def _complete_failed(self, error: BaseException, claim: Claim, delivery: WebhookDelivery) -> None:
        self._store_failed("complete", error, delivery)
        self._missed.add(delivery.webhook_id, claim.token)
        self._missed.retry_in_task()

    async def _release_async(self, store: IdempotencyStore, claim: Claim, delivery: WebhookDelivery) -> None:
        try:
            await store.release_async(delivery.webhook_id, claim.token)
        except asyncio.CancelledError as error:
            if not cancel_requested():  # the store raised it of its own accord: a failure
                self._store_failed("release", error, delivery)
                return
            # Cut short: free the lease anyway (a repeated release changes nothing), so that
            # Svix's retry need not wait for it to expire.
            await self._record_through_cancellation("release", store, claim, delivery)
            raise
        except Exception as error:  # noqa: BLE001 - the lease expires on its own
            self._store_failed("release", error, delivery)

    async def _record_through_cancellation(
        self,
        action: Literal["complete", "release"],
        store: IdempotencyStore,
        claim: Claim,
        delivery: WebhookDelivery,
    ) -> None:
        """Run ``complete`` or ``release`` again, to its end, whatever cancellations arrive."""
        if action == "complete":
            call = store.complete_async(delivery.webhook_id, claim.token, ttl=self._done_ttl)
        else:
            call = store.release_async(delivery.webhook_id, claim.token)
        work = asyncio.ensure_future(call)
        await outlast_cancellation(work)
        error: BaseException | None = asyncio.CancelledError() if work.cancelled() else work.exception()
        if error is None:
            return
        if action == "complete":
            self._complete_failed(error, claim, delivery)
        else:
            self._store_failed(action, error, delivery)

    def _hand_over(  # noqa: PLR0913 - the delivery's whole state
        self,
        handlers: tuple[_Handler, ...],
        event: Event,
        delivery: WebhookDelivery,
        store: IdempotencyStore | None,
        claim: Claim | None,
        *,
        start: int,
        thread: asyncio.Future[object],
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._deliver_async(handlers, event, delivery, store, claim, start=start, thread=thread),
            name=f"carecycle-webhooks: finishing {delivery.webhook_id}",
        )
        keep_handed_over(task)
