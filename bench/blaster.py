"""The blaster: a WebSocket server in its own process that sends pre-encoded frames.

It listens on two loopback ports, plain TCP and TLS (a ``trustme`` cert),
completes the upgrade by hand (RFC 6455 section 4.2.2, no extensions
accepted), then sends what the request path asks for::

    GET /blast?w=<workload>&n=<messages>              as fast as the socket takes it
    GET /blast?w=<workload>&n=<messages>&start=now    the same, without waiting for "go"
    GET /pace?n=<messages>&rate=<msg/s>               paced, each frame stamped

Blasting sends one cycle of frames, repeated into a chunk of at least
1 MiB, with one blocking ``sendall`` per chunk: the server spends its time
in the kernel, not in Python, and ``bench/run.py`` checks with a client that
reads and discards (``null``) that it stays far ahead of every real client.

Pacing wakes up every ``time.sleep`` tick (about 60 µs on Linux), sends the
frames that are due, all stamped with ``time.monotonic_ns()`` taken just
before that ``sendall``, so a client's latency is measured from the moment
its frame was handed to the kernel.  ``TCP_NODELAY`` is set.

Nothing is sent until the client's first message (any data frame, "go"):
clients start their clock just before sending it, so a library that reads
in a background task cannot parse ahead of its clock.  After the last
message the server sends Close (1000), waits for the client's Close (or
EOF) for at most 10 s, and closes the TCP connection, as section 7.1.1
expects of a server.  One thread per connection; the process ends when
its parent closes the control pipe.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import threading
import time
from multiprocessing.connection import Connection
from urllib.parse import parse_qs, urlsplit

import workloads

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 1 << 20


class _Cycle:
    """One workload's frames, laid out as a >= 1 MiB chunk with frame end offsets."""

    def __init__(self, payloads: tuple[bytes, ...]) -> None:
        frames = [workloads.encode_frame(p) for p in payloads]
        reps = max(1, -(-_CHUNK // sum(map(len, frames))))
        self.chunk = memoryview(b"".join(frames) * reps)
        self.per_chunk = len(frames) * reps
        ends = [0]
        for frame in frames * reps:
            ends.append(ends[-1] + len(frame))
        self.ends = ends


_cycles: dict[str, _Cycle] = {}
_cycles_lock = threading.Lock()


def _cycle(workload: str) -> _Cycle:
    payload_set = workloads.WORKLOADS[workload][0]
    with _cycles_lock:
        if payload_set not in _cycles:
            _cycles[payload_set] = _Cycle(workloads.payloads(payload_set))
        return _cycles[payload_set]


_runs: dict[int, memoryview] = {}


def _blast_run(sock: socket.socket, n: int) -> None:
    """Workload ``f``: one run of ``n`` distinct frames (ids never repeat), cached per ``n``."""
    with _cycles_lock:
        if n not in _runs:
            payloads = workloads.feed_payloads(n)
            _runs[n] = memoryview(b"".join(workloads.encode_frame(p) for p in payloads))
        run = _runs[n]
    for at in range(0, len(run), _CHUNK):
        sock.sendall(run[at : at + _CHUNK])


def _blast(sock: socket.socket, workload: str, n: int) -> None:
    if workload == "f":
        _blast_run(sock, n)
        return
    cycle = _cycle(workload)
    full, rest = divmod(n, cycle.per_chunk)
    for _ in range(full):
        sock.sendall(cycle.chunk)
    sock.sendall(cycle.chunk[: cycle.ends[rest]])


def _pace(sock: socket.socket, n: int, rate: float) -> None:
    frames = workloads.stamped_frames()
    k = len(frames)
    sent = 0
    start = time.monotonic_ns()
    while sent < n:
        now = time.monotonic_ns()
        due = min(n, int((now - start) * rate / 1e9) + 1) - sent
        if due <= 0:
            time.sleep((start + sent * 1e9 / rate - now) / 1e9)
            continue
        stamp = b"%d" % (time.monotonic_ns() + workloads.TS_OFFSET)
        parts = []
        for i in range(sent, sent + due):
            head, tail = frames[i % k]
            parts += (head, stamp, tail)
        sock.sendall(b"".join(parts))
        sent += due


def _read_request(sock: socket.socket) -> tuple[str, bytes, bytes]:
    """Read the upgrade request: return its target, its key, and any bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("client left during the handshake")
        data += chunk
    head_bytes, rest = data.split(b"\r\n\r\n", 1)
    head = head_bytes.decode("latin-1").split("\r\n")
    target = head[0].split(" ")[1]
    key = b""
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip().encode()
    return target, key, rest


def _read_frame(sock: socket.socket, buf: bytes) -> tuple[int, bytes]:
    """Read one client frame (its payload is not unmasked): return its opcode and the rest.

    Returns opcode ``-1`` at EOF.
    """
    while True:
        if len(buf) >= 2:
            n = buf[1] & 0x7F
            at = 2
            if n == 126:
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, at = int.from_bytes(buf[2:10], "big"), 10
            at += 4 if buf[1] & 0x80 else 0
            if len(buf) >= at + n:
                return buf[0] & 0x0F, buf[at + n :]
        chunk = sock.recv(65536)
        if not chunk:
            return -1, b""
        buf += chunk


def _handle(sock: socket.socket, tls: ssl.SSLContext | None) -> None:
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_side=True)
        target, key, rest = _read_request(sock)
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        n = int(query["n"])
        # The client starts its clock, then sends one message ("go"): nothing is
        # sent before, so no library can parse ahead of its clock in a background task.
        # A client that cannot send first (the supervised feed) asks for start=now.
        if query.get("start") != "now":
            opcode, rest = _read_frame(sock, rest)
            if opcode not in (0x1, 0x2):
                return
        opcode = 0
        if url.path == "/pace":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _pace(sock, n, float(query["rate"]))
        else:
            _blast(sock, query["w"], n)
        sock.sendall(workloads.CLOSE_FRAME)
        sock.settimeout(10)
        while opcode not in (0x8, -1):
            opcode, rest = _read_frame(sock, rest)
    except (OSError, ValueError, KeyError):
        pass  # a client that fails is reported by the client side
    finally:
        sock.close()


def _accept_loop(listener: socket.socket, tls: ssl.SSLContext | None) -> None:
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_handle, args=(sock, tls), daemon=True).start()


def serve(control: Connection, certfile: str, keyfile: str) -> None:
    """Process entry point: send ``(plain_port, tls_port)`` on ``control``; serve until closed."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certfile, keyfile)
    for name in workloads.WORKLOADS:  # build every cycle before the first client connects
        if name != "f":  # workload f is built per run length, on first use
            _cycle(name)
    workloads.stamped_frames()
    ports = []
    for context in (None, tls):
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        ports.append(listener.getsockname()[1])
        threading.Thread(target=_accept_loop, args=(listener, context), daemon=True).start()
    control.send(tuple(ports))
    try:
        control.recv()
    except EOFError:
        pass
