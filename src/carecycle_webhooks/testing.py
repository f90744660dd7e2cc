"""Test your integration: sign deliveries as careCycle's Svix endpoint does, build events.

::

    from carecycle_webhooks.testing import customer_created, generate_secret, sign

    secret = generate_secret()
    delivery = sign(customer_created(first_name="Ana", do_not_call=True), secret=secret)
    response = client.post("/webhooks", content=delivery.body, headers=delivery.headers)

Signatures are computed by svix's own signing code (the ``standardwebhooks`` ``Webhook``
that ``svix.webhooks.Webhook`` delegates to from svix 1.84.0 on; svix 1.40 to 1.83 carry
the same code), so what verifies here verifies in production.
With pytest, the fixtures ``carecycle_webhook_secret``, ``carecycle_sign``,
``carecycle_delivery`` and ``carecycle_handler_calls`` are available without any import (a
pytest plugin, installed with the package).

`customer_history` builds one customer's events, to send out of order
(``skip_out_of_order``); `Tenants` keeps a secret per tenant and is the secret resolver of a
dispatcher for many tenants.

`record_handlers` lists which handlers a dispatcher ran, with which events;
`override_idempotency_store` gives a dispatcher built at module level a store of the test's
own (a fresh `InMemoryIdempotencyStore`, say), and puts its own back afterwards.

Factories return valid events built from the catalog's examples; keyword arguments
override fields by attribute name (``first_name``) or wire name (``firstName``), and a
``dict`` given for a nested object (``customer``, ``campaign``, ``assigned_user``) is
merged into the default one.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar, cast

from pydantic import BaseModel
from standardwebhooks.webhooks import Webhook as _SvixSigner

from ._config import new_secret
from ._errors import WebhookConfigurationError
from ._models import (
    EVENT_MODELS,
    AssignedUser,
    CallCompletedEvent,
    Campaign,
    Customer,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Event,
    EventType,
    UnknownEvent,
    event_type_key,
)
from ._recording import HandlerCall, HandlerCalls, override_idempotency_store, record_handlers
from ._samples import SAMPLE_PAYLOADS
from ._verify import decode_secrets

__all__ = [
    "DeliveryFactory",
    "HandlerCall",
    "HandlerCalls",
    "SignedDelivery",
    "Signer",
    "Tenants",
    "call_completed",
    "customer_created",
    "customer_history",
    "customer_updated",
    "generate_secret",
    "make_event",
    "override_idempotency_store",
    "record_handlers",
    "sign",
    "unknown_event",
]

_M = TypeVar("_M", bound=BaseModel)

# The nested objects a dict override is merged into, per field.
_NESTED: Mapping[str, type[BaseModel]] = {
    "assigned_user": AssignedUser,
    "customer": Customer,
    "campaign": Campaign,
}


def generate_secret() -> str:
    """A fresh random endpoint secret in Svix's format (``whsec_`` and 24 random bytes, base64)."""
    return new_secret()


@dataclasses.dataclass(frozen=True)
class SignedDelivery:
    """One delivery as careCycle's Svix endpoint sends it.

    Attributes:
        body: The exact bytes to POST.
        headers: ``{prefix}-id``, ``{prefix}-timestamp``, ``{prefix}-signature`` and
            ``content-type``: pass them as the request's headers.
        webhook_id: The delivery's id (the same for every retry of one message).
        timestamp: When it was signed.
    """

    body: bytes
    headers: Mapping[str, str]
    webhook_id: str
    timestamp: datetime.datetime


def _body_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, BaseModel):
        return payload.model_dump_json(by_alias=True).encode()
    if isinstance(payload, Mapping):
        try:
            # Svix sends JSON: no NaN or Infinity, which json.dumps would otherwise write.
            return json.dumps(payload, allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            message = f"sign() could not serialise the payload as JSON: {type(error).__name__}"
        raise WebhookConfigurationError(message)
    raise WebhookConfigurationError(
        f"sign() takes an event, a JSON object (dict), str or bytes, not {type(payload).__name__}"
    )


def sign(  # noqa: PLR0913 - every option is keyword-only with a sensible default
    payload: Event | Mapping[str, Any] | bytes | str,
    *,
    secret: str | Sequence[str],
    webhook_id: str | None = None,
    timestamp: datetime.datetime | int | None = None,
    header_prefix: Literal["svix", "webhook"] = "svix",
    attempt: int | None = None,
) -> SignedDelivery:
    """Sign a payload into the headers careCycle's Svix endpoint would send with it.

    Args:
        payload: An event (serialised with its wire names), a JSON object, or the exact
            body as ``str`` or ``bytes`` (signed as is).
        secret: The endpoint's ``whsec_...`` secret; several sign with each, space-separated
            in one header, as Svix does while a secret is being rotated.
        webhook_id: The delivery's id; a fresh ``msg_...`` by default.
        timestamp: When it is signed (aware ``datetime`` or seconds since the epoch); now by default.
        header_prefix: ``"svix"`` (Svix's default) or ``"webhook"`` (Standard Webhooks names).
        attempt: Adds a ``{prefix}-attempt`` header when given.

    Returns:
        The body and headers to send.

    Raises:
        WebhookConfigurationError: A secret is invalid, or the payload of an unsupported type.
    """
    body = _body_bytes(payload)
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    if not secrets_:
        raise WebhookConfigurationError("sign() needs at least one secret")
    if timestamp is None:
        signed_at = datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0)
    elif isinstance(timestamp, datetime.datetime):
        if timestamp.tzinfo is None:
            raise WebhookConfigurationError("timestamp must be timezone-aware")
        signed_at = timestamp.astimezone(datetime.timezone.utc).replace(microsecond=0)
    else:
        signed_at = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise WebhookConfigurationError("sign() takes a UTF-8 body: Svix signs JSON text")
    # The secrets are checked as the verifier checks them, then svix's own code signs.
    signatures = [_SvixSigner(key).sign(msg_id, signed_at, text) for key in decode_secrets(secrets_)]
    headers = {
        f"{header_prefix}-id": msg_id,
        f"{header_prefix}-timestamp": str(int(signed_at.timestamp())),
        f"{header_prefix}-signature": " ".join(signatures),
        "content-type": "application/json",
    }
    if attempt is not None:
        headers[f"{header_prefix}-attempt"] = str(attempt)
    return SignedDelivery(body=body, headers=headers, webhook_id=msg_id, timestamp=signed_at)


class Signer(Protocol):
    """The ``carecycle_sign`` fixture: `sign` with the test's secret already given."""

    def __call__(  # noqa: D102 - the class docstring says it
        self,
        payload: Event | Mapping[str, Any] | bytes | str,
        *,
        webhook_id: str | None = None,
        timestamp: datetime.datetime | int | None = None,
        header_prefix: Literal["svix", "webhook"] = "svix",
        attempt: int | None = None,
    ) -> SignedDelivery: ...


class DeliveryFactory(Protocol):
    """The ``carecycle_delivery`` fixture: `make_event` then `sign` with the test's secret."""

    def __call__(self, event_type: str | EventType, /, **overrides: Any) -> SignedDelivery: ...  # noqa: ANN401, D102


# --------------------------------------------------------------------------- factories


def _field_names(model: type[BaseModel]) -> dict[str, str]:
    """Attribute and wire names, each mapped to the attribute name."""
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        names[name] = name
        if isinstance(info.validation_alias, str):
            names[info.validation_alias] = name
    return names


def _merge(model: type[BaseModel], base: dict[str, Any], overrides: Mapping[str, Any], where: str) -> None:
    names = _field_names(model)
    for key, value in overrides.items():
        attribute = names.get(key)
        if attribute is None:
            raise WebhookConfigurationError(f"{where}: {model.__name__} has no field {key!r}")
        nested = _NESTED.get(attribute)
        if isinstance(value, BaseModel):
            base[attribute] = value.model_dump()
        elif nested is not None and isinstance(value, Mapping) and isinstance(base.get(attribute), dict):
            _merge(nested, base[attribute], cast("Mapping[str, Any]", value), where)
        else:
            base[attribute] = value


def _build(model: type[_M], event_type: str, overrides: Mapping[str, Any], where: str) -> _M:
    defaults = model.model_validate(copy.deepcopy(SAMPLE_PAYLOADS[event_type])).model_dump()
    _merge(model, defaults, overrides, where)
    return model.model_validate(defaults)


def customer_created(**overrides: Any) -> CustomerCreatedEvent:  # noqa: ANN401 - any field's value
    """A valid ``customer.created`` event: the catalog's example, with ``overrides`` applied.

    Example: ``customer_created(id=uuid.uuid4(), first_name="Ana", assigned_user=None)``.

    Raises:
        WebhookConfigurationError: An override names no field of the event.
        pydantic.ValidationError: An override's value is not valid for its field.
    """
    return _build(CustomerCreatedEvent, "customer.created", overrides, "customer_created()")


def customer_updated(**overrides: Any) -> CustomerUpdatedEvent:  # noqa: ANN401 - any field's value
    """A valid ``customer.updated`` event: the catalog's example, with ``overrides`` applied.

    Raises:
        WebhookConfigurationError: An override names no field of the event.
        pydantic.ValidationError: An override's value is not valid for its field.
    """
    return _build(CustomerUpdatedEvent, "customer.updated", overrides, "customer_updated()")


def call_completed(**overrides: Any) -> CallCompletedEvent:  # noqa: ANN401 - any field's value
    """A valid ``call.completed`` event: the catalog's example, with ``overrides`` applied.

    Example: ``call_completed(disposition="No Answer", customer={"first_name": "Ana"})``:
    the ``customer`` dict is merged into the example's customer.

    Raises:
        WebhookConfigurationError: An override names no field of the event.
        pydantic.ValidationError: An override's value is not valid for its field.
    """
    return _build(CallCompletedEvent, "call.completed", overrides, "call_completed()")


def unknown_event(event_type: str, **fields: Any) -> UnknownEvent:  # noqa: ANN401 - any JSON value
    """An event of a type this version does not know, with ``fields`` as its payload."""
    return UnknownEvent.model_validate({"event_type": event_type, **fields})


def make_event(event_type: str | EventType, **overrides: Any) -> Event:  # noqa: ANN401 - any field's value
    """The factory for ``event_type``; an unknown type gives an `UnknownEvent` with ``overrides`` as fields.

    Raises:
        WebhookConfigurationError: An override names no field of the event.
    """
    key = event_type_key(event_type, catalog_only=False, what="event_type")
    model = EVENT_MODELS.get(key)
    if model is None:
        return unknown_event(key, **overrides)
    event: Event = _build(model, key, overrides, f"{key.replace('.', '_')}()")
    return event


# --------------------------------------------------------------------------- scenarios


def customer_history(
    updates: int = 2,
    *,
    start: datetime.datetime | None = None,
    step: datetime.timedelta = datetime.timedelta(minutes=1),
    **overrides: Any,  # noqa: ANN401 - any field's value
) -> list[CustomerCreatedEvent | CustomerUpdatedEvent]:
    """One customer's events, oldest first: its ``customer.created``, then ``updates`` updates.

    Every event carries the same customer ``id`` (a fresh one, unless given) and an
    ``updatedAt`` ``step`` later than the one before, from ``start`` (an hour ago by
    default). Send them in another order to test ``skip_out_of_order``::

        created, first, second = customer_history(2, first_name="Ana")
        for event in (created, second, first):  # the first update arrives last
            client.post("/webhooks", content=(d := sign(event, secret=SECRET)).body, headers=d.headers)
        # with Dispatcher(skip_out_of_order=True), `first` is answered {"status": "stale"}

    Args:
        updates: How many ``customer.updated`` events follow the ``customer.created``.
        start: The ``customer.created``'s ``createdAt`` and ``updatedAt``.
        step: The time between two events.
        **overrides: Fields of every event, as for `customer_created`.

    Raises:
        WebhookConfigurationError: ``updates`` is negative, ``step`` not positive, or
            ``start`` naive.
    """
    if updates < 0 or step <= datetime.timedelta(0):
        raise WebhookConfigurationError("customer_history() takes updates >= 0 and a positive step")
    if start is None:
        start = datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(
            hours=1
        )
    elif start.tzinfo is None:
        raise WebhookConfigurationError("customer_history(): start must be timezone-aware")
    fields: dict[str, Any] = {"id": uuid.uuid4(), **overrides}
    history: list[CustomerCreatedEvent | CustomerUpdatedEvent] = [
        customer_created(**{"created_at": start, **fields, "updated_at": start})
    ]
    history.extend(
        customer_updated(**{"created_at": start, **fields, "updated_at": start + step * number})
        for number in range(1, updates + 1)
    )
    return history


class Tenants:
    """Tenants of one endpoint, each with its own secret, and the resolver over them, for tests.

    ::

        tenants = Tenants("acme", "globex")
        webhooks = Dispatcher(tenants.resolve, idempotency_store=InMemoryIdempotencyStore())
        delivery = tenants.sign("acme", customer_created())
        client.post("/webhooks/acme", content=delivery.body, headers=delivery.headers)

    Thread-safe: a server's workers may call `resolve` while the test rotates a secret.

    Args:
        *names: The tenants' keys; each gets a fresh secret.

    Attributes:
        lookups: How many times `resolve` was called (to see the dispatcher's cache at work).
    """

    def __init__(self, *names: str) -> None:  # noqa: D107 - the class docstring says it
        self._lock = threading.Lock()
        self._secrets: dict[str, list[str]] = {}
        self.lookups: int = 0
        for name in names:
            self.add(name)

    def add(self, tenant: str) -> str:
        """Add a tenant with a fresh secret (or give an existing one a fresh one); returns it."""
        secret = generate_secret()
        with self._lock:
            self._secrets[tenant] = [secret]
        return secret

    def remove(self, tenant: str) -> None:
        """Forget a tenant: the resolver answers ``None`` for it from now on."""
        with self._lock:
            self._secrets.pop(tenant, None)

    def rotate(self, tenant: str, *, keep_old: bool = True) -> str:
        """Give ``tenant`` a new secret; the old one stays valid unless ``keep_old`` is false.

        Returns:
            The new secret, which `sign` uses from now on.

        Raises:
            KeyError: No such tenant.
        """
        secret = generate_secret()
        with self._lock:
            old = self._secrets[tenant]
            self._secrets[tenant] = [secret, *old] if keep_old else [secret]
        return secret

    def secret(self, tenant: str) -> str:
        """The tenant's current secret.

        Raises:
            KeyError: No such tenant.
        """
        with self._lock:
            return self._secrets[tenant][0]

    def secrets(self, tenant: str) -> list[str]:
        """The tenant's valid secrets, newest first.

        Raises:
            KeyError: No such tenant.
        """
        with self._lock:
            return list(self._secrets[tenant])

    def resolve(self, tenant: str) -> list[str] | None:
        """The secret resolver: the tenant's valid secrets, newest first, or ``None``."""
        with self._lock:
            self.lookups += 1
            secrets = self._secrets.get(tenant)
            return None if secrets is None else list(secrets)

    def sign(  # noqa: PLR0913 - sign()'s options, keyword-only
        self,
        tenant: str,
        payload: Event | Mapping[str, Any] | bytes | str,
        *,
        webhook_id: str | None = None,
        timestamp: datetime.datetime | int | None = None,
        header_prefix: Literal["svix", "webhook"] = "svix",
        attempt: int | None = None,
    ) -> SignedDelivery:
        """`sign` ``payload`` as the tenant's endpoint does (the options as for `sign`).

        With each of the tenant's valid secrets, as Svix signs during a rotation: after
        `rotate`, a dispatcher that still knows only the old secret verifies it too.

        Raises:
            KeyError: No such tenant.
        """
        return sign(
            payload,
            secret=self.secrets(tenant),
            webhook_id=webhook_id,
            timestamp=timestamp,
            header_prefix=header_prefix,
            attempt=attempt,
        )

    def __contains__(self, tenant: object) -> bool:
        """Whether ``tenant`` is one of them."""
        with self._lock:
            return tenant in self._secrets

    def __iter__(self) -> Iterator[str]:
        """The tenants' keys."""
        with self._lock:
            return iter(list(self._secrets))

    def __repr__(self) -> str:
        """The tenants' keys, never a secret."""
        return f"Tenants({', '.join(map(repr, self))})"  # keys only, never a secret
