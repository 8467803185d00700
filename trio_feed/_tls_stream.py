"""TLS for the connection: one ``ssl.SSLObject``, two memory BIOs, large reads.

This is the connection's transport for ``wss://`` URLs, and with
``_connection`` the only code that awaits on a socket.

Why not ``trio.SSLStream``
--------------------------

``trio.SSLStream.receive_some`` returns one TLS record per call, at most
16 KiB of plaintext however much is asked for, and every call goes through
its general ``_retry`` machinery and a trio checkpoint.  Every per-chunk cost
of the pipelines (a checkpoint, ``check_borrows``, ``receive_data``, a
channel hop) was therefore paid 16 times as often over TLS as over TCP: 2,435
chunks of 16,285 B for 200,000 Binance messages, against 153 chunks of
259,178 B (``docs/performance.md``).  :meth:`TLSStream.receive_some` reads
ciphertext ``max_bytes`` at a time (256 KiB by default) and decrypts every
complete record that has arrived before it returns, so one call returns as
much plaintext as one TCP read would have.

What is the same
----------------

The ``ssl`` module does all of the cryptography and every check, through the
same ``SSLContext.wrap_bio`` call that ``trio.SSLStream`` makes: certificate
verification and hostname checking happen in ``SSLObject.do_handshake``,
under whatever ``SSLContext`` the caller passed, and a failure raises the
``ssl`` module's own exception (``ssl.SSLCertVerificationError``...).
Closing behaves as trio's ``https_compatible=True``, which the connection
used before: :meth:`TLSStream.aclose` closes the TCP connection without a
``close_notify`` (the WebSocket closing handshake has already run inside
TLS), and a peer that closes TCP without one reads as end of stream.  Errors
after the handshake raise ``trio.BrokenResourceError`` (the ``ssl`` error as
its cause), a closed stream ``trio.ClosedResourceError``.

S5 (one writer at a time) holds inside the stream too: the ``SSLObject``
can produce records while *receiving* (a TLS 1.3 KeyUpdate answer, a TLS 1.2
renegotiation), and those must reach the wire in the order it produced them,
among the records of :meth:`TLSStream.send_all`.  All ciphertext therefore
leaves through :meth:`TLSStream._flush`, which takes it from the outgoing BIO
and sends it under one ``trio.StrictFIFOLock``.

What is left out: server mode, ``unwrap()``, and a renegotiation that starts
while a *send* is waiting to be encrypted (only TLS 1.2 has renegotiation; the
send then raises ``trio.BrokenResourceError`` instead of reading on the
sender's behalf, as ``trio.SSLStream`` would).  One task may receive and one
may send at a time (``trio.BusyResourceError`` otherwise), as with every trio
stream.
"""

from __future__ import annotations

import ssl
from typing import cast

import trio

__all__ = ["TLSStream"]

#: Ciphertext and plaintext asked for per read when the caller names no size.
DEFAULT_READ_SIZE = 256 * 1024

#: Never read less ciphertext than one whole TLS record can take (16 KiB of
#: plaintext plus the record overhead), so that a small ``max_bytes`` does not
#: cost several socket reads per record.
_MIN_CIPHERTEXT_READ = 17 * 1024


def _is_eof(exc: ssl.SSLError) -> bool:
    """A TCP end without ``close_notify`` (a "ragged EOF"), whichever way OpenSSL reports it."""
    return isinstance(exc, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(exc)


class TLSStream(trio.abc.Stream):
    """A client TLS stream over ``transport_stream``, for :func:`trio_feed.open_connection`.

    Call :meth:`do_handshake` before anything else.  ``context`` and
    ``server_hostname`` mean what they mean to ``ssl.SSLContext.wrap_bio``:
    verification and hostname checking are the context's.
    """

    def __init__(
        self, transport_stream: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str
    ) -> None:
        #: The TCP stream underneath.
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._send_lock = trio.StrictFIFOLock()  # ciphertext leaves in the order it was made
        self._handshook = False
        self._broken = False
        self._closed = False
        self._eof = False  # the peer's close_notify, or the end of TCP, was read
        self._failure: trio.BrokenResourceError | None = None  # raised after what preceded it
        self._receiving = False
        self._sending = False
        self._plain = bytearray()  # reused: decrypted records are read into it

    # -- the handshake -------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake, verifying the peer as the context says.

        Raises the ``ssl`` module's exception if TLS fails (for instance
        ``ssl.SSLCertVerificationError``, or ``ssl.SSLEOFError`` if the peer
        hangs up), and the transport's if it fails.  The stream is unusable
        after any failure, or after a cancellation.
        """
        self._check_open()
        if self._handshook:
            raise RuntimeError("the TLS handshake has already been done")
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                except ssl.SSLWantReadError:
                    await self._flush()
                    await self._receive_ciphertext(DEFAULT_READ_SIZE)
                    continue
                await self._flush()  # the client's Finished
                break
        except BaseException:
            self._broken = True
            raise
        self._handshook = True

    # -- receiving -----------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return up to ``max_bytes`` of plaintext: every complete record that has arrived.

        Waits for the transport only when no complete record is buffered.
        Returns ``b""`` at the end of the stream (the peer's ``close_notify``,
        or TCP ending without one).
        """
        if max_bytes is None:
            max_bytes = DEFAULT_READ_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLSStream")
        self._check_usable()
        self._receiving = True
        try:
            data = self._decrypt(max_bytes)
            if data or self._eof:
                # Records left over from the last read: no socket read is awaited,
                # but this is still a checkpoint, as every trio receive_some is.
                if not await self._flush_after_read():
                    await trio.lowlevel.checkpoint()
                return data
            while True:
                await self._receive_ciphertext(max(max_bytes, _MIN_CIPHERTEXT_READ))
                data = self._decrypt(max_bytes)
                await self._flush_after_read()
                if data or self._eof:
                    return data
                if self._incoming.eof:  # TCP ended inside a record: never wait again
                    self._eof = True
                    return b""
        finally:
            self._receiving = False

    def _decrypt(self, max_bytes: int) -> bytes | bytearray:
        """Every plaintext byte available without I/O, up to ``max_bytes``; ``b""`` if none.

        A failure after some plaintext is kept for the next call, so the
        authenticated bytes before it are still delivered.
        """
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._broken = True
            raise failure
        if self._eof:
            return b""
        plain = self._plain
        if len(plain) < max_bytes:
            plain.extend(bytes(max_bytes - len(plain)))
        read = self._ssl.read
        got = 0
        with memoryview(plain) as whole:
            try:
                while got < max_bytes:
                    # With a buffer, SSLObject.read returns a count (typeshed says bytes).
                    n = cast(int, read(max_bytes - got, whole[got:max_bytes]))
                    if not n:
                        self._eof = True  # close_notify
                        break
                    got += n
            except ssl.SSLWantReadError:
                pass  # no complete record left
            except ssl.SSLZeroReturnError:
                self._eof = True
            except ssl.SSLError as exc:
                if _is_eof(exc):
                    self._eof = True
                else:
                    failure = trio.BrokenResourceError(f"TLS failed: {exc}")
                    failure.__cause__ = exc
                    if not got:
                        self._broken = True
                        raise failure from exc
                    self._failure = failure
        return plain[:got] if got else b""

    async def _flush_after_read(self) -> bool:
        """Send what reading produced (a KeyUpdate answer, a renegotiation); True if it sent.

        After the end of the stream there is nobody to send to: OpenSSL queues
        an alert when TCP ends without ``close_notify``, and that is dropped.
        """
        if not self._outgoing.pending:
            return False
        if self._eof:
            self._outgoing.read()
            return False
        await self._flush()
        return True

    async def _receive_ciphertext(self, size: int) -> None:
        data = await self.transport_stream.receive_some(size)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()  # the next read reports the end, clean or ragged

    # -- sending -------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send it.  A cancelled send leaves the stream broken."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLSStream")
        self._check_usable()
        self._sending = True
        try:
            if not data:
                await trio.lowlevel.checkpoint()
                return
            try:
                self._ssl.write(data)
            except ssl.SSLWantReadError:
                self._broken = True
                raise trio.BrokenResourceError(
                    "the peer started a TLS renegotiation during a send; TLSStream does not "
                    "support that (TLS 1.3 has no renegotiation)"
                ) from None
            except ssl.SSLError as exc:
                self._broken = True
                raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
            await self._flush()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLSStream")
        self._check_usable()
        async with self._send_lock:
            await self.transport_stream.wait_send_all_might_not_block()

    async def _flush(self) -> None:
        """Send whatever ciphertext the ``SSLObject`` has produced, in order (S5)."""
        async with self._send_lock:
            data = self._outgoing.read()
            if data:
                try:
                    await self.transport_stream.send_all(data)
                except BaseException:
                    self._broken = True  # part of a record may have gone out
                    raise

    # -- closing -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the TCP connection, without a ``close_notify`` (as ``https_compatible``)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self.transport_stream.aclose()

    # -- state -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLSStream was closed")
        if self._broken:
            raise trio.BrokenResourceError("this TLSStream failed earlier")

    def _check_usable(self) -> None:
        self._check_open()
        if not self._handshook:
            raise RuntimeError("call do_handshake() first")
