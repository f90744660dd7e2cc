from __future__ import annotations

import base64
import datetime
import json
import types
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from svix.webhooks import Webhook as SvixWebhook

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    WebhookConfigurationError,
    WebhookDelivery,
    WebhookError,
    WebhookPayloadError,
    WebhookVerificationError,
    WebhookVerifier,
    parse_event,
)
from carecycle_webhooks._verify import body_exceeds, body_size
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, load_fixture, svix_headers

if TYPE_CHECKING:
    from collections.abc import Iterator

# The Standard Webhooks known-answer vector.
KAT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KAT_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
KAT_TIMESTAMP = 1614265330
KAT_BODY = b'{"test": 2432232314}'
KAT_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
KAT_HEADERS = {
    "webhook-id": KAT_ID,
    "webhook-timestamp": str(KAT_TIMESTAMP),
    "webhook-signature": KAT_SIGNATURE,
}

EXPECTED_TYPES = {
    "customer.created": CustomerCreatedEvent,
    "customer.updated": CustomerUpdatedEvent,
    "call.completed": CallCompletedEvent,
}


def frozen_clock(at: float = KAT_TIMESTAMP) -> WebhookVerifier:
    return WebhookVerifier(KAT_SECRET, clock=lambda: at)


def verification_reason(verifier: WebhookVerifier, body: Any, headers: Any) -> str:
    with pytest.raises(WebhookVerificationError) as excinfo:
        verifier.verify(body, headers)
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None
    return excinfo.value.reason


# --------------------------------------------------------------------------- known answer


def test_known_answer_vector() -> None:
    delivery = frozen_clock().verify(KAT_BODY, KAT_HEADERS)
    assert delivery == WebhookDelivery(
        webhook_id=KAT_ID,
        timestamp=datetime.datetime.fromtimestamp(KAT_TIMESTAMP, tz=datetime.timezone.utc),
    )


def test_known_answer_vector_is_not_a_careCycle_event() -> None:  # noqa: N802
    with pytest.raises(WebhookPayloadError, match="event_type is missing"):
        frozen_clock().parse(KAT_BODY, KAT_HEADERS)


def test_known_answer_vector_agrees_with_svix() -> None:
    # Our key decoding and svix's give the same key: svix signs what we verify.
    when = datetime.datetime.fromtimestamp(KAT_TIMESTAMP, tz=datetime.timezone.utc)
    assert SvixWebhook(KAT_SECRET).sign(KAT_ID, when, KAT_BODY.decode()) == KAT_SIGNATURE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="}, "no_matching_signature"),
        ({"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJeK"}, "no_matching_signature"),
        ({"webhook-timestamp": str(KAT_TIMESTAMP + 1)}, "no_matching_signature"),
    ],
)
def test_known_answer_vector_tampered(change: dict[str, str], reason: str) -> None:
    assert verification_reason(frozen_clock(), KAT_BODY, KAT_HEADERS | change) == reason


def test_known_answer_vector_tampered_body() -> None:
    assert (
        verification_reason(frozen_clock(), b'{"test": 2432232315}', KAT_HEADERS) == "no_matching_signature"
    )


# --------------------------------------------------------------------------- svix-signed catalog


def test_svix_signed_examples_parse(event_type: str) -> None:
    body = fixture_bytes(event_type)
    event = parse_event(body, svix_headers(body), SECRET)
    assert type(event) is EXPECTED_TYPES[event_type]
    assert event.model_dump(mode="json", by_alias=True)["id"] == load_fixture(event_type)["id"]


@pytest.mark.parametrize("prefix", ["webhook", "svix", "Webhook", "SVIX"])
def test_both_header_families_any_case(prefix: str) -> None:
    body = fixture_bytes("customer.created")
    headers = svix_headers(body, prefix=prefix)
    assert isinstance(parse_event(body, headers, SECRET), CustomerCreatedEvent)


def test_str_body() -> None:
    body = fixture_bytes("call.completed").decode()
    assert isinstance(parse_event(body, svix_headers(body), SECRET), CallCompletedEvent)


def test_bytearray_and_memoryview_bodies() -> None:
    body = fixture_bytes("customer.updated")
    headers = svix_headers(body)
    verifier = WebhookVerifier(SECRET)
    assert isinstance(verifier.parse(bytearray(body), headers), CustomerUpdatedEvent)  # type: ignore[arg-type]
    assert isinstance(verifier.parse(memoryview(body), headers), CustomerUpdatedEvent)  # type: ignore[arg-type]


def test_non_ascii_body() -> None:
    payload = load_fixture("customer.created") | {"firstName": "José", "lastName": "Núñez 李"}
    body = json.dumps(payload, ensure_ascii=False).encode()
    event = parse_event(body, svix_headers(body), SECRET)
    assert isinstance(event, CustomerCreatedEvent)
    assert event.last_name == "Núñez 李"


def test_several_signatures_in_one_header() -> None:
    body = fixture_bytes("customer.created")
    headers = svix_headers(body)
    good = headers["webhook-signature"]
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    headers["webhook-signature"] = f"v1a,ignored {bogus} {good}"
    assert isinstance(parse_event(body, headers, SECRET), CustomerCreatedEvent)


def test_key_rotation() -> None:
    body = fixture_bytes("customer.created")
    old, new = svix_headers(body, secret=SECRET), svix_headers(body, secret=OTHER_SECRET)
    verifier = WebhookVerifier([OTHER_SECRET, SECRET])
    assert verifier.verify(body, old).webhook_id == old["webhook-id"]
    assert verifier.verify(body, new).webhook_id == new["webhook-id"]
    assert verification_reason(WebhookVerifier(OTHER_SECRET), body, old) == "no_matching_signature"
    assert isinstance(parse_event(body, old, (OTHER_SECRET, SECRET)), CustomerCreatedEvent)


@pytest.mark.parametrize("padding", ["\n", " ", "\r\n", "\t", "  \n\n"])
def test_secret_with_surrounding_whitespace_works(padding: str) -> None:
    # Copied from a dashboard or read from an env file with a trailing newline.
    body = fixture_bytes("customer.created")
    headers = svix_headers(body)
    for secret in (SECRET + padding, padding + SECRET, SECRET.removeprefix("whsec_") + padding):
        assert isinstance(parse_event(body, headers, secret), CustomerCreatedEvent)
        assert WebhookVerifier([OTHER_SECRET, padding + secret]).verify(body, headers).webhook_id
    with pytest.raises(WebhookConfigurationError, match="empty"):
        WebhookVerifier("whsec_" + padding)


def test_secret_without_prefix_is_accepted() -> None:
    body = fixture_bytes("customer.created")
    assert isinstance(
        parse_event(body, svix_headers(body), SECRET.removeprefix("whsec_")), CustomerCreatedEvent
    )


# --------------------------------------------------------------------------- framework headers


def test_werkzeug_headers() -> None:
    from werkzeug.datastructures import EnvironHeaders, Headers

    body = fixture_bytes("customer.created")
    signed = svix_headers(body)
    headers = Headers([("Content-Type", "application/json"), *signed.items()])
    assert isinstance(parse_event(body, headers, SECRET), CustomerCreatedEvent)
    environ = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in signed.items()}
    assert isinstance(parse_event(body, EnvironHeaders(environ), SECRET), CustomerCreatedEvent)


def test_django_headers() -> None:
    from django.http.request import HttpHeaders

    body = fixture_bytes("customer.created")
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in svix_headers(body).items()}
    meta["CONTENT_TYPE"] = "application/json"
    assert isinstance(parse_event(body, HttpHeaders(meta), SECRET), CustomerCreatedEvent)


def test_starlette_headers() -> None:
    from starlette.datastructures import Headers

    body = fixture_bytes("call.completed")
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in svix_headers(body, prefix="svix").items()]
    assert isinstance(parse_event(body, Headers(raw=raw), SECRET), CallCompletedEvent)


# --------------------------------------------------------------------------- tolerance and clock


def test_tolerance_in_both_directions() -> None:
    body = fixture_bytes("customer.created")
    headers = svix_headers(body, timestamp=1_800_000_000)
    for offset in (-300, 0, 300):
        WebhookVerifier(SECRET, clock=lambda offset=offset: 1_800_000_000 + offset).verify(body, headers)
    late = WebhookVerifier(SECRET, clock=lambda: 1_800_000_301)
    early = WebhookVerifier(SECRET, clock=lambda: 1_799_999_699)
    assert verification_reason(late, body, headers) == "timestamp_too_old"
    assert verification_reason(early, body, headers) == "timestamp_too_new"


def test_custom_tolerance() -> None:
    body = fixture_bytes("customer.created")
    headers = svix_headers(body, timestamp=1_800_000_000)
    hour = datetime.timedelta(hours=1)
    WebhookVerifier(SECRET, tolerance=hour, clock=lambda: 1_800_003_600).verify(body, headers)
    strict = WebhookVerifier(SECRET, tolerance=datetime.timedelta(0), clock=lambda: 1_800_000_001)
    assert verification_reason(strict, body, headers) == "timestamp_too_old"


def test_parse_event_tolerance_argument() -> None:
    body = fixture_bytes("customer.created")
    old = int(datetime.datetime.now(tz=datetime.timezone.utc).timestamp()) - 3600
    headers = svix_headers(body, timestamp=old)
    with pytest.raises(WebhookVerificationError, match="in the past"):
        parse_event(body, headers, SECRET)
    assert isinstance(
        parse_event(body, headers, SECRET, tolerance=datetime.timedelta(hours=2)), CustomerCreatedEvent
    )


def test_stale_message_says_how_far() -> None:
    body = fixture_bytes("customer.created")
    headers = svix_headers(body, timestamp=1_800_000_000)
    with pytest.raises(WebhookVerificationError) as excinfo:
        WebhookVerifier(SECRET, clock=lambda: 1_800_001_000).verify(body, headers)
    assert str(excinfo.value) == "timestamp is 1000 s in the past, outside the tolerance of 300 s"


# --------------------------------------------------------------------------- malformed input


def _kat(**change: str | None) -> dict[str, str]:
    headers = dict(KAT_HEADERS)
    for name, value in change.items():
        key = "webhook-" + name
        if value is None:
            del headers[key]
        else:
            headers[key] = value
    return headers


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (_kat(id=None), "missing_header"),
        (_kat(timestamp=None), "missing_header"),
        (_kat(signature=None), "missing_header"),
        (_kat(id=""), "missing_header"),
        ({}, "missing_header"),
        (_kat(id="msg with space"), "malformed_header"),
        (_kat(id="msg_\u00e9"), "malformed_header"),
        (_kat(id="msg_\n"), "malformed_header"),
        (_kat(id="m" * 257), "malformed_header"),
        (_kat(timestamp="1614265330.0"), "malformed_header"),
        (_kat(timestamp="-1614265330"), "malformed_header"),
        (_kat(timestamp="١٦١٤٢٦٥٣٣٠"), "malformed_header"),
        (_kat(timestamp="9" * 13), "malformed_header"),
        (_kat(timestamp=" 1614265330"), "malformed_header"),
        (_kat(signature="g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="), "no_matching_signature"),
        (_kat(signature="v1,"), "no_matching_signature"),
        (_kat(signature=","), "no_matching_signature"),
        (_kat(signature="   "), "malformed_header"),
        (_kat(signature="v1,é"), "no_matching_signature"),
        (_kat(signature="v1," + "A" * 9000), "malformed_header"),
        (_kat(signature=f"{KAT_SIGNATURE} " + "A" * 8192), "malformed_header"),
        (_kat(signature="v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="), "no_matching_signature"),
        (_kat(signature="v1,not-base64!!"), "no_matching_signature"),
        (_kat(signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"), "no_matching_signature"),
        (KAT_HEADERS | {"svix-id": "msg_other"}, "conflicting_headers"),
    ],
)
def test_malformed_headers(headers: dict[str, str], reason: str) -> None:
    assert verification_reason(frozen_clock(), KAT_BODY, headers) == reason


@pytest.mark.parametrize(
    "unreadable",
    [
        "garbage",
        "v1,",
        ",",
        ",abc",
        "v1a,ignored",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v9,\u00e9t\u00e9",
        "v1,\u00e9",
        "\u00e9",
        "v1,\x00",
    ],
)
@pytest.mark.parametrize("first", [True, False], ids=["before", "after"])
def test_unreadable_signature_entries_are_skipped(unreadable: str, *, first: bool) -> None:
    # The Standard Webhooks spec: the receiver tries each signature until one matches.
    entries = [unreadable, KAT_SIGNATURE] if first else [KAT_SIGNATURE, unreadable]
    delivery = frozen_clock().verify(KAT_BODY, _kat(signature=" ".join(entries)))
    assert delivery.webhook_id == KAT_ID
    # With no v1 entry that matches, the reason is the missing match, not the odd entry.
    wrong = "v1," + base64.b64encode(b"x" * 32).decode()
    assert verification_reason(frozen_clock(), KAT_BODY, _kat(signature=f"{unreadable} {wrong}")) == (
        "no_matching_signature"
    )


def test_a_header_without_a_readable_v1_entry_says_so() -> None:
    with pytest.raises(WebhookVerificationError, match="no v1 signature that could be read") as excinfo:
        frozen_clock().verify(KAT_BODY, _kat(signature="garbage v2,abc"))
    assert excinfo.value.reason == "no_matching_signature"


def test_the_signature_header_length_bound_holds_with_a_match_inside() -> None:
    padded = " ".join(["v1,x"] * 2000 + [KAT_SIGNATURE])
    assert len(padded) > 8192
    assert verification_reason(frozen_clock(), KAT_BODY, _kat(signature=padded)) == "malformed_header"
    many = " ".join(["v1,x"] * 1500 + [KAT_SIGNATURE])
    assert frozen_clock().verify(KAT_BODY, _kat(signature=many)).webhook_id == KAT_ID


def test_same_header_twice_with_the_same_value_is_fine() -> None:
    pairs = [*KAT_HEADERS.items(), ("svix-id", KAT_ID)]

    class Pairs:
        def items(self) -> Iterator[tuple[str, str]]:
            return iter(pairs)

    assert frozen_clock().verify(KAT_BODY, Pairs()).webhook_id == KAT_ID


class _Exploding:
    def items(self) -> Iterator[tuple[str, str]]:
        yield ("webhook-id", KAT_ID)
        raise RuntimeError("broken iterator")


@pytest.mark.parametrize(
    "headers",
    [None, 42, "webhook-id: x", [("webhook-id", KAT_ID)], _Exploding(), {"webhook-id": b"bytes"}],
)
def test_headers_of_the_wrong_shape(headers: Any) -> None:
    assert verification_reason(frozen_clock(), KAT_BODY, headers) in {"malformed_header", "missing_header"}


def test_header_values_that_are_not_strings() -> None:
    assert (
        verification_reason(frozen_clock(), KAT_BODY, KAT_HEADERS | {"webhook-id": 5}) == "malformed_header"
    )


def test_non_string_header_names_are_ignored() -> None:
    headers: dict[Any, str] = {**KAT_HEADERS, 7: "x", b"webhook-id": "y"}
    assert frozen_clock().verify(KAT_BODY, headers).webhook_id == KAT_ID


@pytest.mark.parametrize("body", [b"\xff\xfe{}", "\ud800", None, 12, {"a": 1}])
def test_bodies_that_cannot_be_signed(body: Any) -> None:
    assert verification_reason(frozen_clock(), body, KAT_HEADERS) in {"invalid_body", "no_matching_signature"}


def test_huge_tolerance_with_far_future_timestamp() -> None:
    verifier = WebhookVerifier(KAT_SECRET, tolerance=datetime.timedelta.max, clock=lambda: KAT_TIMESTAMP)
    assert verification_reason(verifier, KAT_BODY, _kat(timestamp="999999999999")) == "malformed_header"


# --------------------------------------------------------------------------- payload errors


def _signed_parse(body: bytes) -> WebhookPayloadError:
    with pytest.raises(WebhookPayloadError) as excinfo:
        parse_event(body, svix_headers(body), SECRET)
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None
    return excinfo.value


def test_signed_but_not_json() -> None:
    error = _signed_parse(b'{"event_type": "customer.created", ')
    assert str(error) == "the body is not valid JSON"
    assert error.errors[0][1] == "json_invalid"


def test_signed_but_invalid_event_names_locations_not_values() -> None:
    payload = load_fixture("call.completed")
    payload["customer"]["dateOfBirth"] = "1958-13-45"
    payload["customer"]["mbiNumber"] = ["1EG4TE5MK73"]
    payload["durationMs"] = "about four minutes"
    del payload["createdAt"]
    error = _signed_parse(json.dumps(payload).encode())
    message = str(error)
    assert message.startswith("invalid careCycle event, 4 errors: ")
    assert "customer.dateOfBirth" in message
    assert "call.completed.createdAt: missing" in message
    for value in ("1958-13-45", "1EG4TE5MK73", "about four minutes", "Marcus"):
        assert value not in message
        assert value not in repr(error.errors)
    assert (("call.completed", "customer", "dateOfBirth"), "date_from_datetime_parsing") in error.errors


def test_many_errors_are_summarised() -> None:
    payload: dict[str, Any] = {"event_type": "customer.created", "id": "x", "createdAt": "x"}
    payload |= {key: ["x"] for key in ("firstName", "lastName", "email", "city", "state", "address")}
    error = _signed_parse(json.dumps(payload).encode())
    assert "and " in str(error)
    assert "more" in str(error)
    assert len(error.errors) == 9


@pytest.mark.parametrize("body", [b"[]", b"null", b'"customer.created"', b"{}", b'{"event_type": 7}'])
def test_signed_json_that_is_not_an_event(body: bytes) -> None:
    error = _signed_parse(body)
    assert isinstance(error, WebhookError)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "empty"),
        ("whsec_", "empty"),
        ("whsec_not base64!", "not valid"),
        ("whsec_A", "not valid"),
        ("whsec_====", "not valid"),
        (b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not bytes"),
        (None, "not NoneType"),
        ([], "at least one"),
        (["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""], "empty"),
        ([42], "not int"),
    ],
)
def test_invalid_secrets_fail_when_given(secret: Any, message: str) -> None:
    with pytest.raises(WebhookConfigurationError, match=message) as excinfo:
        WebhookVerifier(secret)
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.__context__ is None
    with pytest.raises(WebhookConfigurationError, match=message):
        parse_event(KAT_BODY, KAT_HEADERS, secret)


def test_secret_never_in_messages_or_repr() -> None:
    secret_part = KAT_SECRET.removeprefix("whsec_")
    verifier = WebhookVerifier([KAT_SECRET, SECRET], tolerance=datetime.timedelta(seconds=30))
    assert secret_part not in repr(verifier)
    assert repr(verifier) == "WebhookVerifier(<2 secret(s)>, tolerance=30s)"
    with pytest.raises(WebhookVerificationError) as excinfo:
        verifier.verify(KAT_BODY, KAT_HEADERS)
    assert secret_part not in str(excinfo.value)
    with pytest.raises(WebhookConfigurationError) as bad:
        WebhookVerifier(KAT_SECRET + "!")
    assert secret_part not in str(bad.value)


@pytest.mark.parametrize("tolerance", [datetime.timedelta(seconds=-1), 300, None])
def test_invalid_tolerance(tolerance: Any) -> None:
    with pytest.raises(WebhookConfigurationError, match="tolerance"):
        WebhookVerifier(KAT_SECRET, tolerance=tolerance)
    with pytest.raises(WebhookConfigurationError, match="tolerance"):
        parse_event(KAT_BODY, KAT_HEADERS, KAT_SECRET, tolerance=tolerance)


@pytest.mark.parametrize(
    ("value", "attempt"), [("3", 3), ("1", 1), ("x", None), ("", None), ("9999999", None), ("٣", None)]
)
def test_attempt_header(value: str, attempt: int | None) -> None:
    delivery = frozen_clock().verify(KAT_BODY, KAT_HEADERS | {"Svix-Attempt": value})
    assert delivery.attempt == attempt
    assert frozen_clock().verify(KAT_BODY, KAT_HEADERS).attempt is None


_OTHER_ATTEMPT = {"svix-attempt": "7"}


def test_conflicting_attempt_headers_do_not_reject_a_signed_delivery() -> None:
    # The attempt is not signed: two different ones make it unknown, not the delivery invalid.
    headers = KAT_HEADERS | {"webhook-attempt": "3"} | _OTHER_ATTEMPT
    assert frozen_clock().verify(KAT_BODY, headers).attempt is None
    assert frozen_clock().verify(KAT_BODY, headers | _svix_named(KAT_HEADERS)).attempt is None
    # The same one twice is that one.
    alike = KAT_HEADERS | {"webhook-attempt": "7"} | _OTHER_ATTEMPT
    assert frozen_clock().verify(KAT_BODY, alike).attempt == 7
    # An attempt that is not a string beside one that is: unknown too.
    not_text = KAT_HEADERS | {"webhook-attempt": 7} | _OTHER_ATTEMPT
    assert frozen_clock().verify(KAT_BODY, not_text).attempt is None
    # Signed headers in conflict still fail closed.
    for name in ("svix-id", "svix-timestamp", "svix-signature"):
        changed = KAT_HEADERS | {"webhook-attempt": "3"} | {name: "v1,other" if "sig" in name else "1"}
        assert verification_reason(frozen_clock(), KAT_BODY, changed) == "conflicting_headers"


def test_conflicting_attempt_headers_in_items_never_call_their_methods() -> None:
    pairs = [*KAT_HEADERS.items(), ("webhook-attempt", Explosive()), ("svix-attempt", "2")]

    class Pairs:
        def items(self) -> Iterator[tuple[str, object]]:
            return iter(pairs)

    assert frozen_clock().verify(KAT_BODY, Pairs()).attempt is None  # type: ignore[arg-type]


class RawHeaders:
    """Starlette-shaped headers: ``raw`` pairs of bytes, and ``items()`` for the general path."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw if isinstance(k, bytes)]


def _raw(headers: dict[str, str], *, upper: bool = False) -> list[tuple[bytes, bytes]]:
    return [((k.upper() if upper else k).encode(), v.encode()) for k, v in headers.items()]


class RawOnly:
    """ASGI pairs whose ``items()`` must not be called: only the fast path can read them."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def items(self) -> list[tuple[str, str]]:
        raise AssertionError("the general reading was used")


def _svix_named(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("webhook-", "svix-"): value for name, value in headers.items()}


@pytest.mark.parametrize(
    "headers",
    [
        KAT_HEADERS,
        _svix_named(KAT_HEADERS),
        KAT_HEADERS | _svix_named(KAT_HEADERS),  # both names, alike
        KAT_HEADERS | {"host": "example.org", "content-type": "application/json"},
    ],
    ids=["webhook", "svix", "both", "others"],
)
def test_asgi_raw_headers_are_read_without_the_general_scan(headers: dict[str, str]) -> None:
    delivery = frozen_clock().verify(KAT_BODY, RawOnly(_raw(headers)))
    assert (delivery.webhook_id, delivery.attempt) == (KAT_ID, None)
    attempt = {f"{prefix}-attempt": "4" for prefix in ("webhook", "svix") if f"{prefix}-id" in headers}
    with_attempt = frozen_clock().verify(KAT_BODY, RawOnly(_raw(headers | attempt)))
    assert with_attempt.attempt == 4


def test_starlette_headers_of_a_real_request_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.datastructures import Headers

    headers = Headers(raw=_raw(KAT_HEADERS | {"webhook-attempt": "2"}))

    def no_general_reading(_self: object) -> object:
        raise AssertionError("the general reading was used")

    monkeypatch.setattr(Headers, "items", no_general_reading)
    delivery = frozen_clock().verify(KAT_BODY, headers)
    assert (delivery.webhook_id, delivery.attempt) == (KAT_ID, 2)


@pytest.mark.parametrize(
    "headers",
    [KAT_HEADERS, _svix_named(KAT_HEADERS), KAT_HEADERS | _svix_named(KAT_HEADERS)],
    ids=["webhook", "svix", "both"],
)
def test_conflicting_attempts_in_the_fast_paths(headers: dict[str, str]) -> None:
    attempts = {"webhook-attempt": "3", "svix-attempt": "4"}
    assert frozen_clock().verify(KAT_BODY, RawOnly(_raw(headers | attempts))).attempt is None
    assert frozen_clock().verify(KAT_BODY, EnvironOnly(_environ(headers | attempts))).attempt is None
    # One name given twice among ASGI pairs: the general reading, with the same answer.
    twice = [*_raw(headers), (b"webhook-attempt", b"3"), (b"webhook-attempt", b"4")]
    assert frozen_clock().verify(KAT_BODY, RawHeaders(twice)).attempt is None
    # The same attempt under both names is that attempt.
    alike = {"webhook-attempt": "5", "svix-attempt": "5"}
    assert frozen_clock().verify(KAT_BODY, RawOnly(_raw(headers | alike))).attempt == 5
    assert frozen_clock().verify(KAT_BODY, EnvironOnly(_environ(headers | alike))).attempt == 5


def test_conflicting_attempts_in_framework_headers() -> None:
    from starlette.datastructures import Headers as StarletteHeaders
    from werkzeug.datastructures import EnvironHeaders

    attempts = {"webhook-attempt": "3", "svix-attempt": "4"}
    assert frozen_clock().verify(KAT_BODY, StarletteHeaders(raw=_raw(KAT_HEADERS | attempts))).attempt is None
    assert frozen_clock().verify(KAT_BODY, EnvironHeaders(_environ(KAT_HEADERS | attempts))).attempt is None


def test_asgi_raw_headers_fast_path_and_its_fallbacks() -> None:
    verifier = frozen_clock()
    assert verifier.verify(KAT_BODY, RawHeaders(_raw(KAT_HEADERS))).webhook_id == KAT_ID
    # Names not in lower case (not ASGI-conformant): the general scan still finds them.
    assert verifier.verify(KAT_BODY, RawHeaders(_raw(KAT_HEADERS, upper=True))).webhook_id == KAT_ID
    # Another header given twice: the general scan, which still accepts the delivery.
    repeated = [*_raw(KAT_HEADERS), (b"accept", b"*/*"), (b"accept", b"text/plain")]
    assert verifier.verify(KAT_BODY, RawHeaders(repeated)).webhook_id == KAT_ID
    # The same header twice, or under both names, with different values: refused.
    conflicting = [*_raw(KAT_HEADERS), (b"svix-id", b"msg_other")]
    assert verification_reason(verifier, KAT_BODY, RawHeaders(conflicting)) == "conflicting_headers"
    twice = [*_raw(KAT_HEADERS), (b"webhook-id", b"msg_other")]
    assert verification_reason(verifier, KAT_BODY, RawHeaders(twice)) == "conflicting_headers"
    # Both names, each header under only one of them: the general scan merges them.
    mixed = {"webhook-id": KAT_ID, "svix-timestamp": str(KAT_TIMESTAMP), "svix-signature": KAT_SIGNATURE}
    assert verifier.verify(KAT_BODY, RawHeaders(_raw(mixed))).webhook_id == KAT_ID
    assert verification_reason(verifier, KAT_BODY, RawHeaders(_raw({}))) == "missing_header"
    empty_id = _raw(KAT_HEADERS | {"webhook-id": ""})
    assert verification_reason(verifier, KAT_BODY, RawHeaders(empty_id)) == "missing_header"


@pytest.mark.parametrize(
    "raw",
    [
        (("webhook-id", KAT_ID),),  # not a list
        [(b"webhook-id", KAT_ID.encode(), b"extra")],  # not a pair
        [[b"webhook-id", KAT_ID.encode()]],  # not a tuple
        [(b"webhook-id", KAT_ID)],  # value not bytes
        [(name.encode(), value) for name, value in KAT_HEADERS.items()],  # values not bytes
        [*_raw(KAT_HEADERS), (b"webhook-attempt", 3)],  # an attempt that is not bytes
        [([b"unhashable"], b"x"), *_raw(KAT_HEADERS)],  # a name dict() refuses
        [b"ab", *_raw(KAT_HEADERS)],  # not a pair of name and value
    ],
)
def test_odd_raw_attributes_fall_back_to_items(raw: Any) -> None:
    class Odd:
        def __init__(self) -> None:
            self.raw = raw

        def items(self) -> list[tuple[str, str]]:
            return list(KAT_HEADERS.items())

    assert frozen_clock().verify(KAT_BODY, Odd()).webhook_id == KAT_ID


class Environ:
    """Werkzeug-shaped headers: the WSGI ``environ``, and ``items()`` derived from it."""

    def __init__(self, environ: Any) -> None:
        self.environ = environ

    def items(self) -> list[tuple[str, str]]:
        return [
            (key[5:].replace("_", "-").title(), value)
            for key, value in self.environ.items()
            if key.startswith("HTTP_")
        ]


class EnvironOnly(Environ):
    """An environ whose ``items()`` must not be called: only the fast path can read it."""

    def items(self) -> list[tuple[str, str]]:
        raise AssertionError("the general reading was used")


def _environ(headers: dict[str, str]) -> dict[str, Any]:
    return {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()} | {"CONTENT_LENGTH": "20"}


@pytest.mark.parametrize(
    "headers",
    [KAT_HEADERS, _svix_named(KAT_HEADERS), KAT_HEADERS | _svix_named(KAT_HEADERS)],
    ids=["webhook", "svix", "both"],
)
def test_wsgi_environ_is_read_without_the_general_scan(headers: dict[str, str]) -> None:
    delivery = frozen_clock().verify(KAT_BODY, EnvironOnly(_environ(headers)))
    assert (delivery.webhook_id, delivery.attempt) == (KAT_ID, None)
    attempt = {f"{prefix}-attempt": "5" for prefix in ("webhook", "svix") if f"{prefix}-id" in headers}
    assert frozen_clock().verify(KAT_BODY, EnvironOnly(_environ(headers | attempt))).attempt == 5


def test_wsgi_environ_fast_path_and_its_fallbacks() -> None:
    environ = _environ(KAT_HEADERS)
    assert frozen_clock().verify(KAT_BODY, Environ(environ)).webhook_id == KAT_ID
    conflicting = environ | {"HTTP_SVIX_ID": "msg_other"}
    assert verification_reason(frozen_clock(), KAT_BODY, Environ(conflicting)) == "conflicting_headers"
    # Each header under one of the names only: the general scan merges them.
    mixed = _environ(
        {"webhook-id": KAT_ID, "svix-timestamp": str(KAT_TIMESTAMP), "svix-signature": KAT_SIGNATURE}
    )
    assert frozen_clock().verify(KAT_BODY, Environ(mixed)).webhook_id == KAT_ID
    # Not a plain dict: the general path.
    assert frozen_clock().verify(KAT_BODY, Environ(types.MappingProxyType(environ))).webhook_id == KAT_ID
    # A value that is not a string, an empty one, a missing one: the general path says what is wrong.
    not_text = environ | {"HTTP_WEBHOOK_ID": 3}
    assert verification_reason(frozen_clock(), KAT_BODY, Environ(not_text)) == "malformed_header"
    # The attempt is informational: one that is not a string is no attempt number.
    assert frozen_clock().verify(KAT_BODY, Environ(environ | {"HTTP_WEBHOOK_ATTEMPT": 3})).attempt is None
    empty = environ | {"HTTP_WEBHOOK_ID": ""}
    assert verification_reason(frozen_clock(), KAT_BODY, Environ(empty)) == "missing_header"
    missing = {key: value for key, value in environ.items() if key != "HTTP_WEBHOOK_SIGNATURE"}
    assert verification_reason(frozen_clock(), KAT_BODY, Environ(missing)) == "missing_header"


class Explosive:
    """A header value whose comparisons and truth raise: nothing of ours may let that escape."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __bool__(self) -> bool:
        raise RuntimeError("asked for its truth")

    __hash__ = object.__hash__


def test_odd_values_in_starlette_headers_are_refused_as_ours() -> None:
    from starlette.datastructures import Headers

    verifier = frozen_clock()
    raw = _raw(KAT_HEADERS)
    for odd in (Explosive(), mock.ANY, 3):
        headers = Headers(raw=[*raw, (b"svix-id", odd)])  # type: ignore[list-item]
        assert verification_reason(verifier, KAT_BODY, headers) == "malformed_header"
    # dict() takes any two-item sequence as a pair: b"ab" is not a header.
    assert verification_reason(verifier, KAT_BODY, Headers(raw=[b"ab", *raw])) == "malformed_header"  # type: ignore[list-item]


@pytest.mark.parametrize("name", [b"Webhook-Id", b"SVIX-ID"])
def test_the_same_header_in_another_case_is_still_a_conflict(name: bytes) -> None:
    from starlette.datastructures import Headers

    headers = Headers(raw=[*_raw(KAT_HEADERS), (name, b"msg_other")])
    assert verification_reason(frozen_clock(), KAT_BODY, headers) == "conflicting_headers"


def test_odd_values_in_an_environ_are_refused_as_ours() -> None:
    headers = Environ(_environ(KAT_HEADERS) | {"HTTP_SVIX_ID": Explosive()})
    assert verification_reason(frozen_clock(), KAT_BODY, headers) == "malformed_header"


def test_a_headers_object_whose_attributes_raise_is_read_through_items() -> None:
    class Touchy:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError(name)

        def items(self) -> list[tuple[str, str]]:
            return list(KAT_HEADERS.items())

    assert frozen_clock().verify(KAT_BODY, Touchy()).webhook_id == KAT_ID


def test_str_subclass_values_are_read_as_plain_strings() -> None:
    class Loud(str):
        __slots__ = ()

        def startswith(self, *args: object) -> bool:  # type: ignore[override]
            raise RuntimeError("own method called")

        def isascii(self) -> bool:
            raise RuntimeError("own method called")

    headers = {name: Loud(value) for name, value in KAT_HEADERS.items()} | {"webhook-attempt": Loud("2")}
    delivery = frozen_clock().verify(KAT_BODY, headers)
    assert (delivery.webhook_id, delivery.attempt) == (KAT_ID, 2)
    assert type(delivery.webhook_id) is str


# --------------------------------------------------------------------------- body size


@pytest.mark.parametrize(
    "body",
    [
        "",
        "plain ascii",
        "caf\u00e9",  # latin-1: 2 bytes for é
        "\u674e\u5f3a",  # 3 bytes each
        "\U0001f600 emoji",  # 4 bytes
        "\u00e9" * 70_000 + "\U0001f600",  # crosses the slices the measure uses
        '{"firstName": "Jos\u00e9"}',
    ],
)
def test_body_size_counts_utf8_bytes(body: str) -> None:
    expected = len(body.encode("utf-8"))
    assert body_size(body) == expected
    assert body_size(body.encode()) == expected
    assert body_size(bytearray(body.encode())) == expected
    assert body_size(memoryview(body.encode())) == expected
    for limit in (0, expected - 1, expected, expected + 1, len(body), 4 * len(body)):
        if limit >= 0:
            assert body_exceeds(body, limit) is (expected > limit)
            assert body_exceeds(body.encode(), limit) is (expected > limit)


def test_body_size_of_a_memoryview_counts_bytes_not_items() -> None:
    view = memoryview(bytes(16)).cast("I")
    assert len(view) == 4
    assert body_size(view) == 16
    assert body_exceeds(view, 15)


def test_a_str_body_is_limited_by_its_utf8_size() -> None:
    # 1000 characters, 3000 bytes: over a 2000-byte limit although its length is not.
    body = "\u674e" * 1000
    assert body_exceeds(body, 2000)
    assert not body_exceeds(body, 3000)


def test_lone_surrogates_count_three_bytes() -> None:
    assert body_size("a\ud800b") == 5
    assert body_exceeds("\ud800" * 10, 29)
    assert not body_exceeds("\ud800" * 10, 30)


def test_only_the_first_entries_of_an_hmacs_length_are_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    # A header full of entries costs no more than an honest one: entries of another length
    # than an HMAC-SHA256 in base64 cannot match and are skipped; of the rest, 32 are tried.
    wrong = "v1," + base64.b64encode(b"x" * 32).decode()
    assert len(wrong) == len(KAT_SIGNATURE)
    within = " ".join([wrong] * 31 + [KAT_SIGNATURE])
    assert frozen_clock().verify(KAT_BODY, _kat(signature=within)).webhook_id == KAT_ID
    beyond = " ".join([wrong] * 32 + [KAT_SIGNATURE])
    assert verification_reason(frozen_clock(), KAT_BODY, _kat(signature=beyond)) == "no_matching_signature"
    calls: list[int] = []
    import carecycle_webhooks._verify as verify_module

    real = verify_module.hmac.compare_digest

    def counted(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(verify_module.hmac, "compare_digest", counted)
    frozen_clock().verify(KAT_BODY, _kat(signature=" ".join(["v1,x"] * 1500 + [KAT_SIGNATURE])))
    assert len(calls) == 1  # the 1,500 short entries were never compared
