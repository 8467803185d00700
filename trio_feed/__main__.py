"""``python -m trio_feed``: the same as the ``trio-feed`` command (see ``trio_feed.cli``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
