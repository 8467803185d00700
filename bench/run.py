"""The side-by-side benchmark: ``just bench`` (``python bench/run.py``).

What is measured, and how
-------------------------

* **Throughput.**  The blaster (``bench/blaster.py``, its own process)
  sends N pre-encoded messages as fast as the socket takes them, then Close.
  Each client (``bench/clients.py``) parses and counts every message; the
  count must equal N.  µs/msg is the client's elapsed time from "go" to the
  server's Close, divided by N.  Every client runs once per *round*, in a
  rotated order, and each figure is the median over rounds.  The floor,
  ``orjson.loads`` over the same payloads from memory, runs in every round
  too, and each client's ratio to the floor and to picows is computed round
  by round (same moment, same machine load) and the median of those ratios
  reported, so that load from other processes on this shared machine
  cancels out as far as it can.
* **Server headroom.**  ``null`` reads and discards with a blocking socket; it
  shows how far ahead of the clients the blaster stays.
* **Latency.**  The blaster paces workload ``a`` at a fixed rate and stamps
  each frame with ``monotonic_ns()`` as it hands it to the kernel; the
  handler subtracts that from its own clock after parsing.  The first 10% of
  each run is dropped (warm-up); percentiles are medians over runs.
* **Allocations, copy sweep, channel hop, buffer size**: ``bench/micro.py``,
  no sockets.
* ``--soak``: RSS before, during and after 10 million messages on the inline path.
* ``--smoke``: trio_feed's clients and the floor on tiny counts; exits 1 if
  any count is wrong.  It never looks at timings.

Run ``python bench/run.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import shlex
import ssl
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import blaster
import clients
import micro
import prototypes
import trustme
import workloads


@dataclass(frozen=True)
class Client:
    label: str
    run: Callable[..., clients.Outcome] | None  # None: the floor, measured in-process
    sink: Callable[[], clients.Sink]
    divisor: int = 1  # slow clients get N // divisor messages
    trio_feed: bool = False
    workloads: str = "abcde"  # the workloads this row runs on


CLIENTS: dict[str, Client] = {
    "floor": Client(
        "orjson.loads floor (no I/O)", None, clients.dicts_sink, trio_feed=True,
        workloads="abcdef",
    ),
    "floor_typed": Client(
        "Decoder.decode floor (no I/O)", None, clients.typed_sink, trio_feed=True,
        workloads="abcdef",
    ),
    "null": Client("blaster check: read and discard", clients.null_client, clients.dicts_sink),
    "raw": Client(
        "no framework: blocking socket + frame loop", clients.raw_client, clients.dicts_sink
    ),
    "inline": Client(
        "trio_feed inline, dicts", clients.tf_inline, clients.dicts_sink, trio_feed=True,
        workloads="abcdef",
    ),
    "inline_defaults": Client(
        "trio_feed run_inline, default options",
        lambda *a: clients.tf_inline(*a, validate_utf8=None),
        clients.dicts_sink,
        trio_feed=True,
        workloads="abf",
    ),
    "channel_defaults": Client(
        "trio_feed run_channel, default options",
        lambda *a: clients.tf_channel(*a, validate_utf8=None),
        clients.dicts_sink,
        trio_feed=True,
        workloads="abf",
    ),
    "feed_inline": Client(
        "open_feed typed events, mode=inline, defaults",
        lambda *a: clients.tf_feed(*a, mode="inline"),
        clients.typed_sink,
        trio_feed=True,
        workloads="f",
    ),
    "feed_channel": Client(
        "open_feed typed events, mode=channel (default)",
        lambda *a: clients.tf_feed(*a, mode="channel"),
        clients.typed_sink,
        trio_feed=True,
        workloads="f",
    ),
    "inline_utf8": Client(
        "trio_feed inline, dicts, UTF-8 checked",
        lambda *a: clients.tf_inline(*a, validate_utf8=True),
        clients.dicts_sink,
        trio_feed=True,
    ),
    "channel": Client(
        "trio_feed channel, dicts", clients.tf_channel, clients.dicts_sink, trio_feed=True
    ),
    "inline_typed": Client(
        "trio_feed inline, typed events", clients.tf_inline, clients.typed_sink, trio_feed=True
    ),
    "channel_typed": Client(
        "trio_feed channel, typed events", clients.tf_channel, clients.typed_sink, trio_feed=True
    ),
    "teaching": Client(
        "teaching row: one await send() per message",
        clients.teaching,
        clients.dicts_sink,
        divisor=10,
        trio_feed=True,
    ),
    "trio_websocket": Client(
        "trio-websocket get_message()", clients.trio_websocket, clients.dicts_sink, divisor=10
    ),
    "websockets_trio": Client(
        "websockets (trio)", clients.websockets_trio, clients.dicts_sink, divisor=4
    ),
    "websockets_asyncio": Client(
        "websockets (asyncio)", clients.websockets_asyncio, clients.dicts_sink, divisor=4
    ),
    "aiohttp": Client("aiohttp", clients.aiohttp_client, clients.dicts_sink),
    "picows": Client(
        "picows (lent memoryview)", clients.picows_client, clients.dicts_sink, workloads="abcdef"
    ),
}

#: Added by ``--prototypes``: proposed changes, measured outside the package.
PROTOTYPES: dict[str, Client] = {
    "proto_copies": Client(
        "prototype P2: parser calls handler with bytearray copies",
        prototypes.proto_copies,
        clients.dicts_sink,
    ),
}
CLIENTS.update(PROTOTYPES)

#: Added by ``--before``: the hot paths issue 4 replaced, swapped back into the
#: real pipelines, so that each change is measured against its predecessor in one run.
BEFORE: dict[str, Client] = {
    "before_inline": Client(
        "before: inline, messages() generator loop",
        prototypes.before_inline,
        clients.dicts_sink,
        trio_feed=True,
    ),
    "before_channel": Client(
        "before: channel, bytes(view) per message",
        prototypes.before_channel,
        clients.dicts_sink,
        trio_feed=True,
    ),
    "before_tls": Client(
        "before: inline over trio.SSLStream",
        prototypes.before_tls,
        clients.dicts_sink,
        trio_feed=True,
        workloads="e",
    ),
}
CLIENTS.update(BEFORE)

#: (row, the row it replaced, the workloads that compare them) for the before/after table.
CHANGES = (
    ("inline", "before_inline", "abcd"),
    ("channel", "before_channel", "abcd"),
    ("inline", "before_tls", "e"),
)

#: Messages per client run, per workload, before a client's divisor.
DEFAULT_N = {"a": 50_000, "b": 50_000, "c": 10_000, "d": 120, "e": 50_000, "f": 50_000}
SMOKE_N = {"a": 3000, "b": 3000, "c": 1000, "d": 10, "e": 3000, "f": 3000}

#: Rows that are references, not clients.
_NOT_CLIENTS = ("floor", "floor_typed", "null")

LATENCY_CLIENTS = ("raw", "inline", "channel", "picows")
LATENCY_RATES = (20_000, 100_000)


# -- the server ---------------------------------------------------------------------


@dataclass
class Server:
    plain_port: int
    tls_port: int
    client_tls: ssl.SSLContext

    def url(self, path: str, tls: bool) -> str:
        if tls:
            return f"wss://127.0.0.1:{self.tls_port}{path}"
        return f"ws://127.0.0.1:{self.plain_port}{path}"


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory(prefix="trio_feed-bench-") as folder:
        certfile, keyfile = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(certfile)
        cert.private_key_pem.write_to_path(keyfile)
        context = multiprocessing.get_context("spawn")
        control, child_end = context.Pipe()
        process = context.Process(
            target=blaster.serve, args=(child_end, certfile, keyfile), daemon=True
        )
        process.start()
        try:
            plain, tls = control.recv()
            client_tls = ssl.create_default_context()
            ca.configure_trust(client_tls)
            yield Server(plain, tls, client_tls)
        finally:
            control.close()
            process.join(5)
            if process.is_alive():
                process.terminate()


# -- throughput ----------------------------------------------------------------------


@dataclass
class Results:
    """Per (workload, client): one sample per round, in seconds per message."""

    rounds: int
    n: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # CPU time
    wall: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # wall clock
    # CPU time divided by that of a floor run made just before it: the ratios use these.
    norm: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)

    def us(self, w: str, key: str) -> float | None:
        """Median CPU µs per message."""
        samples = self.seconds.get((w, key))
        return statistics.median(samples) * 1e6 if samples else None

    def wall_us(self, w: str, key: str) -> float | None:
        samples = self.wall.get((w, key))
        return statistics.median(samples) * 1e6 if samples else None

    def ratios(self, w: str, key: str, w2: str, key2: str, invert: bool = False) -> list[float]:
        """Per round, ``t(w, key) / t(w2, key2)`` (inverted: the speed ratio), sorted.

        Each time is first divided by the floor measured just before it, so
        a ratio compares two runs each against its own moment's floor.
        """
        a, b = self.norm.get((w, key)), self.norm.get((w2, key2))
        if not a or not b or len(a) != len(b):
            return []
        return sorted((y / x) if invert else (x / y) for x, y in zip(a, b, strict=True))

    def ratio(self, w: str, key: str, w2: str, key2: str, invert: bool = False) -> float | None:
        """The median of :meth:`ratios`."""
        values = self.ratios(w, key, w2, key2, invert)
        return statistics.median(values) if values else None

    def ratio_text(self, w: str, key: str, w2: str, key2: str, invert: bool = False) -> str:
        """``median× (q1–q3)``: the per-round ratios' median and interquartile range."""
        values = self.ratios(w, key, w2, key2, invert)
        if not values:
            return "—"
        q1, q3 = values[len(values) // 4], values[(3 * len(values)) // 4]
        return f"{statistics.median(values):.2f}× ({q1:.2f}–{q3:.2f})"


def run_one(server: Server, key: str, workload: str, n: int) -> clients.Outcome:
    client = CLIENTS[key]
    sink = client.sink()
    if client.run is None:
        return clients.Outcome(*micro.floor(workload, n, sink))
    tls = workloads.WORKLOADS[workload][1]
    url = server.url(f"/blast?w={workload}&n={n}", tls)
    context = server.client_tls if tls else None
    if key == "null":
        return clients.null_client(url, n, context, sink, workload=workload)
    return client.run(url, n, context, sink)


def throughput(
    server: Server,
    keys: list[str],
    names: list[str],
    sizes: dict[str, int],
    rounds: int,
    log: Callable[[str], None],
) -> Results:
    results = Results(rounds)
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for w in names:
            for key in order:
                if w not in CLIENTS[key].workloads:
                    continue
                n = max(1, sizes[w] // CLIENTS[key].divisor)
                results.n[(w, key)] = n
                if (w, key) in results.errors:
                    continue
                try:
                    if key == "floor":
                        floor_cpu = 0.0  # normalised to 1 below
                    else:
                        floor_n = max(1, sizes[w] // 3)
                        floor_cpu = micro.floor(w, floor_n, clients.dicts_sink())[2] / floor_n
                    outcome = run_one(server, key, w, n)
                except Exception as exc:  # a peer that fails is reported, not fatal
                    results.errors[(w, key)] = f"{type(exc).__name__}: {exc}"
                    log(f"  {w} {key}: FAILED {results.errors[(w, key)]}")
                    if os.environ.get("BENCH_DEBUG"):
                        traceback.print_exc()
                    continue
                if outcome.count != n:
                    results.errors[(w, key)] = f"count {outcome.count} != {n}"
                    log(f"  {w} {key}: WRONG COUNT {outcome.count} != {n}")
                    continue
                results.seconds.setdefault((w, key), []).append(outcome.cpu_seconds / n)
                results.wall.setdefault((w, key), []).append(outcome.seconds / n)
                cpu = outcome.cpu_seconds / n
                results.norm.setdefault((w, key), []).append(cpu / floor_cpu if floor_cpu else 1.0)
        log(f"round {r + 1}/{rounds} done")
    # A client that failed in any round has no comparable paired samples.
    for k in results.errors:
        results.seconds.pop(k, None)
        results.wall.pop(k, None)
        results.norm.pop(k, None)
    return results


# -- latency -------------------------------------------------------------------------


def percentile(sorted_samples: list[float], q: float) -> float:
    return sorted_samples[min(len(sorted_samples) - 1, int(q * len(sorted_samples)))]


def latency(
    server: Server,
    keys: tuple[str, ...],
    rates: tuple[int, ...],
    seconds: float,
    runs: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    for rate in rates:
        n = int(rate * seconds)
        for key in keys:
            per_run = []
            for _ in range(runs):
                recorder = clients.LatencySink()
                url = server.url(f"/pace?n={n}&rate={rate}", False)
                outcome = CLIENTS[key].run(url, n, None, recorder.sink)  # type: ignore[misc]
                if outcome.count != n:
                    raise AssertionError(f"latency run {key}: count {outcome.count} != {n}")
                samples = sorted(recorder.samples[n // 10 :])
                per_run.append(
                    {
                        "p50": percentile(samples, 0.50),
                        "p99": percentile(samples, 0.99),
                        "p999": percentile(samples, 0.999),
                        "max": samples[-1],
                        "achieved": n / outcome.seconds,
                    }
                )
            rows.append(
                {
                    "rate": rate,
                    "key": key,
                    "n": n,
                    **{k: statistics.median(run[k] for run in per_run) for k in per_run[0]},
                }
            )
            log(f"  latency {key} @ {rate}/s: p99 {rows[-1]['p99']:.0f} µs")
    return rows


# -- soak ----------------------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def soak(server: Server, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Inline dicts on workload ``a`` for ``n`` messages; RSS sampled every million."""
    import orjson

    loads = orjson.loads
    marks: list[tuple[int, int]] = []
    seen = 0

    def sink(view: memoryview) -> None:
        nonlocal seen
        loads(view)
        seen += 1
        if seen % 1_000_000 == 0:
            marks.append((seen, rss_kib()))

    before = rss_kib()
    outcome = clients.tf_inline(server.url(f"/blast?w=a&n={n}", False), n, None, sink)
    after = rss_kib()
    log(f"  soak: {outcome.count} messages, RSS {before} -> {after} KiB")
    return {
        "n": n,
        "count": outcome.count,
        "seconds": outcome.seconds,
        "before": before,
        "marks": marks,
        "after": after,
    }


# -- reporting -----------------------------------------------------------------------


def environment(argv: list[str]) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for dist in (
        "trio_feed",
        "trio",
        "orjson",
        "trio-websocket",
        "websockets",
        "aiohttp",
        "picows",
        "attrs",
    ):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    return [
        f"- machine: `nproc` = {os.cpu_count()}, CPU `{cpu}`, {platform.system()} "
        f"{platform.release()}",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- libraries: {', '.join(versions)}",
        f"- command: `{shlex.join(['python', 'bench/run.py', *argv])}`",
        f"- load average at start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def throughput_tables(res: Results, keys: list[str], names: list[str]) -> list[str]:
    out = []
    for w in names:
        _, tls, description = workloads.WORKLOADS[w]
        out += [
            f"#### ({w}) {description}: mean payload {workloads.mean_size(w):,.0f} B"
            + (", TLS" if tls else ""),
            "",
            "| client | N | CPU µs/msg | msg/s per core | time ÷ floor | speed ÷ picows "
            "| CPU min–max µs | wall µs/msg |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for key in keys:
            label = CLIENTS[key].label
            if (w, key) in res.errors:
                out.append(
                    f"| {label} | {res.n[(w, key)]:,} | failed: {res.errors[(w, key)]} | | | | | |"
                )
                continue
            us = res.us(w, key)
            if us is None:
                continue
            samples = res.seconds[(w, key)]
            out.append(
                f"| {label} | {res.n[(w, key)]:,} | {us:,.2f} | {1e6 / us:,.0f} | "
                f"{res.ratio_text(w, key, w, 'floor')} | "
                f"{res.ratio_text(w, key, w, 'picows', invert=True)} | "
                f"{min(samples) * 1e6:,.2f}–{max(samples) * 1e6:,.2f} | "
                f"{fmt(res.wall_us(w, key), ',.2f')} |"
            )
        out.append("")
    out += [
        "#### Summary: CPU µs per message (median)",
        "",
        "| client | " + " | ".join(f"({w})" for w in names) + " |",
        "|---|" + "--:|" * len(names),
    ]
    for key in keys:
        out.append(
            f"| {CLIENTS[key].label} | "
            + " | ".join(fmt(res.us(w, key), ",.2f") for w in names)
            + " |"
        )
    return [*out, ""]


def targets(
    res: Results, lat: list[dict[str, Any]], alloc: dict[str, Any] | None, shrink: list[Any] | None
) -> list[str]:
    rows: list[tuple[str, str, bool | None]] = []

    def check(label: str, value: float | None, limit: float, at_most: bool, unit: str) -> None:
        if value is None:
            rows.append((label, "not measured", None))
            return
        ok = value <= limit if at_most else value >= limit
        rows.append((label, f"{value:.2f}{unit}", ok))

    check("inline dicts (a) ≤ 1.30× floor", res.ratio("a", "inline", "a", "floor"), 1.30, True, "×")
    check(
        "inline dicts (a) ≥ 1.15× picows' throughput",
        res.ratio("a", "inline", "a", "picows", invert=True),
        1.15,
        False,
        "×",
    )
    for w in ("a", "b", "c", "d"):
        check(
            f"channel ≤ 1.15× inline ({w})", res.ratio(w, "channel", w, "inline"), 1.15, True, "×"
        )
    check(
        "typed inline (a) ≤ 1.8× floor",
        res.ratio("a", "inline_typed", "a", "floor"),
        1.8,
        True,
        "×",
    )
    check(
        "typed inline (b) ≤ 1.8× floor",
        res.ratio("b", "inline_typed", "b", "floor"),
        1.8,
        True,
        "×",
    )
    check(
        "TLS (e) inline ≤ 1.5× plain floor", res.ratio("e", "inline", "a", "floor"), 1.5, True, "×"
    )
    for key in ("feed_channel", "feed_inline"):
        check(f"{key} typed (f) ≤ 2.5× floor", res.ratio("f", key, "f", "floor"), 2.5, True, "×")
        check(
            f"{key} typed (f) ≤ 1.25× Decoder floor",
            res.ratio("f", key, "f", "floor_typed"),
            1.25,
            True,
            "×",
        )
    check(
        "run_inline defaults (a) ≥ 1.0× picows' throughput",
        res.ratio("a", "inline_defaults", "a", "picows", invert=True),
        1.0,
        False,
        "×",
    )
    check(
        "run_inline defaults (a) ≤ 1.5× floor",
        res.ratio("a", "inline_defaults", "a", "floor"),
        1.5,
        True,
        "×",
    )
    check(
        "run_channel defaults ≤ 1.1× run_inline defaults (a)",
        res.ratio("a", "channel_defaults", "a", "inline_defaults"),
        1.1,
        True,
        "×",
    )
    check(
        "inline (a) ≥ 15× trio-websocket's throughput",
        res.ratio("a", "inline", "a", "trio_websocket", invert=True),
        15,
        False,
        "×",
    )
    check(
        "inline (a) ≥ 4× websockets-trio's throughput",
        res.ratio("a", "inline", "a", "websockets_trio", invert=True),
        4,
        False,
        "×",
    )
    for key in ("proto_copies",):
        if ("a", key) in res.seconds:
            label = CLIENTS[key].label
            check(f"{label}: (a) ≤ 1.30× floor", res.ratio("a", key, "a", "floor"), 1.30, True, "×")
            speed = res.ratio("a", key, "a", "picows", invert=True)
            check(f"{label}: (a) ≥ 1.15× picows' throughput", speed, 1.15, False, "×")
    p99 = next((r["p99"] for r in lat if r["key"] == "inline" and r["rate"] == 20_000), None)
    check("inline p99 ≤ 1 ms at 20k msg/s", p99, 1000, True, " µs")
    if alloc is not None and alloc.get("counter"):
        frame_only = "frame only (handler does nothing)"
        calls = alloc["counter"][frame_only]["calls"]
        net = alloc["tracemalloc"][frame_only]["net_bytes_per_msg"]
        rows.append(
            (
                "inline: zero allocations per frame beyond the parse result",
                f"{calls:.1f} allocator calls/frame (net growth {net:.2f} B/msg)",
                calls < 0.5,
            )
        )
    if shrink:
        before, peak, after = shrink[0][2], shrink[1][1], shrink[2][2]
        rows.append(
            (
                "receive buffer shrinks back after a 400 KB message",
                f"{before:,} B → {peak:,} B → {after:,} B",
                after <= 2 * before,
            )
        )
    for w in sorted({w for w, _ in res.wall}):
        # Wall clock here: the question is whether the server kept the clients waiting.
        null = res.wall_us(w, "null")
        client_times = [
            us
            for (w2, key) in res.wall
            if w2 == w and key not in _NOT_CLIENTS and (us := res.wall_us(w, key)) is not None
        ]
        if null is not None and client_times:
            headroom = min(client_times) / null
            rows.append(
                (
                    f"blaster not the bottleneck ({w}): read-and-discard ≥ 3× fastest client",
                    f"{headroom:.1f}× faster (wall clock)",
                    headroom >= 3,
                )
            )
    out = ["| target | measured | met? |", "|---|--:|:-:|"]
    for label, value, ok in rows:
        out.append(f"| {label} | {value} | {'—' if ok is None else ('yes' if ok else '**no**')} |")
    return [*out, ""]


def before_after_table(res: Results) -> list[str]:
    """Each replaced hot path against its replacement, from the same rounds."""
    out = [
        "| change | workload | before µs/msg | after µs/msg | after ÷ before (IQR) "
        "| before ÷ floor | after ÷ floor |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for new, old, names in CHANGES:
        for w in names:
            if res.us(w, old) is None or res.us(w, new) is None:
                continue
            floor_w = "a" if w == "e" else w  # TLS is compared with the plain floor
            out.append(
                f"| {CLIENTS[old].label} → {CLIENTS[new].label} | ({w}) | "
                f"{res.us(w, old):,.2f} | {res.us(w, new):,.2f} | "
                f"{res.ratio_text(w, new, w, old)} | "
                f"{fmt(res.ratio(w, old, floor_w, 'floor'), '.2f', '×')} | "
                f"{fmt(res.ratio(w, new, floor_w, 'floor'), '.2f', '×')} |"
            )
    return [*out, ""]


def latency_table(lat: list[dict[str, Any]]) -> list[str]:
    out = [
        "| client | paced rate | achieved msg/s | p50 µs | p99 µs | p99.9 µs | max µs |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in lat:
        out.append(
            f"| {CLIENTS[row['key']].label} | {row['rate']:,} | {row['achieved']:,.0f}"
            f" | {row['p50']:,.0f} | {row['p99']:,.0f} | {row['p999']:,.0f} | "
            f"{row['max']:,.0f} |"
        )
    return [*out, ""]


def micro_tables(
    sweep: list[dict[str, float]],
    hop: dict[str, float],
    alloc: dict[str, Any],
    shrink: list[Any],
    frames: dict[str, float],
) -> list[str]:
    cross = micro.crossovers(sweep)
    out = [
        "#### The frame path alone (workload a, fed from memory, handler does nothing)",
        "",
        "CPU µs per message, the minimum over 15 interleaved rounds of 200,000 messages in "
        "256 KiB chunks.",
        "",
        "| path | µs/msg |",
        "|---|--:|",
        *(f"| {name} | {us:.3f} |" for name, us in frames.items()),
        "",
        "#### Lend, copy or parse, by payload size (µs per message)",
        "",
        "*lend*: slice a view of the receive buffer and release it (`run_inline`); "
        "*lend + bytes(view)*: what `run_channel`'s reader does; *bytearray slice*: "
        "`buffer[a:b]`, an owned copy made without a view; *extra*: "
        "(lend + bytes − lend) ÷ loads.",
        "",
        "| payload B | orjson.loads | lend | lend + bytes(view) | bytearray slice "
        "| extra ÷ loads |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for row in sweep:
        out.append(
            f"| {row['size']:,} | {row['loads_us']:,.2f} | {row['lend_us']:.3f} | "
            f"{row['copy_us']:,.3f} | {row['slice_us']:,.3f} | "
            f"{100 * (row['copy_us'] - row['lend_us']) / row['loads_us']:.1f}% |"
        )
    out += [
        "",
        "Crossovers (each holds for every larger size in the sweep too): lending a view "
        "costs at least 20% less than a bytearray-slice copy from "
        f"{fmt_size(cross['lend_pays'])} up; `bytes(view)` adds less than 5% to a parse "
        f"from {fmt_size(cross['copy_under_5pct'])} up, less than 1% from "
        f"{fmt_size(cross['copy_under_1pct'])} up.",
    ]
    out += [
        "",
        "#### The channel hop, per message (trio memory channel between two tasks)",
        "",
        "| what | µs/msg |",
        "|---|--:|",
        f"| one `await send()` per message (buffer {clients.TEACHING_BUFFER}) | "
        f"{hop['one_per_send_us']:.2f} |",
        f"| one send per batch of 1000 | {hop['batched_us']:.3f} |",
        f"| a bare `trio.lowlevel.checkpoint()` | {hop['checkpoint_us']:.2f} |",
        f"| `bytes(view)` of a {len(workloads.payloads('a')[0])} B message | "
        f"{hop['copy_200B_us']:.3f} |",
        f"| `orjson.loads(view)` of the same message | {hop['loads_200B_us']:.3f} |",
        "",
    ]
    out += [
        "#### Allocations per message (workload a, `run_inline` + `FrameParser` fed "
        "from memory; the channel reader's copy loop without trio)",
        "",
    ]
    if alloc.get("counter"):
        out += ["| path | allocator calls/msg | bytes requested/msg |", "|---|--:|--:|"]
        for label, row in alloc["counter"].items():
            out.append(f"| {label} | {row['calls']:.2f} | {row['bytes']:,.0f} |")
        out.append("")
    out += ["| path (tracemalloc) | net growth B/msg | peak above chunk start B |", "|---|--:|--:|"]
    for label, row in alloc["tracemalloc"].items():
        out.append(
            f"| {label} | {row['net_bytes_per_msg']:.3f} | {row['peak_above_chunk_start']:,} |"
        )
    out += [
        "",
        "#### Receive buffer around one 400 KB message (`sys.getsizeof(parser._buf)`)",
        "",
        "| phase | peak B | at end B |",
        "|---|--:|--:|",
    ]
    for label, peak, end in shrink:
        out.append(f"| {label} | {peak:,} | {end:,} |")
    return [*out, ""]


def fmt_size(size: int | None) -> str:
    return "never (in the sweep)" if size is None else f"{size:,} B"


# -- main ----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="trio_feed clients + floor, tiny counts; exit 1 on a wrong count",
    )
    parser.add_argument(
        "--soak", action="store_true", help="also run 10 million messages inline and report RSS"
    )
    parser.add_argument("--soak-messages", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=7, help="0 skips the throughput table")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N")
    parser.add_argument("--clients", help="comma-separated subset of: " + ", ".join(CLIENTS))
    parser.add_argument("--workloads", default="abcdef")
    parser.add_argument(
        "--prototypes", action="store_true", help="add the proposed change in bench/prototypes.py"
    )
    parser.add_argument(
        "--before",
        action="store_true",
        help="add the hot paths issue 4 replaced (bench/prototypes.py), for a before/after table",
    )
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-micro", action="store_true")
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--markdown", help="also write the results (markdown) to this file")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    names = [w for w in args.workloads if w in workloads.WORKLOADS]
    if args.smoke:
        keys = [
            k
            for k, c in CLIENTS.items()
            if c.trio_feed and k not in PROTOTYPES and (k not in BEFORE or args.before)
        ]
        sizes = dict(SMOKE_N)
        rounds = 1
    else:
        keys = [
            k
            for k in CLIENTS
            if (k not in PROTOTYPES or args.prototypes) and (k not in BEFORE or args.before)
        ]
        sizes = {w: max(1, int(n * args.scale)) for w, n in DEFAULT_N.items()}
        rounds = args.rounds
    if args.clients:
        keys = [k for k in args.clients.split(",") if k in CLIENTS]
        for required in ("floor", "picows"):
            if required not in keys and not args.smoke:
                keys.insert(0, required)

    report = ["### Environment", "", *environment(argv), ""]
    lat: list[dict[str, Any]] = []
    alloc = shrink = None
    soaked = None
    with running_server() as server:
        if args.soak:  # first, so that its RSS baseline is the fresh process's
            soaked = soak(server, args.soak_messages, log)
        log(f"throughput: {rounds} rounds × {len(names)} workloads × {len(keys)} clients")
        res = throughput(server, keys, names, sizes, rounds, log)
        if not args.smoke and not args.no_latency:
            lat = latency(
                server, LATENCY_CLIENTS, LATENCY_RATES, args.latency_seconds, args.latency_runs, log
            )
    if not args.smoke and not args.no_micro:
        log("micro: frame path, copy sweep, hop, allocations, buffer")
        frames = micro.frame_path()
        sweep = micro.copy_sweep()
        hop = micro.hop_costs()
        alloc = micro.inline_allocations()
        shrink = micro.buffer_shrink()

    if args.smoke:
        report += [
            "Smoke run: correctness only (every count checked); timings on counts this "
            "small mean nothing.",
            "",
        ]
    if rounds:
        report += [
            f"### Throughput ({rounds} rounds)",
            "",
            "CPU µs/msg: median over rounds of the client process's CPU time per message. "
            "Ratios: every run is divided by an `orjson.loads` floor run made just before it; "
            "each cell is the median (interquartile range) over rounds of those normalised "
            "times, divided one by the other. *time ÷ floor* > 1 is slower than the floor; "
            "*speed ÷ picows* > 1 is faster than picows.",
            "",
            *throughput_tables(res, keys, names),
        ]
    if not args.smoke and (rounds or lat or alloc):
        report += ["### Targets", "", *targets(res, lat, alloc, shrink)]
    if rounds and any(key in keys for key in BEFORE):
        report += [
            "### Before and after, in the same rounds",
            "",
            "*after ÷ before*: median (interquartile range) over rounds of the two rows' "
            "floor-normalised times; < 1 is faster.",
            "",
            *before_after_table(res),
        ]
    if lat:
        report += [
            "### Latency, server send → handler after parse (paced workload a, "
            f"{args.latency_seconds:g} s per run, median of {args.latency_runs} runs)",
            "",
            *latency_table(lat),
        ]
    if alloc is not None and shrink is not None:
        report += ["### Without sockets", "", *micro_tables(sweep, hop, alloc, shrink, frames)]
    if soaked is not None:
        marks = ", ".join(f"{m // 1_000_000}M: {kib / 1024:.1f}" for m, kib in soaked["marks"])
        report += [
            "### Soak (inline dicts, workload a)",
            "",
            f"{soaked['count']:,} messages in {soaked['seconds']:.1f} s "
            f"({soaked['seconds'] / soaked['n'] * 1e6:.2f} µs/msg); RSS MiB before "
            f"{soaked['before'] / 1024:.1f}; at each million: {marks}; after "
            f"{soaked['after'] / 1024:.1f}",
            "",
        ]
    report.append(
        f"Finished in {time.perf_counter() - started:.0f} s; load average at end: "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    text = "\n".join(report)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(text + "\n")
    failed = bool(res.errors) or (soaked is not None and soaked["count"] != soaked["n"])
    if failed:
        log("FAILED: " + "; ".join(f"{w}/{k}: {e}" for (w, k), e in res.errors.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
