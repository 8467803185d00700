"""The spool of a sink under ``policy="spool"``: what did not fit in memory, on disk, in order.

The spool is a list of *segments*, recording files (``trio_feed.recording``,
one line per event: ``t`` when the event reached the sink, ``stream``, and
``raw``, the entry element exactly as the sink would have written it: the
Binance frame, or the normalised JSON).  New events are appended to the
newest segment; the writer replays the oldest one.  Replaying a segment that
is still being written first closes it, so later spills start a new one and
a file is never read while it grows.  A segment is deleted once every entry
made from it is acknowledged by the server.  Segments left by an earlier run
(``<path>.<n>``) are replayed first.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..recording import Record, RecordingWriter, encode_record, read_recording

__all__ = ["Spool"]


class Spool:
    """Segments ``<path>.1``, ``<path>.2``, ... oldest first; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.base = Path(path)
        pattern = re.compile(re.escape(self.base.name) + r"\.(\d+)$")
        found = sorted(
            (int(m.group(1)), entry) for entry in (self.base.parent.iterdir()
                                                  if self.base.parent.is_dir() else ())
            if (m := pattern.match(entry.name)) is not None
        )
        #: Closed segments, oldest first, waiting to be replayed.
        self._closed: deque[Path] = deque(entry for _, entry in found)
        self._next = found[-1][0] + 1 if found else 1
        self._writer: RecordingWriter | None = None
        self._written_path: Path | None = None
        self._reading: Iterator[Record] | None = None
        self._reading_path: Path | None = None
        #: Bytes in the segments not yet deleted.
        self.bytes = sum(entry.stat().st_size for entry in self._closed)

    def has_data(self) -> bool:
        """Whether anything is left to replay."""
        return bool(self._closed or self._reading is not None or self._writer is not None)

    def spill(self, stream: str, t_ns: int, items: Sequence[bytes]) -> None:
        """Append one batch's events to the newest segment (one ``write``)."""
        if self._writer is None:
            self._written_path = self.base.with_name(f"{self.base.name}.{self._next}")
            self._next += 1
            self._writer = RecordingWriter(self._written_path)
        before = self._writer.bytes_written
        self._writer.write_lines(encode_record(t_ns, stream, item.decode()) for item in items)
        self.bytes += self._writer.bytes_written - before

    def take(self, limit: int) -> tuple[list[Record], Path | None]:
        """Up to ``limit`` of the oldest events, and the segment's path when they end it."""
        if self._reading is None:
            if not self._closed and self._writer is not None:
                assert self._written_path is not None
                self._writer.close()
                self._closed.append(self._written_path)
                self._writer = self._written_path = None
            if not self._closed:
                return [], None
            self._reading_path = self._closed.popleft()
            self._reading = read_recording(self._reading_path)
        records: list[Record] = []
        for record in self._reading:
            records.append(record)
            if len(records) >= limit:
                return records, None
        done, self._reading, self._reading_path = self._reading_path, None, None
        return records, done

    def delete(self, path: Path) -> None:
        """Remove a segment whose entries the server acknowledged."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self.bytes -= size

    def close(self) -> None:
        """Close the segment being written; what is on disk stays for the next run."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
