"""Settings of the example project: what a careCycle receiver needs.

The endpoint's secret is not here: CARECYCLE_WEBHOOK_SECRET is read from
the environment (see webhooks.py). Never write a whsec_... secret in a file.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    # The done marks' table, and the system check of CARECYCLE_WEBHOOKS.
    "carecycle_webhooks.django",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # APPEND_SLASH: see the guide's warning on the trailing slash.
    "django.middleware.common.CommonMiddleware",
    # The webhook view is CSRF-exempt: Svix signs, it has no token.
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "myproject.urls"
WSGI_APPLICATION = "myproject.wsgi.application"
ASGI_APPLICATION = "myproject.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

CARECYCLE_WEBHOOKS = {
    "DISPATCHER": "myproject.webhooks.webhooks",
    # True under an ASGI server (uvicorn, daphne): the async view.
    "ASYNC": os.environ.get("WEBHOOKS_ASYNC") == "1",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "{levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        # The library: failed handlers, refused copies, store outages.
        "carecycle_webhooks": {"handlers": ["console"], "level": "INFO"},
        # Your code, handlers included: getLogger(__name__) in webhooks.py.
        "myproject": {"handlers": ["console"], "level": "INFO"},
    },
}
