"""Mistakes caught where they are made: the secret from the environment, misspelt event types."""

from __future__ import annotations

import re

import pytest

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher, EventType, WebhookConfigurationError
from carecycle_webhooks.testing import sign
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes

SECRET_ENV = "CARECYCLE_WEBHOOK_SECRET"

# --------------------------------------------------------------------------- the secret


def deliver(webhooks: Dispatcher, secret: str) -> int:
    signed = sign(fixture_bytes("customer.created"), secret=secret)
    return webhooks.handle(signed.body, signed.headers).status_code


def test_the_variable_is_the_one_the_command_line_reads() -> None:
    from carecycle_webhooks._cli import _common
    from carecycle_webhooks._config import SECRET_ENV as LIBRARY_SECRET_ENV

    assert _common.SECRET_ENV is LIBRARY_SECRET_ENV == SECRET_ENV


def test_without_a_secret_the_dispatcher_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, f"  {SECRET}\n")  # an env file's trailing newline, spaces
    webhooks = Dispatcher()
    assert deliver(webhooks, SECRET) == 200
    assert deliver(webhooks, OTHER_SECRET) == 400


def test_several_secrets_separated_by_whitespace_for_a_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, f"{OTHER_SECRET}  \t{SECRET}\n")
    webhooks = Dispatcher()
    assert deliver(webhooks, SECRET) == 200
    assert deliver(webhooks, OTHER_SECRET) == 200


def test_the_environment_is_read_when_the_dispatcher_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    webhooks = Dispatcher()
    monkeypatch.setenv(SECRET_ENV, OTHER_SECRET)
    assert deliver(webhooks, SECRET) == 200


def test_a_secret_given_in_code_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "not a secret")
    assert deliver(Dispatcher(SECRET), SECRET) == 200
    with pytest.raises(WebhookConfigurationError, match="empty") as caught:
        Dispatcher("")  # a mistake, not a request for the environment
    assert SECRET_ENV not in str(caught.value)


def test_unset_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(WebhookConfigurationError, match=f"set {SECRET_ENV}"):
        Dispatcher()


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_empty_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    with pytest.raises(WebhookConfigurationError, match=f"{SECRET_ENV} is set but empty"):
        Dispatcher()


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("whsec_!!not-base64!!", SECRET_ENV),
        ("sk_live_0123456789abcdef", SECRET_ENV),
        (f"{SECRET} whsec_%%%%", f"secret #2 of 2 in {SECRET_ENV}"),
    ],
)
def test_invalid_names_the_variable_never_the_value(
    monkeypatch: pytest.MonkeyPatch, value: str, label: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    with pytest.raises(WebhookConfigurationError) as caught:
        Dispatcher()
    message = str(caught.value)
    assert message.startswith(f"{label}: the webhook secret is not valid")
    assert all(part.removeprefix("whsec_") not in message for part in value.split())
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


# --------------------------------------------------------------------------- event types


@pytest.mark.parametrize(
    ("misspelt", "suggested"),
    [
        ("customer.create", "customer.created"),
        ("Customer.Created", "customer.created"),
        ("call_completed", "call.completed"),
        ("CustomerUpdatedEvent", "customer.updated"),
    ],
)
def test_a_misspelt_event_type_fails_at_registration(misspelt: str, suggested: str) -> None:
    webhooks = Dispatcher(SECRET)
    with pytest.raises(WebhookConfigurationError) as caught:
        webhooks.on(misspelt)
    message = str(caught.value)
    assert f"no event type {misspelt!r} in the careCycle catalog (did you mean {suggested}" in message
    assert "catch-all" in message
    assert repr(webhooks) == "Dispatcher(handlers for: none; catch-all: False)"


def test_close_to_two_event_types_names_both() -> None:
    with pytest.raises(WebhookConfigurationError) as caught:
        Dispatcher(SECRET).on("customer")
    assert re.search(
        r"did you mean customer\.(created|updated) or customer\.(updated|created)\?", str(caught.value)
    )


def test_far_from_every_event_type_lists_the_catalog() -> None:
    with pytest.raises(WebhookConfigurationError) as caught:
        Dispatcher(SECRET).on("appointment.booked")
    message = str(caught.value)
    assert "did you mean" not in message
    assert "known: customer.created, customer.updated, call.completed" in message
    assert "reaches the catch-all (@webhooks.catch_all) as an UnknownEvent" in message


@pytest.mark.parametrize("given", ["customer.created", EventType.CUSTOMER_CREATED, CustomerCreatedEvent])
def test_every_spelling_of_a_catalog_type_registers(given: object) -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[CustomerCreatedEvent] = []
    webhooks.on(given)(seen.append)  # type: ignore[call-overload]
    assert deliver(webhooks, SECRET) == 200
    assert [type(event) for event in seen] == [CustomerCreatedEvent]
