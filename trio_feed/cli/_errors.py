"""Errors as the user reads them: one line naming the host, and an exit status.

``describe`` is shared by the ``trio-feed`` command and the examples, so a
refused connection, a TLS failure or a bad stream name reads the same
wherever it happens: exit status 2 for a usage error or a bad stream name,
1 for anything else.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Sequence

import orjson
import trio

from .._errors import (
    ConnectionClosed,
    DecodeError,
    HandshakeError,
    InvalidStreamName,
    ProtocolError,
    RecordingError,
    TrioFeedError,
)
from ..binance import parse_stream
from ._names import explain, name_in

__all__ = ["CliError", "check_streams", "describe", "leaves"]

#: At most this much of a refusing server's body goes into the one error line.
MAX_BODY_TEXT = 300


class CliError(Exception):
    """An error already phrased for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def check_streams(names: Sequence[str], market: str = "spot") -> list[str]:
    """``names`` if each is a valid stream name of ``market``, else a :class:`CliError` (2)."""
    for name in names:
        try:
            parse_stream(name, market)
        except InvalidStreamName as exc:
            raise CliError(f"invalid stream name: {explain(name, exc)}", 2) from None
    return list(names)


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception in ``exc``'s group tree (``[exc]`` for a plain exception)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def _connect_failure(exc: OSError) -> str:
    """The most specific reason trio recorded for a failed connection attempt."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for leaf in leaves(cause):
            if isinstance(leaf, OSError) and leaf.errno:
                return os.strerror(leaf.errno)
    return exc.strerror or str(exc)


_REFUSED_PREFIX = "the server refused the WebSocket upgrade: "


def _body_text(body: object) -> str:
    """A refusing server's explanation, on one line: a JSON ``msg`` if it has one."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("msg"), str):
            text = parsed["msg"]
        else:
            text = raw.decode("utf-8", "replace")
    elif isinstance(body, str):
        text = body
    else:
        return ""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > MAX_BODY_TEXT:
        text = text[: MAX_BODY_TEXT - 3] + "..."
    return text


def _refusal(exc: HandshakeError, target: str) -> str:
    message = str(exc)
    if exc.status is None or exc.status == 101:
        return f"{target}: the WebSocket upgrade failed: {message}"
    # Said once: "<target> refused the WebSocket upgrade: HTTP 451 ...", not twice.
    status = message.removeprefix(_REFUSED_PREFIX) if message.startswith(_REFUSED_PREFIX) \
        else f"HTTP {exc.status}"
    line = f"{target} refused the WebSocket upgrade: {status}"
    # The server's body says why (Binance explains a 451 there).  HandshakeError
    # carries it as ``body`` when the connection layer read one.
    body = _body_text(getattr(exc, "body", None))
    if body:
        line += f": {body}"
    return line


def describe(exc: BaseException, target: str) -> tuple[str, int]:
    """One line for the user, and the exit status, for an exception a command raised.

    ``target`` names where the command was connecting (a URL, or "the local
    exchange").  A group holding one exception is described as that exception.
    """
    found = leaves(exc)
    if len(found) == 1:
        exc = found[0]
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, InvalidStreamName):
        name = name_in(exc)
        return f"invalid stream name: {explain(name, exc) if name else exc}", 2
    if isinstance(exc, RecordingError):
        return str(exc), 1
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS failure with {target}: certificate verify failed: {exc.verify_message}", 1
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure with {target}: {exc.reason or exc}", 1
    if isinstance(exc, trio.TooSlowError):
        return f"timed out connecting to {target}", 1
    if isinstance(exc, OSError):
        return f"cannot connect to {target}: {_connect_failure(exc)}", 1
    if isinstance(exc, HandshakeError):
        return _refusal(exc, target), 1
    if isinstance(exc, ConnectionClosed):
        return f"{target}: {exc}", 1
    if isinstance(exc, (ProtocolError, DecodeError)):
        return f"{target} sent something invalid: {exc}", 1
    if isinstance(exc, (TrioFeedError, ValueError)):
        return str(exc), 1
    if type(exc).__module__.startswith("coredis"):
        return f"redis: {exc}", 1
    return f"{type(exc).__name__}: {exc}", 1
