"""Settings of the test project: one PostgreSQL database, from ``CARECYCLE_DJANGO_DSN``.

``CARECYCLE_DJANGO_DSN`` is a libpq key/value connection string
(``host=127.0.0.1 port=5432 user=postgres dbname=postgres``). Django's test runner creates
its own database, ``TEST_DATABASE``, on that server. A worker process started by a test
(tests/django_project/worker.py) connects straight to that test database: it names it in
``CARECYCLE_DJANGO_DATABASE``.
"""

from __future__ import annotations

import os

TEST_DATABASE = "test_carecycle_django_runner"


def _libpq(dsn: str) -> dict[str, str]:
    """``key=value key=value`` into a dict (the test's DSNs hold no quoted values)."""
    return dict(part.split("=", 1) for part in dsn.split())


_DSN = _libpq(os.environ["CARECYCLE_DJANGO_DSN"])

SECRET_KEY = "django-runner-tests-not-secret"  # a test-only key
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
INSTALLED_APPS = ["carecycle_webhooks.django", "tests.django_project.effects"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CARECYCLE_DJANGO_DATABASE", _DSN.get("dbname", "postgres")),
        "USER": _DSN.get("user", "postgres"),
        "HOST": _DSN["host"],
        "PORT": _DSN["port"],
        "OPTIONS": {"connect_timeout": 5},
        "TEST": {"NAME": TEST_DATABASE},
    }
}
