"""A local order book kept in sync from diff-depth events: a pure state machine.

Binance's book procedure (``STREAMS.md`` §5 for spot, §8 for USD-M futures)
needs two inputs, the ``@depth`` diff stream and a REST snapshot, and its
hard part is deciding *when* each may be applied.  :class:`OrderBook` makes
those decisions and nothing else.  In the manner of h11 it does no I/O and
knows no clock: the caller feeds it events with :meth:`~OrderBook.receive_update`
and snapshots with :meth:`~OrderBook.receive_snapshot`, and when the book needs
a snapshot it says so by returning a :class:`NeedSnapshot` *action*, once.
Fetching it, politely, is the I/O side's job (``trio_feed._books``).

Theory of operation
-------------------

States (:class:`BookState`):

- ``SYNCING``: no book yet.  Events are buffered; the first one buffered
  returns ``NeedSnapshot("start")``, so the snapshot is always requested
  after the stream has begun.
- ``LIVE``: the book is exact as of :attr:`~OrderBook.last_update_id`; each
  event is checked against the sequence rule and applied.
- ``RESYNCING``: a gap, a crossed book or :meth:`~OrderBook.reset` lost sync.
  The last good book is still served, marked :attr:`~OrderBook.stale`, while
  new events are buffered and a snapshot is fetched; when one bridges, the
  book is rebuilt from it and goes ``LIVE`` again.

The sequence rules, with ``L`` the snapshot's ``lastUpdateId`` and ``id`` the
``u`` of the last applied event:

=====================  =================================  =============================
step                   spot                               USD-M futures
=====================  =================================  =============================
drop buffered events   ``u <= L``                         ``u < L``
first event bridges    ``U <= L + 1 <= u``                ``U <= L <= u`` (or ``pu <= L``)
snapshot too old       first remaining ``U > L + 1``      first remaining ``U > L`` and
                                                          ``pu > L``
next event applies     ``U <= id + 1`` (steady state:     ``pu == id``
                       ``U == id + 1``)
already applied        ``u <= id``: skipped               ``u <= id``: skipped
gap                    ``U > id + 1``                     ``pu != id``
=====================  =================================  =============================

The spot gap test is the 2025-11-12 correction (``U > id + 1``), not the
off-by-one ``U > id`` of the 2024-12-16 text.  Two readings are deliberate:

- *Too old* is ``L + 1 < U``, not the docs' literal ``L < U``: a snapshot at
  exactly ``U - 1`` is the state that event ``U`` applies to, so it bridges
  and needs no refetch (the spot capture never hits this case).
- Futures also accept a first event with ``pu <= L < U``.  The ``pu`` chain
  proves this symbol had no update between ``pu`` and ``U``, so a snapshot
  taken in between is exact.  The docs' ``U <= L <= u`` would refetch it
  (the futures capture always satisfies the docs' form).

BOOK1: the buffer is always a contiguous run of events.  An event that does
    not chain onto the last buffered one discards the buffer and starts it
    afresh (the snapshot must then be newer than the hole anyway); an event
    already covered by the buffer (``u`` not beyond the last ``u``, e.g. a
    late out-of-order one) is skipped.  So bridging checks only the first
    buffered event, and every hole is counted in ``gaps``.

BOOK2: a book is served as live only if it passed every check.  A snapshot
    is loaded into fresh structures and swapped in only after it bridged and
    the buffered events applied without crossing; until then the old book is
    served, stale.  A live book that becomes crossed (best bid >= best ask)
    after an event is a detected fault: the book turns ``RESYNCING`` (so
    :attr:`~OrderBook.stale` is true) at once and a snapshot is requested.

BOOK3: at most one snapshot request is outstanding.  :class:`NeedSnapshot`
    is returned once; :attr:`~OrderBook.needs_snapshot` stays true until a
    snapshot is received.  A snapshot that arrives before any event it can
    bridge to is kept and judged against the next events.

Exact prices, cheap updates.  Nothing is ever a float.  Each side (``_Side``)
keeps three structures:

- ``qtys``: price, *as it came* (the wire string, or a ``Decimal``) ->
  quantity, as it came.  Because Binance quantities are absolute, a whole
  side of a diff is applied by one C-level ``dict.update(levels)``;
- ``keys``: a sorted ``list`` of integer keys, one per price in ``qtys``:
  the price in units of ``10**-scale`` (``scale`` starts at 8, Binance's
  spot precision, and grows if a price ever has more digits), negated for
  asks, so on both sides the best level is the *last* key and near-top
  inserts move few pointers;
- ``price_of``/``key_of``: key <-> price.

BOOK4: a zero quantity is not removed on the hot path; the level stays in
    all three structures as a *ghost*.  Python touches the levels one by one
    only when ``dict.update`` grew ``qtys`` (a price the side has not seen):
    it then parses the new prices, drops zeros for unknown levels, merges a
    price spelled two ways (``"1.5"``, ``"1.50"``) into one level, and
    inserts the keys with ``insort``.  Every query skips ghosts with an
    exact zero test; reading the best level pops ghosts off the top for
    good; and when the key list outgrows twice the live levels (plus 1024),
    it is compacted.  The crossing check after each event compares the two
    last keys first: the last key is the true best or a ghost above it,
    never below, so if those do not cross the book does not.

BOOK5: a live book that receives an event whose final id ``u`` is at or
    below its own id tells a duplicate from a restarted sequence by the
    event time ``E``.  An event not newer than the last one applied is a
    duplicate (a repeat after a reconnect): skipped and counted.  A newer
    one means the exchange's ids went backwards: the book resyncs
    (``"ids went backwards"``, counted in ``backwards`` and ``resyncs``)
    instead of staying live and frozen, skipping every new event.  Both
    markets follow this rule; under futures rules it is also what a broken
    ``pu`` chain with a low ``u`` leads to, as ``STREAMS.md`` section 8 asks.

Diffs mostly change levels a book already has (85% of the levels in the spot
capture, 96% in the futures one), so most events cost two ``dict.update``
calls; ``docs/orderbook.md`` has the measurements.  Parsed price keys are
cached per book, since a book sees the same few thousand prices again and
again.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import attrs
import orjson

from ._events import DepthUpdate, Number, PartialDepth
from ._sequence import Rules

__all__ = [
    "BookState",
    "BookStatistics",
    "NeedSnapshot",
    "OrderBook",
    "PriceLevel",
    "Rules",
    "parse_depth_snapshot",
]

#: Price digits after the point that a book starts with: Binance spot's eight.
DEFAULT_PRICE_SCALE = 8
#: Events buffered while waiting for a snapshot before the oldest are dropped.
DEFAULT_MAX_BUFFER = 10_000
_CACHE_LIMIT = 1 << 16


class BookState(enum.Enum):
    """Where an :class:`OrderBook` is in the sync procedure (see the module docstring)."""

    SYNCING = "syncing"
    LIVE = "live"
    RESYNCING = "resyncing"


_LIVE = BookState.LIVE  # a module global reads faster than an enum member


@attrs.frozen
class NeedSnapshot:
    """Action: fetch a depth snapshot for ``symbol`` and pass it to ``receive_snapshot``.

    ``reason`` says why: ``"start"`` (first sync), ``"reset"``, ``"gap"``,
    ``"crossed"`` (a live book crossed), ``"crossed snapshot"`` or
    ``"stale snapshot"`` (the last one was older than the buffered events).
    """

    symbol: str
    reason: str


class PriceLevel(NamedTuple):
    """One level of the book, exact."""

    price: Decimal
    quantity: Decimal


@attrs.frozen
class BookStatistics:
    """Counters of one :class:`OrderBook`.

    ``applied`` events changed the live book; ``skipped`` were already in it
    (or in the buffer); ``gaps`` counts sequence breaks, live or in the
    buffer; ``resyncs`` times a live book lost sync (gap, crossing, reset);
    ``crossed`` crossed books or snapshots seen; ``snapshots`` snapshots
    received, of which ``refetches`` were too old to bridge; ``requests``
    :class:`NeedSnapshot` actions returned; ``buffered`` events waiting now;
    ``buffer_dropped`` oldest events dropped from a full buffer;
    ``backwards`` live events whose ids went backwards (BOOK5), each a resync.
    """

    applied: int
    skipped: int
    gaps: int
    resyncs: int
    crossed: int
    snapshots: int
    refetches: int
    requests: int
    buffered: int
    buffer_dropped: int
    backwards: int = 0


#: Zero quantities as a decimal formatter spells them, and any ``Decimal``
#: zero: a set probe is much cheaper than inspecting the string.
_ZEROS: frozenset[Number] = frozenset(
    ["0", "0.", *("0." + "0" * n for n in range(1, 33)), Decimal(0)]
)


def _is_zero(quantity: Number) -> bool:
    """Exactly: is this quantity zero, however it is spelled (``"0E-8"``, ``"-0"``, ``"0e0"``)?

    A string whose first digit past the zeros and points is 1 to 9 is not
    zero, which settles every quantity Binance sends without parsing it;
    anything else (an exponent, a sign) is parsed as a ``Decimal``.
    """
    if quantity in _ZEROS:
        return True
    if isinstance(quantity, str):
        rest = quantity.strip("0.")
        if not rest:
            return True
        if rest[0] in "123456789":
            return False
        try:
            return Decimal(quantity) == 0
        except ArithmeticError:
            return False  # not a number: the price parser reports the level
    return not quantity


class _Side:
    """One side of a book.  See "Exact prices, cheap updates" in the module docstring.

    ``qtys`` maps each price, as it came (the wire string or a ``Decimal``),
    to its quantity, *including zero*: a level deleted by a zero quantity
    stays as a "ghost" until it is cleaned.  ``keys`` is the sorted list of
    the integer keys of every price in ``qtys`` (bids by price, asks by minus
    price, so the best is last), and ``price_of`` maps a key back to its
    price.  Ghosts at the top are removed whenever the best level is read;
    the rest are compacted away when ghosts could outnumber live levels.
    """

    __slots__ = ("cache", "key_of", "keys", "live_hint", "price_of", "qtys", "sign")

    def __init__(self, sign: int, cache: dict[Number, int]) -> None:
        self.sign = sign
        self.qtys: dict[Number, Number] = {}
        self.keys: list[int] = []
        self.price_of: dict[int, Number] = {}
        self.key_of: dict[Number, int] = {}  # the inverse of price_of
        #: price -> signed key at the book's scale; shared by every side of the
        #: same sign in one book, and kept across resyncs.
        self.cache = cache
        #: live levels at the last compaction or load: bounds the ghosts
        self.live_hint = 0

    def best(self) -> int | None:
        """The best live key, after dropping ghosts from the top; ``None`` if empty."""
        keys, qtys, price_of = self.keys, self.qtys, self.price_of
        while keys:
            key = keys[-1]
            price = price_of[key]
            if not _is_zero(qtys[price]):
                return key
            keys.pop()
            del price_of[key]
            del qtys[price]
            del self.key_of[price]
        return None

    def live(self) -> list[int]:
        """The keys of the live levels, in ascending order (a scan)."""
        qtys, price_of = self.qtys, self.price_of
        return [key for key in self.keys if not _is_zero(qtys[price_of[key]])]

    def compact(self) -> None:
        keys = self.live()
        self.price_of = price_of = {key: self.price_of[key] for key in keys}
        self.key_of = {price: key for key, price in price_of.items()}
        self.qtys = {price: self.qtys[price] for price in price_of.values()}
        self.keys = keys
        self.live_hint = len(keys)


def parse_depth_snapshot(body: bytes | str | Mapping[str, Any] | PartialDepth,
                         symbol: str | None = None) -> PartialDepth:
    """A REST depth body (``/api/v3/depth`` or ``/fapi/v1/depth``) as a :class:`PartialDepth`.

    ``body`` may be the raw JSON, the decoded object or already a
    :class:`PartialDepth`.  Futures bodies carry ``E`` and ``T`` too; they
    are ignored.  Raises ``ValueError`` if a key is missing or malformed, or
    if a level is not a ``[price, quantity]`` pair of strings (or of
    ``Decimal`` values): a JSON number there is already an inexact float, and
    ``1e-8`` and ``2e-8`` would land on one level.
    """
    if isinstance(body, PartialDepth):
        return body
    obj = orjson.loads(body) if isinstance(body, bytes | str) else body
    try:
        last = obj["lastUpdateId"]
        bids, asks = obj["bids"], obj["asks"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a depth snapshot: missing {exc}") from None
    if type(last) is not int or not isinstance(bids, list) or not isinstance(asks, list):
        raise ValueError("not a depth snapshot: lastUpdateId must be an int, bids/asks lists")
    for level in (*bids, *asks):
        if (not isinstance(level, list | tuple) or len(level) != 2
                or not all(isinstance(x, str | Decimal) for x in level)):
            raise ValueError(f"not a depth snapshot: level {level!r} is not a [price, "
                             "quantity] pair of decimal strings")
    return PartialDepth(last, bids, asks, symbol.upper() if symbol else None)


class OrderBook:
    """One symbol's local order book and its sync state machine.

    ``rules`` picks the spot or the USD-M futures sequence rules.
    ``max_buffer`` bounds the events kept while waiting for a snapshot (the
    oldest go first, which is safe: the snapshot then just has to be newer).
    ``price_scale`` is the initial number of price decimals; it grows by
    itself if needed.

    Feed it every diff event of its symbol with :meth:`receive_update` and
    the snapshots you fetch with :meth:`receive_snapshot`.  Both return a
    :class:`NeedSnapshot` when a snapshot must be fetched, else ``None``.
    Neither raises on anything the exchange may send; they raise
    ``ValueError`` only for malformed data (a price that is not a decimal, a
    futures event without ``pu`` under futures rules).
    """

    def __init__(
        self,
        symbol: str,
        *,
        rules: Rules | str = Rules.SPOT,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        price_scale: int = DEFAULT_PRICE_SCALE,
    ) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer}")
        self.symbol = symbol.upper()
        self.rules = Rules(rules)
        self._futures = self.rules is Rules.USDM_FUTURES
        self._max_buffer = max_buffer
        self._scale = price_scale
        self._state = BookState.SYNCING
        self._bid_cache: dict[Number, int] = {}
        self._ask_cache: dict[Number, int] = {}
        self._bids = _Side(1, self._bid_cache)
        self._asks = _Side(-1, self._ask_cache)
        self._id: int | None = None
        #: The event time ``E`` of the last event applied (BOOK5).
        self._time = 0
        #: Live events whose ids went backwards (BOOK5), each followed by a resync.
        self._backwards = 0
        self._buffer: deque[DepthUpdate] = deque()
        self._pending: tuple[int, _Side, _Side] | None = None
        self._loading: tuple[_Side, ...] = ()
        self._awaiting = False
        self._next_reason = "start"
        self._applied = self._skipped = self._gaps = self._resyncs = self._crossed = 0
        self._snapshots = self._refetches = self._requests = self._buffer_dropped = 0

    # -- state ------------------------------------------------------------------

    @property
    def state(self) -> BookState:
        """``SYNCING``, ``LIVE`` or ``RESYNCING``."""
        return self._state

    @property
    def stale(self) -> bool:
        """True unless the book is ``LIVE``: what it shows may be out of date (or empty)."""
        return self._state is not BookState.LIVE

    @property
    def has_book(self) -> bool:
        """True once a snapshot has been bridged: there is a book to show, live or stale."""
        return self._id is not None

    @property
    def last_update_id(self) -> int | None:
        """The ``u`` of the last event in the book shown (``lastUpdateId`` right after a sync)."""
        return self._id

    @property
    def needs_snapshot(self) -> bool:
        """True from a returned :class:`NeedSnapshot` until a snapshot is received."""
        return self._awaiting

    def statistics(self) -> BookStatistics:
        """A snapshot of the counters; see :class:`BookStatistics`."""
        return BookStatistics(
            applied=self._applied, skipped=self._skipped, gaps=self._gaps,
            resyncs=self._resyncs, crossed=self._crossed, snapshots=self._snapshots,
            refetches=self._refetches, requests=self._requests,
            buffered=len(self._buffer), buffer_dropped=self._buffer_dropped,
            backwards=self._backwards,
        )

    # -- inputs -----------------------------------------------------------------

    def receive_update(self, update: DepthUpdate) -> NeedSnapshot | None:
        """Take one diff-depth event of this symbol, in arrival order."""
        if self._state is _LIVE:
            book_id = self._id
            assert book_id is not None
            if self._futures:
                applies = update.prev_final_update_id == book_id
            else:
                applies = update.first_update_id <= book_id + 1
            if applies and update.final_update_id > book_id:
                # _apply and _is_crossed, inlined: this is the hot path.
                bids, asks = self._bids, self._asks
                levels = update.bids
                if levels:
                    qtys = bids.qtys
                    before = len(qtys)
                    qtys.update(levels)  # type: ignore[arg-type]
                    if len(qtys) != before:
                        self._index(bids, levels, len(qtys) - before)
                levels = update.asks
                if levels:
                    qtys = asks.qtys
                    before = len(qtys)
                    qtys.update(levels)  # type: ignore[arg-type]
                    if len(qtys) != before:
                        self._index(asks, levels, len(qtys) - before)
                self._id = update.final_update_id
                self._time = update.event_time
                self._applied += 1
                top_bids, top_asks = bids.keys, asks.keys
                if (top_bids and top_asks and top_bids[-1] >= -top_asks[-1]
                        and self._is_crossed(bids, asks)):
                    self._crossed += 1
                    return self._lose_sync("crossed", None)
                return None
            if update.final_update_id <= book_id:
                if update.event_time > self._time:
                    # BOOK5: newer than what the book holds, yet not past its id:
                    # the exchange's ids went backwards (a restarted sequence).
                    self._backwards += 1
                    return self._lose_sync("ids went backwards", update)
                self._skipped += 1  # a duplicate of an event already applied
                return None
            if self._futures and update.prev_final_update_id is None:
                raise ValueError("futures rules need pu (prev_final_update_id) on every event")
            self._gaps += 1
            return self._lose_sync("gap", update)
        return self._buffer_update(update)

    def receive_snapshot(
        self, snapshot: PartialDepth | bytes | str | Mapping[str, Any]
    ) -> NeedSnapshot | None:
        """Take a REST depth snapshot (a :class:`PartialDepth` or the raw body).

        A live book ignores it.  Otherwise it is loaded and judged against
        the buffered events: it bridges (the book goes live), it is too old
        (a new :class:`NeedSnapshot` is returned), or no buffered event
        reaches past it yet (it is kept for the next events).
        """
        if self._state is BookState.LIVE:
            return None
        depth = parse_depth_snapshot(snapshot)
        bids, asks = _Side(1, self._bid_cache), _Side(-1, self._ask_cache)
        self._loading = (bids, asks)
        try:
            self._load(bids, depth.bids)
            self._load(asks, depth.asks)
        finally:
            self._loading = ()
        self._awaiting = False  # only now: a malformed snapshot leaves the request out
        self._snapshots += 1
        if self._is_crossed(bids, asks):
            self._crossed += 1
            self._pending = None
            return self._request("crossed snapshot")
        self._pending = (depth.last_update_id, bids, asks)
        return self._bridge()

    def reset(self, reason: str = "reset") -> None:
        """Forget the buffer and any snapshot, e.g. after a reconnect; keep showing the book, stale.

        The next event buffered returns a :class:`NeedSnapshot` with ``reason``.
        """
        if self._state is BookState.LIVE:
            self._resyncs += 1
        self._state = BookState.RESYNCING if self._id is not None else BookState.SYNCING
        self._buffer.clear()
        self._pending = None
        self._awaiting = False
        self._next_reason = reason

    # -- the procedure ----------------------------------------------------------

    def _request(self, reason: str) -> NeedSnapshot | None:
        if self._awaiting:
            return None
        self._awaiting = True
        self._requests += 1
        return NeedSnapshot(self.symbol, reason)

    def _lose_sync(self, reason: str, update: DepthUpdate | None) -> NeedSnapshot | None:
        self._state = BookState.RESYNCING
        self._resyncs += 1
        self._buffer.clear()
        self._pending = None
        if update is not None:
            self._buffer.append(update)
        return self._request(reason)

    def _chains(self, last: DepthUpdate, update: DepthUpdate) -> bool:
        if self._futures:
            if update.prev_final_update_id is None:
                raise ValueError("futures rules need pu (prev_final_update_id) on every event")
            return update.prev_final_update_id == last.final_update_id
        return update.first_update_id == last.final_update_id + 1

    def _buffer_update(self, update: DepthUpdate) -> NeedSnapshot | None:
        buffer = self._buffer
        if buffer:
            last = buffer[-1]
            if update.final_update_id <= last.final_update_id:
                self._skipped += 1
                return None
            if not self._chains(last, update):
                self._gaps += 1
                buffer.clear()
        buffer.append(update)
        if len(buffer) > self._max_buffer:
            buffer.popleft()
            self._buffer_dropped += 1
        if self._pending is not None:
            return self._bridge()
        if not self._awaiting and self._next_reason:
            reason, self._next_reason = self._next_reason, ""
            return self._request(reason)
        return None

    def _bridge(self) -> NeedSnapshot | None:
        assert self._pending is not None
        last_id, bids, asks = self._pending
        buffer = self._buffer
        futures = self._futures
        while buffer and (buffer[0].final_update_id < last_id if futures
                          else buffer[0].final_update_id <= last_id):
            buffer.popleft()
            self._skipped += 1
        if not buffer:
            return None  # wait for an event that reaches past the snapshot
        first = buffer[0]
        if futures:
            pu = first.prev_final_update_id
            bridges = first.first_update_id <= last_id or (pu is not None and pu <= last_id)
        else:
            bridges = first.first_update_id <= last_id + 1
        if not bridges:
            self._pending = None
            self._refetches += 1
            return self._request("stale snapshot")
        # BOOK1: the buffer is contiguous, so everything in it applies in order.
        for update in buffer:
            self._apply(update, bids, asks)
        if self._is_crossed(bids, asks):
            self._crossed += 1
            self._pending = None
            buffer.clear()
            return self._request("crossed")
        self._applied += len(buffer)
        self._id = buffer[-1].final_update_id
        self._time = buffer[-1].event_time
        buffer.clear()
        self._pending = None
        self._bids, self._asks = bids, asks
        self._state = BookState.LIVE
        self._next_reason = ""
        return None

    # -- levels -----------------------------------------------------------------

    def _key(self, side: _Side, price: Number) -> int:
        """The signed integer key of ``price`` on ``side`` (cache miss path)."""
        if not isinstance(price, str | Decimal):  # a float is inexact already: refuse it
            raise ValueError(f"invalid price {price!r}: expected a decimal string")
        text = price if isinstance(price, str) else format(price, "f")
        whole, _, frac = text.partition(".")
        digits = whole + frac
        if not digits or not digits.isdigit() or not digits.isascii():
            raise ValueError(f"invalid price {price!r}")
        frac = frac.rstrip("0")
        if len(frac) > self._scale:
            self._rescale(len(frac))
        scale = self._scale
        units: int = int(whole or "0") * 10**scale + (int(frac.ljust(scale, "0")) if frac else 0)
        key = units * side.sign
        cache = side.cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[price] = key
        return key

    def _rescale(self, scale: int) -> None:
        factor = 10 ** (scale - self._scale)
        self._scale = scale
        sides = [self._bids, self._asks, *self._loading]
        if self._pending is not None:
            sides += self._pending[1:]
        for side in sides:
            side.keys = [key * factor for key in side.keys]
            side.price_of = {key * factor: price for key, price in side.price_of.items()}
            side.key_of = {price: key for key, price in side.price_of.items()}
        self._bid_cache.clear()
        self._ask_cache.clear()

    def _load(self, side: _Side, levels: Iterable[Sequence[Number]]) -> None:
        side.qtys = qtys = {price: qty for price, qty in levels if not _is_zero(qty)}
        while True:
            scale = self._scale
            price_of: dict[int, Number] = {}
            for price in qtys:
                key = side.cache.get(price)
                if key is None:
                    key = self._key(side, price)
                if key in price_of:
                    raise ValueError(f"price {price!r} appears twice in the snapshot")
                price_of[key] = price
            if self._scale == scale:  # else a price rescaled the book midway: redo
                break
        side.price_of = price_of
        side.key_of = {price: key for key, price in price_of.items()}
        side.keys = sorted(price_of)
        side.live_hint = len(price_of)

    def _index(self, side: _Side, levels: Iterable[Sequence[Number]], count: int) -> None:
        """Give the ``count`` new prices among ``levels`` their keys (the slow path of _apply).

        A zero for a price the side does not have is dropped; a price spelled
        differently from a level the side has (``"1.5"`` for ``"1.50"``)
        moves its quantity to that level.
        """
        qtys = side.qtys
        for price, _ in levels:
            if price in side.key_of:
                continue
            key = side.cache.get(price)
            if key is None:
                try:
                    key = self._key(side, price)  # may rescale: read side.* afresh below
                except ValueError:
                    del qtys[price]
                    raise
            known = side.price_of.get(key)
            if known is not None:
                qtys[known] = qtys.pop(price)
            elif _is_zero(qtys[price]):
                del qtys[price]
            else:
                side.price_of[key] = price
                side.key_of[price] = key
                keys = side.keys
                if not keys or key > keys[-1]:
                    keys.append(key)
                else:
                    insort(keys, key)
            count -= 1
            if not count:
                break
        if len(side.keys) > 2 * side.live_hint + 1024:
            side.compact()

    def _apply(self, update: DepthUpdate, bids: _Side, asks: _Side) -> None:
        # The hot path, measured in docs/orderbook.md.  Quantities are absolute,
        # so one C-level dict.update applies a whole side; zeros stay behind as
        # ghosts.  Only when a side gained prices (its length grew) does Python
        # walk the levels, to index the new ones.
        levels = update.bids
        if levels:
            qtys = bids.qtys
            before = len(qtys)
            qtys.update(levels)  # type: ignore[arg-type]
            if len(qtys) != before:
                self._index(bids, levels, len(qtys) - before)
        levels = update.asks
        if levels:
            qtys = asks.qtys
            before = len(qtys)
            qtys.update(levels)  # type: ignore[arg-type]
            if len(qtys) != before:
                self._index(asks, levels, len(qtys) - before)

    @staticmethod
    def _is_crossed(bids: _Side, asks: _Side) -> bool:
        top_bids, top_asks = bids.keys, asks.keys
        if not top_bids or not top_asks or top_bids[-1] < -top_asks[-1]:
            # The last key is the best or a ghost beyond it: if the last keys
            # do not cross, the live levels do not.
            return False
        bid, ask = bids.best(), asks.best()
        return bid is not None and ask is not None and bid >= -ask

    # -- queries ----------------------------------------------------------------

    @staticmethod
    def _level(side: _Side, key: int) -> PriceLevel:
        price = side.price_of[key]
        return PriceLevel(Decimal(price), Decimal(side.qtys[price]))

    def best_bid(self) -> PriceLevel | None:
        """The highest bid, or ``None`` if there is none (check :attr:`stale` too)."""
        key = self._bids.best()
        return None if key is None else self._level(self._bids, key)

    def best_ask(self) -> PriceLevel | None:
        """The lowest ask, or ``None`` if there is none (check :attr:`stale` too)."""
        key = self._asks.best()
        return None if key is None else self._level(self._asks, key)

    def spread(self) -> Decimal | None:
        """Best ask minus best bid, or ``None`` if a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        return ask.price - bid.price

    def bids(self, n: int | None = None) -> list[PriceLevel]:
        """The best ``n`` bids (all if ``None``), highest first."""
        return self._levels(self._bids, n)

    def asks(self, n: int | None = None) -> list[PriceLevel]:
        """The best ``n`` asks (all if ``None``), lowest first."""
        return self._levels(self._asks, n)

    def top(self, n: int) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """``(bids, asks)``: the best ``n`` levels of each side, best first."""
        return self._levels(self._bids, n), self._levels(self._asks, n)

    def _levels(self, side: _Side, n: int | None) -> list[PriceLevel]:
        if n is not None and n <= 0:
            return []
        side.best()
        qtys, price_of = side.qtys, side.price_of
        chosen: list[PriceLevel] = []
        for key in reversed(side.keys):
            price = price_of[key]
            qty = qtys[price]
            if not _is_zero(qty):
                chosen.append(PriceLevel(Decimal(price), Decimal(qty)))
                if len(chosen) == n:
                    break
        return chosen

    def depth(self) -> tuple[int, int]:
        """How many bid and ask levels the book holds (a scan: not for the hot path)."""
        return len(self._bids.live()), len(self._asks.live())

    def depth_within(self, band: Number) -> tuple[Decimal, Decimal]:
        """Total ``(bid, ask)`` quantity priced within ``band`` of each side's best price.

        Bids from ``best_bid - band`` up, asks up to ``best_ask + band``,
        both ends included.  Costs a bisection plus the levels in the band.
        """
        width = Decimal(band)
        if width < 0:
            raise ValueError(f"band must not be negative, got {band!r}")
        totals = []
        for side in (self._bids, self._asks):
            best = side.best()
            if best is None:
                totals.append(Decimal(0))
                continue
            # Keys are whole units, so flooring the band's units is exact.
            floor = best - int(width.scaleb(self._scale))
            start = bisect_left(side.keys, floor)
            qtys, price_of = side.qtys, side.price_of
            totals.append(sum((Decimal(qtys[price_of[key]]) for key in side.keys[start:]),
                              Decimal(0)))
        return totals[0], totals[1]

    def __repr__(self) -> str:
        bid, ask = self.best_bid(), self.best_ask()
        return (f"<OrderBook {self.symbol} {self._state.value} #{self._id} "
                f"bid {bid.price if bid else '-'} ask {ask.price if ask else '-'}>")
