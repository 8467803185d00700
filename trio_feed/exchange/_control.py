"""The control protocol: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS and the properties.

A client's text messages on a stream connection are JSON requests
(``STREAMS.md`` §3).  :func:`handle` applies one to a connection and returns
the reply Binance would send.  Responses are ``{"result":...,"id":...}``.
Errors follow the documented templates: ``{"code":0,"msg":"Unknown
property","id":...}`` carries the id, codes 1, 2 and 3 do not, except for
the errors Binance does not document, which carry it: a stream name that
:func:`~trio_feed.binance.parse_stream` rejects (code 2, the message names
the stream), a SUBSCRIBE to a stream on a symbol the exchange does not list
(code 2, ``Invalid symbol``; an UNSUBSCRIBE of one is a harmless no-op) and a
SUBSCRIBE that would exceed the streams a connection may carry (code 2).  A
SUBSCRIBE with any invalid name changes nothing.

The protocol only reads and changes what :class:`ControlTarget` exposes, so
it knows nothing about sending, queues or timers (``_session``).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from .._errors import InvalidStreamName
from ..binance._streams import Stream, parse_stream

__all__ = ["METHODS", "ControlTarget", "dumps", "error", "handle"]

#: The methods Binance accepts, in the order its error message lists them.
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_TEXT = re.compile(r"[A-Za-z0-9]{0,36}")
_INT64 = range(-(2**63), 2**63)


class ControlTarget(Protocol):
    """What the control protocol needs of one connection."""

    #: The subscriptions, by name, in subscription order.
    subs: dict[str, Stream]
    #: Whether data arrives in ``{"stream","data"}`` envelopes.
    combined: bool
    #: The market whose stream names the connection accepts (``"spot"``, ``"usdm"``).
    market_name: str
    @property
    def max_streams(self) -> int:
        """The most streams the connection may carry."""

    def known_symbol(self, symbol: str) -> bool:
        """Whether the exchange lists this (lowercase) symbol."""

    def log_request(self, method: str, params: list[Any]) -> None:
        """Record a SUBSCRIBE or UNSUBSCRIBE, valid or not."""

    def add(self, streams: list[Stream]) -> None:
        """Subscribe to ``streams`` (none of them subscribed yet)."""

    def remove(self, names: list[str]) -> None:
        """Unsubscribe from ``names`` (each one subscribed)."""


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def error(code: int, msg: str, *, request_id: Any = None, with_id: bool = False) -> str:
    """An error reply ``{"code":...,"msg":...}``, with ``"id"`` if ``with_id``."""
    reply: dict[str, Any] = {"code": code, "msg": msg}
    if with_id:
        reply["id"] = request_id
    return dumps(reply)


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value in _INT64
    return isinstance(value, str) and _ID_TEXT.fullmatch(value) is not None


def handle(target: ControlTarget, message: str | bytes) -> str:
    """Apply one control message to ``target`` and return the reply, as Binance would."""
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        return error(3, f"Invalid JSON: expected value at line {exc.lineno} "
                        f"column {exc.colno}")
    text = message if isinstance(message, str) else message.decode()
    if not isinstance(request, dict):
        return error(2, "Invalid request: expected a JSON object at line 1 column 1")
    if "method" not in request:
        return error(2, f"Invalid request: missing field `method` at line 1 "
                        f"column {len(text)}")
    method = request["method"]
    if method not in METHODS:
        encoded = dumps(method) if isinstance(method, str) else repr(method)
        column = text.find(encoded)
        column = column + len(encoded) if column >= 0 else len(text)
        return error(2, f"Invalid request: unknown variant `{method}`, expected one of "
                        + ", ".join(f"`{m}`" for m in METHODS)
                        + f" at line 1 column {column}")
    params = request.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        target.log_request(method, list(params) if isinstance(params, list) else [])
    request_id = request.get("id")
    if not _valid_id(request_id):
        return error(2, "Invalid request: request ID must be an unsigned integer")
    if not isinstance(params, list):
        return error(2, "Invalid request: params must be an array")
    if method == "LIST_SUBSCRIPTIONS":
        if params:
            return error(2, "Invalid request: too many parameters")
        return dumps({"result": list(target.subs), "id": request_id})
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return _subscription(target, method, params, request_id)
    return _property(target, method, params, request_id)


def _subscription(target: ControlTarget, method: str, params: list[Any],
                  request_id: Any) -> str:
    streams: dict[str, Stream] = {}
    for name in params:
        if not isinstance(name, str):
            return error(2, f"Invalid request: invalid stream {name!r}: "
                            "a stream name must be a string",
                         request_id=request_id, with_id=True)
        try:
            stream = streams[name] = parse_stream(name, target.market_name)
        except InvalidStreamName as exc:
            return error(2, f"Invalid request: invalid stream {name!r}: {exc}",
                         request_id=request_id, with_id=True)
        if method == "SUBSCRIBE" and stream.symbol is not None \
                and not target.known_symbol(stream.symbol):
            return error(2, f"Invalid request: invalid stream {name!r}: Invalid symbol "
                            f"{stream.symbol!r}: the exchange does not list it",
                         request_id=request_id, with_id=True)
    subs = target.subs
    if method == "UNSUBSCRIBE":
        target.remove([name for name in streams if name in subs])
        return dumps({"result": None, "id": request_id})
    new = [stream for name, stream in streams.items() if name not in subs]
    if len(subs) + len(new) > target.max_streams:
        return error(2, f"Invalid request: too many streams: a connection carries at "
                        f"most {target.max_streams}", request_id=request_id, with_id=True)
    target.add(new)
    return dumps({"result": None, "id": request_id})


def _property(target: ControlTarget, method: str, params: list[Any], request_id: Any) -> str:
    expected = 2 if method == "SET_PROPERTY" else 1
    if len(params) > expected:
        return error(2, "Invalid request: too many parameters")
    if not params or not isinstance(params[0], str):
        return error(2, "Invalid request: property name must be a string")
    if params[0] != "combined":
        return error(0, "Unknown property", request_id=request_id, with_id=True)
    if method == "GET_PROPERTY":
        return dumps({"result": target.combined, "id": request_id})
    if len(params) < 2 or not isinstance(params[1], bool):
        return error(1, "Invalid value type: expected Boolean")
    target.combined = params[1]
    return dumps({"result": None, "id": request_id})
