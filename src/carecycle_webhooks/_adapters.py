"""What the framework adapters share: argument checks, bounded body reads, the early answers.

Each adapter is two small converters (request in, `WebhookResponse` out) around the
dispatcher; everything that is not framework-specific lives here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dispatch import JSON_HEADERS, Dispatcher, WebhookResponse, body_too_large, json_response
from ._errors import WebhookConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "METHOD_NOT_ALLOWED",
    "body_too_large",
    "check_dispatcher",
    "content_type_and_headers",
    "declared_length",
    "read_at_most",
]

# Reading in pieces: one read(max_body_size + 1) of a raw stream would allocate the
# whole limit up front, for every delivery, however small.
_CHUNK = 64 * 1024

METHOD_NOT_ALLOWED: WebhookResponse = json_response(405, error="method_not_allowed")


def check_dispatcher(dispatcher: object, framework: str, *, synchronous: bool) -> Dispatcher:
    """The dispatcher, checked at start-up: routing code is rarely type-checked."""
    if not isinstance(dispatcher, Dispatcher):
        raise WebhookConfigurationError(
            f"webhook_view() takes a carecycle_webhooks.Dispatcher, not {type(dispatcher).__name__}"
        )
    if synchronous and getattr(dispatcher.idempotency_store, "is_async", False) is True:
        raise WebhookConfigurationError(
            f"{framework} views built by webhook_view() are synchronous, but this dispatcher's "
            "idempotency store has an asyncio Redis client: give RedisIdempotencyStore a "
            "redis.Redis client instead"
        )
    return dispatcher


def content_type_and_headers(response: WebhookResponse) -> tuple[str | None, list[tuple[str, str]]]:
    """The response's content type, which frameworks take apart, and its other headers."""
    headers = response.headers
    if headers is JSON_HEADERS:  # every answer of the dispatcher
        return "application/json", []
    return headers.get("content-type"), [(k, v) for k, v in headers.items() if k != "content-type"]


def declared_length(value: object) -> int | None:
    """A ``Content-Length`` value as a number, or ``None`` when absent or not a number."""
    if value is None:
        return None
    try:
        # bytes as ASGI servers give header values; int() reads ASCII digits from them.
        # Exact types only: a subclass's own __int__ is not asked.
        length = int(value) if type(value) is bytes or type(value) is str else int(str(value))
    except ValueError:
        return None
    return length if length >= 0 else None


def read_at_most(read: Callable[[int], bytes], size: int) -> bytes:
    """Read up to ``size`` bytes, however short each read is; never more."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
