"""Django's settings for the adapter and store tests: configured once per process.

Django's settings can be configured only once, so every Django test module calls
`configure` before importing anything that reads them. The ``default`` database is a
SQLite file in a temporary directory; the PostgreSQL store tests add a ``postgres`` alias
to a real server once it is started (`add_database`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import django
from django.conf import settings

SQLITE_TIMEOUT = 5.0  # Django's default busy timeout, said once for the tests that rely on it


def configured() -> bool:
    """Whether Django's settings are configured (by `configure`, or another test module)."""
    return settings.configured


def configure(databases: dict[str, Any] | None = None) -> None:
    """Configure Django for the tests, unless it is already.

    Args:
        databases: ``DATABASES``; by default a SQLite file in a temporary directory.
    """
    if settings.configured:
        return
    if databases is None:
        directory = Path(tempfile.mkdtemp(prefix="carecycle-django-tests-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        databases = {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(directory / "webhooks.sqlite3"),
                "OPTIONS": {"timeout": SQLITE_TIMEOUT},
            }
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-adapter-tests-not-secret",  # noqa: S106 - a test-only key
        ROOT_URLCONF="tests.adapters.django_urls",
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        USE_TZ=True,
        INSTALLED_APPS=["carecycle_webhooks.django", "tests.adapters.django_effects"],
        DATABASES=databases,
        # DATA_UPLOAD_MAX_MEMORY_SIZE stays Django's default, 2.5 MB: the view must not be bound by it.
    )
    django.setup()


def add_database(alias: str, options: dict[str, Any]) -> None:
    """Add a database alias after Django was set up (its connections read the same dict)."""
    from django.db import connections

    databases: dict[str, Any] = settings.DATABASES
    databases[alias] = options
    connections.configure_settings(databases)  # the defaults of every alias (idempotent)
