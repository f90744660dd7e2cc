"""FastAPI app for ``bench_http.py``: ``/bare`` (svix + json.loads), ``/ours`` (webhook_view), ``/health``.

Served by uvicorn, one process: ``uvicorn --app-dir benchmarks/http_apps fastapi_bench:app``.
``/bare-again`` is ``/bare`` once more, a control that shows the measurement's own spread.
``/ours`` has ``async def`` handlers (awaited on the loop); ``/ours-sync-handlers`` has
plain ``def`` handlers, which `Dispatcher.handle_async` runs in a worker thread.

Each endpoint is a FastAPI application of its own, with that one route: Starlette matches
routes one after the other (a regular expression each), so in one shared application the
later routes would pay for matching the earlier ones, a few percent of a request here.
``app`` hands each request to its endpoint's application by exact path, the same
dictionary look-up for every endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from _bench_common import BARE_RESPONSE, async_dispatcher, svix_webhook, sync_dispatcher
from fastapi import FastAPI, Request, Response
from svix.webhooks import WebhookVerificationError

from carecycle_webhooks.fastapi import webhook_view

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def bare(request: Request) -> Response:
    body = await request.body()
    try:
        svix_webhook.verify(body, request.headers)  # type: ignore[arg-type]  # Starlette Headers
    except WebhookVerificationError:
        return Response(b'{"error":"invalid_signature"}', status_code=400, media_type="application/json")
    json.loads(body)
    return Response(BARE_RESPONSE, status_code=200, media_type="application/json")


def _one_route(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> FastAPI:
    one = FastAPI()
    one.add_api_route(path, endpoint, methods=["POST"])
    return one


health_app = FastAPI()


@health_app.get("/health")
def health() -> str:
    return "ok"


_ENDPOINTS = {
    "/bare": _one_route("/bare", bare),
    "/bare-again": _one_route("/bare-again", bare),  # the A/A control: the same endpoint twice
    "/ours": _one_route("/ours", webhook_view(async_dispatcher())),
    "/ours-sync-handlers": _one_route("/ours-sync-handlers", webhook_view(sync_dispatcher())),
}


async def app(scope: _Scope, receive: _Receive, send: _Send) -> None:
    """Each request to its endpoint's application; lifespan and anything else to ``health_app``."""
    path = scope.get("path") if scope["type"] == "http" else None
    await _ENDPOINTS.get(path, health_app)(scope, receive, send)  # type: ignore[arg-type]
