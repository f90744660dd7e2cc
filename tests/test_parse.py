from __future__ import annotations

import json
from typing import Any, NoReturn

import pydantic
import pytest

from carecycle_webhooks import (
    CallCompletedEvent,
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

    monkeypatch.setattr(models, "KNOWN_EVENT_VALIDATOR", Exploding())
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


# --------------------------------------------------------------------------- lone surrogates


def _with(event_type: str, **changes: Any) -> dict[str, Any]:
    return load_fixture(event_type) | changes


@pytest.mark.parametrize(
    ("escaped", "expected"),
    [
        ("Mar\\ud800cus", "Mar\ufffdcus"),
        ("Mar\\udc00cus", "Mar\ufffdcus"),
        ("\\uD83D", "\ufffd"),
        ("\\ud800\\ud800", "\ufffd\ufffd"),
        ("\\udc00\\ud83d\\ude00", "\ufffd\U0001f600"),  # a pair after a lone low surrogate stays a pair
        ("\\\\ud800\\udc00", "\\ud800\ufffd"),  # an escaped backslash, then text, then a lone escape
        ("\\\\\\ud800", "\\\ufffd"),
    ],
)
def test_escaped_lone_surrogates_are_read_as_replacement_characters(escaped: str, expected: str) -> None:
    # Valid JSON (json.loads and JavaScript accept it), so not a permanent 422 that Svix retries.
    text = json.dumps(_with("customer.created", firstName="@@")).replace("@@", escaped)
    for body in (text, text.encode()):
        event = parse_unverified_event(body)
        assert isinstance(event, CustomerCreatedEvent)
        assert event.first_name == expected
        # Valid Unicode: it encodes, and round-trips through pydantic's serialiser.
        event.model_dump_json().encode("utf-8")
        assert parse_unverified_event(event.model_dump_json(by_alias=True)) == event


def test_lone_surrogates_in_keys_nested_values_and_unknown_events() -> None:
    payload = _with("call.completed")
    payload["customer"] |= {"firstName": "@first", "@key": "@value"}
    text = json.dumps(payload).replace("@first", "Mar\\ud800cus")
    text = text.replace("@key", "note\\udfff").replace("@value", "x\\ud800")
    event = parse_unverified_event(text)
    assert isinstance(event, CallCompletedEvent)
    assert event.customer is not None
    assert event.customer.first_name == "Mar\ufffdcus"
    assert event.customer.model_extra == {"note\ufffd": "x\ufffd"}
    unknown = parse_unverified_event(b'{"event_type": "lab.\\ud800result", "a": ["\\udc00"]}')
    assert isinstance(unknown, UnknownEvent)
    assert unknown.event_type == "lab.\ufffdresult"
    assert unknown.payload["a"] == ["\ufffd"]


def test_a_long_run_of_escaped_backslashes_before_a_lone_surrogate() -> None:
    # Each run of backslashes is scanned once. (The scan that started at every backslash
    # of a run took about 30 s on this body; benchmarks/bench_hostile_payload.py times it.)
    run = 20_000
    text = json.dumps(_with("customer.created", firstName="@@"))
    body = text.replace("@@", "\\\\" * run + "\\ud800")
    event = parse_unverified_event(body)
    assert isinstance(event, CustomerCreatedEvent)
    assert event.first_name == "\\" * run + "\ufffd"


def test_invalid_json_with_a_surrogate_escape_is_still_invalid_json() -> None:
    for body in (b'{"event_type": "customer.created", "a": "\\ud800', b'{"a": "\\ud800"', b"\xff\\ud800"):
        with pytest.raises(WebhookPayloadError, match="not valid JSON"):
            parse_unverified_event(body)
    # A body that still fails after the repair says what is wrong with the event.
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_unverified_event(json.dumps(_with("customer.created", id="\\ud800")).replace("\\\\", "\\"))
    assert excinfo.value.errors == ((("customer.created", "id"), "uuid_parsing"),)


# --------------------------------------------------------------------------- bounded payload errors

_MIB = 1 << 20


def _hostile(path: tuple[str, ...], item: str, size: int = 2 * _MIB) -> bytes:
    """The call.completed example with the list at ``path`` holding ``item`` over and over."""
    payload = load_fixture("call.completed")
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@"
    items = ",".join([item] * (size // (len(item) + 1)))
    return json.dumps(payload).replace('"@@"', f"[{items}]").encode()


@pytest.mark.parametrize(
    ("path", "item"),
    [
        (("campaign", "tags"), "1"),
        (("campaign", "tags"), "{}"),
        (("campaign", "tags"), "[1]"),
        (("customer", "assignedUser", "licensedStates"), "1"),
    ],
)
def test_a_list_of_a_million_wrong_items_is_one_error(path: tuple[str, ...], item: str) -> None:
    # Each list stops at its first bad item: a 2 MiB body of them is answered as fast as
    # one (benchmarks/bench_hostile_payload.py times it), with one error, not a million.
    body = _hostile(path, item)
    assert len(body) > 2 * _MIB - 4096
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_unverified_event(body)
    location = ("call.completed", *path, 0)
    assert excinfo.value.errors == ((location, "string_type"),)
    assert (
        str(excinfo.value) == f"invalid careCycle event, 1 error: {'.'.join(map(str, location))}: string_type"
    )


def test_the_summary_keeps_the_first_errors_and_gives_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from carecycle_webhooks import _parse

    monkeypatch.setattr(_parse, "_MAX_KEPT_ERRORS", 3)
    payload: dict[str, Any] = {"event_type": "customer.created", "id": "x", "createdAt": "x"}
    payload |= {key: ["x"] for key in ("firstName", "lastName", "email", "city", "state", "address")}
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_unverified_event(json.dumps(payload))
    error = excinfo.value
    assert len(error.errors) == 3
    assert str(error).startswith("invalid careCycle event, 9 errors: customer.created.id: uuid_parsing; ")
    assert str(error).endswith("; and 4 more")


def test_every_wrong_field_at_once_gives_a_bounded_count() -> None:
    # The most errors a payload can give is bounded by the schema, not by its size.
    customer = {key: [1] * 1000 for key in load_fixture("customer.created")}
    customer["assignedUser"] = {"id": [1], "licensedStates": [1] * 10_000, "email": [1]}
    payload = {"event_type": "call.completed", "customer": customer, "campaign": {"tags": [1] * 10_000}}
    payload |= {key: [1] * 1000 for key in load_fixture("call.completed") if key not in payload}
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_unverified_event(json.dumps(payload))
    count = int(str(excinfo.value).split(" ")[3])
    assert 50 < count < 200
    assert len(excinfo.value.errors) == 50
