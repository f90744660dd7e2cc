"""What the commands share: exit codes, the error that ends a command, inputs, wording.

Standard library only, like every module the parser imports, so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import sys
from typing import TYPE_CHECKING

# Shared with the library (standard library only): one variable name, one "did you mean".
from carecycle_webhooks._config import SECRET_ENV
from carecycle_webhooks._spelling import close_matches, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "CATALOG",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "PROG",
    "SECRET_ENV",
    "Command",
    "UsageError",
    "close_matches",
    "did_you_mean",
    "endpoint_secrets",
    "plural",
    "read_bytes",
    "seconds",
    "utc",
    "warn",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

PROG = "carecycle-webhooks"

# The catalog, spelled out so that --help needs no models; a test keeps it equal to EventType.
CATALOG = ("customer.created", "customer.updated", "call.completed")


class UsageError(Exception):
    """A mistake in the command's arguments or inputs: exit code 2, a message, no traceback."""


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its help, its arguments, and what runs it.

    Attributes:
        name: What follows ``carecycle-webhooks`` on the command line.
        summary: One line in the list of commands.
        description: A paragraph atop the command's ``--help``.
        epilog: Examples and exit codes, below the arguments, printed as written.
        run: Runs the command with the parsed arguments and returns the exit code.
        add_arguments: Adds the command's arguments to its parser.
    """

    name: str
    summary: str
    description: str
    epilog: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda _: None


def seconds(text: str, *, allow_zero: bool) -> float:
    """A number of seconds given as an argument.

    Raises:
        argparse.ArgumentTypeError: Not a finite number, or negative (or zero, unless allowed).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value < float("inf") or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"expected a {'non-negative' if allow_zero else 'positive'} number of seconds, got {text!r}"
        )
    return value


def warn(message: str) -> None:
    """Print a warning on standard error: the command goes on."""
    sys.stderr.write(f"{PROG}: warning: {message}\n")


def endpoint_secrets(given: Sequence[str]) -> list[str]:
    """The ``--secret`` values, else those of the environment variable, each checked.

    Raises:
        UsageError: No secret, or one that is not a valid ``whsec_`` secret (never shown).
    """
    if not given:
        if not os.environ.get(SECRET_ENV, "").strip():
            raise UsageError(f"give the endpoint's secret with --secret whsec_... (or set ${SECRET_ENV})")
        return list(_environment_secrets())
    secrets = list(given)
    for position, secret in enumerate(secrets, start=1):
        problem = _secret_problem(secret)
        if problem is not None:
            label = f"secret #{position}" if len(secrets) > 1 else "the secret"
            raise UsageError(f"{label}: {problem}")
    return secrets


def _environment_secrets() -> tuple[str, ...]:
    from carecycle_webhooks._config import secrets_from_environment
    from carecycle_webhooks._errors import WebhookConfigurationError

    try:
        return secrets_from_environment()
    except WebhookConfigurationError as error:
        problem = str(error)  # names the variable, never its value
    raise UsageError(problem)


def _secret_problem(secret: str) -> str | None:
    from carecycle_webhooks._errors import WebhookConfigurationError
    from carecycle_webhooks._verify import decode_secrets

    try:
        decode_secrets(secret)
    except WebhookConfigurationError as error:
        return str(error)  # never the secret itself
    return None


MAX_INPUT = 64 * 1024 * 1024
"""The most a command reads from one file or from standard input: far above any delivery
(the dispatcher's default limit is 10 MiB), and a bound when it is given an endless stream
(``/dev/zero``, a pipe that never ends)."""


def read_bytes(path: str, option: str) -> bytes:
    """The bytes of the file ``option`` names (``-``: standard input), at most `MAX_INPUT`.

    Raises:
        UsageError: The file cannot be read, or holds more than `MAX_INPUT` bytes.
    """
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with open(path, "rb") as file:  # noqa: PTH123 - pathlib is one more import for one call
                data = file.read(MAX_INPUT + 1)
    except OSError as error:
        raise UsageError(f"cannot read {option} {path}: {error.strerror or error}") from None
    if len(data) > MAX_INPUT:
        raise UsageError(
            f"{option} {path} holds more than {MAX_INPUT // (1024 * 1024)} MiB: not a webhook delivery"
        )
    return data


# C0 controls but the tab and the line feed, DEL, and C1 controls (8-bit CSI, OSC...).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character that a terminal would act on escaped (CRLF: a line end).

    For what a receiver sent (its status line, headers, body): a terminal would act on its
    control characters (move the cursor, rewrite the screen, set its title).
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text.replace("\r\n", "\n"))


def utc(timestamp: float) -> str:
    """Seconds since the epoch as a UTC date and time."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
