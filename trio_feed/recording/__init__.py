"""Recordings: JSON lines of raw frames with their receive time, safe against a crash.

:func:`record` writes what a connection receives (with a :class:`RecordingBackfill`, also
what its trade streams' gaps skipped, fetched over REST and marked); :func:`read_recording`
reads it back; ``trio_feed.exchange.open_replay_server`` serves a recording to any client.
"""

from ._backfill import RecordingBackfill
from ._format import (
    ReadReport,
    Record,
    RecordCounters,
    RecordingError,
    RecordingWriter,
    RecordStatistics,
    encode_record,
    read_recording,
    record,
    stream_of,
    unwrap,
)
from ._stats import compute_stats

__all__ = [
    "ReadReport",
    "Record",
    "RecordCounters",
    "RecordStatistics",
    "RecordingBackfill",
    "RecordingError",
    "RecordingWriter",
    "compute_stats",
    "encode_record",
    "read_recording",
    "record",
    "stream_of",
    "unwrap",
]
