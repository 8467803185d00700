"""What the sink and the reader share: the coredis client, which failures to wait out, entering.

Both ends talk to the server through one ``coredis.Redis`` without coredis's
own retries: they retry themselves, from where they were, after the jittered
backoff of :class:`~trio_feed.feed._backoff.Backoff` (the feed's reconnect
schedule).  A failure is *transient* (retried for as long as it takes) when
the connection failed or timed out, or when the server answered that it cannot
take the command now (``OOM`` under ``noeviction``, ``LOADING``, ``BUSY``,
``TRYAGAIN``); anything else is a refusal or a bug, and ends the sink or the
reader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
import trio

from .._errors import lone_exception
from ._keys import hash_tag

T = TypeVar("T")

__all__ = ["ServerBusy", "by_slot", "enter", "leave", "redis_client", "server_busy",
           "transient"]

_TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError, OSError, anyio.BrokenResourceError, anyio.EndOfStream,
    anyio.ClosedResourceError, trio.BrokenResourceError,
)


class ServerBusy(Exception):
    """The server answered but cannot take the command now (out of memory, loading)."""


def server_busy(exc: BaseException) -> bool:
    """Full (maxmemory with noeviction), loading or busy: wait it out, like an outage."""
    text = str(exc)
    return any(word in text for word in ("OOM command not allowed", "LOADING", "BUSY ",
                                         "TRYAGAIN"))


def transient() -> tuple[type[BaseException], ...]:
    """The exception types a failed round trip may raise that are retried."""
    from coredis.exceptions import ConnectionError as RedisConnectionError

    return (RedisConnectionError, ServerBusy, *_TRANSIENT)


def redis_client(url: str, *, connect_timeout: float, read_timeout: float | None,
                 cluster: bool = False) -> Any:
    """A coredis client for ``url`` without coredis's own retries (the callers retry).

    ``cluster=True``: a ``RedisCluster`` that finds the other nodes from ``url``'s.
    """
    import coredis
    from coredis.retry import NoRetryPolicy

    kind = coredis.RedisCluster if cluster else coredis.Redis
    return kind.from_url(url, retry_policy=NoRetryPolicy(), connect_timeout=connect_timeout,
                         stream_timeout=read_timeout)


def by_slot(items: Iterable[T], key_of: Callable[[T], str], cluster: bool) -> list[list[T]]:
    """``items`` in groups whose keys share a cluster slot (by hash tag), in their order.

    Not on a cluster: one group.  Keys with the same hash tag (``_keys``) are
    in one slot; keys of different tags may share one too, so this can make
    more groups than slots, never a group that spans two.
    """
    if not cluster:
        whole = list(items)
        return [whole] if whole else []
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(hash_tag(key_of(item)), []).append(item)
    return list(groups.values())


async def enter(setup: Callable[[AsyncExitStack], Awaitable[None]]) -> AsyncExitStack:
    """Run ``setup`` on a new exit stack; if it fails, unwind what it entered and raise."""
    stack = AsyncExitStack()
    try:
        await setup(stack)
    except BaseException:
        await stack.aclose()
        raise
    return stack


async def leave(stack: AsyncExitStack, exc_type: type[BaseException] | None,
                exc: BaseException | None, tb: Any) -> None:
    """Unwind ``stack``; a lone failure of its nursery reaches the caller as itself."""
    try:
        await stack.__aexit__(exc_type, exc, tb)
    except BaseExceptionGroup as group:
        leaf = lone_exception(group)
        raise leaf from leaf.__cause__
