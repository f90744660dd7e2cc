"""The status table of the docs and the answers of `carecycle_webhooks._responses` hold each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

from carecycle_webhooks import WebhookPayloadError, WebhookVerificationError, _responses
from carecycle_webhooks._responses import WebhookResponse

TABLE = Path(__file__).parent.parent / "docs" / "includes" / "status-table.md"
ROW = re.compile(r"^\| (?P<case>[^|]+) \| (?P<status>\d{3})[^|]* \| `(?P<body>\{[^`]*\})` \|$")
BODY_KEY = re.compile(r'"(?P<key>status|error)": "(?P<value>[^"]+)"')


def documented() -> set[tuple[int, str]]:
    """(status, what the JSON body says) of every row of the table: ``"<reason>"`` for any 400."""
    rows = set()
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            key = BODY_KEY.search(match["body"])
            assert key, line
            rows.add((int(match["status"]), key["value"]))
    return rows


def answered() -> set[tuple[int, str]]:
    """The same for every answer the module defines, its functions given a sample error."""
    answers = [value for value in vars(_responses).values() if isinstance(value, WebhookResponse)]
    answers += [
        _responses.body_too_large(10),
        _responses.rejected(WebhookVerificationError("no signature matches", reason="no_matching_signature")),
        _responses.invalid_payload(WebhookPayloadError("the body is not valid JSON")),
    ]
    rows = set()
    for answer in answers:
        body = json.loads(answer.body)
        said = body.get("status") or body["error"]
        rows.add((answer.status_code, "<reason>" if answer.status_code == 400 else said))
    return rows


def test_every_answer_is_in_the_docs_table_and_every_row_is_an_answer() -> None:
    assert answered() == documented()


def test_the_table_is_the_one_every_page_includes() -> None:
    assert len(documented()) >= 12  # processed ... busy: the parser read the table
