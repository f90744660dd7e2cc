"""A complete FastAPI receiver (Starlette works the same way).

Run it (from the repository root)::

    CARECYCLE_WEBHOOK_SECRET=whsec_... uvicorn --app-dir examples fastapi_app:app --port 8000
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
