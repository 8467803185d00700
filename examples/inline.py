"""Borrow: parse every payload straight from the receive buffer, before the next read.

    python examples/inline.py                 # embedded local exchange, until Ctrl-C
    python examples/inline.py --limit 200     # stop after 200 events
    python examples/inline.py --live btcusdt@trade   # real Binance

The feed's connection task reads a chunk, decodes every message in it from
views lent by the receive buffer, releases them, and only then reads again;
your ``async for`` receives the owned events, a batch per chunk.  Nothing is
copied.  Reconnects, rotation and the rest are the same as in channel mode
(see examples/resilient.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args, run, run_example, target_of

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    sys.exit(run_example(run, args, "inline", target=target_of(args)))
