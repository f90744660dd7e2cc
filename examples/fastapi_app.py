"""A complete FastAPI receiver (Starlette works the same way).

Run it (from the repository root)::

    CARECYCLE_WEBHOOK_SECRET=whsec_... uvicorn --app-dir examples fastapi_app:app --port 8000 --workers 4

Every worker records the processed webhook-ids in one SQLite file (``WEBHOOK_DB``, see
``_shared.py``), so a retry is handled once whichever worker it reaches, and after a
restart. Set ``REDIS_URL`` when several machines serve the endpoint.
"""

from __future__ import annotations

from _shared import make_dispatcher
from fastapi import FastAPI

from carecycle_webhooks.fastapi import webhook_view

app = FastAPI()
webhooks = make_dispatcher(use_async_redis=True)
app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
