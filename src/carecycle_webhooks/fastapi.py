"""FastAPI and Starlette adapter: receive careCycle webhooks in an ASGI application.

::

    from fastapi import FastAPI

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.fastapi import webhook_view

    webhooks = Dispatcher("whsec_...")
    app = FastAPI()
    app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])

or, with plain Starlette, ``Route("/webhooks", webhook_view(webhooks), methods=["POST"])``.
Only Starlette is imported, so the adapter works without FastAPI too.

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

from ._adapters import (
    METHOD_NOT_ALLOWED,
    check_dispatcher,
    content_type_and_headers,
    declared_length,
    reservation_for,
)
from ._asgi import receive_body
from ._dispatch import Dispatcher
from ._responses import WebhookResponse

__all__ = ["webhook_view"]


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
