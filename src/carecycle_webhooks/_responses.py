"""Every answer of the dispatcher and the adapters: the status table, in one place.

Each answer is a framework-neutral `WebhookResponse` with a small JSON body that never
holds PHI. The table in the docs (docs/includes/status-table.md) lists the same rows; a
test holds the two together.
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._errors import WebhookPayloadError, WebhookVerificationError

__all__ = [
    "BODY_TIMEOUT",
    "BODY_TIMEOUT_SECONDS",
    "BUSY",
    "CLIENT_DISCONNECTED",
    "DUPLICATE",
    "HANDLER_FAILED",
    "IGNORED",
    "IN_FLIGHT",
    "JSON_HEADERS",
    "METHOD_NOT_ALLOWED",
    "NOT_BYTES",
    "NOT_COMMITTED",
    "PROCESSED",
    "RESOLVER_FAILED",
    "RETRY_AFTER_SECONDS",
    "STALE",
    "STORE_UNAVAILABLE",
    "TEST_CUSTOMER",
    "UNKNOWN_TENANT",
    "WebhookResponse",
    "body_too_large",
    "invalid_payload",
    "json_response",
    "rejected",
]

JSON_HEADERS: Mapping[str, str] = types.MappingProxyType({"content-type": "application/json"})


@dataclasses.dataclass(frozen=True)
class WebhookResponse:
    """What to answer Svix, whatever the framework.

    Attributes:
        status_code: 2xx when handled (or nothing to do), 4xx/5xx as in the status table.
        body: A small JSON document saying what happened; never PHI.
        headers: Response headers (``content-type``, and ``retry-after`` on a 503 that asks
            to come back later).
    """

    status_code: int
    body: bytes
    headers: Mapping[str, str] = dataclasses.field(default_factory=lambda: JSON_HEADERS)


def json_response(
    status_code: int, headers: Mapping[str, str] = JSON_HEADERS, **fields: object
) -> WebhookResponse:
    """A response with a small JSON document, the form of every answer of the dispatcher."""
    return WebhookResponse(status_code, json.dumps(fields).encode(), headers)


def body_too_large(limit: int) -> WebhookResponse:
    """The 413 answer, also given by the adapters before they read a body declared too large."""
    return json_response(413, error="body_too_large", limit=limit)


# ---------------------------------------------------------------- 2xx: Svix stops retrying

PROCESSED = json_response(200, status="processed")
"""Every handler returned."""

IGNORED = json_response(200, status="ignored")
"""No handler and no catch-all for this event type."""

DUPLICATE = json_response(200, status="duplicate")
"""This ``webhook-id`` was processed already: nothing ran again."""

STALE = json_response(200, status="stale")
"""``skip_out_of_order``: a newer update of this customer was processed already; nothing ran."""

TEST_CUSTOMER = json_response(200, status="test_customer")
"""``skip_test_customers``: the event is about a test customer; nothing ran."""

# ---------------------------------------------------------------- 4xx

NOT_BYTES = json_response(400, error="invalid_body", detail="the body must be bytes or str")
"""`Dispatcher.handle` was given something other than the raw body."""


def rejected(error: WebhookVerificationError) -> WebhookResponse:
    """400: the delivery could not be verified; the reason and the error's message (no values)."""
    return json_response(400, error=error.reason, detail=str(error))


UNKNOWN_TENANT = json_response(404, error="unknown_tenant")
"""The secret resolver knows no such tenant (or the key is not one): nothing was verified."""

METHOD_NOT_ALLOWED = json_response(405, error="method_not_allowed")
"""A request with another method than POST (the adapters add ``Allow: POST``)."""

IN_FLIGHT = json_response(409, error="in_flight", detail="this delivery is being processed by another worker")
"""Another worker holds this ``webhook-id``'s lease: Svix retries later."""


def invalid_payload(error: WebhookPayloadError) -> WebhookResponse:
    """422: correctly signed, but not a valid event; locations and error types only."""
    return json_response(422, error="invalid_payload", detail=str(error))


# ---------------------------------------------------------------- 5xx: Svix retries

HANDLER_FAILED = json_response(500, error="handler_failed")
"""A handler raised; logged without its message."""

STORE_UNAVAILABLE = json_response(503, error="idempotency_store_unavailable")
"""The idempotency store failed or did not answer in time: no handler ran."""

RESOLVER_FAILED = json_response(503, error="secret_resolver_failed")
"""The secret resolver raised, or gave no valid secret: logged without its message."""

NOT_COMMITTED = json_response(
    503, error="not_committed", detail="the delivery's transaction was not committed: retry it"
)
"""A transactional store's commit of the handlers' writes and done mark failed (`CommitFailed`)."""

RETRY_AFTER_SECONDS = 5
"""What a 503 for a spent body budget asks the sender to wait. Svix keeps its own schedule."""

BUSY = json_response(
    503,
    types.MappingProxyType({**JSON_HEADERS, "retry-after": str(RETRY_AFTER_SECONDS)}),
    error="busy",
    detail="too many request bodies are being read right now; retry later",
)
"""The answer when the body budget is spent, given before the body is read."""

CLIENT_DISCONNECTED = json_response(400, error="client_disconnected")
"""The answer (which nobody reads) when the client went away before its body was read."""

BODY_TIMEOUT_SECONDS = 20.0
"""How long an ASGI adapter waits for a large or chunked body to arrive whole.

A small body gets this long from its first piece, when more is to come.

Svix gives up on a request after 15 s, so a body still arriving after this is not a
delivery: it holds a share of the body budget, and is answered 408 to free it.
"""

BODY_TIMEOUT = json_response(408, error="body_timeout", detail="the body did not arrive in time")
"""The answer when a body did not arrive within `BODY_TIMEOUT_SECONDS`."""
