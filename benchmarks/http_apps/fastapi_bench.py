"""FastAPI app for ``bench_http.py``: ``/bare`` (svix + json.loads), ``/ours`` (webhook_view), ``/health``.

Served by uvicorn, one process: ``uvicorn --app-dir benchmarks/http_apps fastapi_bench:app``.
``/bare-again`` is ``/bare`` once more, a control that shows the measurement's own spread.
``/ours`` has ``async def`` handlers (awaited on the loop); ``/ours-sync-handlers`` has
plain ``def`` handlers, which `Dispatcher.handle_async` runs in a worker thread.
"""

from __future__ import annotations

import json

from _bench_common import BARE_RESPONSE, async_dispatcher, svix_webhook, sync_dispatcher
from fastapi import FastAPI, Request, Response
from svix.webhooks import WebhookVerificationError

from carecycle_webhooks.fastapi import webhook_view

app = FastAPI()


async def bare(request: Request) -> Response:
    body = await request.body()
    try:
        svix_webhook.verify(body, request.headers)  # type: ignore[arg-type]  # Starlette Headers
    except WebhookVerificationError:
        return Response(b'{"error":"invalid_signature"}', status_code=400, media_type="application/json")
    json.loads(body)
    return Response(BARE_RESPONSE, status_code=200, media_type="application/json")


# Routes are matched in order: the peer's come first.
app.add_api_route("/bare", bare, methods=["POST"])
app.add_api_route("/bare-again", bare, methods=["POST"])  # the A/A control: the same endpoint twice
app.add_api_route("/ours", webhook_view(async_dispatcher()), methods=["POST"])
app.add_api_route("/ours-sync-handlers", webhook_view(sync_dispatcher()), methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
