"""The supervised feed: stream names in, typed events out, whatever the network does.

One :class:`Feed` owns shards (at most 1024 streams each, one per connection at a
time), each shard owns the link it reads through, and every event passes the
continuity check and the slow-consumer outbox on its way to ``async for``.

Modules, in the order data flows through them:

- ``_subscriptions``: which stream lives on which shard, and the SUBSCRIBE requests;
- ``_backoff``, ``_token_bucket``: the connection-attempt and client-frame budgets;
- ``_shard``: reconnects and make-before-break rotation for one shard;
- ``_link``: one connection: read loop, watchdog, control replies;
- ``_continuity``: duplicates and gaps, using the sequence rules of ``binance/``;
- ``_backfill``: with ``backfill=True``, the gaps of trade streams fetched over REST;
- ``_outbox``: the named slow-consumer policies;
- ``_samples``, ``_statistics``: what ``Feed.statistics()`` reports;
- ``_feed``: :func:`open_feed` and :class:`Feed`, which tie them together.
"""

from ._backoff import AttemptLimiter
from ._feed import Feed, open_feed
from ._outbox import SlowConsumerPolicy
from ._statistics import FeedStatistics, StreamStatistics

__all__ = [
    "AttemptLimiter",
    "Feed",
    "FeedStatistics",
    "SlowConsumerPolicy",
    "StreamStatistics",
    "open_feed",
]
