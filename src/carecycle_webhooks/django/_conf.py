"""The ``CARECYCLE_WEBHOOKS`` setting, and the system check that reports its mistakes.

One dict in ``settings.py``, as django-anymail's ``ANYMAIL`` and DRF's ``REST_FRAMEWORK``
are, read when it is used (never at import, so ``override_settings`` works in tests)::

    CARECYCLE_WEBHOOKS = {
        "DISPATCHER": "myproject.webhooks.webhooks",  # your Dispatcher, by dotted path
        "SECRET": env("CARECYCLE_WEBHOOK_SECRET"),  # optional: see secret_from_settings()
        "ASYNC": False,  # True: carecycle_webhooks.django.urls routes the async view
    }

Each mistake is a `Problem`: an ``ImproperlyConfigured`` that carries the id and hint of
its system check message, so ``carecycle_webhooks.django.urls`` raises what
``manage.py check`` reports, in the same words. No message quotes a secret.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from carecycle_webhooks._config import SECRET_ENV
from carecycle_webhooks._dispatch import Dispatcher
from carecycle_webhooks._errors import WebhookConfigurationError
from carecycle_webhooks._idempotency import serves
from carecycle_webhooks._verify import WebhookVerifier

from ._store import DjangoIdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from django.apps import AppConfig

__all__ = ["SETTING", "Problem", "check_settings", "configured_view", "secret_from_settings"]

SETTING = "CARECYCLE_WEBHOOKS"
URLCONF = "carecycle_webhooks.django.urls"
_KEYS = ("DISPATCHER", "SECRET", "ASYNC")


class Problem(ImproperlyConfigured):
    """A mistake in the setting, with the id and hint of its system check message."""

    def __init__(self, check_id: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{message} ({check_id})" + (f" HINT: {hint}" if hint else ""))
        self.check_id = check_id
        self.message = message
        self.hint = hint
        # Which view the URLconf would have routed, as far as the setting says.
        self.asynchronous = _asynchronous_if_known()

    def error(self) -> checks.Error:
        return checks.Error(self.message, hint=self.hint, id=self.check_id)


def _asynchronous_if_known() -> bool:
    try:
        value: object = getattr(settings, SETTING, None)
    except ImproperlyConfigured:  # Django's settings are not configured
        return False
    return isinstance(value, dict) and cast("dict[str, object]", value).get("ASYNC") is True


def _setting() -> Mapping[str, object] | None:
    """``CARECYCLE_WEBHOOKS``, checked: ``None`` when the project does not set it."""
    value: object = getattr(settings, SETTING, None)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Problem(
            "carecycle_webhooks.E001",
            f"{SETTING} must be a dict, not {type(value).__name__}",
            hint='CARECYCLE_WEBHOOKS = {"DISPATCHER": "myproject.webhooks.webhooks"}',
        )
    config = cast("dict[object, object]", value)
    for key in config:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            raise Problem(
                "carecycle_webhooks.E001",
                f"{SETTING} has an unknown key {key!r}",
                hint=f"Did you mean {close[0]!r}?" if close else f"Its keys are {', '.join(_KEYS)}.",
            )
    asynchronous = config.get("ASYNC", False)
    if not isinstance(asynchronous, bool):
        raise Problem("carecycle_webhooks.E001", f"{SETTING}['ASYNC'] must be True or False")
    return {str(key): item for key, item in config.items()}


def secret_from_settings() -> list[str]:
    """The endpoint's secrets, from ``CARECYCLE_WEBHOOKS["SECRET"]`` or the environment.

    For a dispatcher whose secret lives in Django's settings::

        # webhooks.py
        from carecycle_webhooks import Dispatcher
        from carecycle_webhooks.django import secret_from_settings

        webhooks = Dispatcher(secret_from_settings())

    ``SECRET`` is one ``whsec_...`` secret, several separated by spaces (while a secret
    is being rotated), or a list of them. Without the key, or outside a configured Django
    project, the ``CARECYCLE_WEBHOOK_SECRET`` environment variable is read the same way.

    Returns:
        The secrets, each checked.

    Raises:
        WebhookConfigurationError: Neither is set, a secret is empty or not a
            ``whsec_...`` secret, or ``CARECYCLE_WEBHOOKS`` is not a valid setting. The
            message names where the secret was read, never its value.
    """
    try:
        config = _setting() or {}
    except Problem as problem:
        raise WebhookConfigurationError(problem.message) from None
    except ImproperlyConfigured:
        config = {}  # Django's settings are not configured (a script): the environment only
    if "SECRET" in config:
        where, value = f"{SETTING}['SECRET']", config["SECRET"]
    else:
        where, value = (
            f"the {SECRET_ENV} environment variable",
            os.environ.get(SECRET_ENV),
        )
        if value is None:
            raise WebhookConfigurationError(
                f"no webhook secret: set {SETTING}['SECRET'] in your settings, or the "
                f"{SECRET_ENV} environment variable (the endpoint's 'whsec_...' secret)"
            )
    secrets: object = value.split() if isinstance(value, str) else value
    items = cast("Sequence[object]", secrets) if isinstance(secrets, (list, tuple)) else None
    if items is None or not all(isinstance(one, str) for one in items):
        raise WebhookConfigurationError(f"{where} must be a 'whsec_...' str or a list of them")
    checked = [str(one) for one in items]
    try:
        WebhookVerifier(checked)
    except WebhookConfigurationError as error:
        raise WebhookConfigurationError(f"{where}: {error}") from None
    return checked


def _dispatcher(config: Mapping[str, object]) -> Dispatcher:
    """The dispatcher that ``DISPATCHER`` names, imported (which builds it)."""
    path = config.get("DISPATCHER")
    if path is None:
        raise Problem(
            "carecycle_webhooks.E003",
            f"{SETTING}['DISPATCHER'] is not set",
            hint="The dotted path of your Dispatcher, e.g. 'myproject.webhooks.webhooks'.",
        )
    if not isinstance(path, str):
        raise Problem("carecycle_webhooks.E003", f"{SETTING}['DISPATCHER'] must be a dotted path (a str)")
    try:
        found: object = import_string(path)
    except WebhookConfigurationError as error:
        # Building the dispatcher failed: most often its secret. Say which, if it is.
        try:
            secret_from_settings()
        except WebhookConfigurationError as missing:
            raise Problem("carecycle_webhooks.E002", str(missing)) from error
        raise Problem("carecycle_webhooks.E003", f"importing {path!r} failed: {error}") from error
    except ImportError as error:
        raise Problem(
            "carecycle_webhooks.E003", f"{SETTING}['DISPATCHER'] {path!r} cannot be imported: {error}"
        ) from error
    except Exception as error:  # the user's module: what it raised, by type (its message is not ours)
        raise Problem(
            "carecycle_webhooks.E003", f"importing {path!r} raised {type(error).__qualname__}"
        ) from error
    if not isinstance(found, Dispatcher):
        raise Problem(
            "carecycle_webhooks.E004",
            f"{SETTING}['DISPATCHER'] {path!r} is a {type(found).__name__}, "
            "not a carecycle_webhooks.Dispatcher",
        )
    return found


def _check_store(dispatcher: Dispatcher, *, asynchronous: bool) -> None:
    store = dispatcher.idempotency_store
    if store is not None and not serves(store, synchronous=not asynchronous):
        hint = (
            "Set CARECYCLE_WEBHOOKS['ASYNC'] = True (and serve Django under ASGI), or give the store a "
            "synchronous client."
            if not asynchronous
            else "Set CARECYCLE_WEBHOOKS['ASYNC'] = False, or give the store an asyncio client."
        )
        kind = "async" if asynchronous else "synchronous"
        raise Problem(
            "carecycle_webhooks.E005",
            f"the dispatcher's idempotency store ({type(store).__name__}) cannot serve the {kind} view",
            hint=hint,
        )
    if isinstance(store, DjangoIdempotencyStore) and store.using not in settings.DATABASES:
        raise Problem(
            "carecycle_webhooks.E006",
            f"the dispatcher's DjangoIdempotencyStore uses database {store.using!r}, "
            "which is not in DATABASES",
        )


def configured_view() -> tuple[Dispatcher, bool]:
    """The dispatcher named by the setting, checked, and whether the async view serves it.

    Raises:
        ImproperlyConfigured: The setting is missing or wrong: the message is the system
            check's, with its id.
    """
    config = _setting()
    if config is None:
        raise Problem(
            "carecycle_webhooks.E003",
            f"carecycle_webhooks.django.urls needs the {SETTING} setting",
            hint='CARECYCLE_WEBHOOKS = {"DISPATCHER": "myproject.webhooks.webhooks"}',
        )
    dispatcher = _dispatcher(config)
    asynchronous = config.get("ASYNC", False) is True
    _check_store(dispatcher, asynchronous=asynchronous)
    return dispatcher, asynchronous


def check_settings(app_configs: Sequence[AppConfig] | None = None, **_: object) -> list[checks.CheckMessage]:
    """The system check of ``CARECYCLE_WEBHOOKS`` (``manage.py check``, and at server start).

    Nothing is checked when the setting is absent (the app may be installed only for
    `DjangoIdempotencyStore`), unless the project's URLconf includes
    ``carecycle_webhooks.django.urls`` (Django's URL checks, which run first, load it).
    Otherwise the dispatcher is imported, as the URLconf would, and its secret, type and
    store are checked.

    Args:
        app_configs: The apps being checked; ``None`` for all of them (Django's API).

    Returns:
        At most one error, with an id ``carecycle_webhooks.E001`` to ``E006``.
    """
    del app_configs  # the setting is project-wide
    try:
        config = _setting()
        if config is None:
            if URLCONF in sys.modules:  # included, but not configured
                configured_view()
            return []
        if "SECRET" in config:
            try:
                secret_from_settings()
            except WebhookConfigurationError as error:
                raise Problem("carecycle_webhooks.E002", str(error)) from None
        configured_view()
    except Problem as problem:
        return [problem.error()]
    return []
