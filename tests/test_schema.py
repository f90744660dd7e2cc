"""The exported JSON Schema agrees with the models on the catalog's payloads."""

from __future__ import annotations

import copy
import functools
import json
from typing import TYPE_CHECKING, Any

import pytest
from jsonschema import Draft202012Validator

from carecycle_webhooks import (
    AssignedUser,
    CallCompletedEvent,
    CallDirection,
    Campaign,
    Customer,
    CustomerCreatedEvent,
    CustomerStatus,
    CustomerUpdatedEvent,
    EventType,
    Gender,
    LineType,
    MaritalStatus,
    WebhookConfigurationError,
    WebhookPayloadError,
    parse_unverified_event,
)
from carecycle_webhooks.schema import DIALECT, json_schema
from carecycle_webhooks.testing import make_event
from tests.conftest import EVENT_TYPES, load_fixture

if TYPE_CHECKING:
    from pydantic import BaseModel

MODELS: dict[str, type[BaseModel]] = {
    "customer.created": CustomerCreatedEvent,
    "customer.updated": CustomerUpdatedEvent,
    "call.completed": CallCompletedEvent,
}


@functools.cache
def _generated(event_type: str | None) -> dict[str, Any]:
    return json_schema(event_type)


def schema_of(event_type: str | None = None) -> dict[str, Any]:
    """`json_schema`, generated once per event type (up to a tenth of a second each): a copy.

    The tests of `json_schema`'s own calls (a new dict each time, its arguments, its
    errors, stable output) call it; the tests of the schema's content read this.
    """
    return copy.deepcopy(_generated(event_type))


# Checking a schema and building its validator costs far more than validating a payload:
# build each validator once per test session. A validator never changes, so sharing is safe.
@functools.cache
def validator(event_type: str | None = None) -> Draft202012Validator:
    schema = schema_of(event_type)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def model_accepts(payload: dict[str, Any]) -> bool:
    try:
        parse_unverified_event(json.dumps(payload))
    except WebhookPayloadError:
        return False
    return True


def test_schemas_are_draft_2020_12_with_an_id_and_title() -> None:
    for event_type in (None, *EVENT_TYPES):
        schema = schema_of(event_type)
        assert schema["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].startswith("urn:carecycle-webhooks:schema:")
        assert schema["title"]
        json.dumps(schema)  # plain JSON
    assert len({schema_of(event_type)["$id"] for event_type in (None, *EVENT_TYPES)}) == 4


def test_union_is_discriminated_on_event_type() -> None:
    schema = schema_of()
    assert schema["discriminator"]["propertyName"] == "event_type"
    assert schema["discriminator"]["mapping"] == {
        "customer.created": "#/$defs/CustomerCreatedEvent",
        "customer.updated": "#/$defs/CustomerUpdatedEvent",
        "call.completed": "#/$defs/CallCompletedEvent",
    }
    assert schema["oneOf"][-1] == {"$ref": "#/$defs/UnknownEvent"}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_catalog_examples_validate(event_type: str) -> None:
    payload = load_fixture(event_type)
    validator().validate(payload)
    validator(event_type).validate(payload)
    for other in EVENT_TYPES:
        if other != event_type:
            assert not validator(other).is_valid(payload)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_events_the_models_write_validate(event_type: str) -> None:
    event = make_event(event_type)
    validator(event_type).validate(event.model_dump(mode="json", by_alias=True))
    validator(event_type).validate(event.model_dump(mode="json", by_alias=True, exclude_none=True))


def test_event_type_is_accepted_as_enum_member() -> None:
    assert json_schema(EventType.CALL_COMPLETED) == json_schema("call.completed")


@pytest.mark.parametrize("event_type", ["customer.create", "", "unknown"])
def test_unknown_event_type_is_a_configuration_error(event_type: str) -> None:
    with pytest.raises(WebhookConfigurationError, match="careCycle catalog"):
        json_schema(event_type)


def test_not_an_event_type_at_all() -> None:
    with pytest.raises(WebhookConfigurationError, match="no event type int"):
        json_schema(3)  # type: ignore[arg-type]


def test_each_call_returns_a_new_schema() -> None:
    first = json_schema("customer.created")
    first["$defs"].clear()
    first["properties"].clear()
    assert json_schema("customer.created")["properties"]
    assert json_schema("customer.created")["$defs"]


def test_unknown_event_types_validate_the_union() -> None:
    assert validator().is_valid({"event_type": "appointment.booked", "startsAt": 5})
    assert not validator().is_valid({"startsAt": 5})
    assert not validator().is_valid({"event_type": 5})
    assert model_accepts({"event_type": "appointment.booked", "startsAt": 5})


def test_a_known_event_type_cannot_fall_back_to_unknown() -> None:
    payload = load_fixture("customer.created")
    del payload["id"]
    assert not validator().is_valid(payload)
    assert not model_accepts(payload)


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    [
        ("call.completed", ("durationMs",), "long"),
        ("call.completed", ("durationMs",), 1.5),
        ("call.completed", ("direction",), 3),
        ("call.completed", ("customer",), "Marcus"),
        ("call.completed", ("customer", "doNotSMS"), "sometimes"),
        ("call.completed", ("campaign", "tags"), "vip"),
        ("customer.created", ("status",), 42),
        ("customer.created", ("id",), "not-a-uuid"),
        ("customer.created", ("assignedUser", "licensedStates"), [1, 2]),
        ("customer.updated", ("householdIncome",), "a lot"),
        ("customer.updated", ("updatedAt",), None),
        ("customer.updated", ("dateOfBirth",), 19580412),
    ],
)
def test_bad_payloads_fail_schema_and_model(event_type: str, path: tuple[str, ...], value: object) -> None:
    payload = load_fixture(event_type)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not validator(event_type).is_valid(payload)
    assert not validator().is_valid(payload)
    assert not model_accepts(payload)


@pytest.mark.parametrize(
    ("event_type", "missing"),
    [("customer.created", "id"), ("customer.updated", "updatedAt"), ("call.completed", "createdAt")],
)
def test_required_fields(event_type: str, missing: str) -> None:
    payload = load_fixture(event_type)
    del payload[missing]
    assert missing in schema_of(event_type)["required"]
    assert not validator(event_type).is_valid(payload)
    assert not model_accepts(payload)


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    [
        ("customer.created", ("status",), "Prospect"),
        ("customer.created", ("gender",), "Two-Spirit"),
        ("customer.created", ("lineType",), "satellite"),
        ("customer.created", ("maritalStatus",), None),
        ("call.completed", ("direction",), "internal"),
        ("call.completed", ("campaign", "direction"), "blended"),
        ("call.completed", ("customer", "maritalStatus"), "Engaged"),
        ("call.completed", ("recordingUrl",), "https://example.com/r.mp3"),
    ],
)
def test_unknown_enum_values_and_fields_are_allowed_by_both(
    event_type: str, path: tuple[str, ...], value: object
) -> None:
    payload = load_fixture(event_type)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    validator(event_type).validate(payload)
    validator().validate(payload)
    assert model_accepts(payload)


@pytest.mark.parametrize(
    ("name", "enum"),
    [
        ("CustomerStatus", CustomerStatus),
        ("LineType", LineType),
        ("Gender", Gender),
        ("MaritalStatus", MaritalStatus),
        ("CallDirection", CallDirection),
    ],
)
def test_enums_list_the_documented_values_and_allow_any_string(name: str, enum: type[Any]) -> None:
    schema = schema_of()
    assert schema["$defs"][name]["enum"] == [member.value for member in enum]
    users = [
        prop
        for definition in schema["$defs"].values()
        for prop in definition.get("properties", {}).values()
        if {"$ref": f"#/$defs/{name}"} in prop.get("anyOf", ())
    ]
    assert users
    for prop in users:
        assert prop["anyOf"] == [{"$ref": f"#/$defs/{name}"}, {"type": "string"}, {"type": "null"}]


@pytest.mark.parametrize(
    ("event_type", "model"),
    [
        ("customer.created", CustomerCreatedEvent),
        ("customer.created", AssignedUser),
        ("customer.updated", CustomerUpdatedEvent),
        ("call.completed", CallCompletedEvent),
        ("call.completed", Customer),
        ("call.completed", Campaign),
    ],
)
def test_every_phi_field_and_only_those_carry_x_phi(event_type: str, model: type[BaseModel]) -> None:
    phi_fields: frozenset[str] = model.phi_fields  # type: ignore[attr-defined]
    for schema in (schema_of(event_type), schema_of()):
        definition = schema["$defs"].get(model.__name__, schema)  # the top level of a single event
        properties = definition["properties"]
        assert len(properties) == len(model.model_fields)
        for name, info in model.model_fields.items():
            wire = info.validation_alias if isinstance(info.validation_alias, str) else name
            assert properties[wire].get("x-phi", False) is (name in phi_fields), wire
    if model is not Campaign:
        assert phi_fields


def test_the_documented_phi_of_a_customer_is_flagged() -> None:
    properties = schema_of("customer.created")["properties"]
    flagged = {name for name, prop in properties.items() if prop.get("x-phi")}
    assert {"firstName", "lastName", "dateOfBirth", "mbiNumber", "medicaidNumber", "vaNumber"} <= flagged
    assert {"phoneNumber", "email", "address", "postalCode", "householdIncome"} <= flagged
    assert not {"id", "status", "state", "hasMedicaid", "agentNpn", "event_type"} & flagged


def test_properties_use_wire_names_without_generated_titles() -> None:
    schema = schema_of("customer.created")
    assert {"doNotSMS", "medicarePartADate", "assignedUser", "createdAt", "event_type"} <= set(
        schema["properties"]
    )
    assert "do_not_sms" not in schema["properties"]
    assert all("title" not in prop for prop in schema["properties"].values())
    assert schema["$defs"]["AssignedUser"]["title"] == "AssignedUser"


def test_schema_is_stable_json() -> None:
    assert json.loads(json.dumps(json_schema())) == json_schema()
    assert copy.deepcopy(json_schema()) == json_schema()
