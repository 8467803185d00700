"""examples/fanout.py as a user runs it: a local server, the embedded exchange, two readers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fanout_example_publishes_once_and_both_readers_get_everything() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fanout.py"), "--limit", "200"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("-- reader 1: 200 events from ") and ", 0 gaps" in lines[0]
    assert lines[1].startswith("-- reader 2 (late, with book): 200 events from ")
    assert ", 0 gaps" in lines[1] and "; book live at #" in lines[1]
    assert lines[2].startswith("-- publisher: ") and ", 0 dropped" in lines[2]
    assert "Traceback" not in result.stderr
