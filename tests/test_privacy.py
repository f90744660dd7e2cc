"""No protected health information in reprs, strs or exception texts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carecycle_webhooks import (
    AssignedUser,
    CallCompletedEvent,
    Customer,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    WebhookPayloadError,
    parse_event,
    parse_unverified_event,
)
from tests.conftest import EVENT_TYPES, SECRET, fixture_bytes, load_fixture, svix_headers

DOCS = Path(__file__).parent.parent / "docs" / "privacy.md"

CUSTOMER_PHI = {
    "carrier_assigned_customer_id", "first_name", "middle_name", "last_name", "preferred_name",
    "phone_number", "email", "date_of_birth", "ethnicity", "address", "address2", "city", "county",
    "postal_code", "mbi_number", "medicare_part_a_date", "medicare_part_b_date", "medicaid_number",
    "va_number", "household_income", "annual_income", "subsidy_amount",
}  # fmt: skip
CALL_PHI = {"phone_number", "summary", "transcript"}

# Every value of the catalog examples that is PHI, as it could appear in a text.
PHI_VALUES = [
    "Marcus", "Delacroix", "+13128471928", "3128471928", "marcus.delacroix@example.com", "1958-04-12",
    "1958", "4427 Westbrook", "Apt 3B", "Mesa", "Maricopa", "85204", "1EG4TE5MK73", "2023-05-01",
    "42000", "Medicare Advantage plan", "Thanks for calling", "priya@youragency.com",
]  # fmt: skip


def test_phi_fields_are_marked() -> None:
    assert CustomerCreatedEvent.phi_fields == CUSTOMER_PHI
    assert CustomerUpdatedEvent.phi_fields == CUSTOMER_PHI
    assert Customer.phi_fields == CUSTOMER_PHI
    assert CallCompletedEvent.phi_fields == CALL_PHI
    assert AssignedUser.phi_fields == {"email"}


def test_phi_list_is_documented() -> None:
    text = DOCS.read_text()
    for name in CUSTOMER_PHI | CALL_PHI:
        assert f"`{name}`" in text, name


def test_phi_marked_in_json_schema() -> None:
    schema = CustomerCreatedEvent.model_json_schema(by_alias=True)
    flagged = {name for name, prop in schema["properties"].items() if prop.get("x-phi")}
    assert "mbiNumber" in flagged
    assert "dateOfBirth" in flagged
    assert "status" not in flagged
    assert len(flagged) == len(CUSTOMER_PHI)


def _assert_no_phi(text: str) -> None:
    for value in PHI_VALUES:
        assert value not in text, value


def test_repr_and_str_hide_phi(event_type: str) -> None:
    event = parse_unverified_event(fixture_bytes(event_type))
    for text in (repr(event), str(event), f"{event}", f"{event!r}"):
        _assert_no_phi(text)
        assert "<redacted>" in text
    # Attribute access returns the real values.
    if isinstance(event, CallCompletedEvent):
        assert event.customer is not None
        assert event.customer.mbi_number == "1EG4TE5MK73"
    else:
        assert event.mbi_number == "1EG4TE5MK73"


def test_repr_shows_the_non_phi_fields() -> None:
    text = repr(parse_unverified_event(fixture_bytes("customer.created")))
    assert "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b" in text
    assert "CustomerStatus.LEAD" in text
    assert "mbi_number=<redacted>" in text


def test_unknown_fields_and_unknown_events_are_redacted() -> None:
    payload = load_fixture("customer.created") | {"spouseMbi": "9ZZ9ZZ9ZZ99"}
    event = parse_unverified_event(json.dumps(payload))
    assert "9ZZ9ZZ9ZZ99" not in repr(event)
    assert "spouseMbi=<redacted>" in repr(event)
    unknown = parse_unverified_event(b'{"event_type": "lab.result", "mbi": "9ZZ9ZZ9ZZ99"}')
    assert repr(unknown) == "UnknownEvent(event_type='lab.result', payload=<redacted>)"


def test_direct_construction_errors_hide_input() -> None:
    with pytest.raises(pydantic.ValidationError) as excinfo:
        Customer(id="b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b", date_of_birth="1958-04-99-secret")  # type: ignore[arg-type]
    assert "1958-04-99-secret" not in str(excinfo.value)


def test_model_copy_keeps_working() -> None:
    event = parse_unverified_event(fixture_bytes("customer.created"))
    assert isinstance(event, CustomerCreatedEvent)
    copy = event.model_copy(update={"first_name": "Ana"})
    assert copy.first_name == "Ana"
    assert event.first_name == "Marcus"


def _all_texts(error: BaseException) -> str:
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), repr(getattr(current, "errors", ""))]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


phi_mutations = st.fixed_dictionaries(
    {},
    optional={
        "dateOfBirth": st.sampled_from(["1958-04-1X", "1958-13-12", "12/04/1958"]),
        "mbiNumber": st.sampled_from([["1EG4TE5MK73"], {"v": "1EG4TE5MK73"}]),
        "householdIncome": st.sampled_from(["42000 dollars", "4.2e4x"]),
        "phoneNumber": st.sampled_from([13128471928, ["+13128471928"]]),
        "email": st.sampled_from([{"email": "marcus.delacroix@example.com"}]),
        "id": st.sampled_from(["Marcus-Delacroix", "1EG4TE5MK73"]),
        "createdAt": st.sampled_from(["1958-04-12Tnoon", "Marcus"]),
    },
)


@given(event_type=st.sampled_from(EVENT_TYPES), changes=phi_mutations)
def test_payload_errors_never_echo_values(event_type: str, changes: dict[str, Any]) -> None:
    payload = load_fixture(event_type)
    if event_type == "call.completed":
        payload["customer"] |= changes
    else:
        payload |= changes
    body = json.dumps(payload)
    try:
        parse_event(body, svix_headers(body), SECRET)
    except WebhookPayloadError as error:
        _assert_no_phi(_all_texts(error))
    else:
        assert not changes


def test_error_locations_use_wire_names() -> None:
    payload = load_fixture("customer.created") | {"dateOfBirth": "nope"}
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_unverified_event(json.dumps(payload))
    assert re.search(r"customer\.created\.dateOfBirth: date_from_datetime_parsing", str(excinfo.value))
