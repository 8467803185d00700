"""Order books: top of book, spread and sync state, kept live from diffs and REST snapshots.

    python examples/orderbook.py                      # embedded local exchange, until Ctrl-C
    python examples/orderbook.py --limit 100          # stop after 100 book updates
    python examples/orderbook.py --gaps 0.5           # drop a diff every 0.5 s: watch resyncs
    python examples/orderbook.py --live btcusdt       # real Binance spot

Each line shows one book that changed: its sync state (``syncing``, ``live``,
or ``resyncing`` while it serves its last good state, marked stale), the
update id, the best bid and ask (quantity @ price) and the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from decimal import Decimal
from pathlib import Path

import trio

from trio_feed import DEFAULT_REST_URL, OrderBooks, open_order_books
from trio_feed.binance import DEFAULT_BASE_URL, OrderBook, PriceLevel
from trio_feed.exchange import Faults, open_exchange

sys.path.insert(0, str(Path(__file__).parent))
from _common import EXCHANGE_RATE, run_example

DEFAULT_SYMBOLS = ["btcusdt", "ethusdt", "bnbusdt"]
#: Binance spot's REST budget per IP and minute (open_order_books' default weight_limit).
WEIGHT_LIMIT = 6000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("symbols", nargs="*", default=DEFAULT_SYMBOLS, help="symbols")
    parser.add_argument("--limit", type=int, default=None, help="stop after N book updates")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    parser.add_argument("--gaps", type=float, default=0.0, metavar="SECONDS",
                        help="embedded exchange only: drop a diff event every SECONDS")
    parser.add_argument("--live", action="store_true", help="real Binance spot (needs internet)")
    return parser.parse_args()


def plain(number: Decimal) -> str:
    return format(number.normalize(), "f")


def side(level: PriceLevel | None) -> str:
    return "-" if level is None else f"{plain(level.quantity)} @ {plain(level.price)}"


def describe(symbol: str, book: OrderBook) -> str:
    spread = book.spread()
    return (f"{symbol:10s} {book.state.value:9s} #{book.last_update_id or '-':<10}  "
            f"bid {side(book.best_bid()):28s} ask {side(book.best_ask()):28s} "
            f"spread {plain(spread) if spread is not None else '-'}"
            f"{'  (stale)' if book.stale and book.has_book else ''}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('ch') else 's'}"


def summary(books: OrderBooks, elapsed: float) -> str:
    parts = []
    for symbol, book in books.items():
        stats = book.statistics()
        parts.append(f"{symbol} {book.state.value} ({_count(stats.snapshots, 'snapshot')}, "
                     f"{_count(stats.gaps, 'gap')}, {_count(stats.refetches, 'refetch')})")
    total = books.statistics()
    return (f"-- {total.updates} updates in {elapsed:.2f} s, weight {total.weight_used}/min: "
            + ", ".join(parts) + "\n"
            "   (weight: REST request weight spent on depth snapshots in the last minute, 250 "
            f"per 5000-level snapshot, of the {WEIGHT_LIMIT} an IP may use; gaps: missing "
            "diffs, each one a resync from a new snapshot; refetches: snapshots too old to "
            "bridge the diffs)")


async def drop_diffs(faults: Faults, symbols: list[str], every: float) -> None:
    """The embedded exchange as a fault injector: a gap for each symbol in turn."""
    for index in range(sys.maxsize):
        await trio.sleep(every)
        faults.drop_depth(symbols[index % len(symbols)])


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        if args.live:
            base_url, rest_url = DEFAULT_BASE_URL, DEFAULT_REST_URL
        else:
            exchange = await stack.enter_async_context(open_exchange(rate=EXCHANGE_RATE))
            base_url, rest_url = exchange.base_url, exchange.rest_url
        books = await stack.enter_async_context(
            open_order_books(args.symbols, base_url=base_url, rest_url=rest_url))
        nursery = await stack.enter_async_context(trio.open_nursery())
        if args.gaps > 0 and not args.live:
            nursery.start_soon(drop_diffs, exchange.faults, args.symbols, args.gaps)
        shown: dict[str, tuple[object, int | None]] = {}
        seen = 0
        try:
            while args.limit is None or seen < args.limit:
                seen = await books.wait_updated(seen)
                for symbol, book in books.items():
                    key = (book.state, book.last_update_id)
                    if shown.get(symbol) != key:
                        shown[symbol] = key
                        if not args.quiet:
                            print(describe(symbol, book), flush=True)
        finally:
            print(summary(books, time.perf_counter() - started), flush=True)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(run_example(main, arguments,
                         target=DEFAULT_BASE_URL if arguments.live else "the local exchange"))
