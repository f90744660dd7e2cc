from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import pydantic
import pytest

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
    UnknownEvent,
    parse_unverified_event,
)
from tests.conftest import fixture_bytes, load_fixture

UTC = datetime.timezone.utc
CUSTOMER_ID = uuid.UUID("b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b")


def check_customer_fields(customer: Customer | CustomerCreatedEvent | CustomerUpdatedEvent) -> None:
    """Every field of the catalog's customer example, value and type."""
    assert customer.id == CUSTOMER_ID
    assert customer.created_at == datetime.datetime(2026, 6, 17, 19, 7, 23, 709000, tzinfo=UTC)
    assert customer.external_id == "CRM-48213"
    assert customer.first_name == "Marcus"
    assert customer.middle_name is None
    assert customer.last_name == "Delacroix"
    assert customer.salutation is None
    assert customer.suffix is None
    assert customer.preferred_name is None
    assert customer.phone_number == "+13128471928"
    assert customer.line_type is LineType.MOBILE
    assert customer.email == "marcus.delacroix@example.com"
    assert customer.date_of_birth == datetime.date(1958, 4, 12)
    assert type(customer.date_of_birth) is datetime.date
    assert customer.language == "en"
    assert customer.ethnicity is None
    assert customer.gender is Gender.MALE
    assert customer.marital_status is MaritalStatus.MARRIED
    assert customer.address == "4427 Westbrook Ave"
    assert customer.address2 == "Apt 3B"
    assert customer.city == "Mesa"
    assert customer.county == "Maricopa"
    assert customer.state == "AZ"
    assert customer.postal_code == "85204"
    assert customer.timezone == "America/Phoenix"
    assert customer.mbi_number == "1EG4TE5MK73"
    assert customer.medicare_card is True
    assert customer.medicare_part_a_date == datetime.date(2023, 5, 1)
    assert customer.medicare_part_b_date == datetime.date(2023, 5, 1)
    assert customer.has_medicaid is False
    assert customer.medicaid_number is None
    assert customer.social_security_disability is False
    assert customer.veteran is True
    assert customer.va_number is None
    assert customer.household_income == 42000
    assert type(customer.household_income) is int
    assert customer.annual_income == 42000
    assert customer.filing_status == "married_joint"
    assert customer.dependent_count == 0
    assert customer.subsidy_eligible is True
    assert customer.subsidy_amount == 148
    assert customer.carrier_assigned_customer_id is None
    assert customer.agent_name is None
    assert customer.agent_npn is None
    assert customer.assigned_user == AssignedUser(
        id=uuid.UUID("b396018f-7d49-4a55-abe5-544174abcaaa"),
        name="Priya Raman",
        email="priya@youragency.com",
        npn="8419302",
        role="agent",
        licensed_states=("AZ", "AR"),
    )
    assert customer.do_not_call is False
    assert customer.do_not_sms is False
    assert customer.do_not_email is False
    assert customer.do_not_mail is False
    assert customer.test_customer is False
    assert customer.model_extra == {}


def test_customer_created_every_field() -> None:
    event = parse_unverified_event(fixture_bytes("customer.created"))
    assert isinstance(event, CustomerCreatedEvent)
    assert event.event_type == "customer.created"
    assert event.event_type == EventType.CUSTOMER_CREATED
    assert event.status is CustomerStatus.LEAD
    assert event.updated_at == datetime.datetime(2026, 6, 17, 19, 7, 23, 709000, tzinfo=UTC)
    check_customer_fields(event)


def test_customer_updated_every_field() -> None:
    event = parse_unverified_event(fixture_bytes("customer.updated"))
    assert isinstance(event, CustomerUpdatedEvent)
    assert event.event_type == "customer.updated"
    assert event.status is CustomerStatus.ACTIVE
    assert event.updated_at == datetime.datetime(2026, 6, 18, 14, 22, 9, 120000, tzinfo=UTC)
    check_customer_fields(event)


def test_call_completed_every_field() -> None:
    event = parse_unverified_event(fixture_bytes("call.completed"))
    assert isinstance(event, CallCompletedEvent)
    assert event.event_type == "call.completed"
    assert event.id == uuid.UUID("dca4a483-af54-4899-a804-766ee5812537")
    assert event.created_at == datetime.datetime(2026, 6, 17, 19, 7, 23, 709000, tzinfo=UTC)
    assert event.phone_number == "+13128471928"
    assert event.call_sid == "f2a91c0b-7d2e-4c8a-9f31-6b5d0a4e1c77"
    assert event.direction is CallDirection.INBOUND
    assert event.disposition == "Enrolled"
    assert event.duration_ms == 247000
    assert event.start_time == datetime.datetime(2026, 6, 17, 19, 3, 16, 1000, tzinfo=UTC)
    assert event.end_time == datetime.datetime(2026, 6, 17, 19, 7, 23, 1000, tzinfo=UTC)
    assert event.ended_reason == "completed"
    assert event.summary == (
        "Caller confirmed eligibility and enrolled in a Medicare Advantage plan effective July 1."
    )
    assert event.transcript == (
        "Agent: Thanks for calling careCycle...\nCaller: Hi, I'd like to review my options..."
    )
    assert event.campaign == Campaign(
        id=uuid.UUID("4f952597-5c04-4d2c-851e-30f518e2c761"),
        name="MA Inbound Receptionist",
        slug=None,
        description=None,
        status="active",
        vertical="medicare",
        suite="receptionist",
        direction=CallDirection.INBOUND,
        kind="voice_ai",
        tags=(),
        start_date=datetime.datetime(2026, 3, 6, 0, 11, 35, 256000, tzinfo=UTC),
        end_date=None,
    )
    assert isinstance(event.customer, Customer)
    check_customer_fields(event.customer)
    assert event.customer.status is CustomerStatus.LEAD


@pytest.mark.parametrize(
    ("wire", "attribute"),
    [
        ("mbiNumber", "mbi_number"),
        ("doNotSMS", "do_not_sms"),
        ("medicarePartADate", "medicare_part_a_date"),
        ("medicarePartBDate", "medicare_part_b_date"),
        ("durationMs", "duration_ms"),
        ("callSid", "call_sid"),
        ("event_type", "event_type"),
        ("address2", "address2"),
        ("carrierAssignedCustomerId", "carrier_assigned_customer_id"),
    ],
)
def test_wire_names_are_aliases(wire: str, attribute: str) -> None:
    model = CallCompletedEvent if attribute in {"duration_ms", "call_sid"} else CustomerCreatedEvent
    info = model.model_fields[attribute]
    assert info.validation_alias == wire
    assert info.serialization_alias == wire


def test_every_catalog_field_is_a_model_field(event_type: str) -> None:
    payload = load_fixture(event_type)
    event = parse_unverified_event(json.dumps(payload))
    assert event.model_extra == {}, "a catalog field fell through to the unknown fields"
    assert set(event.model_dump(by_alias=True)) == set(payload)


def test_licensed_states_nested_alias() -> None:
    assert AssignedUser.model_fields["licensed_states"].validation_alias == "licensedStates"


def test_round_trip_by_alias(event_type: str) -> None:
    event = parse_unverified_event(fixture_bytes(event_type))
    wire = event.model_dump(mode="json", by_alias=True)
    assert parse_unverified_event(json.dumps(wire)) == event
    assert event.model_dump_json(by_alias=True)  # serialises without error
    assert parse_unverified_event(event.model_dump_json(by_alias=True)) == event


def test_wire_format_matches_catalog(event_type: str) -> None:
    payload = load_fixture(event_type)
    wire = parse_unverified_event(json.dumps(payload)).model_dump(mode="json", by_alias=True)
    # Timestamps come back in pydantic's ISO form; compare them as instants.
    for key in ("createdAt", "updatedAt", "startTime", "endTime"):
        if key in payload:
            assert datetime.datetime.fromisoformat(wire.pop(key).replace("Z", "+00:00")) == (
                datetime.datetime.fromisoformat(payload.pop(key).replace("Z", "+00:00"))
            )
    if "campaign" in payload:
        wire["campaign"].pop("startDate")
        payload["campaign"].pop("startDate")
    if "customer" in payload:
        for key in ("createdAt", "updatedAt"):
            wire["customer"].pop(key)
            payload["customer"].pop(key)
    assert wire == payload


def test_models_are_frozen_and_hashable(event_type: str) -> None:
    event = parse_unverified_event(fixture_bytes(event_type))
    with pytest.raises(pydantic.ValidationError) as excinfo:
        event.id = uuid.uuid4()  # type: ignore[misc]
    assert "frozen" in str(excinfo.value)
    assert hash(event) == hash(parse_unverified_event(fixture_bytes(event_type)))
    assert {event, parse_unverified_event(fixture_bytes(event_type))} == {event}


def test_frozen_error_does_not_echo_the_value() -> None:
    event = parse_unverified_event(fixture_bytes("customer.created"))
    with pytest.raises(pydantic.ValidationError) as excinfo:
        event.mbi_number = "9ZZ9ZZ9ZZ99"  # type: ignore[misc]
    assert "9ZZ9ZZ9ZZ99" not in str(excinfo.value)


def test_missing_optional_fields_read_as_none() -> None:
    event = parse_unverified_event(
        b'{"event_type":"customer.created","id":"b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b",'
        b'"createdAt":"2026-06-17T19:07:23Z","updatedAt":"2026-06-17T19:07:23Z"}'
    )
    assert isinstance(event, CustomerCreatedEvent)
    for name in CustomerCreatedEvent.model_fields:
        if name not in {"id", "event_type", "created_at", "updated_at"}:
            assert getattr(event, name) is None, name


def test_minimal_call_with_catalog_style_nested_customer() -> None:
    # The catalog abbreviates the nested customer to its id; that must still parse.
    event = parse_unverified_event(
        b'{"event_type":"call.completed","id":"dca4a483-af54-4899-a804-766ee5812537",'
        b'"createdAt":"2026-06-17T19:07:23.709Z",'
        b'"customer":{"id":"b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b"},"campaign":null}'
    )
    assert isinstance(event, CallCompletedEvent)
    assert event.customer == Customer(id=CUSTOMER_ID)
    assert event.customer.created_at is None
    assert event.campaign is None
    assert event.transcript is None


def test_unknown_enum_values_are_kept_as_strings() -> None:
    payload = load_fixture("customer.created") | {
        "status": "Prospect",
        "lineType": "satellite",
        "gender": "Two-Spirit",
        "maritalStatus": "Engaged",
    }
    event = parse_unverified_event(json.dumps(payload))
    assert isinstance(event, CustomerCreatedEvent)
    assert event.status == "Prospect"
    assert not isinstance(event.status, CustomerStatus)
    assert event.line_type == "satellite"
    assert event.gender == "Two-Spirit"
    assert event.marital_status == "Engaged"
    assert event.model_dump(by_alias=True)["status"] == "Prospect"


def test_unknown_fields_stay_reachable() -> None:
    payload = load_fixture("call.completed")
    payload["sentiment"] = {"score": 0.8}
    payload["customer"]["loyaltyTier"] = "gold"
    event = parse_unverified_event(json.dumps(payload))
    assert isinstance(event, CallCompletedEvent)
    assert event.model_extra == {"sentiment": {"score": 0.8}}
    assert event.customer is not None
    assert event.customer.model_extra == {"loyaltyTier": "gold"}
    assert event.model_dump(by_alias=True)["sentiment"] == {"score": 0.8}


def test_unknown_event_type() -> None:
    body = b'{"event_type":"appointment.booked","id":"x","when":"tomorrow","nested":{"a":[1,2]}}'
    event = parse_unverified_event(body)
    assert isinstance(event, UnknownEvent)
    assert event.event_type == "appointment.booked"
    assert event.payload == json.loads(body)
    with pytest.raises(TypeError):
        event.payload["id"] = "y"  # type: ignore[index]
    assert event.model_dump() == json.loads(body)
    assert parse_unverified_event(json.dumps(event.model_dump(by_alias=True))) == event
    assert UnknownEvent.model_validate(json.loads(body)) == event
    assert UnknownEvent(event_type="appointment.booked", payload=json.loads(body)) == event


def test_enums_compare_equal_to_wire_strings() -> None:
    assert EventType.CUSTOMER_CREATED == "customer.created"
    assert LineType.FIXED_VOIP == "fixedVoip"
    assert LineType.NON_FIXED_VOIP == "nonFixedVoip"
    assert Gender.PREFER_NOT_TO_SAY == "Prefer Not to Say"
    assert Gender.NON_BINARY == "Non-Binary"
    assert MaritalStatus.DOMESTIC_PARTNERSHIP == "Domestic Partnership"
    assert CallDirection.OUTBOUND == "outbound"
    assert str(LineType.TOLL_FREE) == "tollFree"
    assert f"{CustomerStatus.INACTIVE}" == "Inactive"
    assert [m.value for m in EventType] == ["customer.created", "customer.updated", "call.completed"]


def _upper_snake(value: str) -> str:
    out = ""
    for index, char in enumerate(value):
        if char.isupper() and index and value[index - 1].islower():
            out += "_"
        out += "_" if char in " -." else char.upper()
    return out


@pytest.mark.parametrize("enum", [EventType, CustomerStatus, LineType, Gender, MaritalStatus, CallDirection])
def test_enum_member_names_are_upper_snake_of_values(enum: Any) -> None:
    for member in enum:
        assert member.name == _upper_snake(member.value)


def test_catalog_enum_values_are_complete() -> None:
    assert {m.value for m in LineType} == {
        "landline", "mobile", "fixedVoip", "nonFixedVoip", "personal", "tollFree",
        "premium", "sharedCost", "uan", "voicemail", "pager", "unknown",
    }  # fmt: skip
    assert {m.value for m in Gender} == {"Male", "Female", "Non-Binary", "Other", "Prefer Not to Say"}
    assert {m.value for m in MaritalStatus} == {
        "Single", "Married", "Divorced", "Widowed", "Separated", "Domestic Partnership",
    }  # fmt: skip
    assert {m.value for m in CustomerStatus} == {"Lead", "Active", "Inactive"}


def test_construct_by_attribute_name() -> None:
    event = CustomerCreatedEvent(
        event_type="customer.created",
        id=CUSTOMER_ID,
        created_at=datetime.datetime(2026, 1, 1, tzinfo=UTC),
        updated_at=datetime.datetime(2026, 1, 1, tzinfo=UTC),
        do_not_sms=True,
        mbi_number="1EG4TE5MK73",
    )
    assert event.model_dump(by_alias=True)["doNotSMS"] is True
    assert event.mbi_number == "1EG4TE5MK73"


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        Customer(id=CUSTOMER_ID, created_at=datetime.datetime(2026, 1, 1))  # noqa: DTZ001


# --------------------------------------------------------------------------- the parse path's validator


def _our_wrappers(schema: object) -> set[str]:
    """The models whose error-hiding wrappers a core schema holds."""
    if isinstance(schema, list):
        return set().union(*map(_our_wrappers, schema))
    if not isinstance(schema, dict):
        return set()
    function = schema.get("function")
    inner = function.get("function") if isinstance(function, dict) else None
    own = (
        {inner.__self__.__name__}
        if schema.get("type") == "function-wrap" and getattr(inner, "__name__", "") == "_hide_input_in_errors"
        else set()
    )
    return own.union(*map(_our_wrappers, schema.values()))


def _known_event_adapter() -> pydantic.TypeAdapter[Any]:
    """pydantic's own adapter of the known events, with the parse path's config: the reference."""
    from carecycle_webhooks import _models

    return pydantic.TypeAdapter(_models.KnownEvent, config=_models._PARSE_CONFIG)


def _without_metadata(schema: object) -> object:
    """A core schema without its ``metadata`` (JSON Schema hooks: new closures on every build)."""
    if isinstance(schema, list):
        return [_without_metadata(item) for item in schema]
    if isinstance(schema, dict):
        return {key: _without_metadata(value) for key, value in schema.items() if key != "metadata"}
    return schema


def test_the_parse_path_validates_without_the_error_wrappers() -> None:
    from carecycle_webhooks import _models

    # Every model of a known event: the three events, Campaign, Customer, AssignedUser.
    models = {"CustomerCreatedEvent", "CustomerUpdatedEvent", "CallCompletedEvent", "Campaign", "Customer"}
    assert _our_wrappers(_known_event_adapter().core_schema) == models | {"AssignedUser"}
    assert _our_wrappers(_models.KNOWN_EVENT_VALIDATOR.__reduce__()[1][0]) == set()


def test_the_parse_path_schema_is_the_one_a_type_adapter_builds() -> None:
    from carecycle_webhooks import _models

    # core_schema_of asks pydantic's schema generator directly (no validator, no plugins).
    ours = _models.core_schema_of(_models.KnownEvent, _models._PARSE_CONFIG)
    assert _without_metadata(ours) == _without_metadata(_known_event_adapter().core_schema)


_INVALID_PAYLOADS = [
    load_fixture("customer.created") | {"id": "x", "dateOfBirth": "1958-13-45", "status": 5},
    load_fixture("customer.updated") | {"createdAt": "2026-06-17T19:07:23", "lineType": ["mobile"]},
    load_fixture("call.completed") | {"durationMs": "long", "campaign": {"tags": ["a", 1], "startDate": 5}},
    load_fixture("call.completed") | {"customer": {"assignedUser": {"licensedStates": "AZ"}}},
    load_fixture("call.completed") | {"customer": []},
    {"event_type": "customer.created"},
    {"event_type": 7},
    {},
    [],
]


@pytest.mark.parametrize("event_type", ["customer.created", "customer.updated", "call.completed"])
def test_the_parse_path_and_the_wrapped_models_agree_on_the_examples(event_type: str) -> None:
    from carecycle_webhooks import _models

    body = fixture_bytes(event_type)
    fast = _models.KNOWN_EVENT_VALIDATOR.validate_json(body)
    adapter = _known_event_adapter()
    # The wrappers hand pydantic Python objects, also for JSON input: python mode and JSON
    # mode must read the catalog's dates, datetimes, UUIDs, enums and lists alike.
    for other in (
        adapter.validate_json(body),
        adapter.validate_python(json.loads(body)),
        _models.KNOWN_EVENT_VALIDATOR.validate_python(json.loads(body)),
        type(fast).model_validate_json(body),
        type(fast).model_validate(json.loads(body)),
    ):
        assert type(other) is type(fast)
        assert other == fast
        assert other.model_dump() == fast.model_dump()
        assert other.model_dump_json() == fast.model_dump_json()


@pytest.mark.parametrize("payload", _INVALID_PAYLOADS)
def test_the_parse_path_and_the_wrapped_models_agree_on_errors(payload: object) -> None:
    from carecycle_webhooks import _models

    def problems(validate: Any, data: object) -> list[tuple[Any, ...]]:
        with pytest.raises(pydantic.ValidationError) as excinfo:
            validate(data)
        return [(detail["type"], detail["loc"]) for detail in excinfo.value.errors()]

    body = json.dumps(payload)
    fast = problems(_models.KNOWN_EVENT_VALIDATOR.validate_json, body)
    assert fast
    adapter = _known_event_adapter()
    assert problems(adapter.validate_json, body) == fast
    assert problems(adapter.validate_python, payload) == problems(
        _models.KNOWN_EVENT_VALIDATOR.validate_python, payload
    )


def test_a_subclass_may_set_its_private_attributes_as_pydantic_allows() -> None:
    import pydantic

    from carecycle_webhooks import CustomerCreatedEvent
    from carecycle_webhooks.testing import customer_created

    class Tracked(CustomerCreatedEvent):
        _seen: int = pydantic.PrivateAttr(default=0)

    event = Tracked.model_validate(customer_created().model_dump(mode="json", by_alias=True))
    event._seen = 2
    assert event._seen == 2
    del event._seen
    with pytest.raises(pydantic.ValidationError):
        event.first_name = "Ana"  # type: ignore[misc]
