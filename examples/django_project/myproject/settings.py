"""Settings of the example project: what a careCycle receiver needs, and nothing else.

The endpoint's secret is not here: ``CARECYCLE_WEBHOOK_SECRET`` is read from the
environment (see ``webhooks.py``). Never write a ``whsec_...`` secret in a settings file.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1 localhost").split()

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "carecycle_webhooks.django",  # the done marks' table, and the system check of CARECYCLE_WEBHOOKS
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",  # APPEND_SLASH: see the guide's warning
    "django.middleware.csrf.CsrfViewMiddleware",  # the webhook view is CSRF-exempt
]
ROOT_URLCONF = "myproject.urls"
WSGI_APPLICATION = "myproject.wsgi.application"
ASGI_APPLICATION = "myproject.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

CARECYCLE_WEBHOOKS = {
    "DISPATCHER": "myproject.webhooks.webhooks",
    # True when served by an ASGI server (uvicorn, daphne): the async view, on the event loop.
    "ASYNC": os.environ.get("WEBHOOKS_ASYNC") == "1",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "{levelname} {name}: {message}", "style": "{"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        # The library: a line per failed handler, refused copy, store outage (never a payload value).
        "carecycle_webhooks": {"handlers": ["console"], "level": "INFO"},
        # Your own code, handlers included: getLogger(__name__) in myproject/webhooks.py.
        "myproject": {"handlers": ["console"], "level": "INFO"},
    },
}
