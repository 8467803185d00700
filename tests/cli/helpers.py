"""Running the real ``trio-feed`` command in a subprocess."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
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


# -- a terminal ------------------------------------------------------------------------

_ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


@dataclasses.dataclass
class TerminalRun:
    """What a command wrote to a pseudo-terminal, and how the screen ended up."""

    returncode: int
    output: bytes  # every byte written to the terminal (stdout and stderr together)
    stdout: bytes  # when stdout was a pipe instead, what it received
    screen: list[str]  # the rows, as a terminal shows them once the command has exited


def render_screen(data: bytes) -> list[str]:
    """Play ``data`` on an endless terminal: text, ``\\r``, ``\\n``, ESC[nA (up), ESC[2K (erase).

    Any other escape sequence raises, so the test notices output it does not understand.
    """
    rows: list[list[str]] = [[]]
    row = col = 0
    text = data.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            match = _ESCAPE.match(text, i)
            assert match is not None, f"unknown escape sequence {text[i:i + 8]!r}"
            count, op = int(match.group(1) or 1), match.group(2)
            if op == "A":
                row = max(0, row - count)
            elif op == "K" and match.group(1) == "2":
                rows[row] = []
            else:
                raise AssertionError(f"unexpected escape sequence {match.group(0)!r}")
            i += len(match.group(0))
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            if row == len(rows):
                rows.append([])
        else:
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    return ["".join(r).rstrip() for r in rows]


def run_in_terminal(*args: str, stdout_pipe: bool = False, columns: int = 120,
                    timeout: float = TIMEOUT) -> TerminalRun:
    """Run the command with stderr (and stdout, unless ``stdout_pipe``) on a pseudo-terminal."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    stdout_target: int = subprocess.PIPE if stdout_pipe else terminal
    env = {**os.environ, "TERM": "xterm"}
    proc = subprocess.Popen(command(*args), stdin=terminal, stdout=stdout_target,
                            stderr=terminal, cwd=ROOT, env=env, start_new_session=True)
    os.close(terminal)
    output = bytearray()
    piped = bytearray()
    streams = [controller] + ([proc.stdout.fileno()] if proc.stdout is not None else [])
    deadline = time.monotonic() + timeout
    try:
        while streams:
            assert time.monotonic() < deadline, "the command did not finish"
            ready, _, _ = select.select(streams, [], [], 0.2)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last writer has gone
                    data = b""
                if not data:
                    streams.remove(fd)
                elif fd == controller:
                    output += data
                else:
                    piped += data
        returncode = proc.wait(timeout=timeout)
    finally:
        proc.kill()
        os.close(controller)
        if proc.stdout is not None:
            proc.stdout.close()
    return TerminalRun(returncode, bytes(output), bytes(piped), render_screen(bytes(output)))
