"""The commands: ``stream``, ``record``, ``replay`` and ``stats``.

Each ``add_<command>`` adds its subparser (see ``_main.build_parser``) and
sets ``run`` to its coroutine, which gets the parsed arguments and returns
the exit status.  ``args.screen`` (a :class:`~._status.Screen`) is where
every command writes; ``args.target`` names, in error messages, where the
command connects.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from typing import Any

import attrs
import orjson
import trio

from .._errors import ConnectionClosed, lone_exception
from ..binance import DEFAULT_BASE_URL, Event, combined_url, format_event, parse_stream
from ..binance._limits import MARKETS, USDM_FUTURES, venue_named
from ..binance._urls import parse_stream_url, raw_streams_url, routed_url
from ..feed import Feed, FeedStatistics, open_feed
from ..recording import RecordCounters, RecordingWriter, compute_stats, record
from ._errors import CliError, check_streams
from ._names import kinds_help
from ._status import Rates, Screen, pack, size_text, status_region

__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_SEED",
    "LIVE_BASE_URL",
    "add_record",
    "add_replay",
    "add_stats",
    "add_stream",
    "event_to_dict",
    "open_feeds",
]

LIVE_BASE_URL = DEFAULT_BASE_URL
#: The library's defaults, so that ``trio-feed stream`` and ``open_feed`` /
#: ``open_exchange`` behave alike (tests/cli checks they agree).
DEFAULT_MODE = "channel"
DEFAULT_SEED = 0
#: Slower than ``open_exchange``'s own 1000 ticks/s: lines a person can follow.
DEFAULT_RATE = 200.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: A lag further off than this means the event clock is not wall time (a
#: simulated market, an old recording): not worth showing.
PLAUSIBLE_LAG_MS = 3_600_000


# -- argument types -------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


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


def _add_status_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-status", dest="status", action="store_false",
                        help="no live status lines on stderr (shown only when stderr is a "
                             "terminal)")


# -- where the data comes from ----------------------------------------------------------


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--live", action="store_true",
                       help=f"read real Binance streams ({LIVE_BASE_URL} for spot, "
                            f"{USDM_FUTURES.base_url} for --market usdm)")
    parser.add_argument("--market", choices=sorted(MARKETS), default="spot",
                        help="spot (the default) or usdm (USD-M futures: its stream names, "
                             "and each stream on its route, /public or /market)")
    where.add_argument("--url", help="a base URL (ws[s]://host:port) or a full stream URL "
                                     "(.../ws/<stream> or .../stream?streams=...); default: "
                                     "an embedded local exchange")
    parser.add_argument("--raw", action="store_true",
                        help="connect to /ws/<streams> (bare payloads) instead of the combined "
                             "/stream endpoint")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="embedded exchange: the market's seed (default: %(default)s)")
    parser.add_argument("--rate", type=positive_float, default=DEFAULT_RATE,
                        help="embedded exchange: market ticks per second (default: "
                             "%(default)g, a pace to read by; open_exchange's own is 1000)")
    parser.add_argument("--connect-timeout", type=positive_float,
                        default=DEFAULT_CONNECT_TIMEOUT, metavar="S",
                        help="seconds allowed for TCP, TLS and the upgrade "
                             "(default: %(default)g)")


def _is_full_url(url: str) -> bool:
    return parse_stream_url(url) is not None


def _streams_in_url(url: str) -> list[str]:
    parsed = parse_stream_url(url)
    return [] if parsed is None else [name for name in parsed.names if name]


def _stream_urls(base: str, names: list[str], raw: bool, market: str) -> list[str]:
    """One URL per route the streams need (spot: one; USD-M: ``/public``, ``/market``)."""
    venue = venue_named(market)
    by_route: dict[str, list[str]] = {}
    for name in names:
        by_route.setdefault(venue.route(parse_stream(name, market).kind), []).append(name)
    build = raw_streams_url if raw else combined_url
    return [build(group, routed_url(base, route), market=market)
            for route, group in by_route.items()]


@contextlib.asynccontextmanager
async def _connect_to(args: argparse.Namespace) -> AsyncIterator[tuple[list[str], list[str]]]:
    """``(full URLs, stream names)`` for the command's source, starting the exchange if needed.

    There is one URL per route the streams need: one on spot, and on USD-M one
    for ``/public`` and one for ``/market`` when the streams need both.
    """
    market = args.market
    names = check_streams(args.streams, market)
    if args.url and not args.url.startswith(("ws://", "wss://")):
        raise CliError(f"--url must start with ws:// or wss://, got {args.url!r}", 2)
    if args.url and _is_full_url(args.url):
        if not names:
            names = check_streams(_streams_in_url(args.url), market)
        args.target = args.url
        yield [args.url], names
        return
    if not names:
        raise CliError("name at least one stream, e.g. 'btcusdt@trade'", 2)
    if args.live or args.url:
        base = venue_named(market).base_url if args.live else args.url
        urls = _stream_urls(base, names, args.raw, market)
        args.target = " and ".join(urls)
        yield urls, names
        return
    from ..exchange import open_exchange  # not imported for the commands that need no server

    async with open_exchange(seed=args.seed, rate=args.rate, market=market) as exchange:
        urls = _stream_urls(exchange.base_url, names, args.raw, market)
        args.target = " and ".join(urls)
        args.exchange_rest_url = exchange.rest_url
        yield urls, names


# -- what the status region says -----------------------------------------------------------


def _lag_text(p50: float | None, p99: float | None) -> str:
    if p50 is None:
        return "lag -"
    if abs(p50) > PLAUSIBLE_LAG_MS:
        return "lag n/a"  # the event clock is not wall time
    return f"lag {p50:.0f} ms" + (f" (p99 {p99:.0f})" if p99 is not None else "")


def _connections_text(open_now: int, expected: int) -> str:
    if open_now == expected:
        state = "open"
    elif open_now > expected:
        state = "open (rotating)"
    else:
        state = "open, reconnecting" if open_now else "reconnecting"
    noun = "connection" if expected == 1 else "connections"
    return f"{open_now}/{expected} {noun} {state}"


def stream_status(stats: FeedStatistics, *, expected: int, events: int, limit: int | None,
                  rates: Rates, seconds: float, width: int) -> list[str]:
    """The status lines of ``stream``: connections, rates, lag, losses; then msg/s per stream."""
    gaps = sum(s.gaps for s in stats.streams.values())
    shown = f"{events:,}" if limit is None else f"{events:,}/{limit:,}"
    first = " · ".join([
        _connections_text(stats.connections, expected),
        f"{shown} events",
        f"{rates('*', stats.messages, seconds):,.0f} msg/s",
        _lag_text(stats.lag_p50, stats.lag_p99),
        f"reconnects {sum(stats.reconnects.values())}",
        f"drops {stats.dropped + stats.conflated}",
        f"gaps {gaps} ({stats.missing} missing)",
    ])
    per_stream = [f"{name} {rates(name, s.messages, seconds):,.0f}/s"
                  for name, s in sorted(stats.streams.items())]
    return [first, *pack(per_stream, width=width - 1, rows=2)]


# -- stream ------------------------------------------------------------------------------


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


def add_stream(commands: Any, common: argparse.ArgumentParser) -> None:
    stream = commands.add_parser(
        "stream", help="print events, one line each", parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=kinds_help(),
        description="Print the events of Binance streams, one line each (or JSON lines).")
    stream.add_argument("streams", nargs="*", metavar="STREAM", help="e.g. btcusdt@trade")
    stream.add_argument("--mode", choices=("inline", "channel"), default=DEFAULT_MODE,
                        help="the pipeline: borrow in one task (inline) or copy across two "
                             "(channel) (default: %(default)s)")
    stream.add_argument("--limit", type=positive_int, metavar="N", help="stop after N events")
    stream.add_argument("--json", action="store_true",
                        help="JSON lines instead of text (no status lines)")
    stream.add_argument("--reconnect", action="store_true",
                        help="keep (re)connecting, the first connection included, when one "
                             "fails or ends (default: exit with its error)")
    _add_source_options(stream)
    _add_status_option(stream)
    stream.set_defaults(run=run_stream)


async def run_stream(args: argparse.Namespace) -> int:
    screen: Screen = args.screen
    json_lines = args.json
    limit = args.limit
    count = 0
    feed_ref: list[Feed] = []
    expected = [1]
    started = time.monotonic()
    rates = Rates()

    def render(seconds: float) -> list[str]:
        if not feed_ref:
            return [f"connecting to {args.target} ({time.monotonic() - started:.0f} s)"]
        return stream_status(feed_ref[0].statistics(), expected=expected[0], events=count,
                             limit=limit, rates=rates, seconds=seconds, width=screen.width())

    async with _connect_to(args) as (urls, names):
        async with status_region(screen, render):
            async with open_feeds(urls, names, args, mode=args.mode,
                                  reconnect=args.reconnect,
                                  retry_first_connect=args.reconnect) as feed:
                expected[0] = max(1, feed.statistics().connections)
                feed_ref.append(feed)
                try:
                    async for event in feed:
                        count += 1
                        if json_lines:
                            screen.write_bytes(orjson.dumps(event_to_dict(event),
                                                            default=_json_default) + b"\n")
                        else:
                            screen.write(format_event(event) + "\n")
                        if limit is not None and count >= limit:
                            break
                except ConnectionClosed as exc:
                    if exc.code != 1000:
                        raise
                    screen.note(f"{exc} (after {count} events)")
    return 0


@contextlib.asynccontextmanager
async def open_feeds(urls: list[str], names: list[str], args: argparse.Namespace,
                     **options: Any) -> AsyncIterator[Feed]:
    """The command's feed: on exactly ``urls[0]``, or on each route when there are several.

    ``options`` go to :func:`~trio_feed.open_feed`, with the market and the
    connect timeout of ``args``.
    """
    options.update(market=args.market, connect_timeout=args.connect_timeout)
    if len(urls) == 1:
        async with open_feed(names, url=urls[0], **options) as feed:
            yield feed
        return
    if args.raw:
        raise CliError("--raw reads one route: these streams need both /public and /market "
                       "(drop --raw, or name streams of one route)", 2)
    # Several routes: the feed routes each stream itself, from the host.
    parsed = parse_stream_url(urls[0])
    assert parsed is not None
    base = urls[0].split(parsed.route + "/stream", 1)[0]
    async with open_feed(names, base_url=base, **options) as feed:
        yield feed


# -- record ----------------------------------------------------------------------------------


class _Destination(RecordingWriter):
    """The recording file, opened when :func:`record` first writes: once the connection is up.

    :func:`record` calls ``write_lines`` right after the upgrade (with what
    arrived with it, possibly nothing), so ``connected`` says the connection
    works.  With ``deferred=True`` the file itself is opened, replacing what
    it held, only when the first message arrives: a connection that fails, or
    brings nothing, leaves an existing recording as it was.
    """

    def __init__(self, path: str, *, append: bool, deferred: bool) -> None:
        # RecordingWriter.__init__ opens the file; here that waits (see above).
        self.path = path
        self.bytes_written = 0
        self.connected = False
        self._append = append
        self._inner: RecordingWriter | None = None
        if not deferred:
            self.open()

    @property
    def opened(self) -> bool:
        return self._inner is not None

    def open(self) -> None:
        if self._inner is None:
            self._inner = RecordingWriter(self.path, append=self._append)

    def write_lines(self, lines: Iterable[bytes]) -> None:
        self.connected = True
        batch = list(lines)
        if not batch:
            return
        self.open()
        assert self._inner is not None
        self._inner.write_lines(batch)
        self.bytes_written = self._inner.bytes_written

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def add_record(commands: Any, common: argparse.ArgumentParser) -> None:
    rec = commands.add_parser(
        "record", help="write raw frames, with receive times, to a file", parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=kinds_help(),
        description="Record what a connection receives, frame by frame, with receive times. "
                    "An existing recording is never replaced unless --force says so, and "
                    "then only once the first message has arrived.")
    rec.add_argument("streams", nargs="*", metavar="STREAM", help="e.g. btcusdt@trade")
    rec.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the recording (JSON lines; .zst compresses, with 'zstandard')")
    stop = rec.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=positive_float, metavar="S",
                      help="stop after S seconds (default: until Ctrl-C)")
    stop.add_argument("--limit", type=positive_int, metavar="N", help="stop after N messages")
    keep = rec.add_mutually_exclusive_group()
    keep.add_argument("--append", action="store_true",
                      help="add to FILE if it exists")
    keep.add_argument("--force", action="store_true",
                      help="replace FILE if it holds a recording (default: refuse)")
    rec.add_argument("--backfill", action="store_true",
                     help="fetch what a trade or aggTrade stream's gaps skipped from the REST "
                          "trade history and write it, marked \"backfilled\" (trio-feed stats "
                          "counts gaps filled and left; replay skips those lines)")
    rec.add_argument("--rest-url", metavar="URL",
                     help="the REST base URL for --backfill (default: Binance spot with "
                          "--live, the embedded exchange's otherwise; needed with --url)")
    _add_source_options(rec)
    _add_status_option(rec)
    rec.set_defaults(run=run_record)


def _existing(path: str) -> tuple[bool, int | None]:
    """Whether ``path`` exists, and its size if it is a regular file (not a device, a pipe...)."""
    try:
        info = os.stat(path)
    except OSError:
        return os.path.lexists(path), None
    return True, info.st_size if stat.S_ISREG(info.st_mode) else None


def _summary(screen: Screen, args: argparse.Namespace, counters: RecordCounters,
             writer: _Destination, started: float) -> None:
    screen.note(f"recorded {counters.messages:,} messages ({size_text(writer.bytes_written)}) "
                f"from {args.target} to {args.output} in {time.monotonic() - started:.2f} s")


async def run_record(args: argparse.Namespace) -> int:
    screen: Screen = args.screen
    path: str = args.output
    check_streams(args.streams, args.market)  # before anything touches the file
    existed, size = _existing(path)
    if size and not args.append and not args.force:
        raise CliError(f"{path} already holds {size_text(size)}: pass --force to replace it "
                       f"or --append to add to it")
    counters = RecordCounters()
    writer = _Destination(path, append=args.append, deferred=bool(size) and not args.append)
    started = time.monotonic()
    closed: ConnectionClosed | None = None
    rates = Rates()

    def render(seconds: float) -> list[str]:
        state = "recording" if writer.connected else f"connecting to {args.target}"
        return [" · ".join([
            state,
            f"{size_text(writer.bytes_written)} in {path}",
            f"{counters.messages:,} messages",
            f"{rates('*', counters.messages, seconds):,.0f} msg/s",
        ])]

    backfill = None
    try:
        async with _connect_to(args) as (urls, _names):
            if args.backfill:
                backfill = _recording_backfill(args)
            async with status_region(screen, render):
                closed = await _record_all(urls, writer, args, counters, backfill)
    except Exception:
        writer.close()
        if counters.messages:
            _summary(screen, args, counters, writer, started)
        elif writer.opened and not existed:
            with contextlib.suppress(OSError):
                os.unlink(path)  # nothing recorded: take back the empty file this run made
        raise
    except BaseException:  # cancelled by Ctrl-C: the way to end an open-ended recording
        writer.close()
        _finished(screen, args, counters, writer, started)
        raise
    writer.close()
    _finished(screen, args, counters, writer, started)
    if backfill is not None:
        screen.note(f"back-fill: {_plural(backfill.gaps, 'gap')} in trade streams, "
                    f"{backfill.filled:,} ids filled, {backfill.left:,} left "
                    f"({backfill.counters.requests} REST requests, "
                    f"weight {backfill.counters.weight})")
    if closed is not None:
        if closed.code != 1000:
            raise closed
        screen.note(str(closed))
    return 0


def _recording_backfill(args: argparse.Namespace) -> Any:
    from ..binance._limits import MARKETS, SPOT
    from ..recording._backfill import RecordingBackfill

    venue = MARKETS.get(getattr(args, "market", None) or "spot", SPOT)
    rest_url = args.rest_url or getattr(args, "exchange_rest_url", None)
    if rest_url is None and args.live:
        rest_url = venue.rest_url
    if rest_url is None:
        raise CliError("--backfill with --url needs --rest-url (where the trade history is)", 2)
    return RecordingBackfill(rest_url, venue=venue)


async def _record_all(urls: list[str], writer: _Destination, args: argparse.Namespace,
                      counters: RecordCounters, backfill: Any = None) -> ConnectionClosed | None:
    """Record every URL (one per route) into ``writer``; the first to stop stops them all.

    The connections share ``counters``, so ``--limit`` counts their messages together.
    ``backfill`` goes with the first URL that carries trades (one route has them all).
    """
    trades = [u for u in urls if "@trade" in u or "@aggTrade" in u]
    filled = trades[0] if trades and backfill is not None else None
    ends: list[ConnectionClosed | None] = []

    async def one(url: str, nursery: trio.Nursery) -> None:
        result = await record(url, writer, limit=args.limit, duration=args.duration,
                              counters=counters, connect_timeout=args.connect_timeout,
                              backfill=backfill if url == filled else None)
        ends.append(result.closed)
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for url in urls:
                nursery.start_soon(one, url, nursery)
    except BaseExceptionGroup as group:
        leaf = lone_exception(group)
        raise leaf from leaf.__cause__
    return ends[0] if ends else None


def _finished(screen: Screen, args: argparse.Namespace, counters: RecordCounters,
              writer: _Destination, started: float) -> None:
    if writer.opened:
        _summary(screen, args, counters, writer, started)
    else:
        screen.note(f"nothing recorded from {args.target}; {args.output} is as it was")


# -- replay -----------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def add_replay(commands: Any, common: argparse.ArgumentParser) -> None:
    replay = commands.add_parser("replay", help="serve a recording to any WebSocket client",
                                 parents=[common])
    replay.add_argument("file", metavar="FILE")
    replay.add_argument("--speed", type=_speed, default=1.0,
                        help="1 (recorded pacing, the default), 10, ... or max")
    replay.add_argument("--host", default="127.0.0.1",
                        help="listen address (default: %(default)s)")
    replay.add_argument("--port", type=int, default=0, help="listen port (default: any free)")
    replay.add_argument("--exit-when-done", action="store_true",
                        help="exit once a client has connected and every client has finished")
    _add_status_option(replay)
    replay.set_defaults(run=run_replay)


async def run_replay(args: argparse.Namespace) -> int:
    from ..exchange import open_replay_server

    screen: Screen = args.screen
    args.target = args.file
    manager = open_replay_server(args.file, speed=args.speed, host=args.host, port=args.port)
    try:
        server = await manager.__aenter__()
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: "
                       f"{exc.strerror or exc}") from None
    try:
        screen.write(server.base_url + "\n")
        speed = "max" if args.speed is None else f"{args.speed:g}x"
        shown = ", ".join(server.streams[:5]) + (", ..." if len(server.streams) > 5 else "")
        screen.note(f"replaying {_plural(server.messages, 'message')} of "
                    f"{_plural(len(server.streams), 'stream')} "
                    f"({shown or 'none named'}) at speed {speed}")
        if server.streams:
            screen.note(f"combined URL: {server.combined_url()}")
        rates = Rates()

        def render(seconds: float) -> list[str]:
            stats = server.statistics()
            return [" · ".join([
                f"serving {server.base_url}",
                f"{stats.connections_open} clients connected",
                f"{stats.connections_finished} finished",
                f"{rates('*', stats.messages_sent, seconds):,.0f} msg/s",
                f"{stats.messages_sent:,} messages sent",
            ])]

        async with status_region(screen, render):
            if args.exit_when_done:
                await server.wait_done()
                stats = server.statistics()
                screen.note(f"all clients finished ({stats.connections_finished} connections, "
                            f"{stats.messages_sent:,} messages sent)")
            else:
                await trio.sleep_forever()
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)
    return 0


# -- stats ----------------------------------------------------------------------------------


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
    if stats["backfilled"]:
        lines.append(f"{_plural(stats['backfilled'], 'back-filled line')} (fetched over REST "
                     "to fill gaps, not received; not counted as messages of their stream)")
    width = max([len(k) for k in stats["streams"]] + [6])
    lines.append("")
    lines.append(
        f"{'stream':<{width}}  {'messages':>9}  {'share':>6}  {'largest gap':>11}  id gaps"
    )
    total = stats["messages"] or 1
    for key, s in stats["streams"].items():
        gaps = "-" if not s["id_gaps"] else f"{s['id_gaps']} ({s['missing_ids']} ids missing)"
        if s["filled_ids"]:
            gaps = (f"{s['id_gaps']} ({s['missing_ids']} ids skipped: {s['filled_ids']} filled, "
                    f"{s['left_ids']} left)")
        lines.append(f"{key:<{width}}  {s['messages']:>9,}  {s['messages'] / total:>6.1%}  "
                     f"{s['largest_gap_s']:>9.3f} s  {gaps if s['id_gaps'] else '0'}")
        for example in s["gap_examples"]:
            lines.append(f"{'':<{width}}    {example['kind']} gap at message #{example['index']}: "
                         f"expected {example['expected']}, got {example['got']}")
    print("\n".join(lines))


def add_stats(commands: Any, common: argparse.ArgumentParser) -> None:
    stats = commands.add_parser("stats", help="summarise a recording", parents=[common])
    stats.add_argument("file", metavar="FILE")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    stats.set_defaults(run=run_stats)


async def run_stats(args: argparse.Namespace) -> int:
    args.target = args.file
    stats = compute_stats(args.file)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        _print_stats(stats)
    return 0
