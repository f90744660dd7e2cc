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
    from starlette.requests import Request
    from starlette.responses import Response
except ImportError:
    raise ImportError(
        "carecycle_webhooks.fastapi needs FastAPI or Starlette: pip install 'carecycle-webhooks[fastapi]'"
    ) from None

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from ._adapters import METHOD_NOT_ALLOWED, check_dispatcher, content_type_and_headers, reservation_for
from ._dispatch import Dispatcher
from ._fastapi_dependency import WebhookAnswer, receive_request_body, tenant_and_refusal, verified_event
from ._openapi import document_webhooks
from ._responses import WebhookResponse

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["WebhookAnswer", "document_webhooks", "verified_event", "webhook_router", "webhook_view"]


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

    For many tenants on one endpoint, route it with a ``tenant`` path parameter
    (``"/webhooks/{tenant}"``): the endpoint reads ``request.path_params["tenant"]`` and
    hands it to ``handle_async(..., tenant=...)``. A tenant that the dispatcher's secret
    resolver does not know is answered 404 before the body is read.

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
        tenant, refused = await tenant_and_refusal(request, dispatcher)
        if refused is not None:  # an unknown tenant: its body is not read
            return _to_starlette(refused)
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
            body = await receive_request_body(request, dispatcher, content_length, reservation)
            if not isinstance(body, bytes):
                return _to_starlette(body)
            if tenant is None:
                return _to_starlette(await dispatcher.handle_async(body, headers))
            return _to_starlette(await dispatcher.handle_async(body, headers, tenant=tenant))
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
        path: Where deliveries are received, relative to the router's ``prefix``. With a
            ``{tenant}`` parameter (``"/webhooks/{tenant}"``), each tenant's deliveries,
            for a dispatcher with a secret resolver.
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
    endpoint = webhook_view(dispatcher)
    full = f"{router_options.get('prefix', '')}{path}"
    if "{tenant}" in full or "{tenant:" in full:  # the prefix may hold it too
        endpoint = _with_tenant_parameter(endpoint)
    router.add_api_route(path, endpoint, methods=["POST"], name=name, include_in_schema=include_in_schema)
    return router


def _with_tenant_parameter(
    view: Callable[[Request], Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """The endpoint, declaring the ``tenant`` path parameter for FastAPI's OpenAPI document."""
    from fastapi import Path

    async def carecycle_webhook(
        request: Request,
        tenant: Annotated[str, Path(description="The tenant key: whose secret signs the delivery.")],  # noqa: ARG001 - documented; the view reads path_params
    ) -> Response:
        """Receive a careCycle webhook delivery for one tenant (signed by Svix; the raw body is verified)."""
        return await view(request)

    return carecycle_webhook
