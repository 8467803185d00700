"""What the examples share: arguments, the exchange-or-live choice, the summary, and how
they end: Ctrl-C stops them quietly (the summary still printed), and an error is one line
naming the host, with the ``trio-feed`` command's exit status (2 for a bad stream name,
1 for anything else), worded by the command's own ``describe``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from trio_feed import format_event, open_feed
from trio_feed.binance import DEFAULT_BASE_URL
from trio_feed.cli import describe
from trio_feed.exchange import open_exchange

DEFAULT_STREAMS = ["btcusdt@trade", "btcusdt@bookTicker", "ethusdt@aggTrade", "btcusdt@depth@100ms"]
LIVE_BASE_URL = DEFAULT_BASE_URL
#: The embedded exchange's pace, in market ticks per second: slow enough to read.
EXCHANGE_RATE = 200.0


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("streams", nargs="*", default=DEFAULT_STREAMS, help="stream names")
    parser.add_argument("--limit", type=int, default=None, help="stop after N events")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--live", action="store_true", help="read real Binance spot streams")
    where.add_argument("--url", help="a base URL (wss://host:port) or a full stream URL")
    return parser.parse_args()


def target_of(args: argparse.Namespace) -> str:
    """Where the example connects, as error messages name it."""
    if getattr(args, "live", False):
        return LIVE_BASE_URL
    return getattr(args, "url", None) or "the local exchange"


def pace_legend(args: argparse.Namespace) -> str:
    """What the events/s figure measures."""
    if getattr(args, "live", False):
        return "events/s: Binance's own rate for these streams"
    if getattr(args, "url", None):
        return "events/s: the rate the server sends"
    return (f"events/s: the embedded exchange's pace, {EXCHANGE_RATE:g} market ticks/s, "
            "each can give an event on every stream, not the feed's speed")


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
            exchange = await stack.enter_async_context(open_exchange(rate=EXCHANGE_RATE))
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
            print(f"   ({pace_legend(args)}; copies: 0 when parsed in place; discarded: read "
                  "but not handed out, as the feed closed at --limit or Ctrl-C)", flush=True)


async def _until_ctrl_c(main: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    """``main(*args)``; the first Ctrl-C cancels it, so its ``finally`` blocks still run."""
    result: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def stop_on_ctrl_c() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop_on_ctrl_c)
        result.append(await main(*args))
        nursery.cancel_scope.cancel()
    return result[0] if result else None


def _is_ctrl_c(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def run_example(main: Callable[..., Awaitable[Any]], *args: Any, target: str) -> int:
    """Run ``main(*args)`` under trio as ``trio-feed`` runs a command; return the exit status.

    Ctrl-C: status 0, no traceback.  An error: one line on stderr, ``error:
    <what describe() says>``, and its status.  ``main`` may return a status.
    """
    try:
        result = trio.run(_until_ctrl_c, main, args)
    except BaseException as exc:
        if _is_ctrl_c(exc):  # a second Ctrl-C, while the first was being handled
            return 0
        if not isinstance(exc, Exception):
            raise
        message, code = describe(exc, target)
        print(f"error: {message}", file=sys.stderr, flush=True)
        return code
    return int(result) if isinstance(result, int) else 0
