"""The local exchange's counters, and what it reports about one open connection."""

from __future__ import annotations

import attrs

__all__ = ["ConnectionInfo", "Counters", "ExchangeStatistics"]


@attrs.frozen
class ExchangeStatistics:
    """A snapshot of what a :class:`LocalExchange` has done so far.

    ``messages_sent`` counts data messages (market payloads and
    ``serverShutdown`` notices); control replies count in
    ``control_requests`` (all of them) and ``control_errors`` (the error
    replies).  ``messages_dropped`` counts data messages that were due to a
    connection but never written: the connection closed first, its queue
    overflowed, or (shared market) sending was paused.  Data discarded
    because its stream was unsubscribed first is not counted.

    ``connection_attempts`` counts upgrade requests: ``connections_refused``
    (503, ``refuse_connections``), ``handshakes_rejected`` (400, 404) and
    ``connections_accepted`` are its parts.  ``connections_dropped`` counts
    TCP connections ended without a Close frame by ``drop_connections`` and
    ``accept_and_close``.  ``rate_limit_closes``, ``lifetime_closes`` and
    ``slow_client_closes`` count closes for those faults.
    ``client_messages`` counts everything clients sent (messages, pings and
    pongs), ``client_pings`` and ``client_pongs`` its control frames, and
    ``client_pings_unanswered`` the pings that got no pong
    (``ignore_client_pings``, ``pause_sending``, over the budget, closing).
    ``misrouted_streams`` counts subscriptions made on a connection whose
    route does not serve the stream's kind (a USD-M ``/market`` stream on
    ``/public``, say): accepted, like Binance, and never sent anything.
    """

    connections_accepted: int
    connections_open: int
    handshakes_rejected: int
    messages_sent: int
    messages_dropped: int
    pings_sent: int
    pongs_missed: int
    control_requests: int
    control_errors: int
    connection_attempts: int
    connections_refused: int
    connections_dropped: int
    rate_limit_closes: int
    lifetime_closes: int
    slow_client_closes: int
    client_messages: int
    client_pings: int
    client_pongs: int
    client_pings_unanswered: int
    misrouted_streams: int = 0


@attrs.define
class Counters:
    connections_accepted: int = 0
    connections_open: int = 0
    handshakes_rejected: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    pings_sent: int = 0
    pongs_missed: int = 0
    control_requests: int = 0
    control_errors: int = 0
    connection_attempts: int = 0
    connections_refused: int = 0
    connections_dropped: int = 0
    rate_limit_closes: int = 0
    lifetime_closes: int = 0
    slow_client_closes: int = 0
    client_messages: int = 0
    client_pings: int = 0
    client_pongs: int = 0
    client_pings_unanswered: int = 0
    misrouted_streams: int = 0

    def snapshot(self) -> ExchangeStatistics:
        return ExchangeStatistics(**attrs.asdict(self))


@attrs.frozen
class ConnectionInfo:
    """One open connection, as :meth:`LocalExchange.open_connections` reports it.

    ``number`` is the connection's number (0, 1, ... in order of
    acceptance; the same number as in ``subscribe_requests``),
    ``subscriptions`` its stream names in subscription order, ``opened_at``
    ``trio.current_time()`` when it was accepted.  ``messages_sent`` and
    ``messages_dropped`` are its share of the exchange's counters,
    ``client_messages`` what it sent (pings and pongs included) and
    ``queued`` the length of its outgoing queue.
    """

    number: int
    subscriptions: tuple[str, ...]
    opened_at: float
    session: str
    combined: bool
    messages_sent: int
    messages_dropped: int
    client_messages: int
    queued: int

