"""Where a feed's connection tasks hand messages to its consumer, and what happens when it is full.

The feed's connection tasks put one *batch* per receive chunk (owned
``bytes`` in channel mode, decoded events in inline mode); the consumer's
``async for`` takes a batch at a time.  One hop per chunk, not per message:
``docs/performance.md`` measures why.

The outbox holds ``max_queued`` messages; beyond that the consumer is *slow*
and the named :class:`SlowConsumerPolicy` decides:

``block`` (the default)
    Nothing is dropped.  The outbox keeps accepting into a backlog, so the
    connection tasks keep reading and pings keep being answered (S6);
    the time spent behind is measured (``stalls``, ``stall_seconds``).  Only
    when the backlog holds ``max_backlog_bytes`` does :meth:`Outbox.put`
    refuse, the connection task waits in :meth:`Outbox.wait_space`, and TCP
    flow control slows the server (``blocked_seconds``).  Right when every
    message matters and the consumer is slow only in bursts.
``drop_newest``
    Messages that do not fit are dropped and counted in ``dropped``.  The
    queue keeps the oldest; the newest are lost.  Right when latency
    matters more than completeness and gaps are detected downstream.
``keep_latest``
    Per-stream conflation: messages that do not fit replace the pending
    message of the same stream, and each replaced one is counted in
    ``conflated``.  Right only for streams whose every message is a full
    snapshot (bookTicker, partial depth, tickers): a trade or a diff-depth
    update cannot be replaced by a later one, so ``open_feed`` refuses this
    policy for those streams.
``disconnect``
    The first message that does not fit ends the feed: the consumer gets
    what is queued, then :class:`~trio_feed.SlowConsumerError`.  Everything
    read afterwards is counted in ``dropped``.  Right when a slow consumer is
    a bug to surface rather than a condition to absorb.

S8: nothing is discarded without a count.  Every message put is, in the
end, taken, dropped, conflated, or counted in ``discarded`` when the feed
closes with it still queued.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .._errors import SlowConsumerError

__all__ = [
    "DEFAULT_MAX_BACKLOG_BYTES", "DEFAULT_MAX_QUEUED", "Batch", "Outbox", "SlowConsumerPolicy",
]

#: Messages queued before the consumer counts as slow.
DEFAULT_MAX_QUEUED = 65_536
#: Under ``block``, the backlog (in payload bytes) at which reading stops.
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024


#: At most this many decoded events are alive at once between a connection and its
#: consumer: inline mode hands them over in batches this size, channel mode decodes its
#: payloads this many at a time.  A whole receive chunk of events (a thousand or so) alive
#: together costs the garbage collector more than decoding them (docs/performance.md).
EVENTS_AT_ONCE = 64


class Batch(list[Any]):
    """The messages of one receive chunk, knowing which connection read them.

    A plain list to every reader; ``source`` (the connection's link) lets the
    consumer tell a new connection's events from an old one's
    (``trio_feed.feed._continuity``, S9) at no cost per message.  A
    batch the outbox cuts or merges (``drop_newest``, ``keep_latest``) is a
    plain list, of no known source.
    """

    __slots__ = ("source",)

    def __init__(self, source: object) -> None:
        super().__init__()
        self.source = source


class SlowConsumerPolicy(enum.Enum):
    """What a feed does when its consumer falls behind; see ``trio_feed._outbox``."""

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    KEEP_LATEST = "keep_latest"
    DISCONNECT = "disconnect"


class Outbox:
    """A bounded, policy-governed queue of batches between connection tasks and a consumer."""

    def __init__(
        self,
        *,
        policy: SlowConsumerPolicy = SlowConsumerPolicy.BLOCK,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        key: Callable[[Any], object] | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be >= 1")
        if policy is SlowConsumerPolicy.KEEP_LATEST and key is None:
            raise ValueError("keep_latest needs a key function (the stream of a message)")
        self.policy = policy
        self.max_queued = max_queued
        self.max_backlog_bytes = max_backlog_bytes
        self._key = key
        self._batches: deque[tuple[list[Any], int, float]] = deque()
        self._latest: dict[object, Any] = {}
        self._latest_received = 0.0
        self._data = trio.lowlevel.ParkingLot()
        self._space = trio.lowlevel.ParkingLot()
        self._error: BaseException | None = None
        self._closed = False
        self._stall_started: float | None = None
        self.on_overflow: Callable[[], object] | None = None
        #: Messages queued now (including conflated ones waiting), and the most ever.
        self.queued = 0
        self.peak_queued = 0
        self.queued_bytes = 0
        self.put_messages = 0
        self.taken = 0
        self.dropped = 0
        self.conflated = 0
        self.stalls = 0
        self.stall_seconds = 0.0
        self.blocked_seconds = 0.0

    # -- producer side -----------------------------------------------------------

    def put(
        self, batch: list[Any], nbytes: int = 0, received: float = 0.0, *, force: bool = False
    ) -> bool:
        """Queue ``batch`` (``nbytes`` of payload, read at wall time ``received``) under the policy.

        Returns ``False`` only under ``block`` when the backlog is full (and
        ``force`` is false): the caller must ``await wait_space()`` and put
        the same batch again.
        """
        n = len(batch)
        if not n:
            return True
        if self._error is not None or self._closed:
            self.dropped += n
            return True
        if (self.queued + n <= self.max_queued or self.queued == 0) and not self._latest:
            # (While conflated messages wait, newer ones must join them, not the
            # queue, which is served first: a stream's order is never reversed.)
            self._append(batch, nbytes, received)
            return True
        policy = self.policy
        if policy is SlowConsumerPolicy.BLOCK:
            if self.queued_bytes + nbytes > self.max_backlog_bytes and not force:
                return False
            if self._stall_started is None:
                self.stalls += 1
                self._stall_started = trio.current_time()
            self._append(batch, nbytes, received)
        elif policy is SlowConsumerPolicy.DROP_NEWEST:
            room = max(0, self.max_queued - self.queued)
            self.dropped += n - room
            if room:
                self._append(batch[:room], nbytes * room // n, received)
        elif policy is SlowConsumerPolicy.KEEP_LATEST:
            room = 0 if self._latest else max(0, self.max_queued - self.queued)
            if room:
                self._append(batch[:room], nbytes * room // n, received)
            key, latest = self._key, self._latest
            assert key is not None
            for item in batch[room:]:
                k = key(item)
                if k in latest:
                    self.conflated += 1
                else:
                    self.queued += 1
                latest[k] = item
            self._latest_received = received
            self.put_messages += n - room
            self._note_peak()
            self._data.unpark_all()
        else:
            room = max(0, self.max_queued - self.queued)
            if room:
                self._append(batch[:room], nbytes * room // n, received)
            self.dropped += n - room
            self._error = SlowConsumerError(
                f"the consumer fell {self.max_queued} messages behind "
                "(slow-consumer policy 'disconnect')"
            )
            self._data.unpark_all()
            if self.on_overflow is not None:
                self.on_overflow()
        return True

    def _append(self, batch: list[Any], nbytes: int, received: float) -> None:
        self._batches.append((batch, nbytes, received))
        self.queued += len(batch)
        self.queued_bytes += nbytes
        self.put_messages += len(batch)
        self._note_peak()
        self._data.unpark_all()

    def _note_peak(self) -> None:
        if self.queued > self.peak_queued:
            self.peak_queued = self.queued

    def stall_time(self) -> float:
        """Seconds spent behind so far, including a stall still going on."""
        if self._stall_started is None:
            return self.stall_seconds
        return self.stall_seconds + trio.current_time() - self._stall_started

    async def wait_space(self) -> None:
        """Wait until the consumer has taken something (``block`` policy, backlog full)."""
        started = trio.current_time()
        try:
            await self._space.park()
        finally:
            self.blocked_seconds += trio.current_time() - started

    # -- consumer side -----------------------------------------------------------

    def take_nowait(self) -> tuple[list[Any], float]:
        """The next batch and the wall time it was read; ``trio.WouldBlock`` if none is queued.

        After :meth:`fail`, or once the policy ``disconnect`` fired, the queued
        batches come first and then the error is raised.
        """
        if self._batches:
            batch, nbytes, received = self._batches.popleft()
        elif self._latest:
            batch, nbytes, received = list(self._latest.values()), 0, self._latest_received
            self._latest.clear()
        elif self._error is not None:
            raise self._error
        elif self._closed:
            raise trio.EndOfChannel
        else:
            raise trio.WouldBlock
        self.queued -= len(batch)
        self.queued_bytes -= nbytes
        self.taken += len(batch)
        if self._stall_started is not None and self.queued <= self.max_queued:
            self.stall_seconds += trio.current_time() - self._stall_started
            self._stall_started = None
        self._space.unpark_all()
        return batch, received

    async def take(self) -> tuple[list[Any], float]:
        """The next batch, waiting for one; see :meth:`take_nowait`."""
        while True:
            try:
                return self.take_nowait()
            except trio.WouldBlock:
                await self._data.park()

    @property
    def error(self) -> BaseException | None:
        """The error that ends the feed, once :meth:`fail` or ``disconnect`` set one."""
        return self._error

    def fail(self, error: BaseException) -> None:
        """End the feed with ``error``, raised to the consumer after what is queued."""
        if self._error is None:
            self._error = error
        self._data.unpark_all()

    def drain(self) -> int:
        """Drop everything queued; return how many messages that was (the caller counts them)."""
        lost = self.queued
        self._batches.clear()
        self._latest.clear()
        self.queued = self.queued_bytes = 0
        self._space.unpark_all()
        return lost

    def close(self) -> int:
        """Stop; return the number of messages still queued (the caller counts them)."""
        if self._stall_started is not None:
            self.stall_seconds += trio.current_time() - self._stall_started
            self._stall_started = None
        self._closed = True
        lost = self.queued
        self._batches.clear()
        self._latest.clear()
        self.queued = self.queued_bytes = 0
        self._data.unpark_all()
        self._space.unpark_all()
        return lost
