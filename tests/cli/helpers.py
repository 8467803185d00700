"""Running the real ``trio-feed`` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
#: The console script pip installed next to this interpreter.
ENTRY_POINT = Path(sys.executable).parent / "trio-feed"
TIMEOUT = 30


def command(*args: str, entry_point: bool = False) -> list[str]:
    if entry_point:
        return [str(ENTRY_POINT), *args]
    return [sys.executable, "-m", "trio_feed", *args]


def run_cli(*args: str, entry_point: bool = False, timeout: float = TIMEOUT,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args, entry_point=entry_point), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT)


async def run_cli_async(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """For tests that serve something in-process while the command runs."""
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(command(*args), capture_stdout=True,
                                        capture_stderr=True, check=False, cwd=cwd or ROOT)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def assert_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said so in exactly one line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-feed: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
