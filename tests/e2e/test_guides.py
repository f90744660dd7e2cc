"""The receivers of the quickstart and of the Flask and FastAPI guides, copied as a reader copies them.

Each page's ``# app.py`` block runs under its real server with several workers, as the page
suggests serving it. One delivery sent again and again, each time on a new connection (so
any worker may get it), then again after a restart on the same file: the handlers run once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, fixture_bytes
from tests.e2e.servers import server, signed_request
from tests.test_docs import ROOT, read_blocks

if TYPE_CHECKING:
    from pathlib import Path

SENDS = 8  # per run of the server
# The pages' apps have no /health route, which the server helper waits for: a module adds one.
FLASK_HEALTH = "from app import app\n\napp.add_url_rule('/health', view_func=lambda: 'ok')\n"
FASTAPI_HEALTH = "from app import app\n\napp.add_api_route('/health', lambda: 'ok')\n"


@dataclasses.dataclass(frozen=True)
class Page:
    """A page whose ``# app.py`` block is a receiver, and how the page says to serve it."""

    path: str
    kind: str  # gunicorn or uvicorn
    workers: int
    health: str
    database: str  # the SQLite file the receiver uses, in the test's directory


PAGES = [
    # The quickstart's file is relative: gunicorn --chdir puts it in the test's directory.
    Page("docs/quickstart.md", "gunicorn", 4, FLASK_HEALTH, "carecycle-webhooks.sqlite3"),
    Page("docs/guides/flask.md", "gunicorn", 4, FLASK_HEALTH, "webhooks.sqlite3"),  # WEBHOOK_DB
    Page("docs/guides/fastapi.md", "uvicorn", 2, FASTAPI_HEALTH, "webhooks.sqlite3"),
]


def app_code(page: Page) -> str:
    """The page's ``# app.py`` block."""
    blocks = [block for block in read_blocks(ROOT / page.path) if block.file_name == "app"]
    assert len(blocks) == 1, f"{page.path} has {len(blocks)} app.py blocks"
    return blocks[0].code


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.path)
def test_copied_receiver_runs_each_delivery_once(page: Page, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(app_code(page), encoding="utf-8")
    (tmp_path / "served.py").write_text(page.health, encoding="utf-8")
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET, "WEBHOOK_DB": str(tmp_path / "webhooks.sqlite3")}
    body = fixture_bytes("customer.created")
    answers: list[tuple[int, str]] = []
    for _ in range(2):  # the second run restarts the server on the same file
        running = server(
            page.kind, "served:app", tmp=tmp_path, env=env, workers=page.workers, app_dir=tmp_path
        )
        with running:
            for _ in range(SENDS):
                # A new connection each time: any of the server's workers may accept it.
                try:
                    response = httpx.post(
                        f"{running.url}/webhooks", timeout=10, **signed_request(body, SECRET, "msg_guide_1")
                    )
                except httpx.HTTPError as error:  # say what the server said
                    pytest.fail(f"{error!r}; the server's log:\n{running.log_text()}")
                answers.append((response.status_code, response.json().get("status", "")))
    assert answers == [(200, "processed")] + [(200, "duplicate")] * (2 * SENDS - 1)
    assert (tmp_path / page.database).is_file()
