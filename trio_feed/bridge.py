"""A supervised feed for code that is not trio: plain threads and asyncio.

Most Python trading code runs on asyncio or on threads.  :func:`feed_thread`
runs :func:`~trio_feed.open_feed` in a thread of its own, under ``trio.run``,
and hands its events over a bounded, thread-safe queue, a *batch* at a time
(everything the feed had ready), so the hop between the two worlds is paid
once per batch, not once per event::

    with feed_thread(["btcusdt@trade"]) as events:        # any thread
        for event in events:
            ...

    async with feed_thread(["btcusdt@trade"]) as events:  # inside asyncio
        async for event in events:
            ...

Rules, enforced here:

- **Bounded.**  At most ``max_batches`` batches wait in the hand-off.  When
  it is full, the feed's task waits for room (polling every
  ``full_poll_interval`` seconds), so the feed's own slow-consumer policy
  applies exactly as it would in trio (``block`` by default: the feed keeps
  reading and answering pings into its bounded backlog).
- **Nothing lost silently.**  Every event the feed handed out is taken by the
  consumer or, if the consumer leaves first, counted in
  :attr:`BridgeStatistics.discarded`:
  ``handed_over == taken + discarded`` once the thread has ended, on top of
  the feed's own identity in :attr:`BridgeStatistics.feed`.
- **Failures arrive as themselves.**  If the feed fails (a fatal error, or
  ``ConnectionClosed`` with ``reconnect=False``), the consumer first gets
  every event queued before it, then that exception, raised in the
  consumer's thread.
- **Nothing outlives the block.**  Leaving the ``with`` block cancels the
  feed and joins its thread, within ``close_timeout`` seconds (then
  :class:`TimeoutError`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import attrs
import trio

from .binance import Event, Stream
from .feed import FeedStatistics, open_feed

__all__ = ["BridgeStatistics", "FeedThread", "feed_thread"]


@attrs.frozen
class BridgeStatistics:
    """What crossed the hand-off, beside the feed's own statistics.

    ``handed_over`` events left the feed for the hand-off queue; ``taken`` of
    them reached the consumer; ``discarded`` were still queued when the
    consumer left.  ``feed`` is the feed's last :class:`~trio_feed.FeedStatistics`
    (``None`` before the feed opened).
    """

    handed_over: int
    taken: int
    discarded: int
    batches: int
    queued_batches: int
    feed: FeedStatistics | None


class _End:
    """The last item of the hand-off: how the feed ended (``None``: stopped by us)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class FeedThread:
    """A feed running in its own thread; made by :func:`feed_thread` (see the module docstring)."""

    def __init__(
        self,
        streams: list[str | Stream],
        options: dict[str, Any],
        *,
        max_batches: int,
        full_poll_interval: float,
        close_timeout: float,
    ) -> None:
        self._streams = streams
        self._options = options
        self._queue: queue.Queue[list[Event] | _End] = queue.Queue(max_batches)
        self._full_poll_interval = full_poll_interval
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._stop = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._run, name="trio_feed", daemon=True)
        self._current: deque[Event] = deque()
        #: The thread that waits on the queue for an asyncio consumer.
        self._waiter = concurrent.futures.ThreadPoolExecutor(1, "trio_feed-bridge")
        self._ended: _End | None = None
        self._handed_over = 0
        self._taken = 0
        self._discarded = 0
        self._batches = 0
        self._feed_statistics: FeedStatistics | None = None
        self._feed: Any = None

    # -- the trio side (the feed's thread) ------------------------------------------

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the consumer, not lost
            self._finish(exc)
        else:
            self._finish(None)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._cancel = scope
            if self._stop.is_set():
                scope.cancel()
            try:
                async with open_feed(self._streams, **self._options) as feed:
                    self._feed = feed
                    self._opened.set()
                    await self._pump(feed)
            finally:
                if self._feed is not None:
                    self._feed_statistics = self._feed.statistics()

    async def _pump(self, feed: Any) -> None:
        put = self._queue.put_nowait
        while True:
            batch = [await feed.receive()]
            try:
                while True:
                    batch.append(feed.receive_nowait())
            except trio.WouldBlock:
                pass
            with self._lock:
                self._handed_over += len(batch)
                self._batches += 1
            queued = False
            try:
                while True:
                    try:
                        put(batch)
                        queued = True
                        break
                    except queue.Full:
                        await trio.sleep(self._full_poll_interval)
            finally:
                if not queued:  # cancelled while waiting for room: the batch in hand
                    with self._lock:
                        self._discarded += len(batch)

    def _finish(self, error: BaseException | None) -> None:
        if isinstance(error, trio.Cancelled):
            error = None
        if not self._opened.is_set():
            self._open_error = error
            self._opened.set()
        end = _End(error)
        while True:  # the end marker must get in, even past a full queue
            try:
                self._queue.put(end, timeout=self._full_poll_interval)
                return
            except queue.Full:
                if self._stop.is_set():
                    self._drop_queued()

    def _drop_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                with self._lock:
                    self._discarded += len(item)

    # -- the consumer's side ---------------------------------------------------------
    #
    # Items leave the queue into ``_current`` (uncounted); an event is counted as
    # ``taken`` only when it is returned to the consumer, so that whatever is still
    # in ``_current`` or in the queue when the consumer leaves is ``discarded``.

    def start(self, open_timeout: float | None = None) -> FeedThread:
        """Start the thread and wait until the feed is open (or failed to open)."""
        self._thread.start()
        if not self._opened.wait(open_timeout):
            self.close()
            raise TimeoutError(f"the feed did not open within {open_timeout} s")
        if self._open_error is not None:
            self._thread.join(self._close_timeout)
            raise self._open_error
        return self

    def _stage(self, item: list[Event] | _End) -> None:
        with self._lock:
            if isinstance(item, _End):
                self._ended = item
            else:
                self._current.extend(item)

    def _fill(self, timeout: float | None) -> None:
        """Make ``_current`` non-empty, or raise how the feed ended (or queue.Empty)."""
        while not self._current:
            if self._ended is not None:
                self._raise_end(self._ended)
            self._stage(self._queue.get(timeout=timeout))

    def get_batch(self, timeout: float | None = None) -> list[Event]:
        """Every event the feed had ready, waiting up to ``timeout`` s for at least one.

        Raises :class:`queue.Empty` on timeout; once the feed failed, its own
        exception (after every event before it); once it was closed by
        :meth:`close`, :class:`EOFError`.
        """
        self._fill(timeout)
        with self._lock:
            batch = list(self._current)
            self._current.clear()
            self._taken += len(batch)
        return batch

    def get(self, timeout: float | None = None) -> Event:
        """The next event (see :meth:`get_batch` for what it raises)."""
        self._fill(timeout)
        with self._lock:
            self._taken += 1
            return self._current.popleft()

    def _raise_end(self, end: _End) -> None:
        if end.error is not None:
            raise end.error
        raise EOFError("the feed was closed")

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                batch = self.get_batch()
            except EOFError:
                return
            yield from batch

    def __aiter__(self) -> FeedThread:
        return self

    async def __anext__(self) -> Event:
        """For asyncio: one hop to a waiting thread per batch, never per event.

        If the awaiting task is cancelled while the thread waits, whatever the
        thread then takes off the queue is kept for the next call (or counted
        as discarded by :meth:`close`), never lost.
        """
        while not self._current:
            if self._ended is not None:
                try:
                    self._raise_end(self._ended)
                except EOFError:
                    raise StopAsyncIteration from None
            waiting = self._waiter.submit(self._queue.get)
            try:
                item = await asyncio.wrap_future(waiting)
            except asyncio.CancelledError:
                waiting.add_done_callback(lambda done: self._stage(done.result()))
                raise
            self._stage(item)
        with self._lock:
            self._taken += 1
            return self._current.popleft()

    def close(self) -> None:
        """Cancel the feed, join its thread, and count what the consumer never took."""
        self._stop.set()
        token, scope = self._token, self._cancel
        if token is not None and scope is not None:
            try:
                trio.from_thread.run_sync(scope.cancel, trio_token=token)
            except trio.RunFinishedError:
                pass
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join(self._close_timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the feed's thread did not end within {self._close_timeout} s")
        self._drop_queued()
        self._waiter.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._discarded += len(self._current)
            self._current.clear()

    def statistics(self) -> BridgeStatistics:
        """A snapshot; the feed's part is live while it runs, final once it ended."""
        feed = self._feed_statistics
        if feed is None and self._feed is not None and self._token is not None:
            try:
                feed = trio.from_thread.run_sync(self._feed.statistics, trio_token=self._token)
            except trio.RunFinishedError:
                feed = self._feed_statistics
        with self._lock:
            return BridgeStatistics(
                handed_over=self._handed_over,
                taken=self._taken,
                discarded=self._discarded,
                batches=self._batches,
                queued_batches=self._queue.qsize(),
                feed=feed,
            )

    def __enter__(self) -> FeedThread:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> FeedThread:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


def feed_thread(
    streams: Iterable[str | Stream],
    *,
    max_batches: int = 64,
    full_poll_interval: float = 0.001,
    open_timeout: float | None = 30.0,
    close_timeout: float = 10.0,
    **options: Any,
) -> FeedThread:
    """Start :func:`~trio_feed.open_feed` (``options`` are its keyword arguments) in a thread.

    Returns once the feed is open; raises what opening raised.  Use the result
    as ``with`` (threads) or ``async with`` (asyncio); see the module
    docstring.  ``open_timeout`` bounds the wait for the feed to open
    (``None``: no bound; :class:`TimeoutError` when it expires).
    """
    thread = FeedThread(list(streams), options, max_batches=max_batches,
                        full_poll_interval=full_poll_interval, close_timeout=close_timeout)
    return thread.start(open_timeout)
