"""Parsing a payload into a typed event, with errors that never echo the payload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import PayloadErrorDetail, WebhookPayloadError

if TYPE_CHECKING:
    from ._models import Event

__all__ = ["parse_unverified_event"]

_MAX_LISTED_ERRORS = 5


def _describe(errors: tuple[PayloadErrorDetail, ...]) -> str:
    if errors and errors[0][1] == "json_invalid":
        return "the body is not valid JSON"
    if errors and errors[0][1] == "missing_event_type":
        return "the body is not a careCycle event: event_type is missing or not a string"
    listed = "; ".join(
        f"{'.'.join(str(part) for part in loc) or '(body)'}: {kind}"
        for loc, kind in errors[:_MAX_LISTED_ERRORS]
    )
    more = f"; and {len(errors) - _MAX_LISTED_ERRORS} more" if len(errors) > _MAX_LISTED_ERRORS else ""
    noun = "error" if len(errors) == 1 else "errors"
    return f"invalid careCycle event, {len(errors)} {noun}: {listed}{more}"


def parse_unverified_event(body: bytes | str) -> Event:
    """Parse a payload into a typed event WITHOUT verifying its signature.

    Only for bodies whose signature was already checked, for example by the endpoint
    that queued them for a worker, or a delivery replayed from your own storage. A body
    straight from an HTTP request must go through `parse_event` or `WebhookVerifier`.

    Args:
        body: The JSON payload, ``bytes`` or ``str``.

    Returns:
        The event, discriminated on ``event_type``; unknown types give `UnknownEvent`.

    Raises:
        WebhookPayloadError: Not JSON, or not a valid careCycle event. The message and
            ``errors`` name locations and error types only, never values.
    """
    from pydantic import ValidationError

    from ._models import EVENT_ADAPTER

    data: object = body  # checked at runtime too: callers are not always type-checked
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, (bytes, str)):
        raise WebhookPayloadError(f"the body must be bytes or str, not {type(data).__name__}")
    errors: tuple[PayloadErrorDetail, ...]
    try:
        return EVENT_ADAPTER.validate_json(data)
    except ValidationError as exc:
        errors = tuple(
            (tuple(error["loc"]), error["type"])
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        )
    except Exception:  # noqa: BLE001 - whatever the input, only our own exception may escape
        errors = (((), "unparseable"),)
    # Raised outside the except block: no chained ValidationError that could echo input.
    raise WebhookPayloadError(_describe(errors), errors=errors)
