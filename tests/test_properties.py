"""Properties of parsing untrusted input, checked with hypothesis."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import string
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st
from svix.webhooks import Webhook as SvixWebhook

from carecycle_webhooks import (
    WebhookConfigurationError,
    WebhookError,
    WebhookVerificationError,
    WebhookVerifier,
    parse_event,
    parse_unverified_event,
)
from carecycle_webhooks._verify import _signature_candidates
from tests.conftest import EVENT_TYPES, SECRET, load_fixture, svix_headers

NOW = 1_800_000_000
VERIFIER = WebhookVerifier(SECRET, clock=lambda: NOW)
HEADER_NAMES = ["webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp"]

texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\ud800 ,v1"), max_size=60)
header_values = st.one_of(
    texts,
    st.integers().map(str),
    st.lists(st.sampled_from(["v1", "v2", ",", " ", "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="])).map(
        "".join
    ),
)
header_maps = st.dictionaries(
    st.sampled_from(HEADER_NAMES) | st.sampled_from([n.upper() for n in HEADER_NAMES]) | texts,
    header_values,
    max_size=8,
)
bodies = st.one_of(st.binary(max_size=300), texts, st.sampled_from([b"{}", b"[]", b"null"]))


@given(body=bodies, headers=header_maps)
def test_only_our_exceptions_escape_verification(body: bytes | str, headers: dict[str, str]) -> None:
    with contextlib.suppress(WebhookError):
        VERIFIER.parse(body, headers)


@given(secret=st.one_of(texts, st.binary(max_size=40).map(lambda b: "whsec_" + base64.b64encode(b).decode())))
def test_only_our_exceptions_escape_for_any_secret(secret: str) -> None:
    try:
        verifier = WebhookVerifier(secret)
    except WebhookConfigurationError:
        return
    with contextlib.suppress(WebhookError):
        verifier.parse(b"{}", {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,x"})


@given(body=bodies)
def test_only_our_exceptions_escape_unverified_parsing(body: bytes | str) -> None:
    with contextlib.suppress(WebhookError):
        parse_unverified_event(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    event_type=st.sampled_from(EVENT_TYPES),
    changes=st.dictionaries(
        st.sampled_from(sorted(load_fixture("customer.created"))), json_values, max_size=4
    ),
)
def test_only_our_exceptions_escape_signed_mutated_payloads(event_type: str, changes: dict[str, Any]) -> None:
    body = json.dumps(load_fixture(event_type) | changes)
    headers = svix_headers(body, timestamp=NOW)
    try:
        VERIFIER.parse(body, headers)
    except WebhookVerificationError as error:  # pragma: no cover - the test fails here
        raise AssertionError("a correctly signed body failed verification") from error
    except WebhookError:
        pass


def _flip(data: bytes, index: int, value: int) -> bytes:
    index %= len(data)
    assume(data[index] != value)
    return data[:index] + bytes([value]) + data[index + 1 :]


@given(event_type=st.sampled_from(EVENT_TYPES), index=st.integers(min_value=0), value=st.integers(0, 255))
def test_any_single_byte_change_to_the_body_is_rejected(event_type: str, index: int, value: int) -> None:
    body = json.dumps(load_fixture(event_type)).encode()
    headers = svix_headers(body, timestamp=NOW)
    VERIFIER.verify(body, headers)
    tampered = _flip(body, index, value)
    try:
        VERIFIER.verify(tampered, headers)
    except WebhookVerificationError:
        return
    raise AssertionError("a tampered body verified")  # pragma: no cover


@given(
    header=st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
    index=st.integers(min_value=0),
    char=st.sampled_from(string.printable + "é\x00"),
)
def test_any_single_character_change_to_a_header_is_rejected(header: str, index: int, char: str) -> None:
    body = json.dumps(load_fixture("customer.created")).encode()
    headers = svix_headers(body, timestamp=NOW, msg_id="msg_2Lm1bFf5ZsqHw5e2yd0DgPzm5Tx")
    value = headers[header]
    index %= len(value)
    assume(value[index] != char)
    # A signature header may hold several space-separated signatures; changing a space
    # to another space-like separator is not a change of the signature itself.
    tampered = headers | {header: value[:index] + char + value[index + 1 :]}
    try:
        VERIFIER.verify(body, tampered)
    except WebhookVerificationError:
        return
    raise AssertionError(f"a tampered {header} verified")  # pragma: no cover


@given(
    event_type=st.sampled_from(EVENT_TYPES),
    changes=st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(["Lead", "Active", "Inactive", "Prospect"]),
            "lineType": st.sampled_from(["mobile", "fixedVoip", "satellite"]),
            "gender": st.sampled_from(["Female", "Prefer Not to Say", "Two-Spirit"]),
            "firstName": st.text(max_size=20),
            "householdIncome": st.integers(min_value=0, max_value=10**9),
            "dateOfBirth": st.dates().map(datetime.date.isoformat),
            "doNotSMS": st.booleans(),
            "updatedAt": st.datetimes(timezones=st.just(datetime.timezone.utc)).map(
                datetime.datetime.isoformat
            ),
            "newField": json_values,
            "durationMs": st.integers(min_value=0, max_value=10**12),
            "transcript": st.text(max_size=200),
        },
    ),
)
def test_every_valid_event_round_trips(event_type: str, changes: dict[str, Any]) -> None:
    event = parse_unverified_event(json.dumps(load_fixture(event_type) | changes))
    wire = event.model_dump_json(by_alias=True)
    again = parse_unverified_event(wire)
    assert again == event
    assert again.model_dump_json(by_alias=True) == wire
    assert parse_event(wire, svix_headers(wire), SECRET) == event


@given(event_type=st.text(max_size=30), fields=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_unknown_events_round_trip(event_type: str, fields: dict[str, Any]) -> None:
    assume(event_type not in EVENT_TYPES)
    payload = fields | {"event_type": event_type}
    event = parse_unverified_event(json.dumps(payload))
    assert event.event_type == event_type
    assert parse_unverified_event(event.model_dump_json(by_alias=True)) == event


@given(
    body=st.text(max_size=200),
    msg_id=st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=40),
    offset=st.integers(min_value=-300, max_value=300),
    key=st.binary(min_size=1, max_size=64),
)
def test_expected_signature_is_svix_sign(body: str, msg_id: str, offset: int, key: bytes) -> None:
    """Our verifier accepts exactly what svix's own Webhook.sign produces."""
    assume(body.encode("utf-8", "surrogatepass") == body.encode("utf-8", "ignore"))
    secret = "whsec_" + base64.b64encode(key).decode()
    when = datetime.datetime.fromtimestamp(NOW + offset, tz=datetime.timezone.utc)
    signature = SvixWebhook(secret).sign(msg_id, when, body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(NOW + offset), "webhook-signature": signature}
    verifier = WebhookVerifier(secret, clock=lambda: NOW)
    assert verifier.verify(body, headers).webhook_id == msg_id
    assert verifier.verify(body.encode(), headers).timestamp == when


def _split_signatures(header: str) -> list[bytes] | str:
    """The signature header read the long way, as the Standard Webhooks spec puts it.

    Space-separated entries, each split at its first comma; every ``v1`` entry whose
    ASCII value has the length of an HMAC-SHA256 in base64 (44) is a candidate, the first
    32 of them, and entries that are not are skipped.
    """
    if len(header) > 8192:
        return "malformed_header"
    entries = [part.partition(",") for part in header.split()]
    if not entries:
        return "malformed_header"
    v1 = [
        signature.encode("ascii")
        for version, comma, signature in entries
        if version == "v1" and comma and len(signature) == 44 and signature.isascii()
    ][:32]
    return v1 or "no_matching_signature"


@given(
    st.lists(
        st.sampled_from(["v1", "v2", ",", " ", "\t", "\x7f", "\x1c", "a", "A+/=", "é"]), max_size=12
    ).map("".join)
    | st.text(alphabet=string.printable, max_size=40).map(lambda text: "v1," + text)
    | st.text(alphabet=string.printable, min_size=40, max_size=48).map(lambda text: "v1," + text)
    | st.lists(st.sampled_from(["v1," + "A" * 44, "v1," + "B" * 43, "v2," + "C" * 44]), max_size=40).map(
        " ".join
    )
)
def test_signature_header_reading_matches_the_long_way(header: str) -> None:
    expected = _split_signatures(header)
    try:
        candidates: list[bytes] | str = _signature_candidates(header)
    except WebhookVerificationError as error:
        candidates = error.reason
    assert candidates == expected


# Strings as JSON escapes them (ensure_ascii), lone surrogates and escaped backslashes included.
_escapable = st.text(
    alphabet=st.sampled_from(
        ["a", "\\", "u", "d", "8", "\ud800", "\udbff", "\udc00", "\udfff", "\U0001f600", "é"]
    ),
    max_size=24,
)


@given(value=_escapable, key=_escapable)
def test_escaped_lone_surrogates_read_as_replacement_characters(value: str, key: str) -> None:
    """Whatever the escapes, a string reads as json.loads reads it, lone surrogates as U+FFFD."""

    def replaced(text: str) -> str:
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)

    payload = {"event_type": "lab.result", "value": value, key: [value]}
    body = json.dumps(payload)  # escapes every non-ASCII character
    expected = {
        replaced(k): [replaced(i) for i in v] if isinstance(v, list) else replaced(v)
        for k, v in json.loads(body).items()
    }
    event = parse_unverified_event(body)
    assert dict(event.model_dump()) == expected
    assert parse_unverified_event(body.encode()) == event
