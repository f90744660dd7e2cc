"""``carecycle-webhooks schema``: print the JSON Schema of one event, or of all of them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import cast

from ._common import EXIT_OK, PROG, Command, UsageError

_EPILOG = f"""\
examples:
  {PROG} schema                      # every event: a oneOf discriminated on event_type
  {PROG} schema customer.created --indent 4
  {PROG} schema call.completed --indent 0 > call.completed.schema.json

Property names are the wire names (camelCase). Fields holding protected health information
carry "x-phi": true. Enums list the documented values and accept any other string, as the
models do. Exit codes: 0 printed, 2 unknown event type.
"""


def _indent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of spaces, got {text!r}") from None
    if not 0 <= value <= 16:
        raise argparse.ArgumentTypeError("expected 0 (one line) to 16 spaces")
    return value


def _add_arguments(schema: argparse.ArgumentParser) -> None:
    schema.add_argument("event_type", metavar="EVENT_TYPE", nargs="?", help="one event type (default: all)")
    schema.add_argument(
        "--indent",
        type=_indent,
        default=2,
        metavar="N",
        help="spaces per level; 0 prints one line (default: 2)",
    )


def _plain(text: str) -> str:
    import re

    # The models' docstrings are reStructuredText and Markdown: ``x``, `x`, :class:`~a.B`.
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?([^`.]+)`", r"\1", text)
    return re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", text)


def _plain_text(node: object) -> object:
    """The schema with plain-text titles and descriptions, for tools that show them as they are."""
    if isinstance(node, list):
        return [_plain_text(item) for item in cast("list[object]", node)]
    if not isinstance(node, dict):
        return node
    plain: dict[str, object] = {}
    for key, value in cast("dict[str, object]", node).items():
        texts = key in {"title", "description"} and isinstance(value, str)
        plain[key] = _plain(cast("str", value)) if texts else _plain_text(value)
    return plain


def _run(args: argparse.Namespace) -> int:
    from carecycle_webhooks._errors import WebhookConfigurationError
    from carecycle_webhooks.schema import json_schema

    event_type: str | None = args.event_type
    try:
        schema = json_schema(event_type)
    except WebhookConfigurationError as error:
        raise UsageError(str(error)) from None  # it names the closest event types
    plain = _plain_text(schema)
    indent: int = args.indent
    if indent:
        text = json.dumps(plain, indent=indent, ensure_ascii=False)
    else:
        text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
    sys.stdout.write(text + "\n")
    return EXIT_OK


COMMAND = Command(
    name="schema",
    summary="print the events' JSON Schema",
    description="Print the JSON Schema (draft 2020-12) of one event, or of all of them, with the wire names.",
    epilog=_EPILOG,
    run=_run,
    add_arguments=_add_arguments,
)
