"""Parsing a payload into a typed event, with errors that never echo the payload."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, TypeAlias, cast

from ._errors import PayloadErrorDetail, WebhookPayloadError

if TYPE_CHECKING:
    import types
    from collections.abc import Callable

    from pydantic import ValidationError
    from pydantic_core import SchemaValidator

    from ._models import Event, KnownEvent, UnknownEvent

__all__ = ["parse_unverified_event"]

# The message names this many problems; `WebhookPayloadError.errors` keeps at most
# _MAX_KEPT_ERRORS of them, and the message gives the full count.
_MAX_LISTED_ERRORS = 5
_MAX_KEPT_ERRORS = 50

# A JSON escape of a UTF-16 surrogate with the whole run of backslashes before it: the
# run's length says whether the "\u" is an escape (odd) or text after escaped backslashes
# (even). A high surrogate is taken with the low-surrogate escape that may follow it,
# so that a valid pair is seen as one. Only the escapes are looked at: JSON text holds
# no backslash outside a string. A match starts only where a run starts (the
# lookbehind), so a long run of backslashes is scanned once, not once per backslash.
_SURROGATE_ESCAPE = (
    r"(?<!\\)(\\+)u([dD][89abAB][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
    r"|(?<!\\)(\\+)u([dD][c-fC-F][0-9a-fA-F]{2})"
)
_REPLACEMENT = "\\ufffd"  # U+FFFD REPLACEMENT CHARACTER, as a JSON escape


def _describe(errors: tuple[PayloadErrorDetail, ...], count: int) -> str:
    if errors and errors[0][1] == "json_invalid":
        return "the body is not valid JSON"
    if errors and errors[0][1] == "missing_event_type":
        return "the body is not a careCycle event: event_type is missing or not a string"
    listed = "; ".join(
        f"{'.'.join(str(part) for part in loc) or '(body)'}: {kind}"
        for loc, kind in errors[:_MAX_LISTED_ERRORS]
    )
    more = f"; and {count - _MAX_LISTED_ERRORS} more" if count > _MAX_LISTED_ERRORS else ""
    noun = "error" if count == 1 else "errors"
    return f"invalid careCycle event, {count} {noun}: {listed}{more}"


def parse_unverified_event(body: bytes | str) -> Event:
    r"""Parse a payload into a typed event WITHOUT verifying its signature.

    Only for bodies whose signature was already checked, for example by the endpoint
    that queued them for a worker, or a delivery replayed from your own storage. A body
    straight from an HTTP request must go through `parse_event` or `WebhookVerifier`.

    A string holding an escaped lone surrogate (``"Mar\ud800cus"``: valid JSON, which
    ``json.loads`` and JavaScript accept, but no Unicode text) is read with U+FFFD, the
    replacement character, in place of each lone surrogate, so that every string of an
    event encodes to UTF-8.

    Args:
        body: The JSON payload, ``bytes`` or ``str``.

    Returns:
        The event, discriminated on ``event_type``; unknown types give `UnknownEvent`.

    Raises:
        WebhookPayloadError: Not JSON, or not a valid careCycle event. The message and
            ``errors`` name locations and error types only, never values; ``errors``
            keeps the first 50 problems, and the message gives their count.
    """
    data: object = body  # checked at runtime too: callers are not always type-checked
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, (bytes, str)):
        raise WebhookPayloadError(f"the body must be bytes or str, not {type(data).__name__}")
    models = _models()
    known: SchemaValidator = models.KNOWN_EVENT_VALIDATOR
    failure: _Failure
    try:
        # The validator itself, without the Python wrapper of TypeAdapter.validate_json,
        # nor the models' error-hiding wrappers: this runs on every delivery.
        return cast("KnownEvent", known.validate_json(data))
    except models.ValidationError as exc:
        failure = _details(exc)
    except Exception:  # noqa: BLE001 - whatever the input, only our own exception may escape
        failure = _UNPARSEABLE
    return _after_failure(data, failure)


# The first errors (locations and types) and how many there are in all.
_Failure: TypeAlias = "tuple[tuple[PayloadErrorDetail, ...], int]"
_UNPARSEABLE: _Failure = ((((), "unparseable"),), 1)


def _attempt(validate: Callable[[bytes | str], Event], data: bytes | str) -> Event | _Failure:
    try:
        return validate(data)
    except _models().ValidationError as exc:
        return _details(exc)
    except Exception:  # noqa: BLE001 - whatever the input, only our own exception may escape
        return _UNPARSEABLE


def _after_failure(data: bytes | str, failure: _Failure) -> Event:
    """What the known events could not read: lone surrogates, an unknown event type, or an error."""
    models = _models()
    outcome: Event | _Failure = failure
    if failure[0] == (((), "json_invalid"),):
        # pydantic-core's parser refuses escaped lone surrogates; read them as U+FFFD.
        repaired = _replace_lone_surrogates(data)
        if repaired is not None:
            data = repaired
            outcome = _attempt(models.KNOWN_EVENT_VALIDATOR.validate_json, data)
    if isinstance(outcome, tuple) and outcome[0] == (((), "union_tag_invalid"),):
        # A well-formed event_type this version does not know (or not a string).
        unknown: type[UnknownEvent] = models.UnknownEvent
        outcome = _attempt(unknown.model_validate_json, data)
        if isinstance(outcome, tuple) and outcome[0] and outcome[0][0][0] == ("event_type",):
            outcome = ((((), "missing_event_type"),), 1)
    elif isinstance(outcome, tuple) and outcome[0] == (((), "union_tag_not_found"),):
        outcome = ((((), "missing_event_type"),), 1)
    if not isinstance(outcome, tuple):
        return outcome
    errors, count = outcome
    # Raised outside any except block: no chained ValidationError that could echo input.
    raise WebhookPayloadError(_describe(errors, count), errors=errors)


def _details(error: ValidationError) -> tuple[tuple[PayloadErrorDetail, ...], int]:
    # The models stop a list at its first bad item (fail_fast), so the count is bounded
    # by the schema, not by the payload; only the first errors are kept.
    details = error.errors(include_url=False, include_context=False, include_input=False)
    kept = tuple((tuple(detail["loc"]), detail["type"]) for detail in details[:_MAX_KEPT_ERRORS])
    return kept, error.error_count()


def _replace_lone_surrogates(data: bytes | str) -> str | None:
    """The JSON text with each escaped lone surrogate escaped as U+FFFD; ``None`` if it has none."""
    if isinstance(data, bytes):
        if b"\\u" not in data:
            return None
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return None  # not JSON text whatever its escapes
    if "\\u" not in data:
        return None
    repaired = _surrogate_escape().sub(_repair, data)
    return None if repaired == data else repaired


def _repair(match: re.Match[str]) -> str:
    high_run, high, pair, low_run, _low = match.groups()
    if high_run is None:  # a low surrogate without a high one before it
        return low_run[:-1] + _REPLACEMENT if len(low_run) % 2 else match[0]
    if len(high_run) % 2 == 0:  # escaped backslashes, then the text "uD8xx"
        return match[0] if pair is None else f"{high_run}u{high}{_REPLACEMENT}"
    return match[0] if pair is not None else high_run[:-1] + _REPLACEMENT


@functools.cache
def _surrogate_escape() -> re.Pattern[str]:
    return re.compile(_SURROGATE_ESCAPE)


@functools.cache
def _models() -> types.ModuleType:
    # pydantic and the models load on the first parse, not on `import carecycle_webhooks`.
    from . import _models as models  # pyright: ignore[reportPrivateUsage] - our own module

    return models
