"""The embedded exchange for code that is not trio: a thread of its own, driven from outside."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import trio

from ..exchange import LocalExchange, open_exchange

__all__ = ["ExchangeThread", "exchange_thread"]


class ExchangeThread:
    """The embedded exchange under ``trio.run`` in a background thread.

    ``exchange`` is the running :class:`~trio_feed.exchange.LocalExchange`;
    ``base_url`` its WebSocket base URL.  Call its methods through
    :meth:`run` (async ones) or :meth:`run_sync` (the others), which run them
    in the exchange's own thread.  Made by :func:`exchange_thread`.
    """

    def __init__(self, options: dict[str, Any], start_timeout: float) -> None:
        self._options = options
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._exchange: LocalExchange | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="trio_feed-exchange", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by __enter__, never lost
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_exchange(**self._options) as exchange:
            self._exchange = exchange
            self._ready.set()
            await self._stop.wait()

    @property
    def exchange(self) -> LocalExchange:
        assert self._exchange is not None, "the exchange is not running"
        return self._exchange

    @property
    def base_url(self) -> str:
        return self.exchange.base_url

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await fn(*args)`` in the exchange's thread; returns its result."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the exchange's thread; returns its result."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def __enter__(self) -> ExchangeThread:
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError(f"the exchange did not start within {self._start_timeout} s")
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._stop is not None and self._thread.is_alive():
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(self._start_timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the exchange did not stop within {self._start_timeout} s")


def exchange_thread(*, start_timeout: float = 30.0, **options: Any) -> ExchangeThread:
    """The embedded exchange in a thread: ``with exchange_thread() as running: running.base_url``.

    ``options`` are those of :func:`~trio_feed.exchange.open_exchange`.
    ``start_timeout`` bounds both the start and the stop.
    """
    return ExchangeThread(options, start_timeout)
