"""The dispatcher: verify, parse, deduplicate and route deliveries to typed handlers.

Framework-neutral: `Dispatcher.handle` and `Dispatcher.handle_async` take the raw body
and the headers and return a `WebhookResponse`; the framework adapters only convert
requests and responses around them.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

from ._budget import DEFAULT_BODY_BUDGET, BodyBudget, process_budget
from ._config import secrets_from_environment
from ._drivers import Handler, Wiring, current_delivery, drive
from ._errors import WebhookConfigurationError, WebhookPayloadError, WebhookVerificationError
from ._idempotency import (
    DEFAULT_DONE_TTL,
    DEFAULT_LEASE,
    AsyncIdempotencyStore,
    IdempotencyStore,
    TransactionalIdempotencyStore,
    keeps_order,
    serves,
)
from ._missed import MissedDoneMarks
from ._models import (
    EVENT_MODELS,
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    UnknownEvent,
    event_type_key,
    not_in_catalog,
)
from ._parse import parse_unverified_event
from ._registration import HandlerRegistration, NotAnEventTypeOfTheCatalog, check_handler
from ._responses import (
    JSON_HEADERS,
    NOT_BYTES,
    WebhookResponse,
    body_too_large,
    invalid_payload,
    rejected,
)
from ._telemetry import observed_dispatch, observed_dispatch_async, observed_handle, observed_handle_async
from ._tenants import ResolverFailed, SecretResolver, TenantSecrets, resolve, resolve_async
from ._verify import DEFAULT_TOLERANCE, Headers, WebhookDelivery, WebhookVerifier, body_exceeds

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._models import Event

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_SECRET_CACHE_TTL",
    "JSON_HEADERS",
    "Dispatcher",
    "NotAnEventTypeOfTheCatalog",
    "WebhookResponse",
    "current_delivery",
]

logger = logging.getLogger("carecycle_webhooks")

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
"""Bodies larger than this (10 MiB) are answered 413 before any parsing."""

DEFAULT_SECRET_CACHE_TTL = datetime.timedelta(minutes=1)
"""How long a secret resolver's answer for a tenant is kept: a rotation takes effect within it."""

# Bodies above this are verified and parsed in a worker thread by handle_async.
_PREPARE_IN_THREAD_ABOVE = 256 * 1024

_H = TypeVar("_H", bound=Handler)
_AnyEventHandler = TypeVar(
    "_AnyEventHandler",
    bound=Callable[[CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent | UnknownEvent], object],
)


class Dispatcher(HandlerRegistration):
    """Receives careCycle deliveries and routes each event to its typed handlers.

    Build one per endpoint, register handlers with `on` (and optionally `catch_all`), and
    call `handle` or `handle_async` from your framework, or use a framework adapter::

        # The secret from $CARECYCLE_WEBHOOK_SECRET; or Dispatcher("whsec_...", ...)
        webhooks = Dispatcher(idempotency_store=InMemoryIdempotencyStore())

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
        secret: The endpoint's ``whsec_...`` secret, or several during a rotation. By
            default, the ``CARECYCLE_WEBHOOK_SECRET`` environment variable, read once,
            here: one secret, or several separated by spaces. For many tenants on one
            endpoint, a *resolver*: a function, sync or ``async``, that takes a tenant key
            (the ``tenant`` path parameter of the adapters, or ``handle(..., tenant=...)``)
            and returns that tenant's secret or secrets, or ``None`` for a tenant it does
            not know (answered 404, before any verification). Its answers are kept for
            ``secret_cache_ttl``.
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
        skip_out_of_order: Acknowledge (2xx, ``"stale"``) and do not handle a customer
            event whose ``updatedAt`` is older than the newest one already processed for
            that customer; equal or newer ones run. Needs an idempotency store (every
            store of this package keeps the order, atomically with the delivery's lease).
            ``call.completed`` is not affected.
        skip_test_customers: Acknowledge (2xx, ``"test_customer"``) and do not handle
            customer events whose ``testCustomer`` is true, and ``call.completed`` events
            whose customer is one. For production.
        secret_cache_ttl: With a secret resolver: how long its answer for a tenant (a
            secret, or unknown) is kept. A rotated secret takes effect within it.
        clock: Current time in seconds since the epoch, for the tolerance; for tests.

    Raises:
        WebhookConfigurationError: An invalid secret, tolerance or option; without a
            secret, ``CARECYCLE_WEBHOOK_SECRET`` unset, empty or invalid (the message names
            the variable, never its value).
    """

    def __init__(  # noqa: PLR0913 - every option is keyword-only and has a safe default
        self,
        secret: str | Sequence[str] | SecretResolver | None = None,
        *,
        tolerance: datetime.timedelta = DEFAULT_TOLERANCE,
        idempotency_store: IdempotencyStore | AsyncIdempotencyStore | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_budget: int | None = None,
        lease: datetime.timedelta = DEFAULT_LEASE,
        done_ttl: datetime.timedelta = DEFAULT_DONE_TTL,
        log_exception_messages: bool = False,
        skip_out_of_order: bool = False,
        skip_test_customers: bool = False,
        secret_cache_ttl: datetime.timedelta = DEFAULT_SECRET_CACHE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tenants: TenantSecrets | None = None
        self._verifier: WebhookVerifier | None = None
        if callable(secret):  # a resolver: one verifier per tenant, asked for on delivery
            ttl: object = secret_cache_ttl  # options are checked at runtime too
            if not isinstance(ttl, datetime.timedelta) or ttl < datetime.timedelta(0):
                raise WebhookConfigurationError("secret_cache_ttl must be a datetime.timedelta, zero or more")
            WebhookVerifier("whsec_AAAA", tolerance=tolerance)  # the tolerance, checked now
            self._tenants = TenantSecrets(secret, tolerance=tolerance, clock=clock, ttl=secret_cache_ttl)
        else:
            # None, not a falsy value: Dispatcher("") is a mistake to report, not a request.
            secrets = secrets_from_environment() if secret is None else secret
            self._verifier = WebhookVerifier(secrets, tolerance=tolerance, clock=clock)
        if skip_out_of_order and not keeps_order(idempotency_store):
            raise WebhookConfigurationError(
                "skip_out_of_order needs an idempotency store that keeps each customer's newest "
                "update (InMemoryIdempotencyStore, SQLiteIdempotencyStore, RedisIdempotencyStore, "
                "PostgresIdempotencyStore or DjangoIdempotencyStore)"
                + ("" if idempotency_store is None else f", not {type(idempotency_store).__name__}")
            )
        if idempotency_store is not None and not isinstance(
            idempotency_store, (IdempotencyStore, AsyncIdempotencyStore)
        ):
            raise WebhookConfigurationError(
                "idempotency_store must implement IdempotencyStore or AsyncIdempotencyStore "
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
        # A transactional store runs each delivery in one thread: handle_async hands the
        # whole delivery, through the sync driver, to the store's run_delivery_async.
        self._transactional = (
            idempotency_store if isinstance(idempotency_store, TransactionalIdempotencyStore) else None
        )
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
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        # Deliveries whose handlers succeeded but whose "done" mark the store could not
        # record, even when tried again within the request: the next delivery records them.
        self._missed = MissedDoneMarks()
        self._catch_all: tuple[Handler, ...] = ()
        self._coroutine_functions: set[int] = set()  # id() of the async def handlers
        # What the drivers need, once: the store as each of them may call it, and so on.
        self._wiring = Wiring(
            sync_store=cast("IdempotencyStore", idempotency_store)
            if serves(idempotency_store, synchronous=True)
            else None,
            async_store=idempotency_store
            if isinstance(idempotency_store, AsyncIdempotencyStore) and self._transactional is None
            else None,
            lease=lease,
            done_ttl=done_ttl,
            missed=self._missed,
            with_messages=log_exception_messages,
            async_handlers=self._coroutine_functions,
            skip_out_of_order=bool(skip_out_of_order),
            skip_test_customers=bool(skip_test_customers),
        )

    @property
    def verifier(self) -> WebhookVerifier:
        """The verifier of the endpoint's secrets and tolerance, for work queues.

        Raises:
            WebhookConfigurationError: The dispatcher has a secret resolver: each tenant
                has a verifier of its own (`verifier_for`).
        """
        if self._verifier is None:
            raise WebhookConfigurationError(
                "this dispatcher has a secret resolver: each tenant has its own verifier, "
                "dispatcher.verifier_for(tenant)"
            )
        return self._verifier

    def verifier_for(self, tenant: str) -> WebhookVerifier | None:
        """The verifier of one tenant's secrets (from the resolver), or ``None`` if unknown.

        For a work queue: each `WebhookDelivery` it verifies names the tenant, so that
        `dispatch` keeps the tenant's ``webhook-id`` s and customer marks apart, as
        `handle` does.

        Raises:
            WebhookConfigurationError: The dispatcher has no secret resolver, or the
                resolver raised, or answered an invalid secret.
        """
        if self._tenants is None:
            raise WebhookConfigurationError(
                "verifier_for() needs a dispatcher with a secret resolver; this one has one secret "
                "for every delivery: dispatcher.verifier"
            )
        try:
            return self._tenants.verifier(tenant)
        except ResolverFailed as error:
            raise WebhookConfigurationError(str(error)) from None

    @property
    def skip_out_of_order(self) -> bool:
        """Whether stale customer events (by ``updatedAt``) are acknowledged and not handled."""
        return self._wiring.skip_out_of_order

    @property
    def skip_test_customers(self) -> bool:
        """Whether events of test customers are acknowledged and not handled."""
        return self._wiring.skip_test_customers

    @property
    def idempotency_store(self) -> IdempotencyStore | AsyncIdempotencyStore | None:
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

    def _on(self, event_type: object) -> Callable[[_H], _H]:
        key = self._key(event_type)

        def register(handler: _H) -> _H:
            check_handler(handler)
            self._handlers[key] = (*self._handlers.get(key, ()), handler)
            self._note_coroutine_function(handler)
            return handler

        return register

    @staticmethod
    def _key(event_type: object) -> str:
        if isinstance(event_type, str) and event_type and event_type not in EVENT_MODELS:
            # careCycle sends no such type, so a misspelt registration would never run. A
            # type this version does not know reaches the catch-all, as an UnknownEvent.
            raise WebhookConfigurationError(
                f"{not_in_catalog(event_type)}. An event type this version does not know "
                "reaches the catch-all (@webhooks.catch_all) as an UnknownEvent"
            )
        if (isinstance(event_type, str) and event_type) or event_type in EVENT_MODELS.values():
            return event_type_key(event_type, catalog_only=True)
        raise WebhookConfigurationError(
            "on() takes an event type such as 'customer.created', EventType.CUSTOMER_CREATED "
            f"or CustomerCreatedEvent, not {event_type!r}; use catch_all for everything else"
        )

    def catch_all(self, handler: _AnyEventHandler) -> _AnyEventHandler:
        """Register the decorated function for every event that has no handler of its own.

        That includes `UnknownEvent` s, so the handler's parameter must accept `Event`.

        Returns:
            The handler, unchanged.

        Raises:
            WebhookConfigurationError: The decorated object is not callable, or cannot be
                called with the event as its one positional argument.
        """
        check_handler(handler)
        self._catch_all = (*self._catch_all, handler)
        self._note_coroutine_function(handler)
        return handler

    def _note_coroutine_function(self, handler: Handler) -> None:
        # Looked up once here rather than on every delivery by handle_async. The
        # handler tuples keep every handler alive, so its id() stays its own.
        if inspect.iscoroutinefunction(handler):
            self._coroutine_functions.add(id(handler))

    def handlers_for(self, event: Event) -> tuple[Callable[..., object], ...]:
        """The handlers a delivery of ``event`` runs, in order."""
        return self._handlers.get(event.event_type) or self._catch_all

    # ------------------------------------------------------------------ handling

    def _prepare(
        self, body: bytes | str, headers: Headers, verifier: WebhookVerifier
    ) -> WebhookResponse | tuple[Event, WebhookDelivery]:
        data: object = body  # checked at runtime too: callers are not always type-checked
        if not isinstance(data, (bytes, str, bytearray, memoryview)):
            return NOT_BYTES
        if body_exceeds(body, self._max_body_size):  # a str by its UTF-8 size
            return body_too_large(self._max_body_size)
        try:
            delivery = verifier.verify(body, headers)  # a tenant's verifier names its tenant
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

    def _resolved(self, tenant: str | None) -> WebhookVerifier | WebhookResponse:
        """The verifier of ``tenant`` (or of the endpoint), or the answer: 404 or 503."""
        return resolve(self._tenants, self._verifier, tenant)

    async def _resolved_async(self, tenant: str | None) -> WebhookVerifier | WebhookResponse:
        """`_resolved`, for the event loop: the resolver does not block it."""
        return await resolve_async(self._tenants, self._verifier, tenant)

    @observed_handle
    def handle(self, body: bytes | str, headers: Headers, *, tenant: str | None = None) -> WebhookResponse:
        """Verify, parse, deduplicate and dispatch one delivery, synchronously.

        Async handlers run too: with ``asyncio.run`` when no event loop is running in this
        thread, otherwise on a loop of their own in a helper thread (this call blocks
        until they finish). Under an event loop, prefer `handle_async`.

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers.
            tenant: The tenant key the delivery came for (a path parameter), with a
                secret resolver; its ``webhook-id`` s are its own. An unknown tenant is
                answered 404 before any verification.

        Returns:
            The response for Svix; see the status table in the docs. Never raises for
            any delivery: bad input and failing handlers become 4xx/5xx responses.

        Raises:
            WebhookConfigurationError: The idempotency store serves only `handle_async`
                (a `RedisIdempotencyStore` with an asyncio client): a mistake of set-up,
                never of a delivery.
        """
        verifier = self._verifier
        if verifier is None or tenant is not None:
            resolved = self._resolved(tenant)
            if isinstance(resolved, WebhookResponse):
                return resolved
            verifier = resolved
        prepared = self._prepare(body, headers, verifier)
        if isinstance(prepared, WebhookResponse):
            return prepared
        return self.dispatch(*prepared)

    @observed_dispatch
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
        if self._wiring.sync_store is None and self._store is not None:
            raise _cannot_serve(self._store, "handle", "handle_async")
        return drive(self._wiring, handlers, event, delivery)

    @observed_handle_async
    async def handle_async(
        self, body: bytes | str, headers: Headers, *, tenant: str | None = None
    ) -> WebhookResponse:
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

        With a transactional store (`DjangoIdempotencyStore`), the whole delivery runs in
        one thread of the store's choosing, as `handle` runs it (async handlers with
        ``asyncio.run`` there), so that it is one database transaction; cancelling the call
        ends it at once, and that thread still commits or rolls the delivery back.

        A handler's ``KeyboardInterrupt`` and ``SystemExit`` propagate (the lease is freed
        first); every other exception, ``BaseException`` subclasses included, is a handler
        failure (500). Neither is logged with its message.

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers.
            tenant: The tenant key, as for `handle`. A sync secret resolver runs in a
                worker thread (it may query a database).

        Returns:
            The response for Svix. Never raises for any delivery.

        Raises:
            WebhookConfigurationError: The idempotency store serves only `handle`.
        """
        prepared = await self._prepare_async(body, headers, tenant)
        if isinstance(prepared, WebhookResponse):
            return prepared
        return await self.dispatch_async(*prepared)

    async def _prepare_async(
        self, body: bytes | str, headers: Headers, tenant: str | None = None
    ) -> tuple[Event, WebhookDelivery] | WebhookResponse:
        """`_prepare`, for the event loop: a large body is verified and parsed in a thread."""
        verifier = self._verifier
        if verifier is None or tenant is not None:
            resolved = await self._resolved_async(tenant)
            if isinstance(resolved, WebhookResponse):
                return resolved
            verifier = resolved
        data: object = body  # checked at runtime too: callers are not always type-checked
        if isinstance(data, (bytes, str, bytearray)) and len(data) > _PREPARE_IN_THREAD_ABOVE:
            # The HMAC and the parse of a large body take milliseconds: not on the loop.
            import asyncio  # loaded by the running loop; see dispatch_async

            return await asyncio.to_thread(self._prepare, body, headers, verifier)
        return self._prepare(body, headers, verifier)

    @observed_dispatch_async
    async def dispatch_async(self, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        """`dispatch`, on the event loop (as `handle_async` runs handlers): the same answers."""
        handlers = self.handlers_for(event)
        transactional = self._transactional
        if transactional is not None:
            if not handlers:  # ignored: the store is not called, nothing blocks the loop
                return drive(self._wiring, handlers, event, delivery)
            # One thread for acquire, the handlers and complete: one database transaction.
            return await transactional.run_delivery_async(
                functools.partial(drive, self._wiring, handlers, event, delivery)
            )
        if self._wiring.async_store is None and self._store is not None:
            raise _cannot_serve(self._store, "handle_async", "handle")
        return await _drive_async()(self._wiring, handlers, event, delivery)


@functools.cache
def _drive_async() -> Callable[..., Awaitable[WebhookResponse]]:
    # Loaded on the first async delivery, not with this module: the async driver imports
    # asyncio, which a synchronous process (WSGI, AWS Lambda) would pay for at its cold start.
    from ._drivers_async import drive_async

    return drive_async


def _cannot_serve(store: object, called: str, other: str) -> WebhookConfigurationError:
    return WebhookConfigurationError(
        f"this dispatcher's idempotency store ({type(store).__name__}) cannot serve "
        f"Dispatcher.{called}: call Dispatcher.{other}, or give the dispatcher a store that "
        f"serves both (a RedisIdempotencyStore with a synchronous redis.Redis client does)"
    )
