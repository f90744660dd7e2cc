"""Parsing a payload into a typed event, with errors that never echo the payload."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

from ._errors import PayloadErrorDetail, WebhookPayloadError

if TYPE_CHECKING:
    import types

    from pydantic import TypeAdapter, ValidationError

    from ._models import Event, KnownEvent, UnknownEvent

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
    data: object = body  # checked at runtime too: callers are not always type-checked
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, (bytes, str)):
        raise WebhookPayloadError(f"the body must be bytes or str, not {type(data).__name__}")
    models = _models()
    known: TypeAdapter[KnownEvent] = models.KNOWN_EVENT_ADAPTER
    unknown: type[UnknownEvent] = models.UnknownEvent
    errors: tuple[PayloadErrorDetail, ...]
    try:
        # The adapter's validator itself (plugins included), without the Python wrapper
        # of TypeAdapter.validate_json: this runs on every delivery.
        return cast("KnownEvent", known.validator.validate_json(data))
    except models.ValidationError as exc:
        errors = _details(exc)
    except Exception:  # noqa: BLE001 - whatever the input, only our own exception may escape
        errors = (((), "unparseable"),)
    if len(errors) == 1 and errors[0] == ((), "union_tag_invalid"):
        # A well-formed event_type this version does not know (or not a string).
        try:
            return unknown.model_validate_json(data)
        except models.ValidationError as exc:
            errors = _details(exc)
        except Exception:  # noqa: BLE001 - as above
            errors = (((), "unparseable"),)
        if errors and errors[0][0] == ("event_type",):
            errors = (((), "missing_event_type"),)
    elif len(errors) == 1 and errors[0] == ((), "union_tag_not_found"):
        errors = (((), "missing_event_type"),)
    # Raised outside the except block: no chained ValidationError that could echo input.
    raise WebhookPayloadError(_describe(errors), errors=errors)


def _details(error: ValidationError) -> tuple[PayloadErrorDetail, ...]:
    return tuple(
        (tuple(detail["loc"]), detail["type"])
        for detail in error.errors(include_url=False, include_context=False, include_input=False)
    )


@functools.cache
def _models() -> types.ModuleType:
    # pydantic and the models load on the first parse, not on `import carecycle_webhooks`.
    from . import _models as models  # pyright: ignore[reportPrivateUsage] - our own module

    return models
