"""A complete Flask receiver.

Run it (from the repository root)::

    CARECYCLE_WEBHOOK_SECRET=whsec_... gunicorn --chdir examples flask_app:app -b 127.0.0.1:8000 -w 4

Every worker records the processed webhook-ids in one SQLite file (``WEBHOOK_DB``, see
``_shared.py``), so a retry is handled once whichever worker it reaches, and after a
restart. Set ``REDIS_URL`` when several machines serve the endpoint.

and point careCycle's webhook endpoint at ``https://<your host>/webhooks``.
"""

from __future__ import annotations

from _shared import make_dispatcher
from flask import Flask

from carecycle_webhooks.flask import webhook_view

app = Flask(__name__)
webhooks = make_dispatcher()
app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
