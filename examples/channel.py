"""Copy: a reader task copies payloads into owned bytes and hands them over a channel.

    python examples/channel.py                # embedded local exchange, until Ctrl-C
    python examples/channel.py --limit 200    # stop after 200 events
    python examples/channel.py --live btcusdt@trade  # real Binance

The reader sends one batch of copies per receive chunk, so the channel hop is
paid once per chunk, not once per message.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args, run, run_example, target_of

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    sys.exit(run_example(run, args, "channel", target=target_of(args)))
