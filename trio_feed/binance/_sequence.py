"""Binance's sequence rules, written once: which id orders each kind of event, and what breaks it.

The feed's continuity filter (:class:`trio_feed.feed._continuity.Continuity`),
:meth:`trio_feed.testing.EventRecorder.gaps` and ``trio-feed stats``
(:func:`trio_feed.recording.compute_stats`) all judge a stream's events by
the rules here, so they cannot disagree about a gap.

Each kind has a *position* (the id the event brings its stream to) and a
*check* that compares an event with the position its stream reached before:

==================  ==========================  =======================================
kind                position                    follows on when
==================  ==========================  =======================================
trade               ``t`` (``trade_id``)        ``t == last + 1``
aggTrade            ``a`` (``agg_trade_id``)    ``a == last + 1``
depthUpdate, spot   ``u`` (final update id)     ``U <= last + 1`` (``U == last + 1``
                                                exactly, or an overlap with the last)
depthUpdate, USD-M  ``u``                       ``pu == last`` (``pu`` present: futures
futures                                         chain on ``pu``; their ``U`` does not
                                                follow the previous ``u``)
bookTicker          ``u`` (``update_id``)       ``u > last`` (no gaps: shared counter)
partial depth       ``lastUpdateId``            ``lastUpdateId > last`` (no gaps)
==================  ==========================  =======================================

Verdicts:

*duplicate*
    the position is at or before ``last``: the stream already delivered it.
*gap*
    ids between ``last`` and the event were skipped: ``U - last - 1`` of them
    on spot depth, trades and aggregate trades, ``pu - last`` on the futures
    chain (the update ids of the events that are missing).  A futures
    ``pu`` before ``last`` (with ``u`` past it) breaks the chain too, with
    nothing countable missing (:data:`BROKEN`).
*reset*
    a duplicate that is far below: the position is more than
    :data:`RESET_THRESHOLD` ids before ``last``.  A server that restarted
    numbers from scratch; a stream whose ids reset starts a new sequence
    there instead of dropping everything until the old position comes back.
    The feed asks more before it calls it one (it arrived on a new
    connection, and it is not older than the last event delivered); see
    ``trio_feed.feed._continuity``.

Kinds without an id (klines, tickers, average price...) have no rule here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import attrs

from ._events import AggTrade, BookTicker, DepthUpdate, PartialDepth, Trade

__all__ = [
    "BROKEN", "DUPLICATE", "RESET_THRESHOLD", "RULES", "ObjectIds", "Rules", "SequenceRule",
    "is_reset", "label_of", "object_ids", "span",
]


class Rules(enum.Enum):
    """Which sequence rules a market's diff depth follows: spot (``U``/``u``) or USD-M (``pu``)."""

    SPOT = "spot"
    USDM_FUTURES = "usdm_futures"

#: The verdict of a check for an event at or before its stream's position.
DUPLICATE = -1
#: The verdict for a futures depth update whose ``pu`` is before the last ``u``:
#: the chain is broken, though no id can be counted as missing.
BROKEN = -2

#: An id more than this many ids below its stream's position is a reset, not a duplicate.
#: Large enough that no overlap between connections (a rotation's, a reconnect's
#: repeats) reaches it on trade ids, small enough that a sequence restarting
#: from 1 after a few thousand events is recognised.
RESET_THRESHOLD = 1_000


@attrs.frozen
class SequenceRule:
    """How one kind of event is ordered; see the module docstring."""

    #: What the id is called in reports (``"trade id"``).
    label: str
    #: The id an event brings its stream to.
    position: Callable[[Any], int]
    #: ``check(last, event)``: :data:`DUPLICATE`, :data:`BROKEN`, or the number of ids
    #: missing before it (0: it follows on).
    check: Callable[[int, Any], int]
    #: ``expected(last, event)``: (the id that would follow on, the id the event has).
    expected: Callable[[int, Any], tuple[int, int]]
    #: Whether the ids are consecutive (gaps can be counted) or only grow.
    consecutive: bool = True
    #: The first id an event covers, where that is not its position (diff depth: ``U``).
    first: Callable[[Any], int] | None = None


def _check_trade(last: int, e: Any) -> int:
    t: int = e.trade_id
    if t <= last:
        return DUPLICATE
    return t - last - 1


def _check_agg_trade(last: int, e: Any) -> int:
    a: int = e.agg_trade_id
    if a <= last:
        return DUPLICATE
    return a - last - 1


def _check_depth(last: int, e: Any) -> int:
    if e.final_update_id <= last:
        return DUPLICATE
    pu = e.prev_final_update_id
    if pu is not None:  # USD-M futures: each event names the u of the one before it
        if pu == last:
            return 0
        return pu - last if pu > last else BROKEN
    first: int = e.first_update_id
    return first - last - 1 if first > last + 1 else 0  # U <= last + 1: follows or overlaps


def _expected_depth(last: int, e: Any) -> tuple[int, int]:
    pu = e.prev_final_update_id
    if pu is not None:
        return last, pu
    return last + 1, e.first_update_id


def _check_book_ticker(last: int, e: Any) -> int:
    return DUPLICATE if e.update_id <= last else 0


def _check_partial_depth(last: int, e: Any) -> int:
    return DUPLICATE if e.last_update_id <= last else 0


#: Event class -> its rule.  Classes not here have no id to order them by.
RULES: dict[type, SequenceRule] = {
    Trade: SequenceRule(
        "trade id", attrgetter("trade_id"), _check_trade, lambda last, e: (last + 1, e.trade_id)
    ),
    AggTrade: SequenceRule(
        "aggTrade id", attrgetter("agg_trade_id"), _check_agg_trade,
        lambda last, e: (last + 1, e.agg_trade_id),
    ),
    DepthUpdate: SequenceRule(
        "update id", attrgetter("final_update_id"), _check_depth, _expected_depth,
        first=attrgetter("first_update_id"),
    ),
    BookTicker: SequenceRule(
        "bookTicker update id", attrgetter("update_id"), _check_book_ticker,
        lambda last, e: (last + 1, e.update_id), consecutive=False,
    ),
    PartialDepth: SequenceRule(
        "lastUpdateId", attrgetter("last_update_id"), _check_partial_depth,
        lambda last, e: (last + 1, e.last_update_id), consecutive=False,
    ),
}
# (Positions are ``operator.attrgetter``s: a C call, cheaper on the feed's hot path
# than a lambda.)


def span(event: Any) -> tuple[int, int] | None:
    """The ids ``event`` covers, ``(first, position)``, or ``None`` if its kind has no id.

    A diff depth update covers ``U`` to ``u``; every other kind one id.
    """
    rule = RULES.get(event.__class__)
    if rule is None:
        return None
    position = rule.position(event)
    return (position if rule.first is None else rule.first(event)), position


def is_reset(last: int, event: Any, previous: Any = None) -> bool:
    """Whether ``event`` restarts its stream's ids: far below ``last`` and not older.

    ``previous`` is the event that brought the stream to ``last``, if known:
    an event older than it (``E``) is a repeat, whatever its id.
    """
    if last - RULES[_class_of(event)].position(event) <= RESET_THRESHOLD:
        return False
    when = getattr(event, "event_time", None)
    before = getattr(previous, "event_time", None)
    return when is None or before is None or when >= before


def label_of(event: Any) -> str:
    """The label of ``event``'s id, ``"update id (pu)"`` for a futures depth update."""
    if getattr(event, "prev_final_update_id", None) is not None:
        return "update id (pu)"
    return RULES[_class_of(event)].label


@attrs.frozen
class ObjectIds:
    """A JSON object's ids under the event attribute names the rules read."""

    kind: type
    event_time: int | None = None
    trade_id: int | None = None
    agg_trade_id: int | None = None
    first_update_id: int | None = None
    final_update_id: int | None = None
    prev_final_update_id: int | None = None
    update_id: int | None = None
    last_update_id: int | None = None


def _class_of(event: Any) -> type:
    return event.kind if event.__class__ is ObjectIds else event.__class__


#: ``e`` of a JSON event -> its class and the keys its rule needs (integers).
_OBJECT_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "trade": (Trade, ("t",)),
    "aggTrade": (AggTrade, ("a",)),
    "depthUpdate": (DepthUpdate, ("U", "u")),
    "bookTicker": (BookTicker, ("u",)),
}


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if type(value) is int else None


def object_ids(obj: Any) -> tuple[SequenceRule, ObjectIds] | None:
    """The rule and ids of a decoded JSON object (``data`` of an envelope), or ``None``.

    For reports over recordings, where payloads need not be complete events:
    only the keys a rule needs are required.  Spot bookTicker and partial
    depth payloads have no ``e``; they are known by their keys.
    """
    if type(obj) is not dict:
        return None
    e = obj.get("e")
    if type(e) is str:
        found = _OBJECT_KINDS.get(e)
        if found is None:
            return None
        cls, keys = found
    elif "lastUpdateId" in obj:
        cls, keys = PartialDepth, ("lastUpdateId",)
    elif "u" in obj and "b" in obj and "B" in obj and "a" in obj and "A" in obj:
        cls, keys = BookTicker, ("u",)
    else:
        return None
    if any(type(obj.get(key)) is not int for key in keys):
        return None
    u = _int(obj, "u")
    ids = ObjectIds(
        kind=cls, event_time=_int(obj, "E"), trade_id=_int(obj, "t"),
        agg_trade_id=_int(obj, "a"), first_update_id=_int(obj, "U"), final_update_id=u,
        prev_final_update_id=_int(obj, "pu") if cls is DepthUpdate else None,
        update_id=u, last_update_id=_int(obj, "lastUpdateId"),
    )
    return RULES[cls], ids
