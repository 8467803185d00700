"""Tools for testing code built on trio_feed, in the spirit of ``trio.testing``.

- :func:`open_local_exchange`: the embedded exchange (also the pytest
  fixture ``local_exchange``, from the plugin this package installs);
- :func:`replay_recording`: serve a file made by ``trio-feed record``;
- :class:`Scenario` / :func:`open_scenario_server`: scripted payloads on
  named streams, pauses, then a fault (a close code, or a dropped TCP
  connection); :func:`trade`, :func:`depth_update` and :func:`book_ticker`
  build the payloads;
- :func:`exchange_thread`: the embedded exchange in a thread of its own, for
  tests of threaded or asyncio code;
- :class:`EventRecorder`: keep the events a handler received and assert on
  their sequence and on id gaps.

``docs/testing.md`` is the guide.
"""

from ..exchange import LocalExchange, ReplayServer
from ._payloads import book_ticker, depth_update, trade
from ._recorder import EventRecorder, Gap
from ._servers import Scenario, open_local_exchange, open_scenario_server, replay_recording
from ._threads import ExchangeThread, exchange_thread

__all__ = [
    "EventRecorder",
    "ExchangeThread",
    "Gap",
    "LocalExchange",
    "ReplayServer",
    "Scenario",
    "book_ticker",
    "depth_update",
    "exchange_thread",
    "open_local_exchange",
    "open_scenario_server",
    "replay_recording",
    "trade",
]
