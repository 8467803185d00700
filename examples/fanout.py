"""Fan-out through Redis Streams: one publisher, two readers, a local Valkey server.

    python examples/fanout.py                      # local server and embedded exchange
    python examples/fanout.py --limit 1000         # each reader stops after 1000 events
    python examples/fanout.py --redis redis://host:6379   # an existing server

The publisher reads the embedded exchange once and writes every event into
Redis Streams (with book snapshots for the depth stream); the readers could be
on other machines.  The second reader joins late and rebuilds the order book
from the latest snapshot plus the stream.  Needs ``pip install "trio_feed[redis]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys

import trio

from trio_feed import TrioFeedError, open_feed
from trio_feed.binance import DepthUpdate, OrderBook, PartialDepth
from trio_feed.broker import Gap, local_server, open_redis_feed, open_redis_sink, publish
from trio_feed.exchange import open_exchange

STREAMS = ["btcusdt@trade", "btcusdt@depth@100ms"]


async def reader(url: str, name: str, limit: int, *, book: bool = False) -> None:
    events = gaps = 0
    order_book = OrderBook("btcusdt") if book else None
    async with open_redis_feed(url, STREAMS) as feed:
        async for item in feed:
            if isinstance(item, Gap):
                gaps += 1
                print(f"{name}: {item.describe()}", flush=True)
                continue
            events += 1
            if order_book is not None:
                if isinstance(item, PartialDepth):
                    order_book.receive_snapshot(item)
                elif isinstance(item, DepthUpdate):
                    order_book.receive_update(item)
            if events >= limit:
                break
        stats = feed.statistics()
    line = (f"-- {name}: {events} events from {stats.messages} entries, {gaps} gaps, "
            f"lag p50 {stats.lag_p50 or 0:.1f} ms")
    if order_book is not None:
        bid, ask = order_book.best_bid(), order_book.best_ask()
        line += f"; book {order_book.state.value} at #{order_book.last_update_id}"
        if bid and ask:
            line += f", bid {bid.quantity} @ {bid.price}, ask {ask.quantity} @ {ask.price}"
    print(line, flush=True)


async def main(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(local_server()).url
        async with open_exchange(seed=1, rate=200.0) as exchange, \
                open_feed(STREAMS, base_url=exchange.base_url, payloads=True) as feed, \
                open_redis_sink(url, rest_url=exchange.rest_url, snapshot_interval=1.0) as sink, \
                trio.open_nursery() as nursery:
            nursery.start_soon(publish, feed, sink)
            async with trio.open_nursery() as readers:
                readers.start_soon(reader, url, "reader 1", args.limit)
                await trio.sleep(1.5)  # the second one joins late
                readers.start_soon(functools.partial(
                    reader, url, "reader 2 (late, with book)", args.limit, book=True))
            stats = sink.statistics()
            print(f"-- publisher: {stats.events} events in {stats.entries} entries, "
                  f"{stats.snapshots} book snapshots, {stats.dropped_events} dropped, "
                  f"write p50 {stats.write_p50 or 0:.1f} ms", flush=True)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500, help="events per reader")
    parser.add_argument("--redis", help="a redis:// URL (default: start a local server)")
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        pass
    except (TrioFeedError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
