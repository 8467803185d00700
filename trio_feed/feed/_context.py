"""What a shard or a link may touch of its feed, and nothing more.

A :class:`~trio_feed.feed._shard.Shard` and its
:class:`~trio_feed.feed._link.Link` objects need the feed's options, its
counters, its decoder, its outbox, the shared attempt budget and the lag
sampler.  They get exactly that, as one :class:`FeedContext`, instead of the
whole :class:`~trio_feed.feed.Feed`: imports then flow one way
(``_feed`` -> ``_shard`` -> ``_link`` -> ``_context``), and what a link can
change of its feed is visible in one place.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from ..binance import Decoder
from ._backoff import AttemptLimiter
from ._outbox import Outbox, SlowConsumerPolicy
from ._statistics import FeedCounters

__all__ = ["FeedContext", "FeedOptions"]

@attrs.frozen
class FeedOptions:
    """Everything :func:`open_feed` was told; see its docstring for each field."""

    mode: str
    base_url: str
    url: str | None
    decimals: bool
    policy: SlowConsumerPolicy
    max_queued: int
    max_backlog_bytes: int
    reconnect: bool
    retry_first_connect: bool
    backoff_initial: float
    backoff_cap: float
    healthy_after: float
    max_retry_after: float
    rotate_after: float | None
    rotation_timeout: float
    stale_after: float | None
    ping_interval: float | None
    pong_timeout: float
    request_timeout: float
    no_data_after: float | None
    lag_threshold: float
    send_rate: float
    send_burst: float
    streams_per_connection: int
    max_url_length: int
    connect_options: dict[str, Any]
    wall_clock: Callable[[], float]
    rng: random.Random | None
    #: ``"raise"`` or ``"skip"``: what a payload that does not decode does.
    on_decode_error: str = "raise"
    #: The market's ``market=`` name (``"spot"``, ``"usdm"``): its names, routes and timings.
    market: str = "spot"
    #: The watchdog's period for event-driven streams (the market's ``quiet_after``).
    quiet_after: float = 60.0


@attrs.define(eq=False)
class FeedContext:
    """The narrow part of a feed that its shards and links share (see the module docstring)."""

    options: FeedOptions
    counters: FeedCounters
    decoder: Decoder
    outbox: Outbox
    attempt_limiter: AttemptLimiter
    #: ``note_lag(events, received)``: sample the exchange lag of a batch just handed over.
    note_lag: Callable[[list[Any], float], None]
