"""Which streams a feed wants, which connection carries each, and the control requests.

Pure and synchronous.  The feed's connection tasks do the sending and waiting.

Shards.  Binance carries at most 1024 streams per connection, so the desired
set is split into *shards*, one per connection.  :meth:`Subscriptions.add`
places each new stream on the first shard with room *on its route*, opening a
new shard when all are full, and :meth:`Subscriptions.remove` takes streams
out.  A route is the URL path prefix that serves the stream's kind (USD-M
futures: ``/public`` for book data, ``/market`` for the rest; spot has
none), so a shard only ever carries streams its connection's path serves.  A
stream belongs to exactly one shard, so the shards' events merge into one
feed without duplicates.  Shards are never rebalanced: moving a stream
would mean a gap or a duplicate on it.

Requests.  :class:`Requests` numbers control requests (``id`` 1, 2, ...)
and matches replies to them, so a reply that arrives between data events is
routed to the call that sent it.  A SUBSCRIBE carries at most
``MAX_PARAMS_PER_REQUEST`` streams, so restoring 1024 streams after a
reconnect takes a handful of messages, not a thousand; with the token bucket
at 4 per second that is about a second per shard.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import orjson

from .._errors import InvalidStreamName, SubscriptionError
from ..binance import ControlError, ControlResponse, Stream, parse_stream
from ..binance._limits import SPOT, Venue

__all__ = ["MAX_PARAMS_PER_REQUEST", "MAX_STREAMS_PER_CONNECTION", "Requests", "Subscriptions"]

#: Binance's limit of streams per connection.
MAX_STREAMS_PER_CONNECTION = SPOT.streams_per_connection
#: Streams per SUBSCRIBE/UNSUBSCRIBE message.  Binance documents no limit; this
#: keeps each message a few KB.
MAX_PARAMS_PER_REQUEST = 200


class Subscriptions:
    """The desired streams, split into shards of at most ``per_connection``, one route each.

    ``venue`` is the market: its names are the valid ones, its
    ``streams_per_connection`` the largest ``per_connection``, and its
    ``route`` decides which shards a stream may join.
    """

    def __init__(self, per_connection: int | None = None, venue: Venue = SPOT) -> None:
        limit = venue.streams_per_connection
        if per_connection is None:
            per_connection = limit
        if not 1 <= per_connection <= limit:
            raise ValueError(f"per_connection must be 1..{limit}")
        self.per_connection = per_connection
        self.venue = venue
        #: One dict (name -> Stream, in subscription order) per shard.
        self.shards: list[dict[str, Stream]] = []
        #: The route of each shard (``""`` for none), parallel to ``shards``.
        self.routes: list[str] = []

    @property
    def streams(self) -> dict[str, Stream]:
        """Every desired stream, by name."""
        return {name: s for shard in self.shards for name, s in shard.items()}

    def parse(self, stream: str | Stream) -> Stream:
        """``stream`` read by this market's rules; a :class:`Stream` of another market is refused.

        One feed serves one market: a spot name in a USD-M feed (or the
        reverse) raises :class:`~trio_feed.InvalidStreamName`, saying which
        market has it.
        """
        market = self.venue.market
        parsed = parse_stream(stream, market)
        if parsed.market != market:
            raise InvalidStreamName(
                f"{parsed.name!r} was read as a {parsed.market} stream; this feed serves "
                f"market={market!r} (one feed serves one market)"
            )
        return parsed

    def shard_of(self, name: str) -> int | None:
        for index, shard in enumerate(self.shards):
            if name in shard:
                return index
        return None

    def add(self, streams: Iterable[str | Stream]) -> dict[int, list[Stream]]:
        """Add streams (validating every name first); return the new ones by shard.

        Raises :class:`~trio_feed.InvalidStreamName` before changing anything.
        """
        parsed = [self.parse(s) for s in streams]
        placed: dict[int, list[Stream]] = {}
        for stream in parsed:
            if self.shard_of(stream.name) is not None:
                continue
            route = self.venue.route(stream.kind)
            index = next(
                (i for i, shard in enumerate(self.shards)
                 if len(shard) < self.per_connection and self.routes[i] == route),
                None,
            )
            if index is None:
                self.shards.append({})
                self.routes.append(route)
                index = len(self.shards) - 1
            self.shards[index][stream.name] = stream
            placed.setdefault(index, []).append(stream)
        return placed

    def remove(self, streams: Iterable[str | Stream]) -> dict[int, list[Stream]]:
        """Remove streams; return the removed ones by shard (unknown names are ignored)."""
        removed: dict[int, list[Stream]] = {}
        names = [item.name if isinstance(item, Stream) else self.parse(item).name
                 for item in streams]  # every name is checked before anything changes
        for name in names:
            index = self.shard_of(name)
            if index is not None:
                removed.setdefault(index, []).append(self.shards[index].pop(name))
        return removed


class Requests:
    """Control requests of one connection: ids out, replies matched back in."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        #: Requests sent and not yet answered: id -> (method, params).
        self.pending: dict[int, tuple[str, list[str]]] = {}

    def encode(self, method: str, params: list[str]) -> tuple[int, bytes]:
        """A new request's ``(id, JSON text)``; it is pending until answered."""
        request_id = next(self._ids)
        self.pending[request_id] = (method, params)
        message: dict[str, Any] = {"method": method, "params": params, "id": request_id}
        return request_id, orjson.dumps(message)

    def batches(self, method: str, names: list[str]) -> list[tuple[int, bytes]]:
        """``encode`` for ``names`` split into messages of ``MAX_PARAMS_PER_REQUEST``."""
        return [
            self.encode(method, names[i : i + MAX_PARAMS_PER_REQUEST])
            for i in range(0, len(names), MAX_PARAMS_PER_REQUEST)
        ]

    def answer(self, reply: ControlResponse | ControlError) -> tuple[int | None, object]:
        """Match a reply: ``(request id, result)``, the result being a
        :class:`~trio_feed.SubscriptionError` for an error reply (naming the
        request's streams; flat and nested error shapes decode alike).

        An error without an id (Binance omits it for some codes) is matched to
        the oldest pending request, which is the one it answers because the
        server replies in order.  A reply to no pending request gives id ``None``.
        """
        if isinstance(reply, ControlError):
            request_id = reply.id if reply.id in self.pending else None
            if request_id is None and reply.id is None and self.pending:
                request_id = next(iter(self.pending))
            streams = self.pending[request_id][1] if request_id is not None else []
            result: object = SubscriptionError(reply.code, reply.msg, request_id, streams)
        else:
            request_id = reply.id if reply.id in self.pending else None
            result = reply.result
        if request_id is not None:
            del self.pending[request_id]
        return request_id, result
