"""``CARECYCLE_WEBHOOKS``: the include()-able URLconf, `secret_from_settings` and the system check."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure()

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings
from django.urls import clear_url_caches, resolve, reverse

import carecycle_webhooks
from carecycle_webhooks import WebhookConfigurationError
from carecycle_webhooks.django import secret_from_settings
from carecycle_webhooks.django._conf import check_settings
from tests.adapters import django_dispatchers
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Iterator

URLCONF = "tests.adapters.django_include_urls"
DISPATCHERS = "tests.adapters.django_dispatchers"
SECRET_DISPATCHER = "tests.adapters.django_secret_dispatcher"
FRESH = ("carecycle_webhooks.django.urls", URLCONF, SECRET_DISPATCHER)


@pytest.fixture(autouse=True)
def fresh_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test imports the URLconfs and the settings-built dispatcher afresh, as a new process would."""
    monkeypatch.delenv("CARECYCLE_WEBHOOK_SECRET", raising=False)
    for name in FRESH:
        monkeypatch.delitem(sys.modules, name, raising=False)
    clear_url_caches()
    yield
    for name in FRESH:
        sys.modules.pop(name, None)
    clear_url_caches()
    django_dispatchers.recorder.events.clear()


def errors() -> list[tuple[str | None, str]]:
    return [(message.id, message.msg) for message in check_settings()]


# ------------------------------------------------------------------ the URLconf


@override_settings(ROOT_URLCONF=URLCONF, CARECYCLE_WEBHOOKS={"DISPATCHER": f"{DISPATCHERS}.webhooks"})
def test_included_urls_route_the_dispatcher_named_by_the_setting() -> None:
    assert reverse("carecycle_webhooks:webhook") == "/webhooks/"
    body = fixture_bytes("customer.created")
    response = Client(enforce_csrf_checks=True).post(
        "/webhooks/", body, content_type="application/json", headers=svix_headers(body)
    )
    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert len(django_dispatchers.recorder.events) == 1
    assert not asyncio.iscoroutinefunction(resolve("/webhooks/").func)
    assert Client().get("/webhooks/").status_code == 405


@override_settings(
    ROOT_URLCONF=URLCONF, CARECYCLE_WEBHOOKS={"DISPATCHER": f"{DISPATCHERS}.webhooks", "ASYNC": True}
)
def test_included_urls_route_the_async_view_when_asked() -> None:
    assert asyncio.iscoroutinefunction(resolve("/webhooks/").func)
    body = fixture_bytes("customer.created")
    response = Client().post("/webhooks/", body, content_type="application/json", headers=svix_headers(body))
    assert (response.status_code, response.json()) == (200, {"status": "processed"})


@pytest.mark.parametrize(
    ("setting", "check_id", "words", "asynchronous"),
    [
        (None, "carecycle_webhooks.E003", "needs the CARECYCLE_WEBHOOKS setting", False),
        ({}, "carecycle_webhooks.E003", "['DISPATCHER'] is not set", False),
        (
            {"DISPATCHER": f"{DISPATCHERS}.not_a_dispatcher"},
            "carecycle_webhooks.E004",
            "not a carecycle",
            False,
        ),
        (
            {"DISPATCHER": f"{DISPATCHERS}.nothing", "ASYNC": True},
            "carecycle_webhooks.E003",
            "cannot be",
            True,
        ),
    ],
)
def test_included_urls_with_a_wrong_setting_raise_what_the_check_reports_on_each_request(
    setting: dict[str, Any] | None, check_id: str, words: str, asynchronous: bool
) -> None:
    with override_settings(ROOT_URLCONF=URLCONF, CARECYCLE_WEBHOOKS=setting):
        # The URLconf loads (the project's other URLs keep working) and the check reports it.
        match = resolve("/webhooks/")
        assert asyncio.iscoroutinefunction(match.func) is asynchronous
        [error] = check_settings()
        assert (error.id, words in error.msg) == (check_id, True)
        body = fixture_bytes("customer.created")
        with pytest.raises(ImproperlyConfigured) as raised:
            Client(enforce_csrf_checks=True).post(
                "/webhooks/", body, content_type="application/json", headers=svix_headers(body)
            )
        assert check_id in str(raised.value)
        assert words in str(raised.value)


# ------------------------------------------------------------------ secret_from_settings


@override_settings(CARECYCLE_WEBHOOKS={"SECRET": f" {SECRET}  {OTHER_SECRET}\n"})
def test_secret_from_settings_reads_several_secrets_separated_by_spaces() -> None:
    assert secret_from_settings() == [SECRET, OTHER_SECRET]


@override_settings(CARECYCLE_WEBHOOKS={"SECRET": [SECRET]})
def test_secret_from_settings_takes_a_list() -> None:
    assert secret_from_settings() == [SECRET]


def test_secret_from_settings_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECYCLE_WEBHOOK_SECRET", f"{SECRET} {OTHER_SECRET}")
    with override_settings(CARECYCLE_WEBHOOKS={"DISPATCHER": "x.y"}):
        assert secret_from_settings() == [SECRET, OTHER_SECRET]
    with override_settings(CARECYCLE_WEBHOOKS=None):
        assert secret_from_settings() == [SECRET, OTHER_SECRET]


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        (None, "no webhook secret: set CARECYCLE_WEBHOOKS['SECRET'] in your settings, or the "),
        ({"SECRET": ""}, "CARECYCLE_WEBHOOKS['SECRET']: at least one webhook secret is needed"),
        ({"SECRET": "whsec_not base64!"}, "CARECYCLE_WEBHOOKS['SECRET']: the webhook secret is not valid"),
        ({"SECRET": 42}, "CARECYCLE_WEBHOOKS['SECRET'] must be a 'whsec_...' str or a list of them"),
    ],
)
def test_secret_from_settings_names_the_setting_and_never_the_value(
    setting: dict[str, Any] | None, words: str
) -> None:
    with override_settings(CARECYCLE_WEBHOOKS=setting), pytest.raises(WebhookConfigurationError) as raised:
        secret_from_settings()
    assert words in str(raised.value)
    assert "base64!" not in str(raised.value)


def test_a_bad_secret_in_the_environment_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECYCLE_WEBHOOK_SECRET", "whsec_!!!")
    with pytest.raises(
        WebhookConfigurationError, match=r"^the CARECYCLE_WEBHOOK_SECRET environment variable: "
    ):
        secret_from_settings()


# ------------------------------------------------------------------ the system check


def test_no_setting_no_error() -> None:
    # The app may be installed only for DjangoIdempotencyStore.
    with override_settings(CARECYCLE_WEBHOOKS=None):
        assert errors() == []


@override_settings(CARECYCLE_WEBHOOKS={"DISPATCHER": f"{DISPATCHERS}.webhooks", "SECRET": SECRET})
def test_a_good_setting_passes() -> None:
    assert errors() == []


D = f"{DISPATCHERS}."  # the dotted paths of tests/adapters/django_dispatchers.py
GOOD = {"DISPATCHER": f"{D}webhooks"}
WRONG = "CARECYCLE_WEBHOOKS['DISPATCHER']"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("not a dict", ("E001", "CARECYCLE_WEBHOOKS must be a dict, not str")),
        ({"DISPATCHR": "x"}, ("E001", "CARECYCLE_WEBHOOKS has an unknown key 'DISPATCHR'")),
        ({**GOOD, "ASYNC": "yes"}, ("E001", "CARECYCLE_WEBHOOKS['ASYNC'] must be True or False")),
        (
            {**GOOD, "SECRET": ""},
            ("E002", "CARECYCLE_WEBHOOKS['SECRET']: at least one webhook secret is needed"),
        ),
        (
            {**GOOD, "SECRET": "whsec_%%%"},
            (
                "E002",
                (
                    "CARECYCLE_WEBHOOKS['SECRET']: the webhook secret is not valid: expected 'whsec_' "
                    "followed by base64, as shown on the endpoint's page in the careCycle/Svix dashboard"
                ),
            ),
        ),
        ({"SECRET": SECRET}, ("E003", f"{WRONG} is not set")),
        ({"DISPATCHER": 3}, ("E003", f"{WRONG} must be a dotted path (a str)")),
        (
            {"DISPATCHER": f"{D}nothing"},
            (
                "E003",
                (
                    f"{WRONG} '{D}nothing' cannot be imported: "
                    f'Module "{DISPATCHERS}" does not define a "nothing" attribute/class'
                ),
            ),
        ),
        (
            {"DISPATCHER": f"{D}not_a_dispatcher"},
            ("E004", f"{WRONG} '{D}not_a_dispatcher' is a object, not a carecycle_webhooks.Dispatcher"),
        ),
        (
            {"DISPATCHER": f"{D}asyncio_store"},
            (
                "E005",
                (
                    "the dispatcher's idempotency store (RedisIdempotencyStore) "
                    "cannot serve the synchronous view"
                ),
            ),
        ),
        ({**GOOD, "ASYNC": True}, None),
        ({"DISPATCHER": f"{D}asyncio_store", "ASYNC": True}, None),
        (
            {"DISPATCHER": f"{D}unknown_database"},
            (
                "E006",
                (
                    "the dispatcher's DjangoIdempotencyStore uses database 'elsewhere', "
                    "which is not in DATABASES"
                ),
            ),
        ),
    ],
)
def test_the_check_reports_each_mistake(setting: object, expected: tuple[str, str] | None) -> None:
    with override_settings(CARECYCLE_WEBHOOKS=setting):
        assert errors() == ([(f"carecycle_webhooks.{expected[0]}", expected[1])] if expected else [])


def test_the_check_reports_a_missing_secret_of_a_dispatcher_built_from_settings() -> None:
    with override_settings(CARECYCLE_WEBHOOKS={"DISPATCHER": f"{SECRET_DISPATCHER}.webhooks"}):
        [error] = check_settings()
    assert error.id == "carecycle_webhooks.E002"
    assert error.msg.startswith(
        "no webhook secret: set CARECYCLE_WEBHOOKS['SECRET'] in your settings, or the "
    )


def test_the_check_reports_what_the_dispatchers_module_raised_by_type_only() -> None:
    broken = "tests.adapters.django_broken_dispatcher"
    with override_settings(CARECYCLE_WEBHOOKS={"DISPATCHER": f"{broken}.webhooks"}):
        [error] = check_settings()
    assert (error.id, error.msg) == (
        "carecycle_webhooks.E003",
        f"importing '{broken}.webhooks' raised RuntimeError",
    )


def test_the_check_reports_a_secret_setting_of_the_wrong_type() -> None:
    with override_settings(
        CARECYCLE_WEBHOOKS={"DISPATCHER": f"{SECRET_DISPATCHER}.webhooks", "SECRET": [SECRET]}
    ):
        assert errors() == []
    sys.modules.pop(SECRET_DISPATCHER)
    with override_settings(
        CARECYCLE_WEBHOOKS={"DISPATCHER": f"{SECRET_DISPATCHER}.webhooks", "SECRET": None}
    ):
        # SECRET None: secret_from_settings refuses it, so the check says the secret is wrong.
        [error] = check_settings()
    assert (error.id, error.msg) == (
        "carecycle_webhooks.E002",
        "CARECYCLE_WEBHOOKS['SECRET'] must be a 'whsec_...' str or a list of them",
    )


def test_the_check_is_registered_by_the_app_and_fails_manage_py_check() -> None:
    assert check_settings in checks.registry.registry.get_checks()
    with (
        override_settings(CARECYCLE_WEBHOOKS={"DISPATCHER": f"{DISPATCHERS}.nothing"}),
        pytest.raises(SystemCheckError, match=r"carecycle_webhooks\.E003"),
    ):
        call_command("check", tags=["carecycle_webhooks"])
    with override_settings(CARECYCLE_WEBHOOKS={"DISPATCHER": f"{DISPATCHERS}.webhooks"}):
        output = io.StringIO()
        call_command("check", tags=["carecycle_webhooks"], stdout=output)
    assert "System check identified no issues" in output.getvalue()


@override_settings(
    ROOT_URLCONF=URLCONF,
    CARECYCLE_WEBHOOKS={"DISPATCHER": f"{DISPATCHERS}.webhooks"},
    MIDDLEWARE=["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"],
)
def test_without_the_trailing_slash_django_redirects_and_nothing_runs() -> None:
    # The guide's warning: APPEND_SLASH answers 301, which Svix does not follow.
    body = fixture_bytes("customer.created")
    response = Client().post("/webhooks", body, content_type="application/json", headers=svix_headers(body))
    assert (response.status_code, response["Location"]) == (301, "/webhooks/")
    assert django_dispatchers.recorder.events == []
    with override_settings(DEBUG=True), pytest.raises(RuntimeError, match="APPEND_SLASH"):
        Client().post("/webhooks", body, content_type="application/json", headers=svix_headers(body))


def test_secret_from_settings_outside_a_configured_django_reads_the_environment() -> None:
    # A script that builds the dispatcher without Django's settings (no DJANGO_SETTINGS_MODULE).
    code = "from carecycle_webhooks.django import secret_from_settings; print(secret_from_settings())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["CARECYCLE_WEBHOOK_SECRET"] = f"{SECRET} {OTHER_SECRET}"
    env["PYTHONPATH"] = str(Path(carecycle_webhooks.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"{[SECRET, OTHER_SECRET]}\n"), result.stderr
