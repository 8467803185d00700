"""The ``trio-feed`` command (also ``python -m trio_feed``).

::

    trio-feed stream btcusdt@trade ethusdt@bookTicker [--mode inline|channel] [--limit N] [--json]
    trio-feed record STREAM... -o FILE [--duration S | --limit N] [--append] [--raw]
    trio-feed replay FILE [--speed 1|10|max] [--port P] [--exit-when-done]
    trio-feed stats FILE [--json]

``stream`` and ``record`` use an embedded local exchange unless ``--live``
(Binance spot) or ``--url`` (a base ``ws[s]://host:port``, or a full stream
URL) says otherwise.  Every error is one line on stderr, ``trio-feed: error:
...``, with exit status 2 for a usage error or a bad stream name and 1 for
anything else (unreachable URL, TLS failure, unreadable file, a connection
closed abnormally).  ``--debug`` shows the traceback instead.  Ctrl-C ends
any command quietly with status 0: it is how ``record`` and ``replay`` are
meant to be stopped.

Output goes to stdout (events, the replay URL, stats); progress and the
live status line go to stderr, the status line only when stderr is a
terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any, NoReturn

import attrs
import orjson
import trio

from .._errors import (
    ConnectionClosed,
    DecodeError,
    HandshakeError,
    InvalidStreamName,
    ProtocolError,
    TrioFeedError,
)
from ..binance import DEFAULT_BASE_URL, Event, combined_url, format_event, parse_stream
from ..binance._urls import parse_stream_url, raw_streams_url
from ..feed import open_feed
from ..recording import (
    RecordCounters,
    RecordingError,
    RecordingWriter,
    compute_stats,
    record,
)

__all__ = ["main"]

PROG = "trio-feed"
LIVE_BASE_URL = DEFAULT_BASE_URL
#: A lag further off than this means the event clock is not wall time (the
#: embedded exchange's simulated market, an old recording): not worth showing.
PLAUSIBLE_LAG_MS = 3_600_000


class CliError(Exception):
    """An error already phrased for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: every error is one clear line.
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# -- where the data comes from ----------------------------------------------------


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--live", action="store_true",
                       help=f"read real Binance spot streams ({LIVE_BASE_URL})")
    where.add_argument("--url", help="a base URL (ws[s]://host:port) or a full stream URL "
                                     "(.../ws/<stream> or .../stream?streams=...)")
    parser.add_argument("--raw", action="store_true",
                        help="connect to /ws/<streams> (bare payloads) instead of the combined "
                             "/stream endpoint")
    parser.add_argument("--seed", type=int, default=1,
                        help="embedded exchange: the market's seed (default 1)")
    parser.add_argument("--rate", type=_positive_float, default=200.0,
                        help="embedded exchange: market ticks per second (default 200)")
    parser.add_argument("--connect-timeout", type=_positive_float, default=10.0,
                        help="seconds allowed for TCP, TLS and the upgrade (default 10)")


def _is_full_url(url: str) -> bool:
    return parse_stream_url(url) is not None


def _streams_in_url(url: str) -> list[str]:
    parsed = parse_stream_url(url)
    return [] if parsed is None else [name for name in parsed.names if name]


def _stream_url(base: str, names: list[str], raw: bool) -> str:
    return raw_streams_url(names, base) if raw else combined_url(names, base)


def _check_streams(names: Sequence[str]) -> list[str]:
    for name in names:
        try:
            parse_stream(name)
        except InvalidStreamName as exc:
            raise CliError(f"invalid stream name: {exc}", 2) from None
    return list(names)


@contextlib.asynccontextmanager
async def _connect_to(args: argparse.Namespace) -> AsyncIterator[tuple[str, list[str]]]:
    """``(full URL, stream names)`` for the command's source, starting the exchange if needed."""
    names = _check_streams(args.streams)
    if args.url and not args.url.startswith(("ws://", "wss://")):
        raise CliError(f"--url must start with ws:// or wss://, got {args.url!r}", 2)
    if args.url and _is_full_url(args.url):
        if not names:
            names = _check_streams(_streams_in_url(args.url))
        args.target = args.url
        yield args.url, names
        return
    if not names:
        raise CliError("name at least one stream, e.g. 'btcusdt@trade'", 2)
    if args.live or args.url:
        base = LIVE_BASE_URL if args.live else args.url
        args.target = _stream_url(base, names, args.raw)
        yield args.target, names
        return
    from ..exchange import open_exchange  # not imported for the commands that need no server

    async with open_exchange(seed=args.seed, rate=args.rate) as exchange:
        args.target = _stream_url(exchange.base_url, names, args.raw)
        yield args.target, names


# -- the status line -----------------------------------------------------------------


class _StatusLine:
    """About once a second, rewrite one line on stderr (only when stderr is a terminal)."""

    def __init__(self, render: Callable[[float], str]) -> None:
        self.render = render
        self.enabled = sys.stderr.isatty()
        self.shown = False

    async def run(self) -> None:
        if not self.enabled:
            return
        last = time.monotonic()
        while True:
            await trio.sleep(1.0)
            now = time.monotonic()
            text = self.render(now - last)
            last = now
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self.shown = False


@contextlib.asynccontextmanager
async def _status_line(render: Callable[[float], str]) -> AsyncIterator[None]:
    status = _StatusLine(render)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(status.run)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    finally:
        status.clear()


class _Rate:
    def __init__(self) -> None:
        self.previous = 0

    def __call__(self, total: int, seconds: float) -> float:
        rate = (total - self.previous) / seconds if seconds > 0 else 0.0
        self.previous = total
        return rate


def _lag_text(lag_ms: float | None) -> str:
    if lag_ms is None:
        return "lag -"
    if abs(lag_ms) > PLAUSIBLE_LAG_MS:
        return "lag n/a (event clock is not wall time)"
    return f"lag {lag_ms:.0f} ms"


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# -- stream ---------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def event_to_dict(event: Event) -> dict[str, Any]:
    """The stable JSON form of an event: ``{"type": <class name>, <field>: <value>, ...}``.

    Prices stay exact strings (``Decimal`` values are written in plain
    notation); nested events (the all-market arrays) become dicts too.
    """
    out: dict[str, Any] = {"type": type(event).__name__}
    out.update(attrs.asdict(event, recurse=True))
    return out


async def _cmd_stream(args: argparse.Namespace) -> int:
    json_lines = args.json
    limit = args.limit
    count = 0
    lag: list[float | None] = [None]
    out = sys.stdout
    out_bytes = sys.stdout.buffer
    async with _connect_to(args) as (url, names):
        async with open_feed(names, mode=args.mode, url=url, reconnect=args.reconnect,
                             connect_timeout=args.connect_timeout) as feed:
            rate = _Rate()

            def render(seconds: float) -> str:
                stats = feed.statistics()
                return (f"{rate(stats.messages, seconds):,.0f} msg/s  {_lag_text(lag[0])}  "
                        f"reconnects {sum(stats.reconnects.values())}  "
                        f"drops {stats.dropped + stats.discarded}  missing {stats.missing}  "
                        f"({count:,} events)")

            async with _status_line(render):
                try:
                    async for event in feed:
                        count += 1
                        event_time = getattr(event, "event_time", None)
                        if type(event_time) is int:
                            lag[0] = time.time() * 1000.0 - event_time
                        if json_lines:
                            out_bytes.write(orjson.dumps(event_to_dict(event),
                                                         default=_json_default) + b"\n")
                            out_bytes.flush()
                        else:
                            out.write(format_event(event) + "\n")
                            out.flush()
                        if limit is not None and count >= limit:
                            break
                except ConnectionClosed as exc:
                    if exc.code != 1000:
                        raise
                    _note(f"{exc} (after {count} events)")
    return 0


# -- record ----------------------------------------------------------------------------


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _summary(args: argparse.Namespace, counters: RecordCounters, writer: RecordingWriter,
             started: float) -> None:
    _note(f"recorded {counters.messages:,} messages ({_size(writer.bytes_written)}) "
          f"from {args.target} to {args.output} in {time.monotonic() - started:.2f} s")


async def _cmd_record(args: argparse.Namespace) -> int:
    counters = RecordCounters()
    writer: RecordingWriter | None = None
    started = time.monotonic()
    closed: ConnectionClosed | None = None
    try:
        async with _connect_to(args) as (url, _names):
            writer = RecordingWriter(args.output, append=args.append)
            rate = _Rate()

            def render(seconds: float) -> str:
                return (f"{rate(counters.messages, seconds):,.0f} msg/s  "
                        f"{counters.messages:,} messages  "
                        f"{_size(writer.bytes_written if writer else 0)} written")

            async with _status_line(render):
                result = await record(url, writer, limit=args.limit, duration=args.duration,
                                      counters=counters, connect_timeout=args.connect_timeout)
            closed = result.closed
    except Exception:
        if writer is not None:
            writer.close()
            if counters.messages:
                _summary(args, counters, writer, started)
        raise
    except BaseException:  # cancelled by Ctrl-C: the way to end an open-ended recording
        if writer is not None:
            writer.close()
            _summary(args, counters, writer, started)
        raise
    assert writer is not None
    writer.close()
    _summary(args, counters, writer, started)
    if closed is not None:
        if closed.code != 1000:
            raise closed
        _note(str(closed))
    return 0


# -- replay ----------------------------------------------------------------------------


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"the speed must be positive, got {text!r}")
    return value


async def _cmd_replay(args: argparse.Namespace) -> int:
    from ..exchange import open_replay_server

    args.target = args.file
    manager = open_replay_server(args.file, speed=args.speed, host=args.host, port=args.port)
    try:
        server = await manager.__aenter__()
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: "
                       f"{exc.strerror or exc}") from None
    try:
        print(server.base_url, flush=True)
        speed = "max" if args.speed is None else f"{args.speed:g}x"
        shown = ", ".join(server.streams[:5]) + (", ..." if len(server.streams) > 5 else "")
        _note(f"replaying {_plural(server.messages, 'message')} of "
              f"{_plural(len(server.streams), 'stream')} "
              f"({shown or 'none named'}) at speed {speed}")
        if server.streams:
            _note(f"combined URL: {server.combined_url()}")
        rate = _Rate()

        def render(seconds: float) -> str:
            stats = server.statistics()
            return (f"{rate(stats.messages_sent, seconds):,.0f} msg/s  "
                    f"{stats.connections_open} clients  {stats.connections_finished} finished  "
                    f"{stats.messages_sent:,} sent")

        async with _status_line(render):
            if args.exit_when_done:
                await server.wait_done()
                stats = server.statistics()
                _note(f"all clients finished ({stats.connections_finished} connections, "
                      f"{stats.messages_sent:,} messages sent)")
            else:
                await trio.sleep_forever()
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)
    return 0


# -- stats -----------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _utc(t: int | None) -> str:
    if t is None:
        return "-"
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1e9))
    return f"{whole}.{t // 1_000_000 % 1000:03d}Z"


def _print_stats(stats: dict[str, Any]) -> None:
    rate = stats["rate"]
    gap = stats["largest_gap"]
    lines = [
        f"{stats['file']}: {_plural(stats['messages'], 'message')} on "
        f"{_plural(stats['streams_count'], 'stream')} "
        f"over {stats['duration_s']:.3f} s ({_utc(stats['first_t'])} to {_utc(stats['last_t'])})",
        f"rate per second: mean {rate['mean']:.1f}, min {rate['min']}, median {rate['median']:g}, "
        f"max {rate['max']} ({rate['buckets']} one-second buckets"
        + (f", busiest at +{rate['busiest_second']} s)" if rate["busiest_second"] is not None
           else ")"),
        f"largest gap between messages: {gap['seconds']:.3f} s"
        + (f" (before message #{gap['index']}, {gap['stream'] or 'no stream'})"
           if gap["index"] is not None else ""),
    ]
    if stats["torn_last_line"]:
        lines.append("the last line is torn (the recorder was killed mid-write): skipped")
    if stats["unparsable"]:
        lines.append(f"{stats['unparsable']} messages are not JSON")
    width = max([len(k) for k in stats["streams"]] + [6])
    lines.append("")
    lines.append(
        f"{'stream':<{width}}  {'messages':>9}  {'share':>6}  {'largest gap':>11}  id gaps"
    )
    total = stats["messages"] or 1
    for key, s in stats["streams"].items():
        gaps = "-" if not s["id_gaps"] else f"{s['id_gaps']} ({s['missing_ids']} ids missing)"
        lines.append(f"{key:<{width}}  {s['messages']:>9,}  {s['messages'] / total:>6.1%}  "
                     f"{s['largest_gap_s']:>9.3f} s  {gaps if s['id_gaps'] else '0'}")
        for example in s["gap_examples"]:
            lines.append(f"{'':<{width}}    {example['kind']} gap at message #{example['index']}: "
                         f"expected {example['expected']}, got {example['got']}")
    print("\n".join(lines))


async def _cmd_stats(args: argparse.Namespace) -> int:
    args.target = args.file
    stats = compute_stats(args.file)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        _print_stats(stats)
    return 0


# -- the command line ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Binance market-data streams on Trio: watch, record, replay, summarise.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each connection state change (reconnects, rotations) to stderr")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log each connection state change (reconnects, rotations) to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    stream = commands.add_parser("stream", help="print events, one line each",
                                 parents=[common])
    stream.add_argument("streams", nargs="*", metavar="STREAM", help="e.g. btcusdt@trade")
    stream.add_argument("--mode", choices=("inline", "channel"), default="inline",
                        help="the pipeline: borrow in one task (inline) or copy across two")
    stream.add_argument("--limit", type=_positive_int, help="stop after N events")
    stream.add_argument("--json", action="store_true", help="JSON lines instead of text")
    stream.add_argument("--reconnect", action="store_true",
                        help="reconnect when the connection ends (default: exit with its error)")
    _add_source_options(stream)
    stream.set_defaults(run=_cmd_stream)

    rec = commands.add_parser("record", help="write raw frames, with receive times, to a file",
                              parents=[common])
    rec.add_argument("streams", nargs="*", metavar="STREAM", help="e.g. btcusdt@trade")
    rec.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the recording (JSON lines; .zst compresses, with 'zstandard')")
    stop = rec.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive_float, metavar="S",
                      help="stop after S seconds")
    stop.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N messages")
    rec.add_argument("--append", action="store_true",
                     help="append to FILE instead of replacing it")
    _add_source_options(rec)
    rec.set_defaults(run=_cmd_record)

    replay = commands.add_parser("replay", help="serve a recording to any WebSocket client",
                                 parents=[common])
    replay.add_argument("file", metavar="FILE")
    replay.add_argument("--speed", type=_speed, default=1.0,
                        help="1 (recorded pacing, the default), 10, ... or max")
    replay.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    replay.add_argument("--port", type=int, default=0, help="listen port (default: any free)")
    replay.add_argument("--exit-when-done", action="store_true",
                        help="exit once a client has connected and every client has finished")
    replay.set_defaults(run=_cmd_replay)

    stats = commands.add_parser("stats", help="summarise a recording", parents=[common])
    stats.add_argument("file", metavar="FILE")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    stats.set_defaults(run=_cmd_stats)
    return parser


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _connect_failure(exc: OSError) -> str:
    """The most specific reason trio recorded for a failed connection attempt."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for leaf in _leaves(cause):
            if isinstance(leaf, OSError) and leaf.errno:
                return os.strerror(leaf.errno)
    return exc.strerror or str(exc)


def describe(exc: BaseException, target: str) -> tuple[str, int]:
    """One line for the user, and the exit status, for an exception a command raised."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, InvalidStreamName):
        return f"invalid stream name: {exc}", 2
    if isinstance(exc, RecordingError):
        return str(exc), 1
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS failure with {target}: certificate verify failed: {exc.verify_message}", 1
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure with {target}: {exc.reason or exc}", 1
    if isinstance(exc, trio.TooSlowError):
        return f"timed out connecting to {target}", 1
    if isinstance(exc, OSError):
        return f"cannot connect to {target}: {_connect_failure(exc)}", 1
    if isinstance(exc, HandshakeError):
        return f"{target} refused the WebSocket upgrade: {exc}", 1
    if isinstance(exc, ConnectionClosed):
        return f"{target}: {exc}", 1
    if isinstance(exc, (ProtocolError, DecodeError)):
        return f"{target} sent something invalid: {exc}", 1
    if isinstance(exc, (TrioFeedError, ValueError)):
        return str(exc), 1
    return f"{type(exc).__name__}: {exc}", 1


async def _run(args: argparse.Namespace) -> int:
    """Run the command; the first Ctrl-C cancels it cleanly (a second one interrupts)."""
    status: list[int] = []
    interrupted = False

    async def on_ctrl_c(scope: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_ctrl_c, nursery.cancel_scope)
        status.append(await args.run(args))
        nursery.cancel_scope.cancel()
    return 0 if interrupted or not status else int(status[0])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-feed`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format=f"{PROG}: %(message)s")
    args.target = args.url if getattr(args, "url", None) else "the local exchange"
    if getattr(args, "live", False):
        args.target = LIVE_BASE_URL
    try:
        return trio.run(_run, args)
    except BaseException as exc:
        error = exc
    # Not re-raised from inside the except clause: a leaf keeps its own __cause__
    # (which holds, for instance, why each connection attempt failed).
    leaves = _leaves(error)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 0
    if len(leaves) == 1:
        error = leaves[0]
    if isinstance(error, BrokenPipeError):
        # The reader (say `| head`) went away: stop quietly, and keep Python
        # from complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    if isinstance(error, Exception) and not args.debug:
        message, code = describe(error, args.target)
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return code
    raise error
