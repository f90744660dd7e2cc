"""The Flask extension: handlers on a module-level object, secret and route from app.config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import flask
import pytest

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    Event,
    InMemoryIdempotencyStore,
    WebhookConfigurationError,
)
from carecycle_webhooks.flask import CareCycleWebhooks
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from werkzeug.test import TestResponse


def create_app(webhooks: CareCycleWebhooks, **config: object) -> flask.Flask:
    """An application factory, as the Flask tutorial writes one."""
    app = flask.Flask(__name__)
    app.config.from_mapping({"CARECYCLE_WEBHOOK_SECRET": SECRET, **config})
    webhooks.init_app(app)
    return app


def post(app: flask.Flask, body: bytes, headers: Mapping[str, str], url: str = "/webhooks") -> TestResponse:
    return app.test_client().post(url, data=body, headers=dict(headers), content_type="application/json")


def recording() -> tuple[CareCycleWebhooks, list[Event]]:
    webhooks = CareCycleWebhooks(idempotency_store=InMemoryIdempotencyStore())
    seen: list[Event] = []

    @webhooks.on("customer.created")
    def created(event: CustomerCreatedEvent) -> None:
        seen.append(event)

    return webhooks, seen


def test_app_factory_runs_the_handlers_registered_on_the_module_level_extension() -> None:
    webhooks, seen = recording()
    app = create_app(webhooks)
    body = fixture_bytes("customer.created")

    response = post(app, body, svix_headers(body))
    assert (response.status_code, response.get_json()) == (200, {"status": "processed"})
    assert [event.event_type for event in seen] == ["customer.created"]

    response = post(app, body, svix_headers(body))
    assert (response.status_code, response.get_json()) == (200, {"status": "duplicate"})
    assert len(seen) == 1


def test_each_application_has_its_own_secret_and_store() -> None:
    webhooks, seen = recording()
    first = create_app(webhooks)
    second = create_app(webhooks, CARECYCLE_WEBHOOK_SECRET=OTHER_SECRET)
    third = flask.Flask(__name__)
    third.config["CARECYCLE_WEBHOOK_SECRET"] = SECRET
    webhooks.init_app(third, idempotency_store=InMemoryIdempotencyStore())
    body = fixture_bytes("customer.created")

    assert post(second, body, svix_headers(body)).status_code == 400  # signed with the other secret
    assert post(second, body, svix_headers(body, secret=OTHER_SECRET)).status_code == 200
    # The extension's store is shared by the apps that did not get their own.
    assert post(first, body, svix_headers(body)).get_json() == {"status": "duplicate"}
    assert post(third, body, svix_headers(body)).get_json() == {"status": "processed"}
    assert len(seen) == 2
    assert webhooks.dispatcher_for(first) is not webhooks.dispatcher_for(third)


def test_several_secrets_separated_by_spaces_while_one_is_rotated() -> None:
    webhooks, seen = recording()
    app = create_app(webhooks, CARECYCLE_WEBHOOK_SECRET=f" {OTHER_SECRET}  {SECRET}\n")
    body = fixture_bytes("customer.created")
    assert post(app, body, svix_headers(body, secret=OTHER_SECRET, msg_id="msg_a")).status_code == 200
    assert post(app, body, svix_headers(body, secret=SECRET, msg_id="msg_b")).status_code == 200
    listed = create_app(CareCycleWebhooks(), CARECYCLE_WEBHOOK_SECRET=[OTHER_SECRET, SECRET])
    assert post(listed, body, svix_headers(body)).get_json() == {"status": "ignored"}
    assert len(seen) == 2


def test_the_secret_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECYCLE_WEBHOOK_SECRET", OTHER_SECRET)
    webhooks, seen = recording()
    app = flask.Flask(__name__)
    webhooks.init_app(app)
    body = fixture_bytes("customer.created")
    assert post(app, body, svix_headers(body, secret=OTHER_SECRET)).status_code == 200
    assert len(seen) == 1


@pytest.mark.parametrize("secret", [None, "", "   ", [], 42])
def test_a_missing_secret_is_a_configuration_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, secret: object
) -> None:
    monkeypatch.delenv("CARECYCLE_WEBHOOK_SECRET", raising=False)
    app = flask.Flask(__name__)
    if secret is not None:
        app.config["CARECYCLE_WEBHOOK_SECRET"] = secret
    with pytest.raises(WebhookConfigurationError, match=r"app\.config\['CARECYCLE_WEBHOOK_SECRET'\]"):
        CareCycleWebhooks(app)
    assert "carecycle_webhooks" not in app.extensions
    assert [rule.endpoint for rule in app.url_map.iter_rules()] == ["static"]


def test_an_invalid_secret_is_refused_without_being_echoed() -> None:
    app = flask.Flask(__name__)
    app.config["CARECYCLE_WEBHOOK_SECRET"] = "whsec_not-base64-at-all-4c2d"
    with pytest.raises(WebhookConfigurationError) as excinfo:
        CareCycleWebhooks().init_app(app)
    assert "not-base64-at-all-4c2d" not in str(excinfo.value)


def test_url_rule_and_body_size_come_from_the_config() -> None:
    webhooks, seen = recording()
    app = create_app(
        webhooks, CARECYCLE_WEBHOOK_URL_RULE="/hooks/carecycle", CARECYCLE_WEBHOOK_MAX_BODY_SIZE=64
    )
    with app.test_request_context():
        assert flask.url_for("carecycle_webhooks") == "/hooks/carecycle"
    body = fixture_bytes("customer.created")
    assert post(app, body, svix_headers(body)).status_code == 404
    response = post(app, body, svix_headers(body), url="/hooks/carecycle")
    assert (response.status_code, response.get_json()) == (413, {"error": "body_too_large", "limit": 64})
    assert seen == []
    assert app.config["CARECYCLE_WEBHOOK_MAX_BODY_SIZE"] == 64
    defaults = create_app(CareCycleWebhooks())
    assert defaults.config["CARECYCLE_WEBHOOK_URL_RULE"] == "/webhooks"
    assert defaults.config["CARECYCLE_WEBHOOK_MAX_BODY_SIZE"] == 10 * 1024 * 1024


def test_handlers_registered_after_init_app_run_too() -> None:
    webhooks = CareCycleWebhooks(endpoint="crm_webhooks")
    app = create_app(webhooks)
    calls: list[str] = []

    @webhooks.on(CallCompletedEvent)
    def completed(event: CallCompletedEvent) -> None:
        calls.append(event.event_type)

    @webhooks.catch_all
    def others(event: Event) -> None:
        calls.append(f"catch-all {event.event_type}")

    for event_type in ("call.completed", "customer.updated"):
        body = fixture_bytes(event_type)
        assert post(app, body, svix_headers(body)).get_json() == {"status": "processed"}
    assert calls == ["call.completed", "catch-all customer.updated"]
    with app.test_request_context():
        assert flask.url_for("crm_webhooks") == "/webhooks"
    assert "call.completed" in repr(webhooks)
    assert "call.completed" in repr(webhooks.dispatcher_for(app))


def test_a_failing_handler_is_answered_500() -> None:
    webhooks = CareCycleWebhooks()

    @webhooks.on("customer.created")
    def fails(event: CustomerCreatedEvent) -> None:
        raise RuntimeError(event.first_name)

    body = fixture_bytes("customer.created")
    response = post(create_app(webhooks), body, svix_headers(body))
    assert (response.status_code, response.get_json()) == (500, {"error": "handler_failed"})


def test_the_current_apps_dispatcher() -> None:
    webhooks = CareCycleWebhooks()
    app = create_app(webhooks)
    with app.app_context():
        assert webhooks.dispatcher is webhooks.dispatcher_for(app)
        assert webhooks.dispatcher.max_body_size == 10 * 1024 * 1024
    with pytest.raises(WebhookConfigurationError, match=r"init_app"):
        webhooks.dispatcher_for(flask.Flask(__name__))


def test_binding_one_application_twice_is_refused() -> None:
    webhooks = CareCycleWebhooks()
    app = create_app(webhooks)
    with pytest.raises(WebhookConfigurationError, match="already bound"):
        webhooks.init_app(app)
    with pytest.raises(WebhookConfigurationError, match="already bound"):
        CareCycleWebhooks().init_app(app)


def test_an_unknown_event_type_is_refused_at_registration() -> None:
    webhooks = CareCycleWebhooks()
    with pytest.raises(WebhookConfigurationError):
        webhooks.on(42)  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType, reportCallIssue]
