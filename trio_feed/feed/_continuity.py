"""Per-stream continuity: drop duplicates, count what is missing.

Pure and synchronous.  The feed runs every event through one
:class:`Continuity` in the consumer's task, after the events of all its
connections have merged, so it sees them in the order they will be handed out.

S9: no event is handed out twice.
    During a make-before-break rotation two connections carry the same
    streams, and after a reconnect the server may repeat what the old
    connection already delivered.  An event is a *duplicate* when its stream
    has already delivered an event at or past its position:

    - trades: ``trade_id`` (``t``); aggregate trades: ``agg_trade_id`` (``a``);
    - diff depth: ``final_update_id`` (``u``); bookTicker: ``update_id``;
      partial depth: ``last_update_id``;
    - everything else (klines, tickers, average price...): ``event_time``
      (``E``), where an event with an *equal* time is a duplicate only if it
      equals, field by field, one already delivered at that time, since
      distinct events can share a millisecond.

    Duplicates are dropped and counted (``duplicates``), never handed out.

S9, continued: what is missing is counted, never silent.
    Trade ids and aggregate-trade ids are consecutive per symbol, and a diff
    depth event's ``U`` follows the previous ``u``.  A jump is a gap: the
    number of ids skipped is added to ``missing`` for that stream, whatever
    the cause (a reconnect, a dropped message, a slow-consumer policy).  So
    for those streams, over any run, the events handed out plus ``missing``
    cover the server's sequence exactly.  Streams without consecutive ids
    cannot be checked this way; their losses are counted where they happen
    (policy drops, messages discarded at close).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ..binance import (
    AggTrade,
    BookTicker,
    DepthUpdate,
    Event,
    PartialDepth,
    Trade,
)

__all__ = ["Continuity", "StreamContinuity"]


@attrs.frozen
class StreamContinuity:
    """One stream's continuity counters (see :class:`Continuity`)."""

    duplicates: int
    gaps: int
    missing: int


@attrs.define
class _State:
    position: Any = None
    last: list[Any] = attrs.Factory(list)
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0


#: event class -> (position of the event, first id it covers) for consecutive ids.
_CONSECUTIVE: dict[type, tuple[Callable[[Any], int], Callable[[Any], int]]] = {
    Trade: (lambda e: e.trade_id, lambda e: e.trade_id),
    AggTrade: (lambda e: e.agg_trade_id, lambda e: e.agg_trade_id),
    DepthUpdate: (lambda e: e.final_update_id, lambda e: e.first_update_id),
}
#: event class -> position, for ids that only grow.
_MONOTONIC: dict[type, Callable[[Any], int]] = {
    BookTicker: lambda e: e.update_id,
    PartialDepth: lambda e: e.last_update_id,
}


class Continuity:
    """Duplicate filter and gap counter for every stream of a feed."""

    def __init__(self) -> None:
        self._streams: dict[str | None, _State] = {}
        #: Duplicates dropped, all streams.
        self.duplicates = 0
        #: Ids skipped, all streams with consecutive ids.
        self.missing = 0

    def accept(self, event: Event) -> bool:
        """``True`` to hand ``event`` out, ``False`` for a duplicate (counted)."""
        state = self._streams.get(event.stream)
        if state is None:
            state = self._streams[event.stream] = _State()
        cls = event.__class__
        consecutive = _CONSECUTIVE.get(cls)
        if consecutive is not None:
            position, first = consecutive[0](event), consecutive[1](event)
            last = state.position
            if last is not None:
                if position <= last:
                    return self._duplicate(state)
                if first > last + 1:
                    state.gaps += 1
                    skipped = first - last - 1
                    state.missing += skipped
                    self.missing += skipped
            state.position = position
            return True
        monotonic = _MONOTONIC.get(cls)
        if monotonic is not None:
            position = monotonic(event)
            if state.position is not None and position <= state.position:
                return self._duplicate(state)
            state.position = position
            return True
        when = getattr(event, "event_time", None)
        if when is None:
            return True  # nothing to order it by: array streams, control replies
        if state.position is not None:
            if when < state.position:
                return self._duplicate(state)
            if when == state.position:
                if event in state.last:
                    return self._duplicate(state)
                state.last.append(event)
                return True
        state.position = when
        state.last = [event]  # every event at this time, until the time moves on
        return True

    def _duplicate(self, state: _State) -> bool:
        state.duplicates += 1
        self.duplicates += 1
        return False

    def stream(self, name: str | None) -> StreamContinuity:
        state = self._streams.get(name) or _State()
        return StreamContinuity(state.duplicates, state.gaps, state.missing)

    def streams(self) -> dict[str | None, StreamContinuity]:
        return {name: self.stream(name) for name in self._streams}
