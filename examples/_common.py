"""What the two examples share: arguments, the exchange-or-live choice, the final line."""

from __future__ import annotations

import argparse
import contextlib
import time

from trio_feed import format_event, open_feed
from trio_feed.exchange import open_exchange

DEFAULT_STREAMS = ["btcusdt@trade", "btcusdt@bookTicker", "ethusdt@aggTrade", "btcusdt@depth@100ms"]
LIVE_BASE_URL = "wss://stream.binance.com:9443"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("streams", nargs="*", default=DEFAULT_STREAMS, help="stream names")
    parser.add_argument("--limit", type=int, default=None, help="stop after N events")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--live", action="store_true", help="read real Binance spot streams")
    where.add_argument("--url", help="a base URL (wss://host:port) or a full stream URL")
    return parser.parse_args()


async def run(args: argparse.Namespace, mode: str) -> None:
    count = 0
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        full_url = None
        if args.live:
            base_url = LIVE_BASE_URL
        elif args.url:
            base_url = args.url
            full_url = args.url if ("/ws" in args.url or "/stream" in args.url) else None
        else:
            exchange = await stack.enter_async_context(open_exchange(seed=1, rate=200.0))
            base_url = exchange.base_url
        feed = await stack.enter_async_context(
            open_feed(args.streams, mode=mode, base_url=base_url, url=full_url)
        )
        try:
            async for event in feed:
                count += 1
                if not args.quiet:
                    print(format_event(event), flush=True)
                if args.limit is not None and count >= args.limit:
                    break
        finally:
            elapsed = time.perf_counter() - started
            stats = feed.statistics()
            print(
                f"-- {mode}: {count} events, {stats.messages} messages in {elapsed:.2f} s "
                f"({count / elapsed if elapsed else 0:.0f} events/s), "
                f"{stats.copies} copies made, {stats.discarded} discarded",
                flush=True,
            )
