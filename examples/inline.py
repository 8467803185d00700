"""Borrow: parse every payload straight from the receive buffer, in your own task.

    python examples/inline.py                 # embedded local exchange, until Ctrl-C
    python examples/inline.py --limit 200     # stop after 200 events
    python examples/inline.py --live btcusdt@trade   # real Binance

No task is started: each ``async for`` step reads a chunk, decodes every
message in it from lent views, releases them, and hands out owned events.
"""

import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args, run

from trio_feed import TrioFeedError

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    try:
        trio.run(run, args, "inline")
    except KeyboardInterrupt:
        pass
    except (TrioFeedError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
