"""``EventRecorder``: keep what a handler received, then assert on it."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from .._errors import ConnectionClosed
from ..binance import Event, format_event
from ..binance._sequence import DUPLICATE, RULES, is_reset, label_of

__all__ = ["EventRecorder", "Gap"]

#: What :meth:`EventRecorder.assert_sequence` accepts for each expected event.
Expectation = type | Mapping[str, Any] | Callable[[Any], bool] | Event


@attrs.frozen
class Gap:
    """A break in an id sequence: on ``stream``, event ``index`` has ``got``, not ``expected``."""

    stream: str
    kind: str
    index: int
    expected: int
    got: int

    @property
    def missing(self) -> int:
        """How many ids the gap skipped (0 for an id at or before the last: a repeat)."""
        return max(0, self.got - self.expected)

    def __str__(self) -> str:
        return (f"{self.stream}: {self.kind} gap at event #{self.index}: "
                f"expected {self.expected}, got {self.got}")


def _key(event: Any) -> str:
    if event.stream is not None:
        return str(event.stream)
    return f"{str(getattr(event, 'symbol', '?')).lower()}@{type(event).__name__}"


def _describe(event: Any) -> str:
    try:
        return format_event(event)
    except Exception:
        return repr(event)


def _matches(expected: Expectation, event: Any) -> bool:
    if isinstance(expected, type):
        return isinstance(event, expected)
    if isinstance(expected, Mapping):
        return all(getattr(event, name, _MISSING) == value for name, value in expected.items())
    if callable(expected) and not attrs.has(type(expected)):
        return bool(expected(event))
    return bool(expected == event)


def _show(expected: Expectation) -> str:
    if isinstance(expected, type):
        return f"an instance of {expected.__name__}"
    if isinstance(expected, Mapping):
        return "an event with " + ", ".join(f"{k}={v!r}" for k, v in expected.items())
    if callable(expected) and not attrs.has(type(expected)):
        return f"an event for which {getattr(expected, '__name__', expected)!r} is true"
    return _describe(expected)


_MISSING = object()


class EventRecorder:
    """Collect events (call it with each one, or let :meth:`consume` read a feed).

    ::

        recorder = EventRecorder()
        closed = await recorder.consume(feed, limit=100)
        recorder.assert_no_gaps()
        recorder.assert_sequence([Trade, BookTicker, {"trade_id": 7}], exact=False)

    It is a synchronous callable, so it also works as (part of) a handler:
    ``handler = lambda event: (recorder(event), strategy.on_event(event))``.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        #: The :class:`~trio_feed.ConnectionClosed` that ended :meth:`consume`, if one did.
        self.closed: ConnectionClosed | None = None

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __getitem__(self, index: int) -> Event:
        return self.events[index]

    async def consume(
        self, feed: AsyncIterable[Event], *, limit: int | None = None
    ) -> ConnectionClosed | None:
        """Record events from ``feed`` until ``limit`` of them (in all) or the connection ends.

        Returns (and keeps in :attr:`closed`) the
        :class:`~trio_feed.ConnectionClosed` that ended the feed, or ``None``
        when ``limit`` was reached.  Other errors propagate.  Wrap it in
        ``trio.fail_after``: a feed that never ends makes it wait forever.
        """
        if limit is not None and len(self.events) >= limit:
            return None
        try:
            async for event in feed:
                self.events.append(event)
                if limit is not None and len(self.events) >= limit:
                    return None
        except ConnectionClosed as exc:
            self.closed = exc
            return exc
        return None

    def of_type(self, cls: type) -> list[Any]:
        """The recorded events that are instances of ``cls``, in order."""
        return [e for e in self.events if isinstance(e, cls)]

    def for_stream(self, stream: str) -> list[Event]:
        """The recorded events that arrived on ``stream``, in order."""
        return [e for e in self.events if e.stream == stream]

    def assert_sequence(
        self, expected: Sequence[Expectation], *, stream: str | None = None, exact: bool = True
    ) -> None:
        """Assert that the events (on ``stream``, if given) match ``expected``.

        Each expectation is a class (``isinstance``), a mapping of attribute
        values that must all be equal (``{"trade_id": 7, "price": "1.5"}``), a
        predicate (``lambda e: e.quantity != "0"``) or an event (equality).
        With ``exact=True`` the events must match one for one; with
        ``exact=False`` the expectations must match events in order, with any
        events in between.  The ``AssertionError`` says which one failed and
        shows the events around it.
        """
        events = self.events if stream is None else self.for_stream(stream)
        where = f" on {stream}" if stream else ""
        if exact:
            for index, (want, event) in enumerate(zip(expected, events, strict=False)):
                if not _matches(want, event):
                    raise AssertionError(
                        f"event #{index}{where} is {_describe(event)}, expected {_show(want)}"
                        + self._context(events, index)
                    )
            if len(events) != len(expected):
                raise AssertionError(
                    f"expected {len(expected)} events{where}, recorded {len(events)}"
                    + self._context(events, min(len(events), len(expected)))
                )
            return
        position = 0
        for number, want in enumerate(expected):
            while position < len(events) and not _matches(want, events[position]):
                position += 1
            if position == len(events):
                raise AssertionError(
                    f"expectation #{number} ({_show(want)}) matches no event{where} after "
                    f"the previous match ({len(events)} events recorded)"
                )
            position += 1

    @staticmethod
    def _context(events: Sequence[Event], index: int, around: int = 2) -> str:
        lo, hi = max(0, index - around), min(len(events), index + around + 1)
        if lo >= hi:
            return ""
        lines = [f"\n  {'>' if i == index else ' '} #{i}: {_describe(events[i])}"
                 for i in range(lo, hi)]
        return "".join(lines)

    def gaps(self, *, stream: str | None = None) -> list[Gap]:
        """Every break in an id sequence, per stream, by Binance's sequence rules.

        Trades must follow on by one (``t``), aggregate trades too (``a``),
        and each depth update must start where the previous one ended
        (``U <= previous u + 1``; on USD-M futures ``pu == previous u``);
        a bookTicker's ``u`` and a partial depth's ``lastUpdateId`` must
        grow.  An id at or before the last one is a break too (a repeat,
        ``missing`` 0); one far below it, in an event not older than the
        last, starts the sequence over (a reset, not a break).  The rules are
        the feed's own (``trio_feed.binance._sequence``).  Streams are told
        apart by name (by symbol and type without one).
        """
        last: dict[str, tuple[int, Any]] = {}
        found: list[Gap] = []
        for index, event in enumerate(self.events):
            if stream is not None and event.stream != stream:
                continue
            rule = RULES.get(event.__class__)
            if rule is None:
                continue
            key = _key(event)
            previous = last.get(key)
            if previous is not None:
                position, before = previous
                verdict = rule.check(position, event)
                if verdict == DUPLICATE:
                    if not is_reset(position, event, before):
                        expected, got = rule.expected(position, event)
                        found.append(Gap(key, label_of(event), index, expected, got))
                        continue  # the stream stays where it was
                elif verdict:
                    expected, got = rule.expected(position, event)
                    found.append(Gap(key, label_of(event), index, expected, got))
            last[key] = (rule.position(event), event)
        return found

    def assert_no_gaps(self, *, stream: str | None = None) -> None:
        """Assert that :meth:`gaps` finds nothing; the error lists the first few gaps."""
        found = self.gaps(stream=stream)
        if found:
            shown = "\n  ".join(str(gap) for gap in found[:10])
            more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
            raise AssertionError(f"{len(found)} id gaps in {len(self.events)} events:\n  "
                                 f"{shown}{more}")
