"""Flask app for ``bench_http.py``: ``/bare`` (svix + json.loads), ``/ours`` (webhook_view), ``/health``.

Served by gunicorn with one sync worker: ``gunicorn --chdir benchmarks/http_apps flask_bench:app``.
"""

from __future__ import annotations

import json

from _bench_common import BARE_RESPONSE, svix_webhook, sync_dispatcher
from flask import Flask, Response, request
from svix.webhooks import WebhookVerificationError

from carecycle_webhooks.flask import webhook_view

app = Flask(__name__)
app.add_url_rule("/ours", view_func=webhook_view(sync_dispatcher()), methods=["POST"])


@app.post("/bare")
def bare() -> Response:
    body = request.get_data()
    try:
        svix_webhook.verify(body, request.headers)  # type: ignore[arg-type]  # Werkzeug Headers
    except WebhookVerificationError:
        return Response(b'{"error":"invalid_signature"}', status=400, content_type="application/json")
    json.loads(body)
    return Response(BARE_RESPONSE, status=200, content_type="application/json")


# The A/A control: the same endpoint at a second path shows the measurement's own spread.
app.add_url_rule("/bare-again", view_func=bare, endpoint="bare_again", methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
