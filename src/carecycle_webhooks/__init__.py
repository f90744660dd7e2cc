"""Typed, verified careCycle webhooks for Python.

``import carecycle_webhooks`` is cheap: the models (pydantic) and the verifier load on
first use of one of their names, so a process that only imports the package, or a CLI
that prints ``--help``, never pays for them.
"""

import importlib as _importlib
import typing as _typing

from ._errors import (
    PayloadErrorDetail,
    VerificationFailure,
    WebhookConfigurationError,
    WebhookError,
    WebhookPayloadError,
    WebhookVerificationError,
)

if _typing.TYPE_CHECKING:
    from ._budget import DEFAULT_BODY_BUDGET as DEFAULT_BODY_BUDGET
    from ._dispatch import DEFAULT_MAX_BODY_SIZE as DEFAULT_MAX_BODY_SIZE
    from ._dispatch import DEFAULT_SECRET_CACHE_TTL as DEFAULT_SECRET_CACHE_TTL
    from ._dispatch import Dispatcher as Dispatcher
    from ._dispatch import current_delivery as current_delivery
    from ._headers import Headers as Headers
    from ._headers import SupportsHeaderItems as SupportsHeaderItems
    from ._idempotency import DEFAULT_DONE_TTL as DEFAULT_DONE_TTL
    from ._idempotency import DEFAULT_LEASE as DEFAULT_LEASE
    from ._idempotency import AsyncIdempotencyStore as AsyncIdempotencyStore
    from ._idempotency import Claim as Claim
    from ._idempotency import CommitFailed as CommitFailed
    from ._idempotency import IdempotencyStore as IdempotencyStore
    from ._idempotency import InMemoryIdempotencyStore as InMemoryIdempotencyStore
    from ._idempotency import TransactionalIdempotencyStore as TransactionalIdempotencyStore
    from ._models import AssignedUser as AssignedUser
    from ._models import CallCompletedEvent as CallCompletedEvent
    from ._models import CallDirection as CallDirection
    from ._models import Campaign as Campaign
    from ._models import Customer as Customer
    from ._models import CustomerCreatedEvent as CustomerCreatedEvent
    from ._models import CustomerStatus as CustomerStatus
    from ._models import CustomerUpdatedEvent as CustomerUpdatedEvent
    from ._models import Event as Event
    from ._models import EventType as EventType
    from ._models import Gender as Gender
    from ._models import LineType as LineType
    from ._models import MaritalStatus as MaritalStatus
    from ._models import UnknownEvent as UnknownEvent
    from ._parse import parse_unverified_event as parse_unverified_event
    from ._redis import RedisIdempotencyStore as RedisIdempotencyStore
    from ._responses import WebhookResponse as WebhookResponse
    from ._sqlite import SQLiteIdempotencyStore as SQLiteIdempotencyStore
    from ._verify import DEFAULT_TOLERANCE as DEFAULT_TOLERANCE
    from ._verify import WebhookDelivery as WebhookDelivery
    from ._verify import WebhookVerifier as WebhookVerifier
    from ._verify import parse_event as parse_event

    __version__: str

__all__ = [
    "DEFAULT_BODY_BUDGET",
    "DEFAULT_DONE_TTL",
    "DEFAULT_LEASE",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_SECRET_CACHE_TTL",
    "DEFAULT_TOLERANCE",
    "AssignedUser",
    "AsyncIdempotencyStore",
    "CallCompletedEvent",
    "CallDirection",
    "Campaign",
    "Claim",
    "CommitFailed",
    "Customer",
    "CustomerCreatedEvent",
    "CustomerStatus",
    "CustomerUpdatedEvent",
    "Dispatcher",
    "Event",
    "EventType",
    "Gender",
    "Headers",
    "IdempotencyStore",
    "InMemoryIdempotencyStore",
    "LineType",
    "MaritalStatus",
    "PayloadErrorDetail",
    "RedisIdempotencyStore",
    "SQLiteIdempotencyStore",
    "SupportsHeaderItems",
    "TransactionalIdempotencyStore",
    "UnknownEvent",
    "VerificationFailure",
    "WebhookConfigurationError",
    "WebhookDelivery",
    "WebhookError",
    "WebhookPayloadError",
    "WebhookResponse",
    "WebhookVerificationError",
    "WebhookVerifier",
    "__version__",
    "current_delivery",
    "parse_event",
    "parse_unverified_event",
]

# Where each lazily loaded public name lives.
_LAZY = {
    "DEFAULT_BODY_BUDGET": "._budget",
    "DEFAULT_DONE_TTL": "._idempotency",
    "DEFAULT_LEASE": "._idempotency",
    "DEFAULT_MAX_BODY_SIZE": "._dispatch",
    "DEFAULT_SECRET_CACHE_TTL": "._dispatch",
    "DEFAULT_TOLERANCE": "._verify",
    "Claim": "._idempotency",
    "CommitFailed": "._idempotency",
    "Dispatcher": "._dispatch",
    "IdempotencyStore": "._idempotency",
    "InMemoryIdempotencyStore": "._idempotency",
    "TransactionalIdempotencyStore": "._idempotency",
    "RedisIdempotencyStore": "._redis",
    "SQLiteIdempotencyStore": "._sqlite",
    "AsyncIdempotencyStore": "._idempotency",
    "WebhookResponse": "._responses",
    "current_delivery": "._dispatch",
    "AssignedUser": "._models",
    "CallCompletedEvent": "._models",
    "CallDirection": "._models",
    "Campaign": "._models",
    "Customer": "._models",
    "CustomerCreatedEvent": "._models",
    "CustomerStatus": "._models",
    "CustomerUpdatedEvent": "._models",
    "Event": "._models",
    "EventType": "._models",
    "Gender": "._models",
    "LineType": "._models",
    "MaritalStatus": "._models",
    "UnknownEvent": "._models",
    "parse_unverified_event": "._parse",
    "Headers": "._headers",
    "SupportsHeaderItems": "._headers",
    "WebhookDelivery": "._verify",
    "WebhookVerifier": "._verify",
    "parse_event": "._verify",
}

if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name == "__version__":
            from importlib.metadata import version

            value = version("carecycle-webhooks")
        elif name in _LAZY:
            value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
