"""One shard of a supervised feed: keep a connection for its streams, whatever happens.

A shard owns a set of at most 1024 streams and keeps exactly one
:class:`~trio_feed._link.Link` delivering them (two, briefly, during a
rotation).  Its :meth:`Shard.run` task is a loop over three situations:

**Connecting.**  Wait for the feed's attempt budget
(:class:`~trio_feed._backoff.AttemptLimiter`), start a link, and on a
retryable failure wait ``backoff.next_delay()`` and try again.  A refused
handshake that says when to come back (``Retry-After`` on a 429) waits that
long instead, if longer, up to ``max_retry_after``.  A fatal failure
(``_link.is_fatal``) is raised to the feed, which hands it to the consumer.
The backoff is reset only by a link that delivered data for
``healthy_after`` seconds, so a server that accepts and drops at once makes
the delays grow, never a tight loop.

**Running.**  Wait until the link needs attention: it ended (reconnect,
counted by cause), the server sent ``serverShutdown``, or the link reached
``rotate_after`` seconds of age.

**Rotating (make before break).**  Every rotation attempt but the first
since the backoff's last reset first waits ``backoff.next_rotation_delay()``,
like a reconnect, while the old link goes on delivering: a server that sends
``serverShutdown`` to every new connection at once gets attempts at the
backoff's pace, not one per round trip.  Then
start a new link that *holds* what it reads; wait until it delivers data (at
most ``rotation_timeout`` seconds, then go ahead anyway: a quiet stream has
nothing to lose); let the old link go on until it *covers* the new one: on
every stream the new link holds, the old one has handed over the id just
before the new one's first (``t - 1``, ``a - 1``, ``U - 1``; the same
``u`` for bookTicker and partial depth; the same event time ``E`` for
streams without ids), bounded by ``rotation_timeout`` again, since the
messages between may still be on their way to it in the server's queue or
in TCP buffers; retire the old link, which stops at its next await; then
release the new link's held batches.  Since the outbox is FIFO, everything
the old link delivered precedes everything the new one does, and the feed's
continuity filter drops the overlap by trade and update ids.  If the new
link cannot connect, the old one keeps running and the rotation is retried
after the next backoff delay.

S4: no task outlives its shard, and no shard outlives its feed.  Links run
in the shard's nursery; the shard runs in the feed's.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import trio

from .._errors import ConnectionClosed, HandshakeError, lone_exception
from ..binance import Stream, combined_url
from ._backoff import Backoff
from ._context import FeedContext
from ._link import Link, is_fatal, reconnect_cause

__all__ = ["Shard"]

logger = logging.getLogger("trio_feed")


class Shard:
    """A set of streams and the connection that carries them; see the module docstring."""

    def __init__(
        self, context: FeedContext, index: int, streams: dict[str, Stream], *, url: str,
        subscribe_on_connect: bool = True, base_url: str | None = None,
    ) -> None:
        self.context = context
        self.index = index
        #: The routed base URL the shard's connections use (``options.base_url`` plus
        #: the route of its streams' kind, e.g. ``/market``), before ``/stream``.
        self.base_url = base_url if base_url is not None else context.options.base_url
        #: The shard's streams (shared with the feed's Subscriptions: kept current).
        self.streams = streams
        self.url = url
        self.subscribe_on_connect = subscribe_on_connect
        options = context.options
        self.backoff = Backoff(initial=options.backoff_initial, cap=options.backoff_cap,
                               rng=options.rng)
        self.links: list[Link] = []
        #: Scheduled stream kinds that have delivered here: their links watch them on their own.
        self.armed: set[str] = set()
        #: Stream name -> when it was subscribed, until the no-data check has seen it.
        self.since: dict[str, float] = dict.fromkeys(streams, trio.current_time())
        self._numbers = 0
        self._nursery: trio.Nursery | None = None
        #: True once the first link is up and subscribed.
        self.started = False
        #: True while a replacement link is being brought up (links track progress).
        self.rotating = False

    @property
    def current(self) -> Link | None:
        """The link delivering now (the older one during a rotation)."""
        live = [link for link in self.links if link.held is None and not link.done.is_set()]
        return live[0] if live else None

    def connect_plan(self) -> tuple[str, list[str]]:
        """The URL to connect to and the streams to SUBSCRIBE once connected.

        As many streams as fit in ``max_url_length`` go in the URL
        (``/stream?streams=a/b``), which costs no client message at all; the
        rest are subscribed in batches through the token bucket.
        """
        if not self.subscribe_on_connect:
            return self.url, []
        names = list(self.streams)
        budget = self.context.options.max_url_length - len(self.url) - len("?streams=")
        fit = 0
        for name in names:
            budget -= len(quote(name, safe="@!_:")) + 1
            if budget < 0:
                break
            fit += 1
        if not fit:
            return self.url, names
        return (combined_url(names[:fit], self.base_url, market=self.context.options.market),
                names[fit:])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                link = await self._connect(hold=False)
                self.started = True
                if self.context.options.no_data_after is not None:
                    nursery.start_soon(self._watch_no_data, self.context.options.no_data_after)
                task_status.started()
                while True:
                    link = await self._supervise(link)
        except BaseExceptionGroup as group:
            leaf = lone_exception(group)
            raise leaf from leaf.__cause__  # keep the leaf's own cause

    async def _connect(self, *, hold: bool) -> Link:
        """Start a link, retrying retryable failures with backoff; raise fatal ones."""
        feed = self.context
        limiter = feed.attempt_limiter
        assert self._nursery is not None
        while True:
            wait = limiter.wait_time(trio.current_time())
            if wait > 0:
                logger.warning("shard %d: attempt budget spent, waiting %.1f s", self.index, wait)
                await trio.sleep(wait)
            limiter.record(trio.current_time())
            feed.counters.connect_attempts += 1
            self._numbers += 1
            link = Link(self, self._numbers, hold=hold)
            self.links.append(link)
            try:
                await self._nursery.start(link.run)
                return link
            except Exception as exc:
                self.links.remove(link)
                if is_fatal(exc) or not feed.options.reconnect:
                    raise
                if not self.started and not feed.options.retry_first_connect:
                    raise  # a first connection that fails is most likely misconfigured
                feed.counters.connect_failures += 1
                delay = self.backoff.next_delay()
                retry_after = exc.retry_after if isinstance(exc, HandshakeError) else None
                if retry_after is not None:
                    # The server said when to come back (429 Retry-After): not sooner,
                    # but never later than max_retry_after.
                    delay = max(delay, min(retry_after, feed.options.max_retry_after))
                logger.warning("shard %d: connection failed (%s: %s); retrying in %.2f s",
                               self.index, type(exc).__name__, exc, delay)
                await trio.sleep(delay)

    async def _supervise(self, link: Link) -> Link:
        """Run ``link`` until it needs replacing; return its replacement."""
        options = self.context.options
        deadline = (
            link.connected_at + options.rotate_after
            if options.rotate_after is not None and link.connected_at is not None
            else float("inf")
        )
        with trio.move_on_at(deadline):
            await link.attention.wait()
        if not link.done.is_set():
            # Rotation attempts go through the backoff too: a server that sends
            # serverShutdown to every new connection at once must not get a new
            # connection per round trip (the old link keeps delivering meanwhile).
            delay = self.backoff.next_rotation_delay()
            with trio.move_on_after(delay):
                await link.done.wait()
        if link.done.is_set():
            self.links.remove(link)
            error = link.error or ConnectionClosed(1006, "connection ended")
            if not options.reconnect or is_fatal(error):
                raise error
            cause = reconnect_cause(error)
            self.context.counters.reconnects[cause] += 1
            if cause in ("stale", "ping timeout"):
                self.context.counters.stale += 1
            delay = self.backoff.next_delay()
            logger.warning("shard %d: connection %s lost (%s); reconnecting in %.2f s",
                           self.index, link.label, error, delay)
            await trio.sleep(delay)
            return await self._connect(hold=False)
        cause = "server shutdown" if link.shutdown_notice else "rotation"
        return await self._rotate(link, cause)

    async def _rotate(self, old: Link, cause: str) -> Link:
        options = self.context.options
        logger.info("shard %d: rotating connection %s (%s)", self.index, old.label, cause)
        self.rotating = True
        new = await self._connect(hold=True)
        with trio.move_on_after(options.rotation_timeout):
            async with trio.open_nursery() as race:
                async def first_data() -> None:
                    await new.first_data.wait()
                    race.cancel_scope.cancel()

                async def new_died() -> None:
                    await new.done.wait()
                    race.cancel_scope.cancel()

                race.start_soon(first_data)
                race.start_soon(new_died)
        if new.done.is_set():
            # The replacement died before delivering: keep the old one, try again later.
            self.rotating = False
            self.links.remove(new)
            logger.warning("shard %d: replacement failed; retrying the rotation after the "
                           "backoff", self.index)
            return old
        # The old connection may still hold messages older than the new one's
        # first, in the server's queue or in TCP buffers: let it catch up, on
        # every stream the new one holds, to the id just before that stream's
        # first held message (the event time for streams without ids), bounded
        # by rotation_timeout, before retiring it.
        with trio.move_on_after(options.rotation_timeout):
            await old.wait_until_covered(new)
        old.retire()
        await old.done.wait()
        self.rotating = False
        if old in self.links:
            self.links.remove(old)
        new.release()
        self.context.counters.reconnects[cause] += 1
        self.context.counters.rotations += 1
        logger.info("shard %d: connection %s replaced by %s", self.index, old.label, new.label)
        return new

    async def request(self, method: str, names: list[str]) -> None:
        """Send a SUBSCRIBE/UNSUBSCRIBE on every live link of the shard (two during a rotation)."""
        if method == "SUBSCRIBE":
            now = trio.current_time()
            for name in names:
                self.since[name] = now
        links = [link for link in self.links if not link.done.is_set()]
        for link in links:
            await link.request(method, names)

    async def _watch_no_data(self, delay: float) -> None:
        """Report, once each, the streams that delivered nothing ``delay`` s after subscribing.

        Binance accepts a stream for a symbol that does not exist and then
        sends nothing, so without this a typo shows only as a stream that
        never appears.  The report is a warning in the log and
        ``statistics().streams[name].no_data``, which clears once data arrives.
        """
        counters = self.context.counters
        while True:
            now = trio.current_time()
            due = now + delay
            for name, since in list(self.since.items()):
                if name not in self.streams:
                    del self.since[name]  # unsubscribed
                elif now - since < delay:
                    due = min(due, since + delay)
                else:
                    del self.since[name]
                    entry = counters.per_stream.get(name)
                    if entry is None or not entry[0]:
                        counters.no_data.add(name)
                        logger.warning("shard %d: no data on %s %.0f s after subscribing it "
                                       "(no_data_after); is the symbol listed?",
                                       self.index, name, now - since)
            await trio.sleep_until(due)
