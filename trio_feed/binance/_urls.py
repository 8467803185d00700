"""Binance stream URLs: built once, parsed once, and the combined envelope.

Binance serves a stream at ``/ws/<stream>`` (bare payloads) or several at
``/stream?streams=<s1>/<s2>`` (each payload wrapped as
``{"stream":<name>,"data":<payload>}``).  The client builds these URLs with
:func:`raw_url` and :func:`combined_url`; the local exchange and the CLI read
them back with :func:`parse_stream_url`; the exchange and the recorder wrap
payloads with :func:`envelope`.  One copy of each rule, so the two ends
cannot disagree.

Stream names are percent-encoded with :func:`quote_stream`: ``+`` (in
``@+08:00`` klines) becomes ``%2B`` so that a query string cannot read it as
a space.  Parsing percent-decodes path segments and the query; in the query
a bare ``+`` is a space, as in any form-encoded query.

USD-M futures serves each stream kind on one *route*, a path prefix before
``/ws`` or ``/stream`` (``/public`` for book data, ``/market`` for the rest;
``Venue.route``).  :func:`routed_url` adds it; :func:`parse_stream_url`
reads it back in :attr:`StreamUrl.route`.

Source: ``STREAMS.md`` §1 and §8.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import attrs
import orjson

from ._limits import SPOT
from ._streams import Stream, parse_stream

__all__ = [
    "DEFAULT_BASE_URL",
    "ENVELOPE_HEAD",
    "StreamUrl",
    "combined_url",
    "envelope",
    "parse_stream_url",
    "quote_stream",
    "raw_streams_url",
    "raw_url",
    "routed_url",
]

#: Binance spot production.  Port 9443 is the documented default; 443 works too.
DEFAULT_BASE_URL = SPOT.base_url

#: How every combined payload begins: ``{"stream":`` then the quoted name.
ENVELOPE_HEAD = b'{"stream":'


def envelope(name: str, raw: bytes) -> bytes:
    """Wrap one serialised payload in the combined-stream envelope."""
    return ENVELOPE_HEAD + orjson.dumps(name) + b',"data":' + raw + b"}"


def quote_stream(name: str) -> str:
    """A stream name as it goes in a URL path or query."""
    return quote(name, safe="@!_:")


def _base(base_url: str) -> str:
    if not base_url.startswith(("ws://", "wss://")):
        raise ValueError(f"base URL must start with ws:// or wss://, got {base_url!r}")
    return base_url.rstrip("/")


def raw_url(stream: str | Stream, base_url: str = DEFAULT_BASE_URL, *,
            market: str = "spot") -> str:
    """The ``/ws/<stream>`` URL: payloads arrive bare, without an envelope.

    ``market`` says whose names ``stream`` follows; the URL has no route
    (see :func:`routed_url`).
    """
    parsed = parse_stream(stream, market)
    return f"{_base(base_url)}/ws/{quote_stream(parsed.name)}"


def raw_streams_url(streams: Iterable[str | Stream], base_url: str = DEFAULT_BASE_URL, *,
                    market: str = "spot") -> str:
    """``/ws/<s1>/<s2>``: several streams on one raw connection, payloads bare."""
    names = [parse_stream(s, market).name for s in streams]
    if not names:
        raise ValueError("a raw URL needs at least one stream")
    return f"{_base(base_url)}/ws/" + "/".join(quote_stream(n) for n in names)


def combined_url(streams: Iterable[str | Stream], base_url: str = DEFAULT_BASE_URL, *,
                 market: str = "spot") -> str:
    """The ``/stream?streams=a/b`` URL: every payload arrives in a ``{"stream","data"}`` envelope.

    ``+`` (in ``@+08:00`` klines) is percent-encoded, so that it cannot be read
    as a space in the query string.
    """
    names = [parse_stream(s, market).name for s in streams]
    if not names:
        raise ValueError("a combined URL needs at least one stream")
    return f"{_base(base_url)}/stream?streams=" + "/".join(quote_stream(n) for n in names)


@attrs.frozen
class StreamUrl:
    """What a stream URL asks for.

    ``combined`` is true for ``/stream`` (enveloped payloads), false for
    ``/ws`` (bare ones).  ``route`` is the path prefix before them
    (``"/public"``, ``"/market"``; ``""`` for none).  ``names`` are the
    stream names it carries, decoded and in order, not yet checked (an
    empty name stays, so that it can be refused).  ``time_unit`` is the
    ``timeUnit`` query parameter, if any.
    """

    combined: bool
    names: tuple[str, ...]
    time_unit: str | None = None
    route: str = ""


#: The route prefixes a stream URL may carry (USD-M futures; ``/private`` is user data).
ROUTES = ("/public", "/market", "/private")


def routed_url(base_url: str, route: str) -> str:
    """``base_url`` with a route prefix (``"/public"``, ``"/market"`` or ``""``) appended."""
    if route and route not in ROUTES:
        raise ValueError(f"unknown route {route!r}: use one of {ROUTES}")
    return _base(base_url) + route


def parse_stream_url(url: str) -> StreamUrl | None:
    """Read a stream URL, or a request target such as ``/stream?streams=a/b``.

    ``None`` when the path is neither ``/ws[/<stream>...]`` nor ``/stream``
    (a base URL, say).
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    route = ""
    for prefix in ROUTES:
        if path.startswith(prefix + "/"):
            route, path = prefix, path[len(prefix):]
            break
    if path == "/ws" or path.startswith("/ws/"):
        text = path[len("/ws/"):]
        names = [unquote(segment) for segment in text.split("/")] if text else []
        return StreamUrl(False, tuple(names), query.get("timeUnit"), route)
    if path == "/stream":
        text = query.get("streams", "")
        return StreamUrl(True, tuple(text.split("/")) if text else (), query.get("timeUnit"),
                         route)
    return None
