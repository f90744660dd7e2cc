"""JSON Schema of the careCycle events, as they travel on the wire.

::

    from carecycle_webhooks.schema import json_schema

    every_event = json_schema()  # the union, discriminated on event_type
    calls = json_schema("call.completed")

The schemas are generated from this version's models, so they say exactly what it accepts,
with camelCase wire names as property names:

- Fields that hold protected health information carry ``"x-phi": true``, the mark that
  also drives the models' ``repr()`` redaction.
- Enum fields list the documented values but also accept any other string, because an enum
  value careCycle adds later never makes an event unparseable. Likewise objects allow
  properties this version does not know (``additionalProperties`` is true).
- The union of all events ends with ``UnknownEvent``: any object whose ``event_type`` is a
  string this version does not know.

The JSON Schema of a field is stricter than the model in one way: it describes the values
careCycle sends (``"durationMs": 247000``), while pydantic's lax parsing also accepts a few
equivalent spellings (``"durationMs": "247000"``).
"""

from __future__ import annotations

import copy
from typing import Any

from ._models import EVENT_MODELS, EventType, KnownEvent, event_type_key

__all__ = ["DIALECT", "json_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The JSON Schema dialect of every schema `json_schema` returns (``$schema``)."""

_ID_PREFIX = "urn:carecycle-webhooks:schema:"


def _unknown_event_schema() -> dict[str, Any]:
    return {
        "title": "UnknownEvent",
        "description": (
            "An event whose event_type this version does not know: any JSON object, "
            "kept whole as UnknownEvent.payload."
        ),
        "type": "object",
        "properties": {
            "event_type": {"type": "string", "not": {"enum": sorted(EVENT_MODELS)}},
        },
        "required": ["event_type"],
        "additionalProperties": True,
    }


def _drop_property_titles(schema: dict[str, Any]) -> None:
    # pydantic titles each property after its alias ("durationMs" -> "Durationms"), which says
    # nothing the property name does not; the models' own titles and descriptions stay.
    for definition in schema.get("$defs", {}).values():
        for prop in definition.get("properties", {}).values():
            prop.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


def _finish(schema: dict[str, Any], *, schema_id: str, title: str, description: str) -> dict[str, Any]:
    _drop_property_titles(schema)
    body = {key: value for key, value in schema.items() if key not in {"title", "description"}}
    return {
        "$schema": DIALECT,
        "$id": _ID_PREFIX + schema_id,
        "title": title,
        "description": description,
        **body,
    }


def json_schema(event_type: str | EventType | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of careCycle events, with their wire names.

    Args:
        event_type: One event type of the catalog (``"customer.created"`` or
            ``EventType.CUSTOMER_CREATED``) for that event's schema; ``None`` (the default)
            for every event: a ``oneOf`` discriminated on ``event_type`` (an OpenAPI
            ``discriminator`` maps each event type to its definition), ending with any event
            of a type this version does not know.

    Returns:
        A new JSON-serialisable ``dict`` on each call, with ``$schema``, ``$id``, ``title``
        and the definitions of the nested objects and enums under ``$defs``. PHI fields
        carry ``"x-phi": true``.

    Raises:
        WebhookConfigurationError: ``event_type`` is not an event type of the catalog.
    """
    if event_type is None:
        from pydantic import TypeAdapter

        union: dict[str, Any] = TypeAdapter[KnownEvent](KnownEvent).json_schema(by_alias=True)
        union["$defs"]["UnknownEvent"] = _unknown_event_schema()
        union["oneOf"].append({"$ref": "#/$defs/UnknownEvent"})
        return _finish(
            union,
            schema_id="event",
            title="careCycle webhook event",
            description=(
                "Any careCycle webhook event, discriminated on event_type: "
                f"{', '.join(EVENT_MODELS)}, or an event type this version does not know."
            ),
        )
    key = event_type_key(event_type, catalog_only=True)
    model = EVENT_MODELS[key]
    single = copy.deepcopy(model.model_json_schema(by_alias=True))
    return _finish(
        single,
        schema_id=key,
        title=f"careCycle {key} event",
        description=str(single.get("description", "")),
    )
