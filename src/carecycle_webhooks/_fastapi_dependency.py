"""`verified_event`: a FastAPI dependency giving a route of your own the verified, typed event.

The route takes the place of the dispatcher's handlers in the delivery's flow: the dependency
verifies and parses the delivery, then starts the flow (`_drivers_async.drive_async`) with one
handler, `verified_event_route`, which lets the route run and waits for it to end. So the
idempotency store is used as for any delivery: a duplicate is answered 200 and a delivery
in flight elsewhere 409 without running the route; a route that returns marks the
``webhook-id`` done, and one that raises frees it for Svix's retry.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at
# runtime to see that `request` is the Request.

import asyncio
import contextlib
import contextvars
import json
from collections.abc import AsyncIterator, Callable, Generator
from typing import TypeVar, overload

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ._adapters import (
    Reservation,
    check_dispatcher,
    content_type_and_headers,
    declared_length,
    path_tenant,
    reservation_for,
    tenant_refused_async,
)
from ._asgi import receive_body
from ._dispatch import Dispatcher
from ._drivers import _current  # pyright: ignore[reportPrivateUsage]
from ._drivers_async import drive_async
from ._errors import WebhookConfigurationError
from ._idempotency import TransactionalIdempotencyStore
from ._models import EVENT_MODELS, CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent, Event
from ._responses import HANDLER_FAILED, IGNORED, PROCESSED, WebhookResponse, json_response
from ._telemetry import ObservedRoute
from ._verify import WebhookDelivery

__all__ = [
    "WebhookAnswer",
    "receive_request_body",
    "tenant_and_refusal",
    "verified_event",
    "verified_event_route",
]

_E = TypeVar("_E", bound=CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent)


class WebhookAnswer(HTTPException):
    """Raised by `verified_event` instead of running the route: the delivery's answer.

    A verification failure is answered with the status table's status (400, 408, 413,
    422, 503...), a duplicate ``webhook-id`` with 200 and one in flight elsewhere with 409,
    and a delivery of another event type than the route's with 200 (acknowledged, not
    handled, as a dispatcher without a handler for it answers). FastAPI turns it into a
    response as any ``HTTPException``: the status and headers (``Retry-After``) are the
    table's, and the JSON body is ``{"detail": <the table's body>}``.

    Attributes:
        response: The framework-neutral answer, as `webhook_view` gives it.
    """

    def __init__(self, response: WebhookResponse) -> None:
        """Carry ``response``."""
        _, headers = content_type_and_headers(response)
        super().__init__(
            response.status_code, detail=json.loads(response.body), headers=dict(headers) or None
        )
        self.response = response


class _RouteRun:
    """Between the dependency and the flow: the route started, the route ended."""

    __slots__ = ("ended", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()


_route_run: contextvars.ContextVar[_RouteRun] = contextvars.ContextVar("carecycle_webhooks_route")


async def verified_event_route(event: Event) -> None:  # noqa: ARG001 - the route has it
    """The flow's handler for a route using `verified_event`: the route runs meanwhile.

    Its name is the one the dispatcher's log lines give when the route raises.
    """
    run = _route_run.get()
    run.started.set_result(None)
    await run.ended  # the route's own exception, if it raised


async def tenant_and_refusal(
    request: Request, dispatcher: Dispatcher
) -> tuple[str | None, WebhookResponse | None]:
    """The tenant of the route's path, and the 404 to answer at once if it is unknown."""
    tenant = path_tenant(request.path_params.get("tenant"))
    return tenant, await tenant_refused_async(dispatcher, tenant)


async def receive_request_body(
    request: Request, dispatcher: Dispatcher, content_length: bytes | str | None, reservation: Reservation
) -> bytes | WebhookResponse:
    """The body, read within the dispatcher's limits, or the answer that refuses it.

    It reads the ASGI messages themselves, not ``request.stream()``: one function for every
    ASGI adapter, and no async generator per request.
    """
    return await receive_body(
        request.receive,
        declared=declared_length(content_length),
        limit=dispatcher.max_body_size,
        reservation=reservation,
    )


async def _verify(request: Request, dispatcher: Dispatcher) -> tuple[Event, WebhookDelivery, ObservedRoute]:
    """The request's event and delivery, verified and parsed, and its telemetry; else `WebhookAnswer`.

    An answer before the body is verified (an unknown tenant, a body too large, too slow,
    cut off, or over the budget) is recorded by `observed_refusal`; from the verification
    on, the delivery's span is `ObservedRoute`'s.
    """
    tenant, refused = await tenant_and_refusal(request, dispatcher)
    if refused is not None:  # an unknown tenant: its body is not read
        raise WebhookAnswer(refused)
    headers = request.headers
    # Read already when the route also takes a body parameter, or by a middleware.
    body = request.__dict__.get("_body")
    reservation = reservation_for(dispatcher)
    try:
        if not isinstance(body, bytes):
            length = headers.get("content-length")
            received = await receive_request_body(request, dispatcher, length, reservation)
            if not isinstance(received, bytes):
                raise WebhookAnswer(received)
            body = received
            # Where Starlette keeps a body it read: the route can still await request.body().
            request._body = body  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        observed = ObservedRoute()  # begun before the signature is checked, as handle_async's
        # The dispatcher's own first steps, as handle_async takes them (a large body in a
        # worker thread): the same answers and the same log lines as its endpoint's.
        try:
            prepared = await dispatcher._prepare_async(body, headers, tenant)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        except BaseException as error:
            observed.raised(error)
            raise
    finally:
        # The budget bounds the bodies not verified yet (a flood of unsigned ones): a
        # verified delivery's body is the route's to keep.
        reservation.close()
    if isinstance(prepared, WebhookResponse):
        observed.answered(prepared)
        raise WebhookAnswer(prepared)
    event, delivery = prepared
    observed.parsed(event, delivery)
    return event, delivery, observed


@contextlib.contextmanager
def _delivery_of_route(delivery: WebhookDelivery) -> Generator[None, None, None]:
    """`current_delivery()` in the route, as in a handler (the route runs in this context)."""
    token = _current.set(delivery)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # ended in another context: nothing to undo here
            _current.reset(token)


def _start(
    dispatcher: Dispatcher, event: Event, delivery: WebhookDelivery
) -> tuple[_RouteRun, asyncio.Task[WebhookResponse]]:
    """Start the delivery's flow, with the route in place of the handlers."""
    run = _RouteRun(asyncio.get_running_loop())
    token = _route_run.set(run)
    try:
        wiring = dispatcher._wiring  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        flow = asyncio.ensure_future(drive_async(wiring, (verified_event_route,), event, delivery))
    finally:
        _route_run.reset(token)  # the flow's task has its own copy of the context
    return run, flow


@overload
def verified_event(dispatcher: Dispatcher) -> Callable[[Request], AsyncIterator[Event]]: ...
@overload
def verified_event(
    dispatcher: Dispatcher, event_type: type[_E]
) -> Callable[[Request], AsyncIterator[_E]]: ...
def verified_event(
    dispatcher: Dispatcher, event_type: type[_E] | None = None
) -> Callable[[Request], AsyncIterator[Event | _E]]:
    """A FastAPI dependency that gives a route of your own the verified, typed event.

    ::

        VerifiedCall = Annotated[CallCompletedEvent, Depends(verified_event(webhooks, CallCompletedEvent))]

        @app.post("/calls")
        async def calls(event: VerifiedCall) -> dict[str, str]:
            ...

    It reads the raw body (within ``dispatcher.max_body_size`` and its body budget, as
    `webhook_view` does), verifies it with the dispatcher's secret and tolerance, and
    parses it. A delivery that fails is answered by raising `WebhookAnswer` with the status
    table's status (400, 408, 413, 422, 503), and the route does not run. With
    ``event_type``, a delivery of another event type is answered 200 without running the
    route.

    With an idempotency store, the route runs once per ``webhook-id``, as a handler of the
    dispatcher would: a duplicate is answered 200 (``{"detail": {"status": "duplicate"}}``)
    and a delivery being processed elsewhere 409, without running the route; the store
    unreachable is answered 503. The id is marked done when the route returns, and freed
    when it raises (logged without the exception's message), so that Svix's retry runs
    it again. Without a store, every delivery runs the route. The dispatcher's own handlers
    are not called. In the route, as in a handler, `current_delivery` gives the delivery's
    ``webhook-id``, timestamp and attempt.

    For many tenants, give the route a ``tenant`` path parameter (``@app.post("/calls/{tenant}")``):
    the dependency reads ``request.path_params["tenant"]``, verifies with that tenant's
    secrets (from the dispatcher's secret resolver), keeps its ``webhook-id`` s apart from
    other tenants', and sets ``current_delivery().tenant``. A tenant the resolver does not
    know is answered 404 before the body is read.

    Args:
        dispatcher: The `Dispatcher` whose secret, tolerance, body limits and idempotency
            store apply.
        event_type: ``CallCompletedEvent``, ``CustomerCreatedEvent`` or
            ``CustomerUpdatedEvent``; without it, the route gets any `Event`
            (`UnknownEvent` included).

    Returns:
        The dependency, for ``Depends``.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`; its store cannot
            be used under asyncio, or is transactional (its handlers' writes share one
            database transaction in a thread of its own, which a route cannot join: use
            `webhook_router` and handlers); ``event_type`` is not an event model.
    """
    dispatcher = check_dispatcher(
        dispatcher, "FastAPI", synchronous=False, built="dependencies built by verified_event()"
    )
    store = dispatcher.idempotency_store
    if isinstance(store, TransactionalIdempotencyStore):
        raise WebhookConfigurationError(
            f"verified_event() cannot run a route inside the transaction of {type(store).__name__}: "
            "use webhook_router() and register handlers on the dispatcher"
        )
    if event_type is not None and event_type not in EVENT_MODELS.values():
        raise WebhookConfigurationError(
            "verified_event() takes CallCompletedEvent, CustomerCreatedEvent or CustomerUpdatedEvent "
            f"as its event type, not {event_type!r}"
        )
    # The flow awaits a handler it knows to be async def; others go to a worker thread.
    dispatcher._wiring.async_handlers.add(id(verified_event_route))  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]

    async def verified_webhook_event(request: Request) -> AsyncIterator[Event | _E]:
        event, delivery, observed = await _verify(request, dispatcher)
        # The route's function, which Starlette's router puts in the scope: its span's name.
        endpoint = request.scope.get("endpoint") or verified_webhook_event
        with _answering(observed):
            if event_type is not None and not isinstance(event, event_type):
                raise WebhookAnswer(IGNORED)  # acknowledged: a route for another event type
            if store is None:
                with _delivery_of_route(delivery), observed.route(endpoint):
                    yield event
                observed.answered(PROCESSED)
                return
            with observed.flow():
                run, flow = _start(dispatcher, event, delivery)
            await _route_may_run(run, flow)
            try:
                with _delivery_of_route(delivery), observed.route(endpoint):
                    yield event
            except BaseException as error:
                await _after_the_route_raised(error, run, flow, observed)
                raise
            run.ended.set_result(None)
            # The done mark (tried again, or kept for later, if the store fails now).
            observed.answered(await flow)

    return verified_webhook_event


async def _after_the_route_raised(
    error: BaseException, run: _RouteRun, flow: asyncio.Task[WebhookResponse], observed: ObservedRoute
) -> None:
    """The route raised ``error``, or the request is being cancelled: end the flow to match.

    The flow logs a route's exception without its message and frees the webhook-id, so
    that Svix's retry runs the route again. The answer is recorded now, as `_answering`
    would: a second cancellation while the flow is awaited would otherwise be what it sees.
    """
    if isinstance(error, Exception):
        run.ended.set_exception(error)
        observed.answered(_route_failure(error))
    elif isinstance(error, asyncio.CancelledError):
        # The request is cancelled (the client went away, the server stops): the flow is
        # cancelled too, as `handle_async` would be. It frees the lease and logs nothing:
        # no route failed.
        flow.cancel()
        observed.raised(error)
    else:  # KeyboardInterrupt, SystemExit, GeneratorExit
        run.ended.cancel()
        observed.raised(error)
    try:
        await asyncio.shield(flow)
    except asyncio.CancelledError:
        # The flow's own cancellation ends this one as it began; any other is the
        # request's, and must reach the caller (a timeout, a shutdown).
        if not isinstance(error, asyncio.CancelledError):
            raise


@contextlib.contextmanager
def _answering(observed: ObservedRoute) -> Generator[None, None, None]:
    """An exception that ends a route's delivery gives its answer, for its span and metrics.

    `WebhookAnswer` carries the table's answer; any other exception is the route's own
    failure (`_route_failure`). An answer given already stands.
    """
    try:
        yield
    except WebhookAnswer as answer:
        observed.answered(answer.response)
        raise
    except Exception as error:
        observed.answered(_route_failure(error))
        raise
    except BaseException as error:
        observed.raised(error)
        raise


def _route_failure(error: Exception) -> WebhookResponse:
    """What a route's exception answers, as telemetry records it.

    Its own status when it carries one (FastAPI's and Starlette's ``HTTPException``), else
    500. A 4xx is then ``rejected``, its reason ``handler_failed``; a 5xx ``handler_failed``.
    """
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 400 <= status < 600 and status != HANDLER_FAILED.status_code:
        return json_response(status, error="handler_failed")
    return HANDLER_FAILED


async def _route_may_run(run: _RouteRun, flow: asyncio.Task[WebhookResponse]) -> None:
    """Wait until the flow lets the route run; else `WebhookAnswer` with the flow's answer."""
    try:
        await asyncio.wait((flow, run.started), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        flow.cancel()  # the flow frees the lease, if it took one
        raise
    if not run.started.done():
        # A duplicate (200), in flight elsewhere (409), the store down (503): no route.
        raise WebhookAnswer(flow.result())
