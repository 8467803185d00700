"""Recordings: every frame exactly as received, with its local receive time.

A recording is a text file of JSON lines, one per WebSocket data message::

    {"t":1700000000123456789,"stream":"btcusdt@trade","raw":"{\\"stream\\":\\"btcusdt@trade\\",...}"}

- ``t``: the local wall-clock time (``time.time_ns()``) at which the receive
  chunk holding the message was read, in nanoseconds;
- ``stream``: the stream name from the combined envelope
  (``{"stream":...,"data":...}``), or ``null`` when the message had none (a
  raw ``/ws/<stream>`` connection, or anything that is not an envelope);
- ``raw``: the payload of a text frame, exactly as received (JSON escaping
  only, so ``orjson.loads(line)["raw"]`` gives back the same characters);
  binary frames carry ``raw_b64`` (standard base64) instead;
- ``backfilled`` (only when true): the line was not received but fetched
  over REST to fill a gap of its trade stream (``record(..., backfill=...)``,
  ``trio_feed.recording._backfill``); its ``t`` is when it was fetched.

``docs/testing.md`` describes the format for other tools (``jq`` reads it).

REC1: a crash loses at most the last line.
    The recorder encodes the lines of one receive chunk, then hands them to
    the file in one ``write`` of whole lines on an unbuffered file (looping
    only if the OS accepts part of it).  Nothing is held in a user-space
    buffer between chunks, so a ``SIGKILL`` leaves every earlier line on
    disk, and at worst one torn line at the end.  :func:`read_recording`
    skips a torn *last* line and reports it; a bad line anywhere else is an
    error.

REC2: appending never glues a new line onto a torn one.
    :class:`RecordingWriter` with ``append=True`` first cuts a torn tail
    (bytes after the last newline) off the file, so the file stays a
    sequence of whole lines.  Recordings are self-contained lines with no
    header, so two recordings appended together are one valid recording.

REC3: a lent view is copied once and never kept.
    :func:`record` works at the connection level: it borrows each payload
    from :meth:`~trio_feed.wire.FrameParser.messages`, decodes it to ``str``
    (the one copy) while peeking at its ``stream`` with ``orjson``, and
    releases the view before taking the next.  The writes happen between
    chunks, when no view is lent.

A name ending in ``.zst`` is read and written as Zstandard, when the
optional ``zstandard`` package is importable (else :class:`RecordingError`
says so).  Each chunk becomes one complete Zstandard frame, so a crash loses
at most the last chunk there.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import attrs
import orjson
import trio

from .._connection import open_connection
from .._errors import ConnectionClosed, ProtocolError, RecordingError
from ..wire import Opcode

__all__ = [
    "ReadReport",
    "Record",
    "RecordCounters",
    "RecordStatistics",
    "RecordingError",
    "RecordingWriter",
    "encode_record",
    "read_recording",
    "record",
    "stream_of",
    "unwrap",
]

_READ_SIZE = 1 << 20



@attrs.frozen
class Record:
    """One recorded message: receive time ``t`` (ns), ``stream`` (or ``None``) and ``raw``.

    ``raw`` is a ``str`` for a text frame and ``bytes`` for a binary one.
    """

    t: int
    stream: str | None
    raw: str | bytes
    #: Fetched over REST to fill a gap, not received (see the module docstring).
    backfilled: bool = False

    def payload(self) -> str | bytes:
        """The message without its combined envelope (``raw`` itself when it has none)."""
        if self.stream is None or isinstance(self.raw, bytes):
            return self.raw
        return unwrap(self.raw, self.stream)

    def to_line(self) -> bytes:
        """The record as one JSON line, newline included."""
        return encode_record(self.t, self.stream, self.raw, backfilled=self.backfilled)


def encode_record(t: int, stream: str | None, raw: str | bytes | memoryview, *,
                  backfilled: bool = False) -> bytes:
    """One recording line.  A ``str`` is a text frame; bytes-like data a binary one."""
    if isinstance(raw, str):
        if backfilled:
            return orjson.dumps({"t": t, "stream": stream, "raw": raw,
                                 "backfilled": True}) + b"\n"
        return orjson.dumps({"t": t, "stream": stream, "raw": raw}) + b"\n"
    encoded = base64.b64encode(raw).decode("ascii")
    return orjson.dumps({"t": t, "stream": stream, "raw_b64": encoded}) + b"\n"


def stream_of(payload: bytes | bytearray | memoryview | str) -> str | None:
    """The ``stream`` of a combined envelope, or ``None`` if ``payload`` is not one."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is dict and "data" in obj:
        name = obj.get("stream")
        if type(name) is str:
            return name
    return None


def unwrap(raw: str, stream: str) -> str:
    """The ``data`` of the envelope ``raw``, as the exact characters it holds.

    Binance (and the local exchange) write envelopes as
    ``{"stream":<name>,"data":<payload>}``; the payload is sliced out of
    that text untouched.  Any other shape is parsed and ``data`` re-encoded.
    """
    head = '{"stream":' + orjson.dumps(stream).decode() + ',"data":'
    if raw.startswith(head) and raw.endswith("}"):
        return raw[len(head):-1]
    return orjson.dumps(orjson.loads(raw)["data"]).decode()


def _decode_line(line: bytes) -> Record:
    obj = orjson.loads(line)
    if type(obj) is not dict:
        raise ValueError("not a JSON object")
    t, stream = obj.get("t"), obj.get("stream")
    if type(t) is not int:
        raise ValueError('"t" must be an integer (ns)')
    if stream is not None and type(stream) is not str:
        raise ValueError('"stream" must be a string or null')
    if "raw" in obj:
        raw = obj["raw"]
        if type(raw) is not str:
            raise ValueError('"raw" must be a string')
        return Record(t, stream, raw, obj.get("backfilled") is True)
    if "raw_b64" in obj:
        return Record(t, stream, base64.b64decode(obj["raw_b64"], validate=True))
    raise ValueError('neither "raw" nor "raw_b64" is present')


def _zstandard(path: str) -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise RecordingError(
            f"{path}: .zst recordings need the 'zstandard' package (pip install zstandard)"
        ) from None


def _chunks(path: str) -> Iterator[bytes]:
    """The file's bytes, decompressed if its name ends in ``.zst``."""
    try:
        handle = open(path, "rb")  # closed in the finally below
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.endswith(".zst"):
            zstd = _zstandard(path)
            reader = zstd.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
            while True:
                try:
                    data = reader.read(_READ_SIZE)
                except zstd.ZstdError:
                    return  # a torn last frame: a crash while writing it
                if not data:
                    return
                yield data
        else:
            while True:
                try:
                    data = handle.read(_READ_SIZE)
                except OSError as exc:
                    raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
                if not data:
                    return
                yield data
    finally:
        handle.close()


@attrs.define
class ReadReport:
    """Filled in by :func:`read_recording` as it goes: ``lines`` read, ``torn`` last line."""

    lines: int = 0
    torn: bool = False


def read_recording(
    path: str | os.PathLike[str], *, report: ReadReport | None = None
) -> Iterator[Record]:
    """Yield the records of the recording at ``path``, in file order.

    A torn last line (no newline, and not valid JSON) is skipped, and
    ``report.torn`` set, if a :class:`ReadReport` is given.  Raises
    :class:`RecordingError` naming the file for a file that cannot be opened
    or read, and naming the line for a line that is not a record.
    """
    name = os.fspath(path)
    report = report if report is not None else ReadReport()
    pending = b""
    number = 0
    for chunk in _chunks(name):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            number += 1
            if not line.strip():
                continue
            try:
                record = _decode_line(line)
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise RecordingError(
                    f"{name}:{number}: not a trio-feed recording line ({exc})"
                ) from None
            report.lines += 1
            yield record
    if pending.strip():
        number += 1
        try:
            record = _decode_line(pending)
        except (ValueError, orjson.JSONDecodeError):
            report.torn = True
            return
        report.lines += 1
        yield record


class RecordingWriter:
    """Append whole lines to a recording file, each batch in one ``write`` (see REC1).

    ``append=False`` truncates an existing file; ``append=True`` keeps it,
    cutting off a torn last line first (REC2).  Use as a context manager,
    or call :meth:`close`.  Raises :class:`RecordingError` if the file cannot
    be opened or written.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = os.fspath(path)
        self._compress: Callable[[bytes], bytes] | None = None
        if self.path.endswith(".zst"):
            compressor = _zstandard(self.path).ZstdCompressor()
            self._compress = compressor.compress
        # Appending reads the tail back (REC2), so it needs read access too.
        flags = os.O_CREAT | (os.O_RDWR | os.O_APPEND if append else os.O_WRONLY | os.O_TRUNC)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise RecordingError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if append and self._compress is None:
            try:
                _cut_torn_tail(self._fd)
            except OSError as exc:
                self.close()
                raise RecordingError(
                    f"cannot append to {self.path}: {exc.strerror or exc}"
                ) from None
        self.bytes_written = 0

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Write ``lines`` (each ending in a newline) with one ``write`` call, unbuffered."""
        if self._fd is None:
            raise RecordingError(f"{self.path}: the writer is closed")
        data = b"".join(lines)
        if not data:
            return
        if self._compress is not None:
            data = self._compress(data)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise RecordingError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        finally:
            view.release()
        self.bytes_written += len(data)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cut_torn_tail(fd: int) -> None:
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return
    # O_APPEND ignores the offset for writes, but pread/ftruncate are positional.
    step = 4096
    end = size
    if os.pread(fd, 1, size - 1) == b"\n":
        return
    while end > 0:
        start = max(0, end - step)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


# -- recording a connection ---------------------------------------------------


@attrs.define
class RecordCounters:
    """Live counters of a running :func:`record`, readable from another task."""

    messages: int = 0
    payload_bytes: int = 0
    chunks: int = 0


@attrs.frozen
class RecordStatistics:
    """What :func:`record` did.

    ``closed`` is the :class:`~trio_feed.ConnectionClosed` that ended the
    recording when the connection ended (a replay server closes with 1000
    at the end of its recording, say), ``None`` when ``limit``, ``duration``
    or cancellation ended it.
    """

    url: str
    path: str
    messages: int
    payload_bytes: int
    file_bytes: int
    started_ns: int
    ended_ns: int
    closed: ConnectionClosed | None


async def record(
    url: str,
    writer: RecordingWriter,
    *,
    limit: int | None = None,
    duration: float | None = None,
    counters: RecordCounters | None = None,
    backfill: Any = None,
    **connect_options: Any,
) -> RecordStatistics:
    """Connect to ``url`` and write every data message to ``writer`` as it arrives.

    Stops after ``limit`` messages, after ``duration`` seconds, when the
    connection ends (see :attr:`RecordStatistics.closed`), or when cancelled;
    each receive chunk is on disk before the next is read.  ``counters`` is
    updated live.  ``connect_options`` go to
    :func:`~trio_feed.open_connection`.  ``backfill``, a
    ``RecordingBackfill``, fetches what the trade streams' gaps skipped and
    writes it, marked (``trio_feed.recording._backfill``); the recording
    then ends once its last fills have.  Raises what ``open_connection``
    raises, :class:`~trio_feed.ProtocolError` (after writing the messages
    that preceded the violation), and :class:`RecordingError`.
    """
    counters = counters if counters is not None else RecordCounters()
    started = time.time_ns()
    closed: ConnectionClosed | None = None
    text = Opcode.TEXT
    observe = backfill.observe if backfill is not None else None
    async with contextlib.AsyncExitStack() as stack:
        if backfill is not None:
            await stack.enter_async_context(backfill.running(writer))
        conn = await stack.enter_async_context(open_connection(url, **connect_options))
        parser = conn.parser
        with trio.move_on_after(math.inf if duration is None else duration):
            t = time.time_ns()
            while True:
                lines: list[bytes] = []
                full = False
                try:
                    for view in parser.messages():
                        try:
                            if parser.opcode == text:
                                name, payload = stream_of(view), str(view, "utf-8")
                                lines.append(encode_record(t, name, payload))
                                if observe is not None:
                                    observe(name, payload)
                            else:
                                lines.append(encode_record(t, None, view))
                            counters.payload_bytes += len(view)
                        finally:
                            view.release()
                        if limit is not None and counters.messages + len(lines) >= limit:
                            full = True
                            break
                except ProtocolError as exc:
                    writer.write_lines(lines)
                    counters.messages += len(lines)
                    await conn.fail(exc)
                    raise
                writer.write_lines(lines)
                counters.messages += len(lines)
                if full:
                    break
                try:
                    await conn.receive_more()
                except ConnectionClosed as exc:
                    closed = exc
                    break
                counters.chunks += 1
                t = time.time_ns()
    return RecordStatistics(
        url=url,
        path=writer.path,
        messages=counters.messages,
        payload_bytes=counters.payload_bytes,
        file_bytes=writer.bytes_written,
        started_ns=started,
        ended_ns=time.time_ns(),
        closed=closed,
    )
