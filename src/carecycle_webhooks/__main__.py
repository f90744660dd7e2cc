"""``python -m carecycle_webhooks``: the ``carecycle-webhooks`` command."""

from carecycle_webhooks._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
