"""The ``carecycle-webhooks`` command: fire signed sample events, check captured deliveries.

Subcommands, one module each: ``send`` (sign an event and POST it to your endpoint, like
``stripe trigger``), ``verify`` (say exactly why a captured delivery does or does not
verify), ``schema`` (the events' JSON Schema), ``demo`` (a receiver on a loopback port,
fed every event) and ``secret`` (a new ``whsec_`` secret for local work). They share
``_common`` (exit codes, `UsageError`, inputs, wording) and ``_http`` (the POST); nothing
in this package imports this module back.

Only the standard library (and the library's stdlib-only ``_config``) is imported at the
top of these modules, so ``--help`` stays fast; pydantic, the models and the verifier
load inside the subcommands that use them. User mistakes end in a one-line message and
exit code 2, never a traceback, and no message shows a secret or a payload's values.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, NoReturn

from . import demo, schema, secret, send, verify
from ._common import CATALOG, EXIT_USAGE, PROG, SECRET_ENV, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["main"]

_COMMANDS = (send.COMMAND, verify.COMMAND, schema.COMMAND, demo.COMMAND, secret.COMMAND)

_EPILOG = f"""\
examples:
  {PROG} send customer.created --url http://localhost:8000/webhooks --secret whsec_...
  {PROG} verify --secret whsec_... --body-file body.json --headers-file headers.txt
  {PROG} schema call.completed > call.completed.schema.json
  {PROG} demo
  export {SECRET_ENV}="$({PROG} secret)"

The secret may also come from ${SECRET_ENV}, which keeps it out of your shell history.
Event types in the catalog: {", ".join(CATALOG)}.
Exit codes: 0 success, 1 the endpoint answered non-2xx or the delivery is invalid,
2 usage error, 3 the URL could not be reached.
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

        sys.stdout.write(f"{PROG} {version('carecycle-webhooks')}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: ``send``, ``verify``, ``schema``, ``demo`` and ``secret``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(
            "Fire signed careCycle sample events at your endpoint, check captured "
            "deliveries, print the events' JSON Schema, make a secret for local work.",
            88,
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        subparser = commands.add_parser(
            command.name,
            help=command.summary,
            description=textwrap.fill(command.description, 88),
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(subparser)
        subparser.set_defaults(run=command.run, parser=subparser)
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
