"""A worker process of the project, SIGKILLed by the test in the middle of its handler.

Run as ``python -m tests.django_project.worker`` with ``DJANGO_SETTINGS_MODULE``,
``CARECYCLE_DJANGO_DSN`` and ``CARECYCLE_DJANGO_DATABASE`` (the test database) set, and a
signed delivery as JSON on stdin. It posts the delivery to ``/webhooks/`` through Django's
test client; the ``-kill`` handler writes its `Effect` row, prints ``inside`` and waits.
"""

from __future__ import annotations

import json
import sys

import django


def main() -> None:
    """Deliver the delivery on stdin; the handler hangs until the test kills this process."""
    django.setup()
    from django.test import Client

    from tests.django_project import urls

    urls.FAULTS.hang = True
    delivery = json.load(sys.stdin)
    Client().post(
        "/webhooks/", data=delivery["body"], content_type="application/json", headers=delivery["headers"]
    )
    sys.stdout.write("the handler was not killed\n")  # the test sees it fail


if __name__ == "__main__":
    main()
