"""``trio-feed publish`` and ``trio-feed stream --from-redis``: the two ends of the broker.

They need the ``redis`` extra (``trio_feed.broker``, ``docs/scale-out.md``); nothing here
imports it until one of the two runs.
"""

from __future__ import annotations

import argparse
from typing import Any

import attrs
import orjson

from ..binance import format_event
from ._commands import (
    _add_source_options,
    _connect_to,
    _json_default,
    event_to_dict,
    open_feeds,
    positive_float,
    positive_int,
)
from ._errors import CliError, check_streams
from ._status import Screen

__all__ = ["add_from_redis", "add_publish", "run_stream_from_redis"]


def _start(text: str) -> str | float:
    """``--start``: latest, earliest, an entry id (``<ms>-<seq>``) or epoch seconds."""
    if text in ("latest", "earliest") or "-" in text:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected latest, earliest, an entry id or epoch seconds, got {text!r}") from None


def add_from_redis(commands: Any, common: argparse.ArgumentParser) -> None:
    """Give the ``stream`` command (added before) the options to read the broker instead."""
    stream = commands.choices["stream"]
    plain = stream.get_default("run")

    async def run(args: argparse.Namespace) -> int:
        if args.from_redis:
            return await run_stream_from_redis(args)
        return int(await plain(args))

    stream.set_defaults(run=run)
    stream.add_argument("--from-redis", metavar="URL",
                        help="read what 'trio-feed publish' wrote to this Redis server instead")
    stream.add_argument("--start", type=_start, default="latest",
                        help="with --from-redis: latest (default), earliest, an entry id, or "
                             "epoch seconds")
    stream.add_argument("--prefix", default="md", help="with --from-redis: the key prefix")


def _print_item(screen: Screen, item: Any, json_lines: bool) -> None:
    from ..broker import Gap

    if json_lines:
        data = ({"type": "Gap", **attrs.asdict(item)} if isinstance(item, Gap)
                else event_to_dict(item))
        screen.write_bytes(orjson.dumps(data, default=_json_default) + b"\n")
    else:
        screen.write((item.describe() if isinstance(item, Gap) else format_event(item)) + "\n")


async def run_stream_from_redis(args: argparse.Namespace) -> int:
    from ..broker import open_redis_feed

    screen: Screen = args.screen
    if args.live or args.url:
        raise CliError("--from-redis reads the broker: it cannot be combined with --live or --url",
                       2)
    names = check_streams(args.streams)
    if not names:
        raise CliError("name at least one stream, e.g. 'btcusdt@trade'", 2)
    args.target = args.from_redis
    count = 0
    async with open_redis_feed(args.from_redis, names, prefix=args.prefix, start=args.start,
                               connect_timeout=args.connect_timeout) as feed:
        async for item in feed:
            count += 1
            _print_item(screen, item, args.json)
            if args.limit is not None and count >= args.limit:
                break
        stats = feed.statistics()
    screen.note(f"{count} items from {stats.messages} entries, {stats.gaps} gaps, "
                f"{stats.missing} missing, {stats.dropped} dropped by the publisher")
    return 0


async def run_publish(args: argparse.Namespace) -> int:
    from ..broker import open_redis_sink, publish

    screen: Screen = args.screen
    if not args.redis.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--redis must be a redis:// URL, got {args.redis!r}", 2)
    if (args.policy == "spool") != (args.spool is not None):
        raise CliError("--policy spool and --spool PATH go together", 2)
    async with _connect_to(args) as (urls, names):
        # payloads=True: the entries carry the frames exactly as received (fmt=raw).
        async with open_feeds(urls, names, args, reconnect=True, payloads=True) as feed, \
                open_redis_sink(args.redis, prefix=args.prefix, policy=args.policy,
                                spool=args.spool, maxlen=args.maxlen, max_age=args.max_age,
                                rest_url=args.rest_url,
                                connect_timeout=args.connect_timeout) as sink:
            sent = await publish(feed, sink, limit=args.limit)
        stats = sink.statistics()
    screen.write(f"published {sent} events in {stats.entries} entries to {args.redis}: "
                 f"{stats.dropped_events} dropped, {stats.retries} retried, "
                 f"{stats.already_written} already written\n")
    return 0


def add_publish(commands: Any, common: argparse.ArgumentParser) -> None:
    pub = commands.add_parser("publish", help="publish events into Redis Streams",
                              parents=[common])
    pub.add_argument("streams", nargs="*", metavar="STREAM", help="e.g. btcusdt@trade")
    pub.add_argument("--redis", required=True, metavar="URL", help="redis://host:port")
    pub.add_argument("--limit", type=positive_int, help="stop after N events")
    pub.add_argument("--policy", choices=("block", "drop_oldest", "spool"), default="block",
                     help="when the server falls behind: hold the feed, drop (counted), "
                          "or spool to a file and replay it")
    pub.add_argument("--spool", metavar="PATH",
                     help="the spool's files (PATH.1, PATH.2...) for --policy spool")
    pub.add_argument("--maxlen", type=positive_int, default=100_000,
                     help="entries kept per stream (MAXLEN ~; default 100000)")
    pub.add_argument("--max-age", type=positive_float, metavar="S",
                     help="keep entries S seconds instead (MINID ~)")
    pub.add_argument("--rest-url", metavar="URL",
                     help="REST base URL for the book snapshots of depth streams")
    pub.add_argument("--prefix", default="md", help="the key prefix (default md)")
    _add_source_options(pub)
    pub.set_defaults(run=run_publish)
