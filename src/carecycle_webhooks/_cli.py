"""The ``carecycle-webhooks`` command: fire signed sample events, check captured deliveries.

Subcommands: ``send`` (sign an event and POST it to your endpoint, like ``stripe trigger``),
``verify`` (say exactly why a captured delivery does or does not verify), ``schema`` (the
events' JSON Schema) and ``demo`` (a receiver on a loopback port, fed every event).

Only the standard library is imported at the top, so ``--help`` stays fast; pydantic, the
models and the verifier load inside the subcommands that use them. User mistakes end in a
one-line message and exit code 2, never a traceback, and no message shows a secret or a
payload's values.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import json
import os
import sys
import textwrap
import time
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO, cast

if TYPE_CHECKING:
    import http.client
    import urllib.request
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from email.message import Message

    from pydantic import BaseModel

__all__ = ["main", "post"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

SECRET_ENV = "CARECYCLE_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret

# The catalog, spelled out so that --help needs no models; a test keeps it equal to EventType.
CATALOG = ("customer.created", "customer.updated", "call.completed")

# Svix gives an endpoint 15 s to answer.
DEFAULT_TIMEOUT = 15.0
DEFAULT_TOLERANCE = 300.0

_PROG = "carecycle-webhooks"
_MAX_SHOWN_BODY = 2000
_MAX_READ_BODY = 64 * 1024
# The response headers worth showing: what the body is, and where to go or when to retry.
_SHOWN_RESPONSE_HEADERS = ("content-type", "content-length", "location", "retry-after")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

_STATUS_HINTS = {
    3: "webhook senders do not follow redirects (Svix counts anything but 2xx as a failure): "
    "point --url at the final address",
    400: "a carecycle-webhooks receiver answers 400 when the signature does not verify: "
    "is the endpoint configured with the same secret?",
    401: "webhook deliveries carry no credentials: exempt the webhook route from authentication",
    403: "webhook deliveries carry no credentials or CSRF token: exempt the webhook route "
    "(Django: the view must be csrf_exempt; webhook_view already is)",
    404: "nothing is routed at this path: check --url",
    405: "the route does not accept POST",
    409: "the receiver is processing this webhook-id right now; Svix would retry later",
    413: "the body is larger than the receiver accepts",
    422: "the receiver verified the signature but could not read the event",
    500: "a handler raised: look at the receiver's log (Svix would retry)",
    503: "the receiver's idempotency store is unreachable (Svix would retry)",
}


class UsageError(Exception):
    """A mistake in the command's arguments or inputs: exit code 2, a message, no traceback."""


class Unreachable(Exception):  # noqa: N818 - reads as what happened: the URL is unreachable
    """The URL could not be reached: connection refused, unknown host, timeout (exit code 3)."""


# --------------------------------------------------------------------------- argument types


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value < float("inf") or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"expected a {'non-negative' if allow_zero else 'positive'} number of seconds, got {text!r}"
        )
    return value


def _positive_seconds(text: str) -> float:
    return _seconds(text, allow_zero=False)


def _non_negative_seconds(text: str) -> float:
    return _seconds(text, allow_zero=True)


def _epoch(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds since the epoch, got {text!r}") from None
    if not 0 <= value < 253_402_300_800:
        raise argparse.ArgumentTypeError(f"expected seconds since the epoch, got {text!r}")
    return value


def _indent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of spaces, got {text!r}") from None
    if not 0 <= value <= 16:
        raise argparse.ArgumentTypeError("expected 0 (one line) to 16 spaces")
    return value


# --------------------------------------------------------------------------- the parser

_MAIN_EPILOG = f"""\
examples:
  {_PROG} send customer.created --url http://localhost:8000/webhooks --secret whsec_...
  {_PROG} verify --secret whsec_... --body-file body.json --headers-file headers.txt
  {_PROG} schema call.completed > call.completed.schema.json
  {_PROG} demo

The secret may also come from ${SECRET_ENV}, which keeps it out of your shell history.
Event types in the catalog: {", ".join(CATALOG)}.
Exit codes: 0 success, 1 the endpoint answered non-2xx or the delivery is invalid,
2 usage error, 3 the URL could not be reached.
"""

_SEND_EPILOG = f"""\
examples:
  {_PROG} send customer.created --url http://localhost:8000/webhooks --secret whsec_...
  {_PROG} send customer.updated --url http://localhost:8000/webhooks \\
      --set status=Active --set first_name=Ana --set assignedUser.npn=123
  {_PROG} send call.completed --url http://localhost:8000/webhooks \\
      --set disposition='"No Answer"' --set durationMs=0 --set customer.do_not_call=true
  {_PROG} send customer.created --url https://example.ngrok.app/webhooks --file payload.json
  {_PROG} send appointment.booked --url http://localhost:8000/webhooks --set startsAt=2026-07-01

--set FIELD=VALUE: FIELD is the attribute (first_name) or the wire name (firstName),
nested with dots (customer.first_name, assignedUser.npn). VALUE is read as JSON when it
parses (true, 42, null, "x", ["AZ"], {{"a": 1}}), else as a string; a field that holds text
(an id, a name, a date) keeps digits as text (--set assignedUser.npn=123).
--file: the JSON object is sent byte for byte (and re-serialised only when --set changes
it); its keys are wire names, and --set translates attribute names to them.

Exit codes: 0 the endpoint answered 2xx, 1 it answered something else, 2 usage error
(bad arguments, --set or --file, invalid secret), 3 the URL could not be reached.
"""

_VERIFY_EPILOG = f"""\
examples:
  {_PROG} verify --secret whsec_... --body-file body.json --headers-file headers.json
  {_PROG} verify --secret whsec_new... --secret whsec_old... --body-file body.json \\
      --header "svix-id: msg_2Lm..." --header "svix-timestamp: 1781723243" \\
      --header "svix-signature: v1,K5oZ..."
  {_PROG} verify --secret whsec_... --body-file body.json --headers-file headers.txt --now 1781723243

The headers file is a JSON object ({{"svix-id": "msg_...", ...}}) or "Name: value" lines,
as a raw HTTP request shows them. --body-file - reads the body from standard input.
A failure says which header is missing or malformed, how far the timestamp is outside
the tolerance (and whether the signature would otherwise match), and whether the body
looks changed after signing: re-serialised JSON, a trailing newline, CRLF line endings.
Secrets are named by their position (secret #2), never shown.

Exit codes: 0 valid signature, 1 invalid, 2 usage error.
"""

_SCHEMA_EPILOG = f"""\
examples:
  {_PROG} schema                      # every event: a oneOf discriminated on event_type
  {_PROG} schema customer.created --indent 4
  {_PROG} schema call.completed --indent 0 > call.completed.schema.json

Property names are the wire names (camelCase). Fields holding protected health information
carry "x-phi": true. Enums list the documented values and accept any other string, as the
models do. Exit codes: 0 printed, 2 unknown event type.
"""

_DEMO_EPILOG = f"""\
example:
  {_PROG} demo

Starts a Dispatcher with typed handlers behind a small HTTP server on 127.0.0.1 (a free
port), sends it every event of the catalog, an unknown one, a duplicate, a tampered and a
stale delivery, signed with a fresh secret, prints what the handlers received and each
HTTP status, then stops the server. Nothing leaves the machine.
"""


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **_: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        del namespace, values, option_string
        from importlib.metadata import version

        sys.stdout.write(f"{_PROG} {version('carecycle-webhooks')}\n")
        parser.exit()


def _subparser(  # noqa: PLR0913 - keyword-only, one per part of a subcommand's help
    commands: argparse._SubParsersAction[argparse.ArgumentParser],  # pyright: ignore[reportPrivateUsage]
    name: str,
    *,
    summary: str,
    description: str,
    epilog: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run, parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: ``send``, ``verify``, ``schema`` and ``demo``."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=textwrap.fill(
            "Fire signed careCycle sample events at your endpoint, check captured "
            "deliveries, print the events' JSON Schema.",
            88,
        ),
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)

    send = _subparser(
        commands,
        "send",
        summary="sign a sample event and POST it to your endpoint",
        description="Build a realistic event from the catalog's example (or take a JSON file), "
        "sign it as careCycle's Svix endpoint does, POST it, and show the answer.",
        epilog=_SEND_EPILOG,
        run=_run_send,
    )
    send.add_argument(
        "event_type", metavar="EVENT_TYPE", help=f"one of {', '.join(CATALOG)}, or any other type to test"
    )
    send.add_argument("--url", required=True, help="the endpoint, e.g. http://localhost:8000/webhooks")
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

    verify = _subparser(
        commands,
        "verify",
        summary="check a captured delivery and say why it fails",
        description="Check the signature and timestamp of a delivery you captured (body and "
        "headers), and explain a failure.",
        epilog=_VERIFY_EPILOG,
        run=_run_verify,
    )
    verify.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="WHSEC",
        help=f"a whsec_... secret to try (repeatable; default: ${SECRET_ENV}, space-separated)",
    )
    body = verify.add_mutually_exclusive_group(required=True)
    body.add_argument("--body-file", metavar="FILE", help="the raw body, byte for byte ('-': stdin)")
    body.add_argument("--body", metavar="TEXT", help="the raw body as text")
    headers = verify.add_mutually_exclusive_group(required=True)
    headers.add_argument("--headers-file", metavar="FILE", help='a JSON object or "Name: value" lines')
    headers.add_argument(
        "--header",
        dest="header_lines",
        action="append",
        metavar='"NAME: VALUE"',
        help="one header (repeatable)",
    )
    verify.add_argument(
        "--tolerance",
        type=_non_negative_seconds,
        default=DEFAULT_TOLERANCE,
        metavar="SECONDS",
        help=f"how far the timestamp may be from now (default: {DEFAULT_TOLERANCE:g})",
    )
    verify.add_argument(
        "--now",
        type=_epoch,
        metavar="EPOCH",
        help="check as of this time, in seconds since the epoch (default: the clock)",
    )

    schema = _subparser(
        commands,
        "schema",
        summary="print the events' JSON Schema",
        description="Print the JSON Schema (draft 2020-12) of one event, or of all of them, "
        "with the wire names.",
        epilog=_SCHEMA_EPILOG,
        run=_run_schema,
    )
    schema.add_argument("event_type", metavar="EVENT_TYPE", nargs="?", help="one event type (default: all)")
    schema.add_argument(
        "--indent",
        type=_indent,
        default=2,
        metavar="N",
        help="spaces per level; 0 prints one line (default: 2)",
    )

    _subparser(
        commands,
        "demo",
        summary="run a local receiver and send it every event",
        description="Send signed deliveries of every event to a receiver on a loopback port, "
        "over real HTTP, and show what its typed handlers get.",
        epilog=_DEMO_EPILOG,
        run=_run_demo,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, and argparse's own usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    command: argparse.ArgumentParser = args.parser
    try:
        return run(args)
    except UsageError as error:
        sys.stderr.write(f"{command.prog}: error: {error}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{command.prog}: interrupted\n")
        return 130


# --------------------------------------------------------------------------- shared helpers


def _warn(message: str) -> None:
    sys.stderr.write(f"{_PROG}: warning: {message}\n")


def _secrets(given: Sequence[str]) -> list[str]:
    secrets = list(given) or os.environ.get(SECRET_ENV, "").split()
    if not secrets:
        raise UsageError(f"give the endpoint's secret with --secret whsec_... (or set ${SECRET_ENV})")
    for position, secret in enumerate(secrets, start=1):
        problem = _secret_problem(secret)
        if problem is not None:
            label = f"secret #{position}" if len(secrets) > 1 else "the secret"
            raise UsageError(f"{label}: {problem}")
    return secrets


def _secret_problem(secret: str) -> str | None:
    from ._errors import WebhookConfigurationError
    from ._verify import decode_secrets

    try:
        decode_secrets(secret)
    except WebhookConfigurationError as error:
        return str(error)  # never the secret itself
    return None


def _read_bytes(path: str, option: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as file:  # noqa: PTH123 - pathlib is one more import for one call
            return file.read()
    except OSError as error:
        raise UsageError(f"cannot read {option} {path}: {error.strerror or error}") from None


def _close_matches(word: str, candidates: Sequence[str]) -> list[str]:
    folded = {candidate.lower(): candidate for candidate in candidates}
    if word.lower() in folded:
        return [folded[word.lower()]]
    return difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    matches = _close_matches(word, candidates)
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""


def _utc(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _about(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return f" (about {seconds / size:.0f} {unit}s)"
    return ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --------------------------------------------------------------------------- HTTP


@dataclasses.dataclass(frozen=True)
class Answer:
    """An endpoint's HTTP answer.

    Attributes:
        status: The status code.
        reason: The reason phrase.
        headers: The response headers.
        body: The body's first 64 KiB.
        seconds: How long the request took.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    seconds: float


def _answer(status: int, reason: str, headers: Message, body: bytes, started: float) -> Answer:
    return Answer(
        status=status,
        reason=reason,
        headers={name.lower(): value for name, value in headers.items()},
        body=body,
        seconds=time.perf_counter() - started,
    )


def _unreachable_reason(error: BaseException, timeout: float) -> str:
    import http.client
    import socket
    import ssl

    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {getattr(error, 'reason', None) or error}"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, ConnectionResetError):
        return "the connection was reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error) or type(error).__name__


def _opener(url: str) -> urllib.request.OpenerDirector:
    import urllib.parse
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # Webhook senders never follow redirects; show the 3xx as it is.
        def redirect_request(  # noqa: PLR0913, PLR0917 - the signature of the base class
            self,
            req: urllib.request.Request,
            fp: IO[bytes],
            code: int,
            msg: str,
            headers: http.client.HTTPMessage,
            newurl: str,
        ) -> None:
            del req, fp, code, msg, headers, newurl

    handlers: list[urllib.request.BaseHandler] = [NoRedirect()]
    if urllib.parse.urlsplit(url).hostname in _LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))  # a local server is never behind $http_proxy
    return urllib.request.build_opener(*handlers)


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> Answer:
    """POST ``body`` to ``url`` without following redirects, and return the answer.

    Raises:
        Unreachable: No HTTP answer came: connection refused, unknown host, timeout, TLS.
    """
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - http(s) checked
    started = time.perf_counter()
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            return _answer(
                response.status, response.reason, response.headers, response.read(_MAX_READ_BODY), started
            )
    except urllib.error.HTTPError as error:
        with error:
            return _answer(error.code, str(error.reason), error.headers, error.read(_MAX_READ_BODY), started)
    except urllib.error.URLError as error:
        reason: BaseException = error.reason if isinstance(error.reason, BaseException) else error
        raise Unreachable(_unreachable_reason(reason, timeout)) from None
    except (OSError, http.client.HTTPException) as error:  # timeouts and resets while reading
        raise Unreachable(_unreachable_reason(error, timeout)) from None


def _check_url(url: str) -> str:
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError as error:
        raise UsageError(f"--url {url!r} is not a valid URL: {error}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UsageError(f"--url must be an http:// or https:// URL, got {url!r}")
    return url


# --------------------------------------------------------------------------- send: --set


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
    attributes = dict.fromkeys(names[name] for name in _close_matches(segment, sorted(names)))
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
    from ._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent

    models: dict[str, type[BaseModel]] = {
        "customer.created": CustomerCreatedEvent,
        "customer.updated": CustomerUpdatedEvent,
        "call.completed": CallCompletedEvent,
    }
    return models.get(event_type)


def _factory_body(event_type: str, targets: Sequence[_Target]) -> bytes:
    import uuid

    from pydantic import ValidationError

    from ._errors import WebhookConfigurationError
    from .testing import make_event

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
    raw = _read_bytes(path, "--file")
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
        _warn(f"--file {path} has no event_type: sending it as {event_type}")
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


def _warn_if_unknown(event_type: str) -> None:
    if event_type in CATALOG:
        return
    _warn(
        f"{event_type!r} is not in the careCycle event catalog ({', '.join(CATALOG)})"
        f"{_did_you_mean(event_type, CATALOG)}: it is sent as a new event type, which a "
        "receiver parses as an UnknownEvent"
    )


def _check_payload(body: bytes, event_type: str) -> None:
    from ._errors import WebhookPayloadError
    from ._parse import parse_unverified_event

    try:
        parse_unverified_event(body)
    except WebhookPayloadError as error:
        _warn(f"the payload is not a valid {event_type} event ({error}): expect a 422")


def _print_answer(answer: Answer, out: TextIO) -> None:
    out.write(f"HTTP {answer.status} {answer.reason}  ({answer.seconds * 1000:.0f} ms)\n")
    for name in _SHOWN_RESPONSE_HEADERS:
        if name in answer.headers:
            out.write(f"  {name}: {answer.headers[name]}\n")
    if answer.body:
        text = answer.body.decode("utf-8", errors="replace")
        shown = text[:_MAX_SHOWN_BODY]
        more = len(answer.body) - len(shown.encode("utf-8", errors="replace"))
        out.write(f"\n{shown}{'' if shown.endswith(chr(10)) else chr(10)}")
        if more > 0:
            out.write(f"... ({_plural(more, 'more byte')})\n")
    hint = _STATUS_HINTS.get(answer.status) or _STATUS_HINTS.get(answer.status // 100)
    if not 200 <= answer.status < 300 and hint:
        out.write(f"hint: {hint}\n")


def _run_send(args: argparse.Namespace) -> int:
    event_type: str = args.event_type
    url = _check_url(args.url)
    webhook_id = _check_webhook_id(args.webhook_id)
    assignments = [_parse_assignment(text) for text in args.assignments]
    secrets = _secrets(args.secret)
    if not event_type.strip() or not event_type.isprintable():
        raise UsageError(f"EVENT_TYPE must be a name such as {CATALOG[0]}, got {event_type!r}")
    _warn_if_unknown(event_type)
    model = _event_model(event_type)
    targets = [_resolve(model, assignment, event_type) for assignment in assignments]
    file: str | None = args.file
    if file is None:
        body = _factory_body(event_type, targets)
    else:
        body = _file_body(file, event_type, targets)
        _check_payload(body, event_type)

    from .testing import sign

    delivery = sign(body, secret=secrets, webhook_id=webhook_id, header_prefix=args.header_prefix)
    headers = {**delivery.headers, "user-agent": f"{_PROG} (send)"}
    out = sys.stdout
    stamp = int(delivery.timestamp.timestamp())
    out.write(
        f"POST {url}\n"
        f"  event type  {event_type}\n"
        f"  webhook-id  {delivery.webhook_id}\n"
        f"  timestamp   {stamp} ({_utc(stamp)})\n"
        f"  body        {_plural(len(delivery.body), 'byte')}, signed with "
        f"{_plural(len(secrets), 'secret')} ({args.header_prefix}-* headers)\n\n"
    )
    out.flush()
    try:
        answer = post(url, delivery.body, headers, timeout=args.timeout)
    except Unreachable as error:
        sys.stderr.write(f"{_PROG} send: could not reach {url}: {error}\n")
        return EXIT_UNREACHABLE
    _print_answer(answer, out)
    return EXIT_OK if 200 <= answer.status < 300 else EXIT_FAILED


# --------------------------------------------------------------------------- verify


@dataclasses.dataclass(frozen=True)
class _HeaderPairs:
    """Headers as given, duplicates kept, so the verifier sees conflicts."""

    pairs: tuple[tuple[str, str], ...]

    def items(self) -> tuple[tuple[str, str], ...]:
        return self.pairs

    def get(self, name: str) -> str | None:
        for key, value in self.pairs:
            if key.lower() == name:
                return value
        return None

    def signed(self, suffix: str) -> str | None:
        return self.get(f"webhook-{suffix}") or self.get(f"svix-{suffix}")


def _header_line(line: str, where: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise UsageError(f"{where}: expected 'Name: value', got {line[:60]!r}")
    return name, value.strip()


def _json_headers(text: str, path: str) -> _HeaderPairs:
    try:
        data: object = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--headers-file {path} is not valid JSON: {error.msg}") from None
    if not isinstance(data, dict):  # pragma: no cover - the text starts with "{"
        raise UsageError(f"--headers-file {path} must hold a JSON object")
    pairs: list[tuple[str, str]] = []
    for name, value in data.items():  # pyright: ignore[reportUnknownVariableType] - parsed JSON
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UsageError(f"--headers-file {path}: the value of {name!r} must be a string")
        pairs.append((str(name), str(value)))  # pyright: ignore[reportUnknownArgumentType]
    return _HeaderPairs(tuple(pairs))


def _headers_from_file(path: str) -> _HeaderPairs:
    raw = _read_bytes(path, "--headers-file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"--headers-file {path} is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        return _json_headers(text, path)
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and " HTTP/" in lines[0] and ":" not in lines[0].split(" HTTP/")[0]:
        lines.pop(0)  # the request line of a raw HTTP request: POST /webhooks HTTP/1.1
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            break  # the blank line before a raw request's body
        pairs.append(_header_line(line, f"--headers-file {path}, line {number}"))
    return _HeaderPairs(tuple(pairs))


def _verify_inputs(args: argparse.Namespace) -> tuple[bytes, _HeaderPairs]:
    body_file: str | None = args.body_file
    if body_file is not None:
        body = _read_bytes(body_file, "--body-file")
    else:
        text: str = args.body
        body = text.encode("utf-8", errors="surrogateescape")
    header_lines: list[str] | None = args.header_lines
    if header_lines is None:
        headers = _headers_from_file(args.headers_file)
    else:
        headers = _HeaderPairs(tuple(_header_line(line, "--header") for line in header_lines))
    return body, headers


_KNOWN_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
)


@dataclasses.dataclass(frozen=True)
class _Check:
    """One verify run: what was given, and a way to try secrets against variants of it."""

    secrets: Sequence[str]
    body: bytes
    headers: _HeaderPairs
    now: float
    tolerance: float

    def matching(self, body: bytes) -> list[int]:
        """Positions (from 1) of the secrets that signed ``body``, whatever the timestamp's age."""
        return [
            position for position, secret in enumerate(self.secrets, start=1) if self._signed(secret, body)
        ]

    def _signed(self, secret: str, body: bytes) -> bool:
        from ._errors import WebhookVerificationError
        from ._verify import WebhookVerifier

        verifier = WebhookVerifier(secret, tolerance=datetime.timedelta.max, clock=lambda: self.now)
        try:
            verifier.verify(body, self.headers)
        except WebhookVerificationError:
            return False
        return True

    def secrets_label(self, positions: Sequence[int]) -> str:
        named = " and ".join(f"#{position}" for position in positions)
        return f"secret {named} (of {len(self.secrets)})"


def _body_alterations(body: bytes) -> Iterator[tuple[str, bytes]]:
    """What the signed bytes may have been, for a body changed in a common way after signing."""
    yield from _text_alterations(body)
    yield from _json_alterations(body)


def _text_alterations(body: bytes) -> Iterator[tuple[str, bytes]]:
    if body.endswith(b"\r\n"):
        yield "a trailing CRLF was added", body[:-2]
    if body.endswith(b"\n"):
        yield "a trailing newline was added (editors and echo add one)", body[:-1]
    else:
        yield "its trailing newline was removed (as $(...) does in a shell)", body + b"\n"
    if b"\r\n" in body:
        yield "its line endings were changed to CRLF", body.replace(b"\r\n", b"\n")
    elif b"\n" in body.rstrip(b"\n"):
        yield "its line endings were changed from CRLF to LF", body.replace(b"\n", b"\r\n")
    if body.startswith(b"\xef\xbb\xbf"):
        yield "a UTF-8 byte order mark was added", body[3:]
    if body.lstrip() != body:
        yield "whitespace was added before it", body.lstrip()
    if body.strip() not in {body, body.lstrip()}:
        yield "whitespace was added around it", body.strip()


def _json_alterations(body: bytes) -> Iterator[tuple[str, bytes]]:
    try:
        data = json.loads(body)
    except ValueError:
        return
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("compact JSON, as JavaScript's JSON.stringify writes it", {"separators": (",", ":")}),
        ("JSON with Python's json.dumps spacing", {}),
        ("JSON indented by 2 spaces", {"indent": 2}),
        ("JSON indented by 4 spaces", {"indent": 4}),
    )
    for label, options in variants:
        for ascii_only in (False, True):
            for sort_keys in (False, True):
                extra = ", keys sorted" if sort_keys else ""
                extra += ", non-ASCII escaped" if ascii_only else ""
                text = json.dumps(data, ensure_ascii=ascii_only, sort_keys=sort_keys, **options)
                yield f"it looks re-serialised (the signed bytes were {label}{extra})", text.encode()


def _diagnose_body(check: _Check) -> tuple[str, list[int]] | None:
    seen = {check.body}
    for description, candidate in _body_alterations(check.body):
        if candidate in seen:
            continue
        seen.add(candidate)
        matched = check.matching(candidate)
        if matched:
            return description, matched
    return None


def _report_mismatch(check: _Check, out: TextIO, *, prefix: str) -> None:
    found = _diagnose_body(check)
    if found is not None:
        description, matched = found
        out.write(
            f"{prefix}the body was changed after signing: {description}; with that change undone "
            f"it verifies with {check.secrets_label(matched)}.\n"
            "hint: verify the raw request body exactly as received, before any JSON parsing, "
            "and save captured bodies byte for byte\n"
        )
        return
    count = _v1_count(check.headers)
    out.write(
        f"{prefix}no signature matches: the header carries {_plural(count, 'v1 signature')}, "
        f"and none was made with the {_plural(len(check.secrets), 'secret')} given.\n"
        "Either the secret is wrong (each endpoint has its own whsec_ secret, shown on its page "
        "in the dashboard; test and production differ), or the body, webhook-id or "
        "webhook-timestamp changed after signing.\n"
        "Tried: the body as given, with and without a trailing newline, LF and CRLF line "
        "endings, and re-serialised as compact, json.dumps-style and indented JSON.\n"
    )


def _v1_count(headers: _HeaderPairs) -> int:
    return sum(1 for part in (headers.signed("signature") or "").split() if part.startswith("v1,"))


def _header_hints(headers: _HeaderPairs) -> Iterator[str]:
    names = [name.lower() for name, _ in headers.pairs]
    for name in names:
        if name in _KNOWN_HEADERS:
            continue
        matches = _close_matches(
            name.replace("_", "-").removeprefix("x-").removeprefix("http-"), _KNOWN_HEADERS
        )
        if matches:
            yield f"header {name!r} looks like {matches[0]}: the name must be exactly {matches[0]}"
    timestamp = headers.signed("timestamp")
    if timestamp and timestamp.isdigit() and len(timestamp) >= 13:
        yield "the timestamp looks like milliseconds: it must be whole seconds since the epoch"
    signature = headers.signed("signature")
    if signature and "v1," not in signature:
        yield "webhook-signature must hold 'v1,<base64>' entries separated by spaces, as Svix sends them"


def _report_timestamp(check: _Check, error_reason: str, out: TextIO) -> None:
    stamp = int(check.headers.signed("timestamp") or "0")
    offset = check.now - stamp
    outside = abs(offset) - check.tolerance
    direction = "in the past" if error_reason == "timestamp_too_old" else "in the future"
    out.write(
        f"invalid: the timestamp {stamp} ({_utc(stamp)}) is {abs(offset):.0f} s{_about(offset)} {direction}: "
        f"{outside:.0f} s outside the tolerance of {check.tolerance:g} s.\n"
    )
    matched = check.matching(check.body)
    if matched:
        out.write(f"The signature would otherwise match: it was made with {check.secrets_label(matched)}.\n")
        if error_reason == "timestamp_too_old":
            out.write(
                f"hint: a captured delivery goes stale; check it as of its signing time with "
                f"--now {stamp}, or send a fresh one\n"
            )
        else:
            out.write("hint: the sender's clock is ahead of this one: check both clocks (NTP)\n")
        return
    _report_mismatch(check, out, prefix="And the signature would not match either: ")


def _report_valid(check: _Check, out: TextIO) -> None:
    from ._errors import WebhookPayloadError
    from ._models import UnknownEvent
    from ._parse import parse_unverified_event

    matched = check.matching(check.body)
    stamp = int(check.headers.signed("timestamp") or "0")
    age = check.now - stamp
    when = f"{abs(age):.0f} s {'before' if age >= 0 else 'after'} now"
    out.write(
        f"valid: signed with {check.secrets_label(matched)}\n"
        f"  webhook-id  {check.headers.signed('id')}\n"
        f"  timestamp   {stamp} ({_utc(stamp)}, {when}; tolerance {check.tolerance:g} s)\n"
        f"  body        {_plural(len(check.body), 'byte')}\n"
    )
    try:
        event = parse_unverified_event(check.body)
    except WebhookPayloadError as error:
        out.write(f"  event       not a valid careCycle event: {error}\n")
        out.write("hint: a Dispatcher answers such a delivery 422\n")
        return
    if isinstance(event, UnknownEvent):
        out.write(f"  event       {event.event_type} (UnknownEvent: not in this version's catalog)\n")
    else:
        out.write(f"  event       {event.event_type} ({type(event).__name__})\n")


def _run_verify(args: argparse.Namespace) -> int:
    from ._errors import WebhookVerificationError
    from ._verify import WebhookVerifier

    secrets = _secrets(args.secret)
    body, headers = _verify_inputs(args)
    now: float = time.time() if args.now is None else args.now
    check = _Check(secrets=secrets, body=body, headers=headers, now=now, tolerance=args.tolerance)
    verifier = WebhookVerifier(
        secrets, tolerance=datetime.timedelta(seconds=args.tolerance), clock=lambda: now
    )
    out = sys.stdout
    try:
        verifier.verify(body, headers)
    except WebhookVerificationError as error:
        if error.reason in {"timestamp_too_old", "timestamp_too_new"}:
            _report_timestamp(check, error.reason, out)
        elif error.reason == "no_matching_signature" and _v1_count(headers):
            _report_mismatch(check, out, prefix="invalid: ")
        else:
            out.write(f"invalid: {error}\n")
            given = ", ".join(name.lower() for name, _ in headers.pairs) or "none"
            out.write(f"  headers given: {given}\n")
            for hint in _header_hints(headers):
                out.write(f"hint: {hint}\n")
        return EXIT_FAILED
    _report_valid(check, out)
    return EXIT_OK


# --------------------------------------------------------------------------- schema and demo


def _run_schema(args: argparse.Namespace) -> int:
    from ._errors import WebhookConfigurationError
    from .schema import json_schema

    event_type: str | None = args.event_type
    try:
        schema = json_schema(event_type)
    except WebhookConfigurationError as error:
        raise UsageError(f"{error}{_did_you_mean(event_type or '', CATALOG)}") from None
    indent: int = args.indent
    if indent:
        text = json.dumps(schema, indent=indent, ensure_ascii=False)
    else:
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    sys.stdout.write(text + "\n")
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    del args
    from ._demo import run

    return run(sys.stdout)
