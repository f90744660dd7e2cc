"""``carecycle-webhooks send``: sign a sample event and POST it to an endpoint, like ``stripe trigger``.

The body is the catalog's example built by `make_event` (or a ``--file``), with ``--set``
overrides resolved against the event's model: attribute or wire names, nested with dots,
values read as JSON except where the field holds text. Signed by `sign` as careCycle's
Svix endpoint signs it; the answer is shown with a hint for the usual failures.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any, cast

from ._answer import print_answer
from ._common import (
    CATALOG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    PROG,
    SECRET_ENV,
    Command,
    UsageError,
    close_matches,
    did_you_mean,
    endpoint_secrets,
    plural,
    read_bytes,
    seconds,
    utc,
    warn,
)
from ._http import Unreachable, check_url, post

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Mapping, Sequence

    from pydantic import BaseModel

# Svix gives an endpoint 15 s to answer.
DEFAULT_TIMEOUT = 15.0

_EPILOG = f"""\
examples:
  {PROG} send customer.created --url http://localhost:8000/webhooks --secret whsec_...
  {PROG} send customer.updated --url http://localhost:8000/webhooks \\
      --set status=Active --set first_name=Ana --set assignedUser.npn=123
  {PROG} send call.completed --url http://localhost:8000/webhooks \\
      --set disposition='"No Answer"' --set durationMs=0 --set customer.do_not_call=true
  {PROG} send customer.created --url https://example.ngrok.app/webhooks --file payload.json
  {PROG} send customer.created --url http://localhost:8000/webhooks/acme --secret whsec_...
      (many tenants: the tenant is the URL's last segment; sign with that tenant's secret)
  {PROG} send appointment.booked --allow-unknown-type --url http://localhost:8000/webhooks \\
      --set startsAt=2026-07-01

--set FIELD=VALUE: FIELD is the attribute (first_name) or the wire name (firstName),
nested with dots (customer.first_name, assignedUser.npn). VALUE is read as JSON when it
parses (true, 42, null, "x", ["AZ"], {{"a": 1}}), else as a string; a field that holds text
(an id, a name, a date) keeps digits as text (--set assignedUser.npn=123).
--file: the JSON object is sent byte for byte (and re-serialised only when --set changes
it); its keys are wire names, and --set translates attribute names to them.

--allow-unknown-type: send an EVENT_TYPE that is not in the catalog, as careCycle would
send a type added after this version (a receiver parses it as an UnknownEvent). Without
it, such an EVENT_TYPE is taken for a misspelling: nothing is sent.

Exit codes: 0 the endpoint answered 2xx, 1 it answered something else, 2 usage error
(bad arguments, --set or --file, invalid secret, an event type outside the catalog),
3 the URL could not be reached.
"""


def _positive_seconds(text: str) -> float:
    return seconds(text, allow_zero=False)


def _add_arguments(send: argparse.ArgumentParser) -> None:
    send.add_argument(
        "event_type",
        metavar="EVENT_TYPE",
        help=f"one of {', '.join(CATALOG)} (any other with --allow-unknown-type)",
    )
    send.add_argument(
        "--allow-unknown-type",
        action="store_true",
        help="send an EVENT_TYPE outside the catalog, as a type careCycle added later",
    )
    send.add_argument(
        "--url",
        required=True,
        help="the endpoint, e.g. http://localhost:8000/webhooks (a tenant's: .../webhooks/acme)",
    )
    send.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="WHSEC",
        help=f"the endpoint's whsec_... secret (default: ${SECRET_ENV}); repeat it to sign with "
        "several, as Svix does during a rotation",
    )
    send.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field (repeatable; see below)",
    )
    send.add_argument("--file", metavar="PAYLOAD.json", help="send this JSON object instead of the example")
    send.add_argument("--webhook-id", metavar="ID", help="the delivery's id (default: a fresh msg_...)")
    send.add_argument(
        "--header-prefix",
        choices=("svix", "webhook"),
        default="svix",
        help="svix-* headers as Svix sends them (default), or webhook-* (Standard Webhooks)",
    )
    send.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up waiting for an answer after this long (default: {DEFAULT_TIMEOUT:g}, as Svix)",
    )


# --------------------------------------------------------------------------- --set and --file


@dataclasses.dataclass(frozen=True)
class _Assignment:
    field: str  # as typed: "customer.first_name"
    value: str


@dataclasses.dataclass(frozen=True)
class _Target:
    assignment: _Assignment
    attributes: tuple[str, ...]  # ("customer", "first_name"): for the event factories
    wire: tuple[str, ...]  # ("customer", "firstName"): for raw JSON
    text: bool  # the field only holds JSON strings (or null)


def _parse_assignment(text: str) -> _Assignment:
    field, equals, value = text.partition("=")
    if not equals or not field.strip():
        raise UsageError(f"--set expects FIELD=VALUE, got {text!r}")
    segments = field.strip().split(".")
    if not all(segments):
        raise UsageError(f"--set {field}: empty field name between dots")
    return _Assignment(field=field.strip(), value=value)


def _leaves(annotation: object) -> Iterator[object]:
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _leaves(typing.get_args(annotation)[0])
    elif origin is typing.Union or origin is types.UnionType:
        for argument in typing.get_args(annotation):
            yield from _leaves(argument)
    elif annotation is not type(None):
        yield annotation


def _nested_model(annotation: object) -> type[BaseModel] | None:
    from pydantic import BaseModel

    for leaf in _leaves(annotation):
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            return leaf
    return None


def _holds_text(annotation: object) -> bool:
    import uuid

    from pydantic import AwareDatetime

    leaves = list(_leaves(annotation))
    return bool(leaves) and all(
        leaf is AwareDatetime
        or (isinstance(leaf, type) and issubclass(leaf, (str, uuid.UUID, datetime.date)))
        for leaf in leaves
    )


def _field_suggestions(model: type[BaseModel], segment: str, names: Mapping[str, str]) -> str:
    attributes = dict.fromkeys(names[name] for name in close_matches(segment, sorted(names)))
    shown = [
        name if _wire_name(model, name) == name else f"{name} ({_wire_name(model, name)})"
        for name in attributes
    ]
    return f" (did you mean {' or '.join(shown)}?)" if shown else ""


def _wire_name(model: type[BaseModel], attribute: str) -> str:
    alias = model.model_fields[attribute].validation_alias
    return alias if isinstance(alias, str) else attribute


def _resolve(model: type[BaseModel] | None, assignment: _Assignment, event_type: str) -> _Target:
    segments = assignment.field.split(".")
    if segments[0] == "event_type":
        raise UsageError("--set event_type: the event type is the EVENT_TYPE argument")
    attributes: list[str] = []
    wire: list[str] = []
    text = False
    current = model
    for depth, segment in enumerate(segments):
        if current is None:  # an unknown event type, or inside a free-form value: names as given
            attributes.append(segment)
            wire.append(segment)
            text = False
            continue
        names = {name: name for name in current.model_fields}
        names.update({_wire_name(current, name): name for name in current.model_fields})
        names.pop("event_type", None)
        attribute = names.get(segment)
        if attribute is None:
            raise UsageError(
                f"--set {assignment.field}: {'.'.join(wire) or event_type} has no field {segment!r}"
                f"{_field_suggestions(current, segment, names)}; to send fields this version does "
                "not know, put them in a --file payload"
            )
        annotation = current.model_fields[attribute].annotation
        attributes.append(attribute)
        wire.append(_wire_name(current, attribute))
        text = _holds_text(annotation)
        current = _nested_model(annotation)
        if current is None and depth < len(segments) - 1:
            raise UsageError(f"--set {assignment.field}: {'.'.join(wire)} is not an object")
    return _Target(assignment=assignment, attributes=tuple(attributes), wire=tuple(wire), text=text)


def _value(target: _Target) -> object:
    raw = target.assignment.value
    try:
        value: object = json.loads(raw)
    except ValueError:
        return raw
    if target.text and isinstance(value, (bool, int, float)):
        return raw  # --set assignedUser.npn=123 means the text "123"
    return value


def _put(tree: dict[str, Any], path: Sequence[str], value: object) -> None:
    node = tree
    for key in path[:-1]:
        child: object = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = cast("dict[str, Any]", child)
    node[path[-1]] = value


def _validation_message(error: Exception, targets: Sequence[_Target]) -> str:
    from pydantic import ValidationError

    assert isinstance(error, ValidationError)  # noqa: S101 - only pydantic's errors come here
    by_path = {target.attributes: target.assignment.field for target in targets}
    problems: list[str] = []
    for detail in error.errors(include_url=False, include_input=False, include_context=False):
        location = tuple(str(part) for part in detail["loc"])
        field = by_path.get(location) or ".".join(location)
        problems.append(
            f"--set {field}: {detail['msg']}" if location in by_path else f"{field}: {detail['msg']}"
        )
    return "; ".join(problems)


def _event_model(event_type: str) -> type[BaseModel] | None:
    from carecycle_webhooks._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent

    models: dict[str, type[BaseModel]] = {
        "customer.created": CustomerCreatedEvent,
        "customer.updated": CustomerUpdatedEvent,
        "call.completed": CallCompletedEvent,
    }
    return models.get(event_type)


def _factory_body(event_type: str, targets: Sequence[_Target]) -> bytes:
    import uuid

    from pydantic import ValidationError

    from carecycle_webhooks._errors import WebhookConfigurationError
    from carecycle_webhooks.testing import make_event

    overrides: dict[str, Any] = {}
    if event_type not in CATALOG:
        # Every careCycle event has an id and a creation time; a new type will too.
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        overrides = {"id": str(uuid.uuid4()), "createdAt": now.isoformat(timespec="milliseconds")}
    for target in targets:
        _put(overrides, target.attributes, _value(target))
    try:
        event = make_event(event_type, **overrides)
    except ValidationError as error:
        raise UsageError(_validation_message(error, targets)) from None
    except WebhookConfigurationError as error:  # pragma: no cover - _resolve checked the names
        raise UsageError(str(error)) from None
    return event.model_dump_json(by_alias=True).encode()


def _file_body(path: str, event_type: str, targets: Sequence[_Target]) -> bytes:
    raw = read_bytes(path, "--file")
    try:
        text = raw.decode("utf-8")
        data: object = json.loads(text)
    except UnicodeDecodeError:
        raise UsageError(f"--file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise UsageError(
            f"--file {path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"--file {path} must hold a JSON object (one event), not {type(data).__name__}")
    payload: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType] - parsed JSON
    changed = bool(targets)
    if "event_type" not in payload:
        payload = {"event_type": event_type, **payload}
        changed = True
        warn(f"--file {path} has no event_type: sending it as {event_type}")
    elif payload["event_type"] != event_type:
        raise UsageError(
            f"--file {path} holds a {payload['event_type']!r} event, but EVENT_TYPE is {event_type!r}"
        )
    for target in targets:
        _put(payload, target.wire, _value(target))
    if not changed:
        return raw  # byte for byte, as in the file
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- send


def _check_webhook_id(webhook_id: str | None) -> str | None:
    if webhook_id is None:
        return None
    if not webhook_id or len(webhook_id) > 256 or not (webhook_id.isascii() and webhook_id.isprintable()):
        raise UsageError("--webhook-id must be 1 to 256 printable ASCII characters")
    if " " in webhook_id:
        raise UsageError("--webhook-id must not contain spaces")
    return webhook_id


def _check_event_type(event_type: str, *, allow_unknown: bool) -> None:
    if not event_type.strip() or not event_type.isprintable():
        raise UsageError(f"EVENT_TYPE must be a name such as {CATALOG[0]}, got {event_type!r}")
    if event_type in CATALOG or allow_unknown:
        return
    # Most likely a misspelling: a receiver would take it for a new type and ignore it.
    raise UsageError(
        f"{event_type!r} is not in the careCycle event catalog{did_you_mean(event_type, CATALOG)}; "
        f"known: {', '.join(CATALOG)}. To send it as a type careCycle added later (a receiver "
        "parses it as an UnknownEvent), add --allow-unknown-type"
    )


def _check_payload(body: bytes, event_type: str) -> None:
    from carecycle_webhooks._errors import WebhookPayloadError
    from carecycle_webhooks._parse import parse_unverified_event

    try:
        parse_unverified_event(body)
    except WebhookPayloadError as error:
        warn(f"the payload is not a valid {event_type} event ({error}): expect a 422")


def _run(args: argparse.Namespace) -> int:
    event_type: str = args.event_type
    url = check_url(args.url)
    webhook_id = _check_webhook_id(args.webhook_id)
    assignments = [_parse_assignment(text) for text in args.assignments]
    allow_unknown: bool = args.allow_unknown_type
    _check_event_type(event_type, allow_unknown=allow_unknown)
    secrets = endpoint_secrets(args.secret)
    model = _event_model(event_type)
    targets = [_resolve(model, assignment, event_type) for assignment in assignments]
    file: str | None = args.file
    if file is None:
        body = _factory_body(event_type, targets)
    else:
        body = _file_body(file, event_type, targets)
        _check_payload(body, event_type)

    from carecycle_webhooks.testing import sign

    delivery = sign(body, secret=secrets, webhook_id=webhook_id, header_prefix=args.header_prefix)
    headers = {**delivery.headers, "user-agent": f"{PROG} (send)"}
    out = sys.stdout
    stamp = int(delivery.timestamp.timestamp())
    out.write(
        f"POST {url}\n"
        f"  event type  {event_type}{'' if event_type in CATALOG else ' (not in the catalog)'}\n"
        f"  webhook-id  {delivery.webhook_id}\n"
        f"  timestamp   {stamp} ({utc(stamp)})\n"
        f"  body        {plural(len(delivery.body), 'byte')}, signed with "
        f"{plural(len(secrets), 'secret')} ({args.header_prefix}-* headers)\n\n"
    )
    out.flush()
    try:
        answer = post(url, delivery.body, headers, timeout=args.timeout)
    except Unreachable as error:
        sys.stderr.write(f"{PROG} send: could not reach {url}: {error}\n")
        return EXIT_UNREACHABLE
    print_answer(answer, url, out)
    return EXIT_OK if 200 <= answer.status < 300 else EXIT_FAILED


COMMAND = Command(
    name="send",
    summary="sign a sample event and POST it to your endpoint",
    description="Build a realistic event from the catalog's example (or take a JSON file), "
    "sign it as careCycle's Svix endpoint does, POST it, and show the answer.",
    epilog=_EPILOG,
    run=_run,
    add_arguments=_add_arguments,
)
