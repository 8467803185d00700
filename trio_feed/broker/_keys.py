"""Key layout: one Redis stream per market, symbol and channel, in one cluster slot per symbol.

::

    md:{binance:spot:btcusdt}:trade           entries of btcusdt@trade
    md:{binance:spot:btcusdt}:depth@100ms      entries of btcusdt@depth@100ms
    md:{binance:spot:btcusdt}:depth@100ms:snapshot   periodic book snapshots (short)
    md:{binance:spot:!all}:!miniTicker@arr     all-market streams: the whole name
    md:{binance:spot}:control                  gaps, resyncs, rotations, overflows

The part in braces is the Redis Cluster *hash tag*: only it is hashed, so every
channel of one symbol lives in the same slot and one pipeline or one
``XREAD`` can cover them.  The channel is the stream name without its
``<symbol>@`` prefix, so the key names the Binance stream exactly.
"""

from __future__ import annotations

from ..binance import Stream, parse_stream

__all__ = ["DEFAULT_PREFIX", "control_key", "hash_tag", "snapshot_key", "stream_key"]

DEFAULT_PREFIX = "md"
EXCHANGE = "binance"


def _channel(stream: Stream) -> str:
    if stream.symbol is None:
        return stream.name
    return stream.name.split("@", 1)[1]


def stream_key(stream: str | Stream, *, market: str = "spot", prefix: str = DEFAULT_PREFIX) -> str:
    """The Redis key of ``stream``'s entries, e.g. ``md:{binance:spot:btcusdt}:trade``."""
    parsed = parse_stream(stream) if isinstance(stream, str) else stream
    symbol = parsed.symbol if parsed.symbol is not None else "!all"
    return f"{prefix}:{{{EXCHANGE}:{market}:{symbol}}}:{_channel(parsed)}"


def snapshot_key(stream: str | Stream, *, market: str = "spot",
                 prefix: str = DEFAULT_PREFIX) -> str:
    """The key of the book snapshots written beside a diff-depth stream (same slot)."""
    return stream_key(stream, market=market, prefix=prefix) + ":snapshot"


def control_key(*, market: str = "spot", prefix: str = DEFAULT_PREFIX) -> str:
    """The market's control stream: gap markers, resyncs, rotations, sink overflows."""
    return f"{prefix}:{{{EXCHANGE}:{market}}}:control"


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: between the first ``{`` and the next ``}``.

    The whole key when there is no such non-empty part (the cluster's own rule).
    """
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key
