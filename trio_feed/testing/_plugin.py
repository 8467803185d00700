"""The pytest plugin (entry point ``trio_feed``): the ``local_exchange`` fixture.

Installed with trio_feed, so any project's tests can ask for it::

    async def test_my_strategy(local_exchange):
        async with open_feed(["btcusdt@trade"], base_url=local_exchange.base_url) as feed:
            ...

The fixture is async, so the test must run under pytest-trio (``trio_mode =
true``, or ``@pytest.mark.trio``).  Configure the exchange with the
``local_exchange`` marker, whose keywords go to
:func:`trio_feed.testing.open_local_exchange`::

    @pytest.mark.local_exchange(seed=7, rate=None, symbols=["btcusdt"])
    async def test_fast(local_exchange): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ..exchange import LocalExchange
from ._servers import open_local_exchange

__all__ = ["local_exchange", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "local_exchange(**options): options for the local_exchange fixture "
        "(the keywords of trio_feed.testing.open_local_exchange)",
    )


@pytest.fixture
async def local_exchange(request: pytest.FixtureRequest) -> AsyncIterator[LocalExchange]:
    """A running local exchange (``trio_feed.exchange.LocalExchange``), closed after the test."""
    marker = request.node.get_closest_marker("local_exchange")
    options = dict(marker.kwargs) if marker is not None else {}
    async with open_local_exchange(**options) as exchange:
        yield exchange
