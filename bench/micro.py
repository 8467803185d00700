"""Measurements without sockets: the floor, the copy sweep, the hop, allocations, the buffer.

* :func:`floor` -- ``orjson.loads`` (or the typed decoder) over exactly the
  payloads a client receives, from a list of ``bytes``: the cost no client
  can beat.
* :func:`copy_sweep` -- for payload sizes from 64 B to 4 MB, the cost of
  ``bytes(view)`` (what the channel pipeline adds per message) against
  ``orjson.loads(view)``, both on a read-only view into a larger
  ``bytearray``, like a lent view.
* :func:`hop_costs` -- a trio memory channel between two tasks, one message
  per ``await send()`` against one batch per send.
* :func:`inline_allocations` -- allocator calls and bytes per message on the
  real ``run_inline`` + ``FrameParser`` code, fed from memory by
  :class:`ReplayConnection` (no socket, so the count is exact), plus
  tracemalloc's net growth and peak; and the same count for the loops
  ``FrameParser.deliver`` and ``copy_messages`` replaced.
* :func:`frame_path` -- CPU µs per message of the frame path alone (handler
  does nothing), fed from memory: ``run_inline`` with ``deliver()`` against
  the ``messages()`` loop it replaced, and the channel reader's
  ``copy_messages()`` against its ``bytes(view)`` loop.  No socket and no
  parse, so this is the least noisy before/after comparison the run makes.
* :func:`buffer_shrink` -- the receive buffer's allocated size before, during
  and after a 400 KB message.

Timings are medians of ``repeats`` runs of a loop sized to take ~20 ms.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import allocs
import orjson
import prototypes
import trio
import workloads

from trio_feed import ConnectionClosed, run_inline
from trio_feed.wire import FrameParser

CHUNK = 256 * 1024  # trio_feed's default receive size


def floor(workload: str, n: int, sink: Callable[[Any], object]) -> tuple[int, float, float]:
    """Parse the first ``n`` payloads of ``workload`` from memory.

    Returns ``(n, wall seconds, CPU seconds)``.
    """
    messages = workloads.message_list(workload, n)
    wall, cpu = time.perf_counter(), time.process_time()
    for message in messages:
        sink(message)
    return len(messages), time.perf_counter() - wall, time.process_time() - cpu


def _loops_for(fn: Callable[[], object], target: float) -> int:
    """How many calls of ``fn`` take about ``target`` seconds."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= target / 4:
            return max(1, int(loops * target / elapsed))
        loops *= 2


def _interleaved(
    fns: dict[str, Callable[[], object]], target: float = 0.01, repeats: int = 5
) -> dict[str, float]:
    """Median seconds per call of each function, the functions' loops interleaved."""
    loops = {name: _loops_for(fn, target) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / loops[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def _per_call(fn: Callable[[], object], target: float = 0.02, repeats: int = 5) -> float:
    return _interleaved({"fn": fn}, target, repeats)["fn"]


SWEEP_SIZES = [
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    32768,
    65536,
    131072,
    262144,
    524288,
    1048576,
    2097152,
    4194304,
]


def copy_sweep(sizes: list[int] = SWEEP_SIZES) -> list[dict[str, float]]:
    """Per payload size, µs per message for four ways of handing it over or parsing it.

    ``lend``: slice a view out of the receive buffer and release it (what
    ``run_inline`` does); ``copy``: ``bytes(view)`` of that view (what
    ``run_channel`` adds); ``slice``: ``buffer[a:b]``, a ``bytearray`` copy
    made without any view; ``loads``: ``orjson.loads(view)``.
    """
    rows = []
    loads = orjson.loads
    for size in sizes:
        payload = workloads.sized_depth(size)
        buffer = bytearray(b" " * 64 + payload + b" " * 64)
        whole = memoryview(buffer).toreadonly()
        a, b = 64, 64 + len(payload)
        view = whole[a:b]

        def lend(whole: memoryview = whole, a: int = a, b: int = b) -> None:
            v = whole[a:b]
            v.release()

        def copy(whole: memoryview = whole, a: int = a, b: int = b) -> None:
            v = whole[a:b]
            bytes(v)
            v.release()

        def slice_copy(buffer: bytearray = buffer, a: int = a, b: int = b) -> None:
            buffer[a:b]

        def parse(view: memoryview = view) -> None:
            loads(view)

        times = _interleaved({"lend": lend, "copy": copy, "slice": slice_copy, "loads": parse})
        view.release()
        whole.release()
        rows.append({"size": len(payload), **{f"{k}_us": v * 1e6 for k, v in times.items()}})
    return rows


def crossovers(sweep: list[dict[str, float]]) -> dict[str, int | None]:
    """The payload sizes from which each comparison holds for every larger size too."""

    def from_here_on(pred: Callable[[dict[str, float]], bool]) -> int | None:
        start = None
        for row in sweep:
            if pred(row):
                start = int(row["size"]) if start is None else start
            else:
                start = None
        return start

    return {
        # Lending a view is clearly (20%) cheaper than copying without one.
        "lend_pays": from_here_on(lambda r: r["slice_us"] > 1.2 * r["lend_us"]),
        # bytes(view) adds less than 5% / 1% to the parse.
        "copy_under_5pct": from_here_on(
            lambda r: r["copy_us"] - r["lend_us"] < 0.05 * r["loads_us"]
        ),
        "copy_under_1pct": from_here_on(
            lambda r: r["copy_us"] - r["lend_us"] < 0.01 * r["loads_us"]
        ),
    }


def hop_costs(messages: int = 50_000, batch: int = 1000, buffer: int = 128) -> dict[str, float]:
    """µs per message through a trio memory channel: one per send, or ``batch`` per send."""

    async def one_per_send() -> float:
        send, receive = trio.open_memory_channel[bytes](buffer)
        item = b"x" * 200

        async def producer() -> None:
            async with send:
                for _ in range(messages):
                    await send.send(item)

        async def consumer() -> None:
            async for _ in receive:
                pass

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(consumer)
        return time.perf_counter() - start

    async def batched() -> float:
        send, receive = trio.open_memory_channel[list[bytes]](16)
        item = b"x" * 200

        async def producer() -> None:
            async with send:
                for _ in range(messages // batch):
                    await send.send([item] * batch)

        async def consumer() -> None:
            async for items in receive:
                for _ in items:
                    pass

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(consumer)
        return time.perf_counter() - start

    async def checkpoint() -> float:
        start = time.perf_counter()
        for _ in range(messages):
            await trio.lowlevel.checkpoint()
        return time.perf_counter() - start

    def median_us(fn: Callable[[], Any]) -> float:
        return statistics.median(trio.run(fn) for _ in range(5)) / messages * 1e6

    view = memoryview(bytearray(workloads.payloads("a")[0] * 2))[: len(workloads.payloads("a")[0])]
    return {
        "one_per_send_us": median_us(one_per_send),
        "batched_us": median_us(batched),
        "checkpoint_us": median_us(checkpoint),
        "copy_200B_us": _per_call(lambda: bytes(view)) * 1e6,
        "loads_200B_us": _per_call(lambda: orjson.loads(view)) * 1e6,
    }


class ReplayConnection:
    """Stands in for ``Connection`` in ``run_inline``: a real ``FrameParser`` fed from memory.

    ``receive_more`` does what the real one does between chunks (check that
    no view is lent, then ``receive_data``) with the next pre-cut chunk, and
    raises ``ConnectionClosed`` when there is none.  ``on_chunk`` is called
    first, so a measurement can sample at chunk boundaries, where no view is lent.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        on_chunk: Callable[[], None] | None = None,
        **parser_options: Any,
    ) -> None:
        self.parser = FrameParser(validate_utf8=False, **parser_options)
        self._chunks = chunks
        self._on_chunk = on_chunk
        #: No pings come from memory: ``run_inline`` starts no pong task for it.
        self.answering_pings = True

    async def receive_more(self) -> None:
        self.parser.check_borrows()
        if self._on_chunk is not None:
            self._on_chunk()
        try:
            data = next(self._chunks)
        except StopIteration:
            raise ConnectionClosed(1000, "replay finished") from None
        self.parser.receive_data(data)

    async def fail(self, error: Exception) -> None:
        pass


def frame_chunks(workload: str, n: int, size: int = CHUNK) -> list[bytes]:
    """The bytes of ``n`` frames of ``workload``, cut into ``size``-byte reads."""
    stream = b"".join(workloads.encode_frame(p) for p in workloads.message_list(workload, n))
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def _replay_inline(
    chunks: list[bytes],
    handler: Callable[[memoryview], object],
    on_chunk: Callable[[], None] | None = None,
    *,
    before: bool = False,
) -> ReplayConnection:
    conn = ReplayConnection(iter(chunks), on_chunk)
    if before:  # the messages() loop that deliver() replaced
        conn.parser.deliver = prototypes.messages_loop(conn.parser)  # type: ignore[method-assign,assignment]
    try:
        trio.run(run_inline, conn, handler)  # type: ignore[arg-type]
    except ConnectionClosed:
        pass
    return conn


def inline_allocations(workload: str = "a", n: int = 200_000, warm: int = 4) -> dict[str, Any]:
    """Allocator calls and bytes per message on ``run_inline``, and tracemalloc's view.

    Sampled between chunk ``warm`` and the last chunk, so per-chunk costs
    (``receive_data``, the generator) are included, amortised.
    """
    chunks = frame_chunks(workload, n)
    loads = orjson.loads
    handlers: dict[str, Callable[[memoryview], object]] = {
        "frame only (handler does nothing)": lambda view: None,
        "frame + orjson.loads": lambda view: loads(view),
    }
    result: dict[str, Any] = {"messages": n, "counter": None, "tracemalloc": {}}
    counter = allocs.load()
    if counter is not None:
        result["counter"] = {}
        runs = [(label, handler, False) for label, handler in handlers.items()]
        runs.append(("before: frame only, messages() loop", handlers[FRAME_ONLY], True))
        for label, handler, before in runs:
            marks: list[tuple[int, int]] = []

            def mark(marks: list[tuple[int, int]] = marks) -> None:
                marks.append(counter.read())

            with counter:
                conn = _replay_inline(chunks, handler, mark, before=before)
            lent_per_chunk = conn.parser.messages_lent / len(chunks)
            first, last = marks[warm], marks[-1]
            messages = lent_per_chunk * (len(marks) - 1 - warm)
            result["counter"][label] = {
                "calls": (last[0] - first[0]) / messages,
                "bytes": (last[1] - first[1]) / messages,
            }
        # The channel reader's copy, without trio: the calls per message of each loop.
        for label, make in (
            ("channel reader: copy_messages()", lambda p: p.copy_messages),
            ("before: channel reader, bytes(view) loop", prototypes.bytes_view_loop),
        ):
            parser = FrameParser(validate_utf8=False)
            copy = make(parser)
            counted = 0
            with counter:
                for index, chunk in enumerate(chunks):
                    if index == warm:
                        start, counted = counter.read(), 0
                    parser.check_borrows()
                    parser.receive_data(chunk)
                    counted += len(copy())
                end = counter.read()
            result["counter"][label] = {
                "calls": (end[0] - start[0]) / counted,
                "bytes": (end[1] - start[1]) / counted,
            }
        # The parse result alone, for comparison: loads over the same payloads as bytes.
        payloads = workloads.message_list(workload, 50_000)
        with counter:
            mark_before = counter.read()
            for p in payloads:
                loads(p)
            mark_after = counter.read()
        result["counter"]["orjson.loads alone (bytes, no I/O)"] = {
            "calls": (mark_after[0] - mark_before[0]) / len(payloads),
            "bytes": (mark_after[1] - mark_before[1]) / len(payloads),
        }
    for label, handler in handlers.items():
        samples: list[tuple[int, int]] = []

        def sample(samples: list[tuple[int, int]] = samples) -> None:
            samples.append(tracemalloc.get_traced_memory())
            tracemalloc.reset_peak()

        tracemalloc.start()
        try:
            conn = _replay_inline(chunks, handler, sample)
        finally:
            tracemalloc.stop()
        messages = conn.parser.messages_lent * (len(samples) - 1 - warm) / len(chunks)
        current = [s[0] for s in samples]
        peaks = [samples[i + 1][1] - samples[i][0] for i in range(warm, len(samples) - 1)]
        result["tracemalloc"][label] = {
            "net_bytes_per_msg": (current[-1] - current[warm]) / messages,
            "peak_above_chunk_start": max(peaks),
        }
    return result


FRAME_ONLY = "frame only (handler does nothing)"


def frame_path(workload: str = "a", n: int = 200_000, rounds: int = 15) -> dict[str, float]:
    """CPU µs per message of each frame path, handler doing nothing: the minimum over rounds.

    The four paths run interleaved, round after round, over the same chunks
    (256 KiB, as a socket read returns them), so a disturbance from another
    process hits them all alike; the minimum is the cost without one.
    """
    chunks = frame_chunks(workload, n)

    def nothing(view: object) -> None:
        pass

    def inline(before: bool) -> Callable[[], int]:
        def run() -> int:
            return _replay_inline(chunks, nothing, before=before).parser.messages_lent

        return run

    def reader(make: Callable[[FrameParser], Callable[[], list[bytes]]]) -> Callable[[], int]:
        def run() -> int:
            parser = FrameParser(validate_utf8=False)
            copy = make(parser)
            for chunk in chunks:
                parser.check_borrows()
                parser.receive_data(chunk)
                copy()
            return parser.messages_lent

        return run

    paths = {
        "run_inline, deliver()": inline(False),
        "before: run_inline, messages() loop": inline(True),
        "channel reader, copy_messages()": reader(lambda p: p.copy_messages),
        "before: channel reader, bytes(view) loop": reader(prototypes.bytes_view_loop),
    }
    best = {name: float("inf") for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            started = time.process_time()
            count = run()
            best[name] = min(best[name], (time.process_time() - started) / count * 1e6)
    return best


def buffer_shrink() -> list[tuple[str, int]]:
    """Allocated size of the receive buffer around one ~400 KB message.

    A live feed reads a few KB at a time, so small messages arrive in 4 KiB
    reads before and after; the large message arrives in 256 KiB reads.
    """
    small = b"".join(workloads.encode_frame(p) for p in workloads.payloads("a")[:200])
    large = workloads.encode_frame(workloads.payloads("d")[0])
    phases = [
        ("small messages, 4 KiB reads", [small[i : i + 4096] for i in range(0, len(small), 4096)]),
        (
            "one 400 KB message, 256 KiB reads",
            [large[i : i + CHUNK] for i in range(0, len(large), CHUNK)],
        ),
        (
            "small messages again, 4 KiB reads",
            [small[i : i + 4096] for i in range(0, len(small), 4096)],
        ),
    ]
    parser = FrameParser(validate_utf8=False)
    out = []
    for label, chunks in phases:
        peak = 0
        for chunk in chunks:
            parser.receive_data(chunk)
            peak = max(peak, sys.getsizeof(parser._buf))
            for view in parser.messages():
                view.release()
        out.append((label, peak, sys.getsizeof(parser._buf)))
    return out  # type: ignore[return-value]
