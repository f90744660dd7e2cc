"""Svix / Standard Webhooks signature verification.

The expected ``v1`` signature is computed by svix's own signing code: ``hmac_data``,
the HMAC-SHA256 function of the ``standardwebhooks`` ``Webhook.sign`` that
``svix.webhooks.Webhook`` delegates to (svix 1.84.0 and later; svix 1.40 to 1.83 carry
the same code in ``svix/webhooks.py``), over the same ``{id}.{timestamp}.{body}`` content
(the tests check it against ``svix.webhooks.Webhook.sign`` for arbitrary inputs, at the
lowest and the newest svix).
It is applied to the body's bytes as received, because ``sign()`` takes text, and
decoding then re-encoding a large body costs more than the HMAC itself. Importing
``standardwebhooks`` directly skips the half second that ``svix/__init__`` spends
loading its API client.

Everything around it is ours, so that every malformed input ends in a `WebhookError`:
the headers (read by `_headers`, case-insensitively, under both ``webhook-*`` and
``svix-*`` names), the timestamp tolerance with an injectable clock, and the
constant-time comparison.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import functools
import hmac
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from standardwebhooks.webhooks import hmac_data as _hmac_sha256

from ._errors import WebhookConfigurationError
from ._headers import Headers, SupportsHeaderItems, fail, read_headers
from ._parse import parse_unverified_event

if TYPE_CHECKING:
    from ._models import Event

__all__ = [
    "DEFAULT_TOLERANCE",
    "Headers",
    "SupportsHeaderItems",
    "WebhookDelivery",
    "WebhookVerifier",
    "parse_event",
]

DEFAULT_TOLERANCE = datetime.timedelta(minutes=5)
"""How far a delivery's timestamp may be from the local clock, in either direction."""

_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret
# Longer header values are not something Svix sends; refusing them early bounds the work.
_MAX_ID_LENGTH = 256
_MAX_TIMESTAMP_DIGITS = 12
_MAX_SIGNATURE_HEADER_LENGTH = 8192
_V1_ENTRY_LENGTH = len("v1,") + 44  # "v1," and an HMAC-SHA256 in base64
# Svix sends one signature, or a few while a secret is rotated.
_MAX_CANDIDATES = 32

_MAX_ATTEMPT_DIGITS = 6
_MAX_UTF8_BYTES_PER_CHARACTER = 4
# Measuring a str's UTF-8 size encodes it in slices of this many characters.
_SIZE_SLICE = 1 << 16
# datetime's range ends in year 9999; a later timestamp is no timestamp.
_MAX_TIMESTAMP = 253_402_300_799


@dataclasses.dataclass(frozen=True)
class WebhookDelivery:
    """What the verified headers say about one delivery attempt.

    Attributes:
        webhook_id: The ``webhook-id`` (``svix-id``): the same for every retry of one
            message, so it is the idempotency key.
        timestamp: When this attempt was signed (``webhook-timestamp``), timezone-aware UTC.
        attempt: The attempt number from a ``webhook-attempt`` (``svix-attempt``) header,
            when the sender adds one; ``None`` otherwise. It is not covered by the
            signature, so use it for logs and metrics, not for decisions.
        tenant: The tenant key the delivery came for (the adapters read it from a
            ``tenant`` path parameter; ``handle(..., tenant=...)``), or ``None``. The
            ``webhook-id`` s and customer order marks are kept per tenant.
    """

    webhook_id: str
    timestamp: datetime.datetime
    attempt: int | None = None
    tenant: str | None = None


def _decode_secret(secret: object) -> bytes:
    if not isinstance(secret, str):
        raise WebhookConfigurationError(
            f"a webhook secret must be a str such as 'whsec_...', not {type(secret).__name__}"
        )
    # Surrounding whitespace is a copy-and-paste accident (a trailing newline in an env
    # file), never part of the base64.
    encoded = secret.strip().removeprefix(_SECRET_PREFIX)
    if not encoded.strip():
        raise WebhookConfigurationError("the webhook secret is empty")
    key: bytes | None
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = None
    if not key:
        raise WebhookConfigurationError(
            "the webhook secret is not valid: expected 'whsec_' followed by base64, "
            "as shown on the endpoint's page in the careCycle/Svix dashboard"
        )
    return key


def decode_secrets(secret: object) -> tuple[bytes, ...]:
    if isinstance(secret, str):
        return (_decode_secret(secret),)
    if not isinstance(secret, Sequence) or isinstance(secret, (bytes, bytearray)):
        raise WebhookConfigurationError(
            f"secret must be a 'whsec_...' str or a sequence of them, not {type(secret).__name__}"
        )
    if not secret:
        raise WebhookConfigurationError("at least one webhook secret is needed")
    return tuple(_decode_secret(one) for one in cast("Sequence[object]", secret))


def _check_tolerance(tolerance: object) -> float:
    if not isinstance(tolerance, datetime.timedelta):
        raise WebhookConfigurationError(
            f"tolerance must be a datetime.timedelta, not {type(tolerance).__name__}"
        )
    if tolerance < datetime.timedelta(0):
        raise WebhookConfigurationError("tolerance must not be negative")
    return tolerance.total_seconds()


def _attempt(value: object) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= _MAX_ATTEMPT_DIGITS:
        return int(value)
    return None


def _body_bytes(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            pass
        # Lone surrogates have no UTF-8 form, so such a str cannot have been signed.
        raise fail("the body is not valid Unicode text", "invalid_body")
    if isinstance(body, memoryview):
        return body.tobytes()
    if isinstance(body, bytearray):
        return bytes(body)
    raise fail(f"the body must be bytes or str, not {type(body).__name__}", "invalid_body")


def body_size(body: bytes | str | bytearray | memoryview) -> int:
    """The size of a body in bytes: for a ``str``, the size of its UTF-8 encoding.

    A ``str`` body is signed as its UTF-8 bytes, so that is what a size limit must count,
    not its characters (one character takes up to four bytes). An ASCII ``str`` is
    answered from its length; any other is measured by encoding it, a slice at a time so
    that no full copy is made. A lone surrogate, which has no UTF-8 form (verification
    refuses such a body with ``invalid_body``), counts as the three bytes that
    ``surrogatepass`` gives it.

    Args:
        body: The request body.

    Returns:
        Its size in bytes.
    """
    if isinstance(body, str):
        if body.isascii():  # O(1): CPython records it
            return len(body)
        return sum(
            len(body[start : start + _SIZE_SLICE].encode("utf-8", "surrogatepass"))
            for start in range(0, len(body), _SIZE_SLICE)
        )
    if isinstance(body, memoryview):
        return body.nbytes
    return len(body)


def body_exceeds(body: bytes | str | bytearray | memoryview, limit: int) -> bool:
    """Whether a body is larger than ``limit`` bytes, as `body_size` counts them.

    For a ``str``, its length alone often decides: UTF-8 takes at least one byte and at
    most four per character, so only a length between ``limit / 4`` and ``limit`` is
    measured.

    Args:
        body: The request body.
        limit: The largest size accepted, in bytes.

    Returns:
        ``True`` when the body is larger than ``limit`` bytes.
    """
    if isinstance(body, str):
        if len(body) > limit:
            return True
        if len(body) * _MAX_UTF8_BYTES_PER_CHARACTER <= limit:
            return False
    return body_size(body) > limit


def _is_visible_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _signature_candidates(header: str) -> list[bytes]:
    if len(header) > _MAX_SIGNATURE_HEADER_LENGTH:
        raise fail("header webhook-signature is malformed: too long", "malformed_header")
    if (
        header.startswith("v1,")
        and len(header) == _V1_ENTRY_LENGTH
        and header.isascii()
        and header.isprintable()
        and " " not in header
    ):
        # One v1 signature, as Svix sends outside a secret rotation: nothing to split.
        # (isprintable() excludes every other ASCII whitespace character.)
        return [header[3:].encode("ascii")]
    # The Standard Webhooks spec: a space-delimited list, tried entry by entry until one
    # matches. Entries this version cannot read (no comma, an empty value, another
    # version, non-ASCII text) are skipped rather than failing the whole delivery.
    parts = header.split()
    if not parts:
        raise fail("header webhook-signature is empty", "malformed_header")
    # An HMAC-SHA256 in base64 is 44 characters: no other length can match (and a length
    # is no secret). At most the first few such entries are tried, so that a header full of
    # them costs no more than an honest one.
    candidates = [
        part[3:].encode("ascii")
        for part in parts
        if part.startswith("v1,") and len(part) == _V1_ENTRY_LENGTH and part.isascii()
    ][:_MAX_CANDIDATES]
    if not candidates:
        raise fail(
            "header webhook-signature has no v1 signature that could be read: "
            "expected space-separated 'v1,<base64>' entries",
            "no_matching_signature",
        )
    return candidates


class WebhookVerifier:
    """Verifies and parses deliveries for one endpoint; build it once and reuse it.

    The secrets are decoded once, when the verifier is built, so a bad secret fails at
    start-up rather than on the first delivery.

    Args:
        secret: The endpoint's signing secret (``whsec_...``), or several of them while a
            secret is being rotated: a signature made with any one of them verifies.
        tolerance: How far the ``webhook-timestamp`` may be from now, in either direction.
            Svix signs each attempt anew, so retries stay inside it.
        clock: Returns the current time in seconds since the epoch; for tests.
        tenant: The tenant whose secrets these are: each `WebhookDelivery` it verifies
            carries it, so that a work queue's `Dispatcher.dispatch` keeps the tenant's
            ``webhook-id`` s apart (`Dispatcher.verifier_for` gives such a verifier).

    Raises:
        WebhookConfigurationError: A secret is empty or not base64, or the tolerance is negative.
    """

    __slots__ = ("_clock", "_keys", "_tenant", "_tolerance")

    def __init__(
        self,
        secret: str | Sequence[str],
        *,
        tolerance: datetime.timedelta = DEFAULT_TOLERANCE,
        clock: Callable[[], float] = time.time,
        tenant: str | None = None,
    ) -> None:
        self._keys = decode_secrets(secret)
        self._tolerance = _check_tolerance(tolerance)
        self._clock = clock
        self._tenant = tenant

    def __repr__(self) -> str:
        # Never the secrets.
        return f"WebhookVerifier(<{len(self._keys)} secret(s)>, tolerance={self._tolerance:g}s)"

    def verify(self, body: bytes | str, headers: Headers) -> WebhookDelivery:
        """Check a delivery's signature and timestamp, without parsing the body.

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers (names are case-insensitive; ``webhook-*`` or ``svix-*``).

        Returns:
            The delivery's id, timestamp and attempt number (and the verifier's tenant).

        Raises:
            WebhookVerificationError: Headers missing or malformed, timestamp outside the
                tolerance, or no signature made with any of the secrets.
        """
        msg_id, timestamp, attempt = self._check(body, headers)
        return WebhookDelivery(
            webhook_id=msg_id,
            timestamp=datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc),
            attempt=_attempt(attempt),
            tenant=self._tenant,
        )

    def _check(self, body: bytes | str, headers: Headers) -> tuple[str, int, object]:
        msg_id, timestamp_header, signature_header, attempt = read_headers(headers)
        if len(msg_id) > _MAX_ID_LENGTH or not _is_visible_ascii(msg_id):
            raise fail("header webhook-id is malformed", "malformed_header")
        if not (
            timestamp_header.isascii()
            and timestamp_header.isdigit()
            and len(timestamp_header) <= _MAX_TIMESTAMP_DIGITS
        ):
            raise fail(
                "header webhook-timestamp is malformed: expected whole seconds since the epoch",
                "malformed_header",
            )
        timestamp = int(timestamp_header)
        if timestamp > _MAX_TIMESTAMP:
            raise fail("header webhook-timestamp is out of range", "malformed_header")
        now = self._clock()
        if timestamp < now - self._tolerance:
            raise fail(
                f"timestamp is {now - timestamp:.0f} s in the past, "
                f"outside the tolerance of {self._tolerance:g} s",
                "timestamp_too_old",
            )
        if timestamp > now + self._tolerance:
            raise fail(
                f"timestamp is {timestamp - now:.0f} s in the future, "
                f"outside the tolerance of {self._tolerance:g} s",
                "timestamp_too_new",
            )
        candidates = _signature_candidates(signature_header)
        # What svix's Webhook.sign(msg_id, timestamp, body) computes, with its own HMAC
        # function, over the body's bytes as received (see the module docstring).
        signed_content = f"{msg_id}.{timestamp}.".encode("ascii") + _body_bytes(body)
        matched = False
        for key in self._keys:
            expected = binascii.b2a_base64(_hmac_sha256(key, signed_content), newline=False)
            for candidate in candidates:
                # Not short-circuited: every comparison runs in constant time.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise fail("no signature matches the webhook secret(s)", "no_matching_signature")
        return msg_id, timestamp, attempt

    def parse(self, body: bytes | str, headers: Headers) -> Event:
        """Verify a delivery, then parse its body into a typed event.

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers.

        Returns:
            The event: `CustomerCreatedEvent`, `CustomerUpdatedEvent`,
            `CallCompletedEvent` or `UnknownEvent`.

        Raises:
            WebhookVerificationError: The delivery is not correctly signed (see `verify`).
            WebhookPayloadError: Correctly signed, but not a valid careCycle event.
        """
        self._check(body, headers)
        return parse_unverified_event(body)


@functools.lru_cache(maxsize=32)
def _cached_verifier(secrets: tuple[str, ...], tolerance: datetime.timedelta) -> WebhookVerifier:
    return WebhookVerifier(secrets, tolerance=tolerance)


def parse_event(
    body: bytes | str,
    headers: Headers,
    secret: str | Sequence[str],
    *,
    tolerance: datetime.timedelta = DEFAULT_TOLERANCE,
) -> Event:
    """Verify a careCycle webhook delivery and parse it into a typed event.

    The one-call form of `WebhookVerifier`::

        event = parse_event(request.get_data(), request.headers, "whsec_...")
        match event:
            case CustomerCreatedEvent():
                ...

    Args:
        body: The raw request body, ``bytes`` or ``str``, exactly as received: not
            re-serialised JSON, whose bytes differ from what was signed.
        headers: The request headers: a ``Mapping[str, str]`` or any object with ``.items()``.
        secret: The endpoint's ``whsec_...`` secret, or a sequence of them (key rotation).
        tolerance: How far the delivery's timestamp may be from now, in either direction.

    Returns:
        The verified event, discriminated on ``event_type``.

    Raises:
        WebhookConfigurationError: The secret is empty or not base64, or the tolerance is negative.
        WebhookVerificationError: Missing or malformed headers, timestamp outside the
            tolerance, or no matching signature.
        WebhookPayloadError: Correctly signed, but not JSON or not a valid careCycle event.
    """
    # Verifiers are cached per (secrets, tolerance), so the one-call form decodes a
    # secret once per process, not once per delivery. Anything unhashable or odd goes
    # straight to WebhookVerifier, whose checks raise the right configuration error.
    given: object = secret
    if isinstance(given, str):
        key: tuple[str, ...] = (given,)
    elif isinstance(given, Sequence) and all(isinstance(one, str) for one in given):
        key = tuple(given)
    else:
        return WebhookVerifier(secret, tolerance=tolerance).parse(body, headers)
    _check_tolerance(tolerance)
    return _cached_verifier(key, tolerance).parse(body, headers)
