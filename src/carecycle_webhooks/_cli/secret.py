"""``carecycle-webhooks secret``: print a new endpoint secret for local work and tests.

The secret is made as `carecycle_webhooks.testing.generate_secret` makes one, in Svix's format
(``whsec_`` and 24 random bytes, base64), so that the library accepts it as it accepts a
real endpoint's. Production secrets come from the endpoint's page in careCycle.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ._common import EXIT_OK, PROG, SECRET_ENV, Command

if TYPE_CHECKING:
    import argparse

_EPILOG = f"""\
examples:
  {PROG} secret
  {PROG} secret --env >> .env
  export {SECRET_ENV}="$({PROG} secret)"

A Dispatcher() given no secret reads ${SECRET_ENV}, as send and verify do.
For local work and tests only: in production, use the secret shown on the endpoint's
page in careCycle (each endpoint has its own). Exit code: 0.
"""


def _add_arguments(secret: argparse.ArgumentParser) -> None:
    secret.add_argument(
        "--env",
        action="store_true",
        help=f"print it as {SECRET_ENV}=whsec_..., a line of a .env file",
    )


def _run(args: argparse.Namespace) -> int:
    from carecycle_webhooks._config import new_secret  # standard library only

    secret = new_secret()
    env: bool = args.env
    sys.stdout.write(f"{SECRET_ENV}={secret}\n" if env else f"{secret}\n")
    return EXIT_OK


COMMAND = Command(
    name="secret",
    summary="print a new whsec_ secret for local work",
    description="Print a new random endpoint secret in Svix's format (whsec_...), for local "
    f"work and tests; the library and the other commands read it from ${SECRET_ENV}.",
    epilog=_EPILOG,
    run=_run,
    add_arguments=_add_arguments,
)
