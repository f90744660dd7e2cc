from __future__ import annotations

from typing import Any, NoReturn

import pydantic
import pytest

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Event,
    UnknownEvent,
    WebhookPayloadError,
    parse_unverified_event,
)
from carecycle_webhooks import _models as models
from carecycle_webhooks._samples import SAMPLE_PAYLOADS
from tests.conftest import EVENT_TYPES, fixture_bytes, load_fixture


@pytest.mark.parametrize("body", [None, 12, {"event_type": "customer.created"}, ["x"]])
def test_body_of_the_wrong_type(body: Any) -> None:
    with pytest.raises(WebhookPayloadError, match="must be bytes or str"):
        parse_unverified_event(body)


def test_lone_surrogate_in_str_body() -> None:
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_unverified_event('{"event_type": "x", "a": "\ud800"}')
    assert excinfo.value.errors == (((), "string_unicode"),)


def test_unexpected_failure_inside_pydantic_is_still_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def validate_json(self, data: object) -> NoReturn:
            raise RecursionError("deep input")

    monkeypatch.setattr(models, "KNOWN_EVENT_ADAPTER", Exploding())
    with pytest.raises(WebhookPayloadError, match="unparseable") as excinfo:
        parse_unverified_event(b"{}")
    assert excinfo.value.__context__ is None
    monkeypatch.undo()
    monkeypatch.setattr(UnknownEvent, "model_validate_json", Exploding().validate_json)
    with pytest.raises(WebhookPayloadError, match="unparseable") as excinfo:
        parse_unverified_event(b'{"event_type": "appointment.booked"}')
    assert excinfo.value.__context__ is None


def test_deeply_nested_json_is_a_payload_error() -> None:
    body = '{"event_type": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(WebhookPayloadError):
        parse_unverified_event(body)


def test_event_adapter_accepts_model_instances() -> None:
    adapter = pydantic.TypeAdapter[Event](Event)
    event = parse_unverified_event(fixture_bytes("customer.created"))
    unknown = parse_unverified_event(b'{"event_type": "a.b"}')
    assert adapter.validate_python(event) == event
    assert adapter.validate_python(unknown) == unknown
    with pytest.raises(pydantic.ValidationError):
        adapter.validate_python(object())


def test_unknown_event_needs_a_mapping() -> None:
    with pytest.raises(pydantic.ValidationError):
        UnknownEvent.model_validate("a.b")


def test_models_cannot_be_deleted_from() -> None:
    event = parse_unverified_event(fixture_bytes("customer.created"))
    assert isinstance(event, CustomerCreatedEvent)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        del event.first_name  # type: ignore[misc]
    assert event.first_name == "Marcus"


def test_samples_are_the_catalog_examples() -> None:
    assert list(SAMPLE_PAYLOADS) == list(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        assert SAMPLE_PAYLOADS[event_type] == load_fixture(event_type)
