"""Per-stream continuity: drop duplicates, count what is missing.

Pure and synchronous.  The feed runs every event through one
:class:`Continuity` in the consumer's task, after the events of all its
connections have merged, so it sees them in the order they will be handed out.

S9: no event is handed out twice.
    During a make-before-break rotation two connections carry the same
    streams, and after a reconnect the server may repeat what the old
    connection already delivered.  An event is a *duplicate* when its stream
    has already delivered an event at or past its position.  For the kinds
    with an id (trades ``t``, aggregate trades ``a``, diff depth ``u``,
    bookTicker ``u``, partial depth ``lastUpdateId``) the position and the
    verdict are Binance's sequence rules, written once in
    ``trio_feed.binance._sequence``.  Everything else (klines, tickers,
    average price...) is ordered by ``event_time`` (``E``), where an event
    with an *equal* time is a duplicate only if it equals, field by field,
    one already delivered at that time, since distinct events can share a
    millisecond.

    Duplicates are dropped and counted (``duplicates``), never handed out.

S9, continued: what is missing is counted, never silent.
    Trade ids and aggregate-trade ids are consecutive per symbol, a spot diff
    depth event's ``U`` follows the previous ``u``, and a USD-M futures diff
    depth event's ``pu`` names the previous ``u``.  A jump is a gap: the
    number of ids skipped is added to ``missing`` for that stream, whatever
    the cause (a reconnect, a dropped message, a slow-consumer policy).  So
    for those streams, over any run, the events handed out plus ``missing``
    cover the server's sequence exactly.  Streams without consecutive ids
    cannot be checked this way; their losses are counted where they happen
    (policy drops, messages discarded at close).

S9, continued: a sequence that restarts is a reset, not a run of duplicates.
    When a stream's id falls more than ``RESET_THRESHOLD`` ids below its
    position, on another connection than the one that delivered the
    position, and the event is not older (``E``) than the last one
    delivered, the server numbered from scratch (a restarted exchange):
    the stream starts over at that id, the event is handed out, and the
    reset is counted (``resets``) and logged.  A reconnect that repeats
    old events cannot pass for one: its events are older.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..binance import Event
from ..binance._sequence import BROKEN, DUPLICATE, RESET_THRESHOLD, RULES, is_reset

__all__ = ["RESET_THRESHOLD", "Continuity", "StreamContinuity"]

logger = logging.getLogger("trio_feed")


@attrs.frozen
class StreamContinuity:
    """One stream's continuity counters (see :class:`Continuity`)."""

    duplicates: int
    gaps: int
    missing: int
    resets: int = 0


@attrs.define
class _State:
    position: Any = None
    last: list[Any] = attrs.Factory(list)
    #: The last event handed out on an id-ordered stream, and the connection it came on.
    event: Any = None
    source: object = None
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0
    resets: int = 0
    #: This stream's ``[messages, bytes]`` entry of the ``per_stream`` table.
    counts: list[int] = attrs.Factory(lambda: [0, 0])


#: event class -> (check, position) of its sequence rule (``trio_feed.binance._sequence``).
_RULES: dict[type, tuple[Callable[[int, Any], int], Callable[[Any], int]]] = {
    cls: (rule.check, rule.position) for cls, rule in RULES.items()
}


class Continuity:
    """Duplicate filter, gap counter and reset detector for every stream of a feed."""

    def __init__(self, per_stream: dict[str | None, list[int]] | None = None) -> None:
        self._streams: dict[str | None, _State] = {}
        #: stream name -> [messages, bytes], counted by ``accept_batch`` when given sizes.
        self._per_stream: dict[str | None, list[int]] = {} if per_stream is None else per_stream
        #: Duplicates dropped, all streams.
        self.duplicates = 0
        #: Ids skipped, all streams with consecutive ids.
        self.missing = 0
        #: Sequences that restarted (S9), all streams.
        self.resets = 0
        #: The connection the events now being accepted came on (the feed sets it per batch).
        self.source: object = None

    def accept(self, event: Event) -> bool:
        """``True`` to hand ``event`` out, ``False`` for a duplicate (counted)."""
        kept: list[Event] = []
        self.accept_batch((event,), kept.append)
        return bool(kept)

    def accept_batch(
        self,
        events: Iterable[Event],
        keep: Callable[[Event], object],
        sizes: Iterable[int] | None = None,
    ) -> None:
        """Pass ``events`` in order: ``keep(event)`` for each one to hand out.

        Duplicates are counted and not kept.  With ``sizes`` (each event's
        payload size, in order), each stream's messages and bytes are counted
        too, in the ``per_stream`` table given to the constructor, so the
        feed's hot path walks its events once.
        """
        states = self._streams
        rules = _RULES
        source = self.source
        per_stream = self._per_stream
        # (``sizes`` may run on past the events: a batch cut short by a payload that failed.)
        pairs = zip(events, sizes, strict=False) if sizes is not None else ((e, 0) for e in events)
        for event, size in pairs:
            name = event.stream
            state = states.get(name)
            if state is None:
                state = states[name] = _State()
                state.counts = per_stream.setdefault(name, [0, 0])
            if sizes is not None:
                counts = state.counts
                counts[0] += 1
                counts[1] += size
            rule = rules.get(event.__class__)
            if rule is None:
                if self._by_time(state, event):
                    keep(event)
                continue
            last = state.position
            if last is not None:
                verdict = rule[0](last, event)
                if verdict and not self._follows(state, last, event, verdict):
                    continue
            state.position = rule[1](event)
            state.event = event
            state.source = source
            keep(event)

    def _follows(self, state: _State, last: int, event: Event, verdict: int) -> bool:
        """An id-ordered event that does not follow on: ``False`` for a duplicate (counted)."""
        if verdict == DUPLICATE:
            if state.source is self.source or not is_reset(last, event, state.event):
                return self._duplicate(state)
            self._reset(state, last, event)
        elif verdict == BROKEN:
            state.gaps += 1
        else:
            state.gaps += 1
            state.missing += verdict
            self.missing += verdict
        return True

    def _by_time(self, state: _State, event: Event) -> bool:
        """Order an event without an id by its time: ``False`` for a duplicate (counted)."""
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

    def _reset(self, state: _State, last: int, event: Event) -> None:
        state.resets += 1
        self.resets += 1
        logger.warning(
            "%s: ids restarted at %d on a new connection, %d below the last one (%d): "
            "a reset, not duplicates (RESET_THRESHOLD is %d)",
            event.stream, _RULES[event.__class__][1](event),
            last - _RULES[event.__class__][1](event), last, RESET_THRESHOLD,
        )

    def stream(self, name: str | None) -> StreamContinuity:
        state = self._streams.get(name) or _State()
        return StreamContinuity(state.duplicates, state.gaps, state.missing, state.resets)

    def streams(self) -> dict[str | None, StreamContinuity]:
        return {name: self.stream(name) for name in self._streams}
