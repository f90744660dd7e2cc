"""``carecycle-webhooks verify``: check a captured delivery and say exactly why it fails.

The delivery is checked by `WebhookVerifier`, as a receiver checks it. A failure is then
explained: which header is missing or misspelt, how far the timestamp is outside the
tolerance (and whether the signature would otherwise match), and whether the body was
changed after signing in a common way (re-serialised JSON, a trailing newline, CRLF).
Secrets are named by their position, never shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    SECRET_ENV,
    Command,
    UsageError,
    close_matches,
    endpoint_secrets,
    plural,
    read_bytes,
    seconds,
    utc,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

DEFAULT_TOLERANCE = 300.0

_EPILOG = f"""\
examples:
  {PROG} verify --secret whsec_... --body-file body.json --headers-file headers.json
  {PROG} verify --secret whsec_new... --secret whsec_old... --body-file body.json \\
      --header "svix-id: msg_2Lm..." --header "svix-timestamp: 1781723243" \\
      --header "svix-signature: v1,K5oZ..."
  {PROG} verify --secret whsec_... --body-file body.json --headers-file headers.txt --now 1781723243

The headers file is a JSON object ({{"svix-id": "msg_...", ...}}) or "Name: value" lines,
as a raw HTTP request shows them. --body-file - reads the body from standard input.
A failure says which header is missing or malformed, how far the timestamp is outside
the tolerance (and whether the signature would otherwise match), and whether the body
looks changed after signing: re-serialised JSON, a trailing newline, CRLF line endings.
Secrets are named by their position (secret #2), never shown.

Exit codes: 0 valid signature, 1 invalid, 2 usage error.
"""


def _non_negative_seconds(text: str) -> float:
    return seconds(text, allow_zero=True)


def _epoch(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds since the epoch, got {text!r}") from None
    if not 0 <= value < 253_402_300_800:
        raise argparse.ArgumentTypeError(f"expected seconds since the epoch, got {text!r}")
    return value


def _add_arguments(verify: argparse.ArgumentParser) -> None:
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


# --------------------------------------------------------------------------- the delivery given


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

    def sent_name(self, suffix: str) -> str | None:
        """The name of the id, timestamp or signature header as sent: ``svix-timestamp`` for Svix.

        For a missing header, the name that the delivery's other headers call for;
        ``None`` when they do not tell (none given, or both sets of names).
        """
        names = {name.lower() for name, _ in self.pairs}
        given = [name for name in (f"svix-{suffix}", f"webhook-{suffix}") if name in names]
        if len(given) == 1:
            return given[0]
        if given:
            return None
        prefixes = {name.split("-")[0] for name in names if name in _KNOWN_HEADERS}
        return f"{prefixes.pop()}-{suffix}" if len(prefixes) == 1 else None

    def as_sent(self, message: str) -> str:
        """``message`` with the library's header names replaced by those of this delivery."""

        def sent(match: re.Match[str]) -> str:
            return self.sent_name(match[1]) or match[0]

        conflict = re.search(r"header webhook-(\w+) is given twice", message)
        names = {name.lower() for name, _ in self.pairs}
        if conflict and {f"svix-{conflict[1]}", f"webhook-{conflict[1]}"} <= names:
            suffix = conflict[1]
            return f"headers svix-{suffix} and webhook-{suffix} are both given, with different values"
        pattern = r"\bwebhook-(id|timestamp|signature)\b"
        named = re.sub(pattern, sent, message)
        if all(self.sent_name(suffix) for suffix in re.findall(pattern, message)):
            named = named.replace(" (or svix-*)", "")  # the delivery's names are known
        return named


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
    raw = read_bytes(path, "--headers-file")
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
        body = read_bytes(body_file, "--body-file")
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
        from carecycle_webhooks._errors import WebhookVerificationError
        from carecycle_webhooks._verify import WebhookVerifier

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
        f"{prefix}no signature matches: the header carries {plural(count, 'v1 signature')}, "
        f"and none was made with the {plural(len(check.secrets), 'secret')} given.\n"
        "Either the secret is wrong (each endpoint has its own whsec_ secret, shown on its page "
        f"in the dashboard; test and production differ), or the body, {_name(check.headers, 'id')} or "
        f"{_name(check.headers, 'timestamp')} changed after signing.\n"
        "Tried: the body as given, with and without a trailing newline, LF and CRLF line "
        "endings, and re-serialised as compact, json.dumps-style and indented JSON.\n"
    )


def _name(headers: _HeaderPairs, suffix: str) -> str:
    return headers.sent_name(suffix) or f"webhook-{suffix}"


def _v1_count(headers: _HeaderPairs) -> int:
    return sum(1 for part in (headers.signed("signature") or "").split() if part.startswith("v1,"))


def _header_hints(headers: _HeaderPairs) -> Iterator[str]:
    names = [name.lower() for name, _ in headers.pairs]
    for name in names:
        if name in _KNOWN_HEADERS:
            continue
        matches = close_matches(
            name.replace("_", "-").removeprefix("x-").removeprefix("http-"), _KNOWN_HEADERS
        )
        if matches:
            yield f"header {name!r} looks like {matches[0]}: the name must be exactly {matches[0]}"
    timestamp = headers.signed("timestamp")
    if timestamp and timestamp.isdigit() and len(timestamp) >= 13:
        yield "the timestamp looks like milliseconds: it must be whole seconds since the epoch"
    signature = headers.signed("signature")
    if signature and "v1," not in signature:
        yield (
            f"{_name(headers, 'signature')} must hold 'v1,<base64>' entries separated by spaces, "
            "as Svix sends them"
        )


def _report_timestamp(check: _Check, error_reason: str, out: TextIO) -> None:
    stamp = int(check.headers.signed("timestamp") or "0")
    offset = check.now - stamp
    outside = abs(offset) - check.tolerance
    direction = "in the past" if error_reason == "timestamp_too_old" else "in the future"
    out.write(
        f"invalid: the timestamp {stamp} ({utc(stamp)}) is {abs(offset):.0f} s{_about(offset)} {direction}: "
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
    from carecycle_webhooks._errors import WebhookPayloadError
    from carecycle_webhooks._models import UnknownEvent
    from carecycle_webhooks._parse import parse_unverified_event

    matched = check.matching(check.body)
    stamp = int(check.headers.signed("timestamp") or "0")
    age = check.now - stamp
    when = f"{abs(age):.0f} s {'before' if age >= 0 else 'after'} now"
    out.write(
        f"valid: signed with {check.secrets_label(matched)}\n"
        f"  {_name(check.headers, 'id'):<10}  {check.headers.signed('id')}\n"
        f"  timestamp   {stamp} ({utc(stamp)}, {when}; tolerance {check.tolerance:g} s)\n"
        f"  body        {plural(len(check.body), 'byte')}\n"
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


def _run(args: argparse.Namespace) -> int:
    from carecycle_webhooks._errors import WebhookVerificationError
    from carecycle_webhooks._verify import WebhookVerifier

    secrets = endpoint_secrets(args.secret)
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
            out.write(f"invalid: {headers.as_sent(str(error))}\n")
            given = ", ".join(name.lower() for name, _ in headers.pairs) or "none"
            out.write(f"  headers given: {given}\n")
            for hint in _header_hints(headers):
                out.write(f"hint: {hint}\n")
        return EXIT_FAILED
    _report_valid(check, out)
    return EXIT_OK


def _about(offset: float) -> str:
    offset = abs(offset)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if offset >= 2 * size:
            return f" (about {offset / size:.0f} {unit}s)"
    return ""


COMMAND = Command(
    name="verify",
    summary="check a captured delivery and say why it fails",
    description="Check the signature and timestamp of a delivery you captured (body and "
    "headers), and explain a failure.",
    epilog=_EPILOG,
    run=_run,
    add_arguments=_add_arguments,
)
