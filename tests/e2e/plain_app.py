"""The receiver of the plain-application end-to-end tests: ``wsgi`` (gunicorn) and ``asgi`` (uvicorn).

One dispatcher, with no framework: each application answers ``/health`` itself and hands
every other path to `webhook_app`. Every handler that runs appends ``<webhook-id>`` to
EVENTS_LOG, so that a test can count what ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from carecycle_webhooks import Dispatcher, Event, InMemoryIdempotencyStore, current_delivery
from carecycle_webhooks import asgi as plain_asgi
from carecycle_webhooks import wsgi as plain_wsgi

EVENTS_LOG = Path(os.environ["EVENTS_LOG"])

webhooks = Dispatcher(
    os.environ["CARECYCLE_WEBHOOK_SECRET"],
    idempotency_store=InMemoryIdempotencyStore(),  # one worker per server here
    max_body_size=int(os.environ.get("MAX_BODY_SIZE", str(10 * 1024 * 1024))),
)


@webhooks.catch_all
def record(event: Event) -> None:
    with EVENTS_LOG.open("a") as log:
        log.write(f"{current_delivery().webhook_id}\n")


_webhook_wsgi = plain_wsgi.webhook_app(webhooks)
_webhook_asgi = plain_asgi.webhook_app(webhooks)


def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return _webhook_wsgi(environ, start_response)


async def asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/health":
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await _webhook_asgi(scope, receive, send)
