"""The recording format: lines, torn tails, appends, binary frames, unwrapping."""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from trio_feed.recording import (
    ReadReport,
    Record,
    RecordingError,
    RecordingWriter,
    encode_record,
    read_recording,
    stream_of,
    unwrap,
)

ENVELOPE = '{"stream":"btcusdt@trade","data":{"e":"trade","p":"1.10"}}'


def test_line_shape_is_what_the_docs_say() -> None:
    line = encode_record(123, "btcusdt@trade", ENVELOPE)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"t": 123, "stream": "btcusdt@trade", "raw": ENVELOPE}
    binary = orjson.loads(encode_record(5, None, memoryview(b"\x00\xff")))
    assert binary == {"t": 5, "stream": None, "raw_b64": base64.b64encode(b"\x00\xff").decode()}


def test_stream_of_and_unwrap() -> None:
    assert stream_of(ENVELOPE.encode()) == "btcusdt@trade"
    assert stream_of(memoryview(b'{"e":"trade"}')) is None
    assert stream_of(b'{"stream":"x"}') is None  # no data: not an envelope
    assert stream_of(b"\xff not json") is None
    assert unwrap(ENVELOPE, "btcusdt@trade") == '{"e":"trade","p":"1.10"}'
    spaced = '{ "data": {"e": "trade"}, "stream": "btcusdt@trade" }'
    assert unwrap(spaced, "btcusdt@trade") == '{"e":"trade"}'
    assert Record(1, "btcusdt@trade", ENVELOPE).payload() == '{"e":"trade","p":"1.10"}'
    assert Record(1, None, "x").payload() == "x"


def test_write_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    records = [Record(1, "btcusdt@trade", ENVELOPE), Record(2, None, b"\x01\x02"),
               Record(3, None, 'with "quotes" and \\ and é\u2028')]
    with RecordingWriter(path) as writer:
        writer.write_lines([r.to_line() for r in records[:2]])
        writer.write_lines([records[2].to_line()])
        writer.write_lines([])
    assert list(read_recording(path)) == records
    assert writer.bytes_written == path.stat().st_size


def test_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    whole = Record(1, None, "a").to_line()
    path.write_bytes(whole + whole[:10])
    report = ReadReport()
    assert list(read_recording(path, report=report)) == [Record(1, None, "a")]
    assert report.torn and report.lines == 1
    path.write_bytes(whole + whole[:-1])  # only the newline is missing: still whole
    report = ReadReport()
    assert len(list(read_recording(path, report=report))) == 2 and not report.torn


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(Record(1, None, "a").to_line() + b'{"t": "x"}\n'
                     + Record(2, None, "b").to_line())
    with pytest.raises(RecordingError, match=r"r.jsonl:2: not a trio-feed recording line"):
        list(read_recording(path))
    with pytest.raises(RecordingError, match=r"cannot read .*missing"):
        list(read_recording(tmp_path / "missing"))


def test_append_cuts_a_torn_tail_first(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    first = Record(1, None, "a").to_line()
    path.write_bytes(first + b'{"t":2,"stre')
    with RecordingWriter(path, append=True) as writer:
        writer.write_lines([Record(3, None, "c").to_line()])
    assert [r.t for r in read_recording(path)] == [1, 3]
    path.write_bytes(b'{"t":2,"stre')  # nothing whole at all
    with RecordingWriter(path, append=True) as writer:
        writer.write_lines([first])
    assert path.read_bytes() == first
    with RecordingWriter(path) as writer:  # without append: replaced
        pass
    assert path.read_bytes() == b""


def test_unwritable_path_is_a_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot write"):
        RecordingWriter(tmp_path / "no" / "such" / "dir.jsonl")


@pytest.mark.skipif(importlib.util.find_spec("zstandard") is None, reason="zstandard missing")
def test_zstd_round_trip_and_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.zst"
    with RecordingWriter(path) as writer:
        for i in range(3):
            writer.write_lines([Record(i, None, f"m{i}").to_line()])
    assert [r.raw for r in read_recording(path)] == ["m0", "m1", "m2"]
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    assert [r.raw for r in read_recording(path)][:2] == ["m0", "m1"]


def test_zst_without_zstandard_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['zstandard'] = None\n"
        "from trio_feed.recording import RecordingWriter, RecordingError\n"
        "try:\n"
        f"    RecordingWriter({str(tmp_path / 'x.zst')!r})\n"
        "except RecordingError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "need the 'zstandard' package (pip install zstandard)" in out
