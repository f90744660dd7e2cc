"""Exceptions raised by carecycle_webhooks.

Every exception this library raises derives from `WebhookError`::

    WebhookError
    ├── WebhookConfigurationError   (also a ValueError) bad secret, tolerance or option
    ├── WebhookVerificationError    the delivery cannot be trusted: headers, signature, timestamp
    └── WebhookPayloadError         correctly signed, but not JSON or not a careCycle event

"The signature is wrong" and "the signed payload is wrong" are kept apart on purpose:
the first is an attacker or a misconfigured secret (answer 400), the second is a
payload this version cannot read (answer 422 and look at it).

Messages are short, say what is wrong, and never contain the secret, a header's
signature value or any value of the payload: payloads carry protected health
information. Errors are raised outside of ``except`` blocks so that no chained
cause (a pydantic ``ValidationError`` echoing input, a ``binascii.Error``) rides along.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "PayloadErrorDetail",
    "VerificationFailure",
    "WebhookConfigurationError",
    "WebhookError",
    "WebhookPayloadError",
    "WebhookVerificationError",
]


class WebhookError(Exception):
    """Base class of every exception raised by carecycle_webhooks."""


class WebhookConfigurationError(WebhookError, ValueError):
    """A secret, tolerance or other option given to this library is invalid.

    Raised when the option is given (constructing a verifier or dispatcher), not on the
    first delivery, so a misconfigured service fails at start-up.
    """


VerificationFailure: TypeAlias = Literal[
    "invalid_body",
    "missing_header",
    "malformed_header",
    "conflicting_headers",
    "timestamp_too_old",
    "timestamp_too_new",
    "no_matching_signature",
]
"""Machine-readable reason carried by `WebhookVerificationError.reason`."""


class WebhookVerificationError(WebhookError):
    """The delivery could not be verified as coming from careCycle.

    Missing or malformed ``webhook-*``/``svix-*`` headers, a timestamp outside the tolerance
    (in either direction), or no signature matching any of the configured secrets.
    Answer it with HTTP 400.

    Attributes:
        reason: Which check failed, for logs and metrics.
    """

    reason: VerificationFailure

    def __init__(self, message: str, *, reason: VerificationFailure) -> None:
        super().__init__(message)
        self.reason = reason


PayloadErrorDetail: TypeAlias = tuple[tuple[str | int, ...], str]
"""One problem of a payload: its location (wire names and list indices) and pydantic's error type."""


class WebhookPayloadError(WebhookError):
    """The body was correctly signed (or parsed unverified) but is not a valid careCycle event.

    Either not JSON, or JSON that does not match the event's schema. Answer it with HTTP 422.

    Attributes:
        errors: Location and error type of each problem, e.g.
            ``(("customer", "dateOfBirth"), "date_from_datetime_parsing")``. Never the values.
    """

    errors: tuple[PayloadErrorDetail, ...]

    def __init__(self, message: str, *, errors: tuple[PayloadErrorDetail, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors
