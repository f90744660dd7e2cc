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
import uuid
from collections.abc import Mapping, Sequence
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
    "call_completed",
    "customer_created",
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
