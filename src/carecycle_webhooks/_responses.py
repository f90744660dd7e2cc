"""What the dispatcher and the adapters answer: a framework-neutral response, as small JSON."""

from __future__ import annotations

import dataclasses
import json
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BODY_TIMEOUT",
    "BODY_TIMEOUT_SECONDS",
    "BUSY",
    "CLIENT_DISCONNECTED",
    "JSON_HEADERS",
    "RETRY_AFTER_SECONDS",
    "WebhookResponse",
    "body_too_large",
    "json_response",
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

Svix gives up on a request after 15 s, so a body still arriving after this is not a
delivery: it holds a share of the body budget, and is answered 408 to free it.
"""

BODY_TIMEOUT = json_response(408, error="body_timeout", detail="the body did not arrive in time")
"""The answer when a body did not arrive within `BODY_TIMEOUT_SECONDS`."""
