"""Reading the ``webhook-*`` / ``svix-*`` headers of a delivery, from any headers object.

Three readings, fastest first:

- `_read_environ`: a WSGI environ (Werkzeug's ``EnvironHeaders``, Django's META): our
  eight names looked up directly, as ``HTTP_*`` keys.
- `_read_raw`: ASGI's raw ``(name, value)`` byte pairs (Starlette's ``Headers``): one
  C-level ``dict()`` of the pairs.
- `_collect_headers`, the general reading: any ``Mapping`` or object with ``.items()``.
  It runs whenever a fast path sees something unusual, and says what is wrong.

The id, timestamp and signature are signed: the same header given twice with different
values is refused (fail closed). The attempt is not signed: two different values make it
unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, TypeAlias, TypeVar, cast

from ._errors import VerificationFailure, WebhookVerificationError

__all__ = ["REQUIRED", "Headers", "SupportsHeaderItems", "fail", "read_headers"]


# The three headers, under the Standard Webhooks names and Svix's own.
_HEADER_NAMES = {
    "webhook-id": "webhook-id",
    "svix-id": "webhook-id",
    "webhook-timestamp": "webhook-timestamp",
    "svix-timestamp": "webhook-timestamp",
    "webhook-signature": "webhook-signature",
    "svix-signature": "webhook-signature",
    # Not signed and not sent by every sender: informational only.
    "webhook-attempt": "webhook-attempt",
    "svix-attempt": "webhook-attempt",
}

REQUIRED = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SupportsHeaderItems(Protocol):
    """Any headers object with ``.items()``, such as Werkzeug's ``Headers`` (not a ``Mapping``)."""

    def items(self) -> Iterable[tuple[str, str]]:  # pragma: no cover - protocol
        """Return the header names and values."""
        ...


Headers: TypeAlias = Mapping[str, str] | SupportsHeaderItems
"""Request headers: a ``Mapping[str, str]`` or any object with ``.items()``.

Flask's, Django's and Starlette's ``request.headers`` and a plain ``dict`` all fit.
"""


def fail(message: str, reason: VerificationFailure) -> WebhookVerificationError:
    """A verification error with its reason, raised by the caller."""
    return WebhookVerificationError(message, reason=reason)


def _collect_headers(headers: Headers) -> tuple[dict[str, object], list[object], str | None] | None:
    # Only gathers, so that nothing but a broken headers object can raise in here.
    # The attempt is kept apart: it is not signed, so its values are never compared
    # with their own methods, and two different ones are no conflict (see read_headers).
    found: dict[str, object] = {}
    attempts: list[object] = []
    conflict: str | None = None
    try:
        for name, value in headers.items():
            if isinstance(name, str):
                canonical = _HEADER_NAMES.get(name.lower())
                if canonical == "webhook-attempt":
                    attempts.append(value)
                elif canonical is not None and found.setdefault(canonical, value) != value:
                    conflict = canonical
    except Exception:  # noqa: BLE001 - any object may be passed in; the caller says what is wrong
        return None
    return found, attempts, conflict


# Our headers' names, the Standard Webhooks ones then Svix's own, as the fast paths
# below look them up: _pick unpacks the values in this order.
_NAMES = tuple(
    f"{prefix}-{name}"
    for prefix in ("webhook", "svix")
    for name in ("id", "timestamp", "signature", "attempt")
)
_ENVIRON_NAMES = tuple("HTTP_" + name.upper().replace("-", "_") for name in _NAMES)  # WSGI
_RAW_NAMES = tuple(name.encode("ascii") for name in _NAMES)  # ASGI: bytes, in lower case

_NONE_OR_STR = frozenset({type(None), str})
_BYTES = frozenset({bytes})

_ABSENT: list[None] = [None, None, None]

# The value type of one reading: str from a WSGI environ, bytes from ASGI pairs.
_Text = TypeVar("_Text", str, bytes)


def _pick(values: list[_Text | None]) -> tuple[_Text, _Text, _Text, _Text | None] | None:
    """The id, timestamp, signature and attempt among the values found under `_NAMES`.

    The values are exactly ``str`` or exactly ``bytes``, or ``None`` (checked by the
    callers), so comparing them runs no code of the caller's. Either set of names may be
    used, or both with the same id, timestamp and signature. ``None`` for anything else,
    or when the id, timestamp or signature is missing or empty: the general reading says
    what is wrong. Two different attempt numbers give no attempt number: the header is
    not signed, so it cannot make a correctly signed delivery fail.
    """
    standard, svix = values[:3], values[4:7]
    if standard == _ABSENT:
        standard = svix  # Svix's names only
    elif svix not in (_ABSENT, standard):
        return None  # both names, not all alike: the general reading compares them
    msg_id, timestamp, signature = standard
    if msg_id and timestamp and signature:
        return msg_id, timestamp, signature, _one_attempt(values[3], values[7])
    return None


def _one_attempt(first: _Text | None, second: _Text | None) -> _Text | None:
    if first is None or first == second:
        return second
    return first if second is None else None


def _read_environ(headers: Headers) -> tuple[str, str, str, str | None] | None:
    """Werkzeug's EnvironHeaders (Flask's request.headers), or Django's META: our headers.

    Iterating EnvironHeaders rebuilds every header name from the WSGI environ; the
    environ itself answers our eight names directly (WSGI servers give every header as
    an upper-case ``HTTP_*`` key, and join repeated headers into one). ``None`` for
    anything the general reading must judge (a header missing, empty or not exactly a
    ``str``, or under both names with different values): it says what is wrong.
    """
    try:
        environ: object = getattr(headers, "environ", None)
        if type(environ) is not dict:
            return None
        values = list(map(cast("dict[str, object]", environ).get, _ENVIRON_NAMES))
    except Exception:  # noqa: BLE001 - any object may be passed in: the general reading decides
        return None
    if not set(map(type, values)) <= _NONE_OR_STR:
        return None
    return _pick(cast("list[str | None]", values))


def _read_raw(headers: Headers) -> tuple[str, str, str, str | None] | None:
    """Starlette's Headers (FastAPI's request.headers): our headers.

    They keep the ASGI pairs as sent, names in lower case (the ASGI spec), so one
    C-level dict() of the pairs finds our headers, and only their values are decoded.
    ``None`` for anything the general reading must judge: a name given twice (in any
    case), a name or value that is not exactly ``bytes``, a name not in lower case, a
    header missing or empty, both names with different values. It says what is wrong.
    """
    try:
        raw: object = getattr(headers, "raw", None)
        if type(raw) is not list:
            return None
        pairs = cast("list[tuple[object, object]]", raw)
        table = dict(pairs)
    except Exception:  # noqa: BLE001 - any object may be passed in: the general reading decides
        return None
    # All C-level: pairs of bytes only (dict() takes any two-item sequence, b"ab" too),
    # no name twice, every name in lower case (the general reading lower-cases them).
    if (
        len(table) != len(pairs)
        or set(map(type, table)) != _BYTES
        or set(map(type, table.values())) != _BYTES
    ):
        return None
    names = cast("dict[bytes, bytes]", table)
    if not b"".join(names).islower():
        return None
    picked = _pick(list(map(names.get, _RAW_NAMES)))
    if picked is None:
        return None
    msg_id, timestamp, signature, attempt = picked
    return (
        msg_id.decode("latin-1"),
        timestamp.decode("latin-1"),
        signature.decode("latin-1"),
        None if attempt is None else attempt.decode("latin-1"),
    )


def read_headers(headers: Headers) -> tuple[str, str, str, object]:
    fast = _read_environ(headers) or _read_raw(headers)
    if fast is not None:
        return fast
    collected = _collect_headers(headers)
    if collected is None:
        # Raised outside any except block, so no chained cause rides along.
        raise fail(
            "headers must be a mapping or have .items() yielding (name, value) pairs, "
            "such as request.headers",
            "malformed_header",
        )
    found, attempts, conflict = collected
    if conflict is not None:
        raise fail(f"header {conflict} is given twice with different values", "conflicting_headers")
    texts: list[str] = []
    for name in REQUIRED:
        value = found.get(name)
        if value is not None and not isinstance(value, str):
            raise fail("header values must be strings", "malformed_header")
        # A plain str copy: a str subclass's own methods never run in what follows.
        texts.append("" if value is None else str.__str__(value))
    msg_id, timestamp, signature = texts
    if not (msg_id and timestamp and signature):
        missing = [name for name, text in zip(REQUIRED, texts, strict=True) if not text]
        raise fail(f"missing header {' and '.join(missing)} (or svix-*)", "missing_header")
    # One attempt number, or none: values that are not strings, or that differ, say nothing.
    given = {str.__str__(value) for value in attempts if isinstance(value, str)}
    attempt = given.pop() if len(given) == 1 and all(isinstance(value, str) for value in attempts) else None
    return msg_id, timestamp, signature, attempt
