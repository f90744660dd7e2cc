"""The web side: verify each delivery, queue it for a Celery worker, answer 202 at once.

Run it (from the repository root)::

    CARECYCLE_WEBHOOK_SECRET=whsec_... REDIS_URL=redis://127.0.0.1:6379/0 \\
        gunicorn --chdir examples/celery_queue celery_web:app -b 127.0.0.1:8000

and a worker beside it (see ``celery_tasks.py`` and this directory's README.md).

Answers: 202 queued; 400 bad signature, headers or timestamp; 413 body too large;
422 signed but not a valid event; 503 the broker is unreachable (Svix retries).
"""

from __future__ import annotations

import json
import logging
import os

from celery_tasks import enqueue
from flask import Flask, Response, request

from carecycle_webhooks import (
    WebhookPayloadError,
    WebhookVerificationError,
    WebhookVerifier,
    parse_unverified_event,
)

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("example.celery_web")

MAX_BODY_SIZE = 10 * 1024 * 1024  # what Dispatcher answers 413 above, by default
_CHUNK = 64 * 1024

app = Flask(__name__)
verifier = WebhookVerifier(os.environ["CARECYCLE_WEBHOOK_SECRET"].split())


def _answer(status_code: int, **fields: object) -> Response:
    return Response(
        json.dumps(fields), status=status_code, content_type="application/json"
    )


def _read_at_most(size: int) -> bytes:
    """The body, but never more than ``size`` bytes of it, however it is sent."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = request.stream.read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


@app.post("/webhooks")
def receive() -> Response:
    declared = request.content_length  # None when absent or chunked
    if declared is not None and declared > MAX_BODY_SIZE:
        return _answer(413, error="body_too_large", limit=MAX_BODY_SIZE)
    body = _read_at_most(MAX_BODY_SIZE + 1)
    if len(body) > MAX_BODY_SIZE:
        return _answer(413, error="body_too_large", limit=MAX_BODY_SIZE)
    try:
        delivery = verifier.verify(body, request.headers)
    except WebhookVerificationError as error:
        # Nothing is queued for a delivery that is not careCycle's.
        log.warning("webhook rejected (%s): %s", error.reason, error)
        return _answer(400, error=error.reason, detail=str(error))
    # The body is parsed here too, only to answer 422 at once: parsing a typical event
    # takes some 10-20 microseconds, about as long as checking its signature and far
    # less than queuing it, and it keeps the status table of the other receivers. A
    # signed body that is not a valid event then shows as failing in the Svix dashboard,
    # where careCycle and you can see it, instead of being accepted and dropped by a
    # worker. The worker parses the queued body again (the body, not a model, is what
    # travels).
    try:
        text = body.decode("utf-8")
        parse_unverified_event(text)
    except (UnicodeDecodeError, WebhookPayloadError) as error:
        detail = (
            "the body is not UTF-8 text"
            if isinstance(error, UnicodeDecodeError)
            else str(error)
        )
        log.warning(
            "webhook %s is correctly signed but not a valid event: %s",
            delivery.webhook_id,
            detail,
        )
        return _answer(422, error="invalid_payload", detail=detail)
    try:
        job = enqueue(text, delivery)
    except Exception as error:  # noqa: BLE001
        # Whatever keeps it off the queue, Svix must retry. The type says enough:
        # no traceback for every refused delivery.
        log.error(  # noqa: TRY400
            "webhook %s not queued (%s): answering 503",
            delivery.webhook_id,
            type(error).__name__,
        )
        return _answer(503, error="queue_unavailable")
    log.info("webhook %s queued as job %s", delivery.webhook_id, job)
    return _answer(202, status="queued")


@app.get("/health")
def health() -> str:
    return "ok"
