"""FastAPI and Starlette adapter: receive careCycle webhooks in an ASGI application.

With FastAPI, a router to include, and the events in the app's OpenAPI document::

    from fastapi import FastAPI

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.fastapi import document_webhooks, webhook_router

    webhooks = Dispatcher("whsec_...")
    app = FastAPI()
    app.include_router(webhook_router(webhooks, path="/webhooks"))
    document_webhooks(app)  # OpenAPI 3.1 "webhooks": the three events' schemas

or a verified, typed event in a route of your own (verified and parsed, not
deduplicated)::

    @app.post("/calls")
    async def calls(
        event: Annotated[CallCompletedEvent, Depends(verified_event(webhooks, CallCompletedEvent))],
    ) -> None: ...

or the endpoint alone, in FastAPI or plain Starlette::

    from fastapi import FastAPI

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.fastapi import webhook_view

    webhooks = Dispatcher("whsec_...")
    app = FastAPI()
    app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])

or, with plain Starlette, ``Route("/webhooks", webhook_view(webhooks), methods=["POST"])``.
`webhook_view` and `verified_event` import only Starlette, so they work without FastAPI
too; `webhook_router` and `document_webhooks` need FastAPI.

The endpoint streams the raw request body, at most ``dispatcher.max_body_size`` bytes of
it, into `Dispatcher.handle_async` and turns the answer into a Starlette ``Response``:
the status codes are the dispatcher's, the same in every adapter.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations
# at runtime to see that `request` is the Request, not a query parameter or a body.

try:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
except ImportError:
    raise ImportError(
        "carecycle_webhooks.fastapi needs FastAPI or Starlette: pip install 'carecycle-webhooks[fastapi]'"
    ) from None

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from ._adapters import (
    METHOD_NOT_ALLOWED,
    check_dispatcher,
    content_type_and_headers,
    declared_length,
    reservation_for,
)
from ._asgi import receive_body
from ._dispatch import _PREPARE_IN_THREAD_ABOVE, Dispatcher  # pyright: ignore[reportPrivateUsage]
from ._errors import WebhookConfigurationError
from ._models import EVENT_MODELS, CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent, Event
from ._responses import IGNORED, WebhookResponse

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from pydantic import BaseModel

__all__ = ["WebhookAnswer", "document_webhooks", "verified_event", "webhook_router", "webhook_view"]

_E = TypeVar("_E", bound=CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent)


def _to_starlette(response: WebhookResponse) -> Response:
    content_type, headers = content_type_and_headers(response)
    converted = Response(response.body, status_code=response.status_code, media_type=content_type)
    for name, value in headers:
        converted.headers[name] = value
    return converted


def webhook_view(dispatcher: Dispatcher) -> Callable[[Request], Awaitable[Response]]:
    """An async FastAPI/Starlette endpoint that verifies and dispatches careCycle deliveries.

    Register it for ``POST`` (both FastAPI and Starlette default to ``GET`` otherwise)::

        app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])

    Its only parameter is the Starlette ``Request``, so FastAPI documents no query
    parameters and no request body for it, and validates nothing: the raw body is what is
    signed. Pass ``include_in_schema=False`` to ``add_api_route`` to leave the route out
    of the OpenAPI document altogether.

    A ``Content-Length`` above ``dispatcher.max_body_size`` is answered 413 before
    anything is read; the body is read as a stream and reading stops as soon as it
    exceeds the limit (413), so a chunked or lying request cannot make the endpoint
    buffer more. The bodies being read at once share ``dispatcher.body_budget``: a
    delivery that does not fit is answered 503 with ``Retry-After`` before its body is
    read (a chunked one, as soon as a piece does not fit), so a flood of large bodies
    cannot exhaust the worker's memory. A client that goes away mid-body ends the
    request quietly (one INFO line). Handlers run through `Dispatcher.handle_async`: async handlers on the
    event loop, sync handlers in worker threads.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Any idempotency store works,
            including a `RedisIdempotencyStore` with an asyncio client.

    Returns:
        The endpoint, an ``async`` function of the request.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`.
    """
    dispatcher = check_dispatcher(dispatcher, "FastAPI", synchronous=False)

    async def carecycle_webhook(request: Request) -> Response:
        """Receive a careCycle webhook delivery (signed by Svix; the raw body is verified)."""
        if request.method != "POST":  # routed for more methods than POST
            response = _to_starlette(METHOD_NOT_ALLOWED)
            response.headers["Allow"] = "POST"
            return response
        headers = request.headers
        # A C-level dict of the ASGI pairs (lower-case bytes names) rather than a scan in
        # Python; with a header given twice, Starlette's own look-up (the first one).
        raw = headers.raw
        table = dict(raw)
        content_length = (
            table.get(b"content-length") if len(table) == len(raw) else headers.get("content-length")
        )
        reservation = reservation_for(dispatcher)
        try:
            # The ASGI messages themselves, not request.stream(): one function for every
            # ASGI adapter, and no async generator per request.
            body = await receive_body(
                request.receive,
                declared=declared_length(content_length),
                limit=dispatcher.max_body_size,
                reservation=reservation,
            )
            if not isinstance(body, bytes):
                return _to_starlette(body)
            return _to_starlette(await dispatcher.handle_async(body, headers))
        finally:
            reservation.close()

    return carecycle_webhook


def webhook_router(
    dispatcher: Dispatcher,
    *,
    path: str = "/webhooks",
    name: str = "carecycle_webhooks",
    include_in_schema: bool = False,
    **router_options: Any,  # noqa: ANN401 - FastAPI's own APIRouter options, passed on as they are
) -> "APIRouter":
    """A FastAPI ``APIRouter`` with the `webhook_view` endpoint at ``path``, to include.

    ::

        app.include_router(webhook_router(webhooks, path="/webhooks"))

    The endpoint is `webhook_view`'s: it verifies, parses, deduplicates and dispatches
    each delivery to the dispatcher's handlers, with the status table's answers.

    Args:
        dispatcher: The `Dispatcher` whose handlers run.
        path: Where deliveries are received, relative to the router's ``prefix``.
        name: The route's name, for ``app.url_path_for``.
        include_in_schema: Whether the receiving route is in the OpenAPI document (it has
            no parameters and no body there: the raw body is what is signed). The events
            themselves are documented by `document_webhooks`.
        **router_options: Passed on to ``APIRouter`` (``prefix``, ``tags``, ``dependencies``...).

    Returns:
        The router.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`.
    """
    from fastapi import APIRouter

    router = APIRouter(**router_options)
    router.add_api_route(
        path, webhook_view(dispatcher), methods=["POST"], name=name, include_in_schema=include_in_schema
    )
    return router


class WebhookAnswer(HTTPException):
    """Raised by `verified_event` instead of giving the route an event: the delivery's answer.

    A verification failure is answered with the status table's status (400, 413, 422,
    503...), and a delivery of another event type than the route's with 200 (it is
    acknowledged and not handled, as a dispatcher without a handler for it answers).
    FastAPI and Starlette turn it into a response as any ``HTTPException``: the status and
    headers (``Retry-After``) are the table's, and FastAPI's JSON body is
    ``{"detail": <the table's body>}``.

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


async def _verify(request: Request, dispatcher: Dispatcher) -> Event:
    """The request's event, verified and parsed; else `WebhookAnswer` with the table's answer."""
    headers = request.headers
    # Read already when the route also takes a body parameter, or by a middleware.
    body = request.__dict__.get("_body")
    reservation = reservation_for(dispatcher)
    try:
        if not isinstance(body, bytes):
            received = await receive_body(
                request.receive,
                declared=declared_length(headers.get("content-length")),
                limit=dispatcher.max_body_size,
                reservation=reservation,
            )
            if not isinstance(received, bytes):
                raise WebhookAnswer(received)
            body = received
            # Where Starlette keeps a body it read: the route can still await request.body().
            request._body = body  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        # The dispatcher's own first steps, as handle_async takes them (a large body in a
        # worker thread): the same answers and the same log lines as its endpoint's.
        prepare = dispatcher._prepare  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        if len(body) > _PREPARE_IN_THREAD_ABOVE:
            prepared = await asyncio.to_thread(prepare, body, headers)
        else:
            prepared = prepare(body, headers)
    finally:
        # The budget bounds the bodies not verified yet (a flood of unsigned ones): a
        # verified delivery's body is the route's to keep.
        reservation.close()
    if isinstance(prepared, WebhookResponse):
        raise WebhookAnswer(prepared)
    return prepared[0]


@overload
def verified_event(dispatcher: Dispatcher) -> Callable[[Request], Awaitable[Event]]: ...
@overload
def verified_event(dispatcher: Dispatcher, event_type: type[_E]) -> Callable[[Request], Awaitable[_E]]: ...
def verified_event(
    dispatcher: Dispatcher, event_type: type[_E] | None = None
) -> Callable[[Request], Awaitable[Event | _E]]:
    """A FastAPI dependency that gives a route of your own the verified, typed event.

    ::

        CallCompleted = Annotated[CallCompletedEvent, Depends(verified_event(webhooks, CallCompletedEvent))]

        @app.post("/calls")
        async def calls(event: CallCompleted) -> dict[str, str]:
            ...

    It reads the raw body (within ``dispatcher.max_body_size`` and its body budget, as
    `webhook_view` does), verifies it with the dispatcher's secret and tolerance, and
    parses it. A delivery that fails is answered by raising `WebhookAnswer` with the status
    table's status (400, 408, 413, 422, 503), and the route does not run. With
    ``event_type``, a delivery of another event type is answered 200 without running
    the route.

    It does NOT deduplicate: the dispatcher's handlers and idempotency store are not
    used, so Svix's retries and at-least-once duplicates reach the route again. Use the
    ``webhook-id`` header (one per message, the same on every retry) to make the route's
    effects idempotent, or `webhook_router`, whose handlers run once per ``webhook-id``.

    Args:
        dispatcher: The `Dispatcher` whose secret, tolerance and body limits apply.
        event_type: ``CallCompletedEvent``, ``CustomerCreatedEvent`` or
            ``CustomerUpdatedEvent``; without it, the route gets any `Event`
            (`UnknownEvent` included).

    Returns:
        The dependency, an ``async`` function of the request, for ``Depends``.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`.
    """
    dispatcher = check_dispatcher(dispatcher, "FastAPI", synchronous=False)
    if event_type is not None and event_type not in EVENT_MODELS.values():
        raise WebhookConfigurationError(
            "verified_event() takes CallCompletedEvent, CustomerCreatedEvent or CustomerUpdatedEvent "
            f"as its event type, not {event_type!r}"
        )

    async def verified_webhook_event(request: Request) -> Event | _E:
        event = await _verify(request, dispatcher)
        if event_type is not None and not isinstance(event, event_type):
            raise WebhookAnswer(IGNORED)  # acknowledged: a route for another event type
        return event

    return verified_webhook_event


# What the status table's answers mean to the sender, for the OpenAPI document.
_DOCUMENTED_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Missing or malformed signature headers, no matching signature, or a stale timestamp."
    },
    409: {"description": "This webhook-id is being processed by another worker: retry later."},
    413: {"description": "The body is larger than the receiver accepts."},
    422: {"description": "Correctly signed, but not a valid careCycle event."},
    500: {"description": "A handler failed: retry later."},
    503: {"description": "The receiver cannot take it now (idempotency store, body budget): retry later."},
}


@functools.cache
def _built(model: "type[BaseModel]") -> "type[BaseModel]":
    """``model`` under its own name, built now rather than deferred.

    FastAPI wraps a body model in a TypeAdapter that inherits the model's ``defer_build``
    and, built later by ``app.openapi()``, makes pydantic warn that the body's alias has
    no effect. The fields, validators and JSON Schema are the model's own.
    """
    namespace = {
        "model_config": {**model.model_config, "defer_build": False},
        "__doc__": model.__doc__,
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
    }
    metaclass: Any = type(model)  # pydantic's ModelMetaclass, which builds the subclass
    return cast("type[BaseModel]", metaclass(model.__name__, (model,), namespace))


def _documented_endpoint(model: "type[BaseModel]") -> Callable[..., None]:
    """A never-called endpoint whose signature FastAPI documents: the event as the body, and the headers."""
    import inspect
    from typing import Annotated

    from fastapi import Header

    def header(description: str) -> object:
        return Annotated[str, Header(description=description)]

    parameters = [
        inspect.Parameter("event", inspect.Parameter.KEYWORD_ONLY, annotation=_built(model)),
        inspect.Parameter(
            "webhook_id",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=header("The message's id: the same on every retry of one message (svix-id)."),
        ),
        inspect.Parameter(
            "webhook_timestamp",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=header("When this attempt was signed, in seconds since the epoch (svix-timestamp)."),
        ),
        inspect.Parameter(
            "webhook_signature",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=header(
                "Space-separated v1,<base64> HMAC-SHA256 signatures of id.timestamp.body (svix-signature)."
            ),
        ),
    ]

    def endpoint(**_: object) -> None:  # pragma: no cover - documentation only, never routed
        raise NotImplementedError

    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    return endpoint


def document_webhooks(app: "FastAPI") -> None:
    """Document the careCycle events in ``app``'s OpenAPI document, as OpenAPI 3.1 ``webhooks``.

    ::

        app = FastAPI()
        document_webhooks(app)

    Each event type of the catalog (``customer.created``, ``customer.updated``,
    ``call.completed``) becomes an entry of the document's ``webhooks``: a ``POST`` whose
    request body is the event's JSON Schema (its models' wire names, the ``x-phi`` marks of
    the fields holding PHI, no examples), with the signature headers and the status table's
    answers. This documents what careCycle sends; it routes nothing (``app.webhooks`` is
    documentation only): receive deliveries with `webhook_router` or `webhook_view`.

    Args:
        app: The FastAPI application (its ``openapi_version`` is 3.1 by default).
    """
    for event_type, model in EVENT_MODELS.items():
        app.webhooks.add_api_route(
            event_type,
            _documented_endpoint(model),
            methods=["POST"],
            name=event_type,
            operation_id=event_type.replace(".", "_"),
            summary=event_type,
            description=(model.__doc__ or "").strip().replace("``", "`"),
            response_description="Received: processed, ignored (no handler) or a duplicate.",
            responses=_DOCUMENTED_ANSWERS,
            tags=["careCycle webhooks"],
        )
