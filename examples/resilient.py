"""Resilience: a feed that survives a schedule of faults, and says so in its statistics.

    python examples/resilient.py              # embedded exchange, about 12 s of faults
    python examples/resilient.py --mode inline
    python examples/resilient.py --backfill   # the same faults, every gap filled over REST
    python examples/resilient.py --live       # real Binance: no faults, statistics every 2 s

The embedded exchange runs one shared market (trade ids continue across
connections), and a fault task breaks things on a schedule: an abrupt TCP
reset, a clean FIN, a server that goes silent, a ``serverShutdown`` notice,
refused connections and a 1011 close.  The feed reconnects, rotates and
keeps counting; at the end the script checks that every trade id was either
delivered exactly once or reported missing.  With ``--backfill`` the feed
also fetches what each gap skipped from the exchange's REST trade history
(``open_feed(backfill=True)``), and the check is stricter: nothing missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from trio_feed import open_feed
from trio_feed.binance import Trade
from trio_feed.exchange import open_exchange

sys.path.insert(0, str(Path(__file__).parent))
from _common import LIVE_BASE_URL, run_example

LEGEND = ("   (missing: ids the exchange sent that never arrived, on every stream with "
          "consecutive ids (trades, book updates), lost while a connection was down: counted, "
          "not replayed; the checks below count the trade ids alone; duplicates: messages "
          "that arrived twice, as both connections of a rotation deliver for a moment: "
          "dropped; queued: read, not yet handed out)")
BACKFILL_LEGEND = ("   (back-filled: trade ids a gap skipped, fetched from the exchange's REST "
                   "trade history and handed out in order before the stream's later trades; "
                   "missing: what no fill could fetch, 0 here)")
STREAMS = ["btcusdt@trade", "ethusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]


async def faults(exchange, say) -> None:  # type: ignore[no-untyped-def]
    schedule = [
        (1.5, "reset the TCP connection (abrupt)", lambda: exchange.drop_connections(abrupt=True)),
        (3.0, "end the TCP connection without a Close (clean)", exchange.drop_connections),
        (4.5, "stop sending anything, keep the connection open", _pause(exchange, True)),
        (6.5, "send again", _pause(exchange, False)),
        (7.5, "send serverShutdown", exchange.announce_shutdown),
        (9.0, "refuse the next 2 connections, then close with 1011", _refuse_then_close(exchange)),
    ]
    start = trio.current_time()
    for at, what, action in schedule:
        await trio.sleep_until(start + at)
        say(f"FAULT: {what}")
        await action()


def _pause(exchange, pause: bool):  # type: ignore[no-untyped-def]
    async def act() -> None:
        if pause:
            exchange.pause_sending()  # the feed's watchdog (stale_after=1 s here) notices
        else:
            exchange.resume_sending()
    return act


def _refuse_then_close(exchange):  # type: ignore[no-untyped-def]
    async def act() -> None:
        exchange.refuse_connections(2)
        await exchange.close_connections(1011, "internal error")
    return act


def show(feed, say) -> None:  # type: ignore[no-untyped-def]
    s = feed.statistics()
    say(f"events {s.events:6,}  connections {s.connections}  reconnects {dict(s.reconnects)}  "
        f"rotations {s.rotations}  stale {s.stale}  missing {s.missing}  "
        f"duplicates {s.duplicates}  queued {s.queued}")


async def main(args: argparse.Namespace) -> int:
    started = trio.current_time()

    def say(text: str) -> None:
        print(f"[{trio.current_time() - started:5.1f}s] {text}", flush=True)

    if args.live:
        async with open_feed(STREAMS, mode=args.mode, base_url=LIVE_BASE_URL) as feed:
            with trio.move_on_after(args.duration):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, feed, None)
                    while True:
                        await trio.sleep(2)
                        show(feed, say)
        return 0

    trades: dict[str, list[int]] = {"btcusdt@trade": [], "ethusdt@trade": []}
    async with open_exchange(seed=7, rate=200, shared_market=True) as exchange:
        async with open_feed(STREAMS, mode=args.mode, base_url=exchange.base_url,
                             stale_after=1.0, backoff_initial=0.1, backoff_cap=1.0,
                             healthy_after=0.5, backfill=args.backfill,
                             rest_url=exchange.rest_url) as feed:
            with trio.move_on_after(args.duration):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, feed, trades)
                    nursery.start_soon(faults, exchange, say)
                    while True:
                        await trio.sleep(1)
                        show(feed, say)
        stats = feed.statistics()
    show(feed, say)
    ok = True
    for name, ids in trades.items():
        missing = stats.streams[name].missing if name in stats.streams else 0
        span = ids[-1] - ids[0] + 1 if ids else 0
        exact = len(ids) == len(set(ids)) == span - missing and ids == sorted(ids)
        if args.backfill:
            exact &= missing == 0
        ok &= exact
        say(f"{name}: {len(ids)} delivered + {missing} reported missing = {span} ids "
            f"({'exact' if exact else 'MISMATCH'})")
    total = stats.events + stats.duplicates + stats.dropped + stats.conflated + stats.discarded
    read = stats.messages + stats.backfilled
    if args.backfill:
        say(f"back-fill: {stats.backfilled} trades fetched over REST in "
            f"{len(stats.filled_ranges)} ranges, {stats.backfill_weight} weight, slowest fill "
            f"{stats.fill_latency_max or 0:.2f} s; {len(stats.missing_ranges)} ranges left")
    say(f"accounting: {stats.messages} messages read + {stats.backfilled} back-filled = "
        f"{total} handed out or counted ({'exact' if total == read else 'MISMATCH'})")
    print(BACKFILL_LEGEND if args.backfill else LEGEND, flush=True)
    return 0 if ok and total == read else 1


async def _drain(feed, trades) -> None:  # type: ignore[no-untyped-def]
    async for event in feed:
        if trades is not None and isinstance(event, Trade):
            trades[event.stream].append(event.trade_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("channel", "inline"), default="channel")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds to run")
    parser.add_argument("--live", action="store_true", help="real Binance, no faults")
    parser.add_argument("--backfill", action="store_true",
                        help="fetch what each gap skipped over REST (open_feed(backfill=True))")
    parser.add_argument("--verbose", action="store_true", help="log every state change")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.ERROR,
                        format="    log: %(message)s")
    sys.exit(run_example(main, arguments,
                         target=LIVE_BASE_URL if arguments.live else "the local exchange"))
