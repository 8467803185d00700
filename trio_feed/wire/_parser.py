"""Server-to-client frames, parsed in place and lent as views.

Theory of operation
-------------------

Bytes from the socket are appended to one reusable ``bytearray``, the
*receive buffer*.  :meth:`FrameParser.messages` walks the frames in it and
hands out each complete data message as a read-only ``memoryview`` of the
buffer: no copy is made.  The view is *lent*: it is valid only until the
caller is done with that one message, because the buffer is compacted and
refilled by the next :meth:`FrameParser.receive_data`.

S1: a lent view never outlives its frame.
    The code that takes a view from :meth:`next_message` releases it
    (``view.release()``) when its frame scope ends, whatever the exit.
    :meth:`FrameParser.deliver` does it for its handler, on the normal path
    and, before the handler's exception propagates, on the failing one.  A
    released view raises ``ValueError`` on any use, so a stale reference
    cannot read bytes that belong to a later frame.

    A release fails (``BufferError``) while something holds an export *of
    the view itself*: a ``pickle.PickleBuffer``, a ``struct.iter_unpack`` or
    ``re.finditer`` iterator over it.  ``deliver`` turns that into
    :class:`~trio_feed.BorrowError` naming the message; if the handler had
    raised, its own exception propagates instead, with the BorrowError's
    text attached as a note (``add_note``), and the unreleased view keeps
    the buffer pinned, so the resize check below (S1, continued) stops the next refill.

S1, continued: the buffer is never reused while anything still points into it.
    Releasing the lent view is not enough on its own: a slice of a lent view
    (``view[4:]``) is a separate view that survives its parent's release, and
    so does a ``numpy`` array or any other buffer export built on it.
    CPython counts those exports and refuses to *resize* a ``bytearray`` that
    has any.  Every reuse of a buffer here is therefore a resize: consumed
    bytes are removed with ``del buf[:pos]`` and new bytes appended with
    ``+=``, never written over in place.  If a view escaped, the resize fails
    and :class:`~trio_feed.BorrowError` is raised naming the frame, before a
    single byte is overwritten.

    The reassembly buffer for fragmented messages follows the same rule: it
    is emptied with ``del frag[:]`` before it is reused.

    While a walk lends the buffer (a :meth:`FrameParser.deliver` call, or a
    :meth:`FrameParser.messages` iterator from its first message until it
    ends or is closed), the parser refuses to be re-entered: ``deliver``,
    ``messages`` and ``copy_messages`` raise ``RuntimeError`` and
    ``receive_data`` raises :class:`~trio_feed.BorrowError`.  Without that, a
    ``copy_messages()`` inside a ``messages()`` loop would hand the same
    messages out twice.

S6: control frames never borrow.
    Ping, pong and close payloads (at most 125 bytes) are copied into owned
    ``bytes`` as they are parsed and queued on :attr:`FrameParser.pings`,
    :attr:`FrameParser.pongs` and :attr:`FrameParser.close`.  The I/O layer
    can then answer a ping whenever it likes, including after an ``await``,
    without holding any view of the receive buffer.

A same-size overwrite would *not* be caught by S1's resize check, which is why nothing
here writes into the buffer in place, except the optional *poison* mode:
with ``poison=True`` the bytes of each message are overwritten with
:data:`POISON` as soon as its consumer asks for the next message.  A view that
escaped then reads obvious garbage instead of plausible data, which makes a
misuse visible inside the same receive chunk, before S1's resize check catches it at
the next refill.  Poisoning is a debugging aid and costs a copy per message.

What no rule here can catch: ``view.obj``.  The ``obj`` of every lent view
(and of its slices) is the receive ``bytearray`` itself (or the reassembly
``bytearray``), writable.  Keeping a reference to it is not a buffer export,
so a handler that keeps ``view.obj`` pins nothing, trips no check, and can
later read any frame received after its own and write into it, poison mode
or not.  CPython 3.11 offers no cheap way to lend a view whose ``obj`` is
not the buffer (``memoryview.toreadonly()``, slices and ``PickleBuffer``
all keep or forward the original exporter; a custom exporter needs the
buffer protocol from Python, 3.12's ``__buffer__``); a ``bytes`` snapshot
per chunk would close it but give up the borrow checks above.  The test
``test_view_obj_is_the_writable_receive_buffer`` pins this behaviour.

Validation
----------

Everything RFC 6455 forbids a server to send is rejected with
:class:`~trio_feed.ProtocolError`, whose ``close_code`` is what the client
should send back: 1002 for a masked frame, RSV bits (no extension is ever
negotiated), a reserved opcode, a fragmented or oversized control frame, a
non-minimal length encoding, a 64-bit length with its top bit set, a
continuation without a start, a new message inside a fragmented one, or a
malformed Close frame; 1007 for a text message that is not UTF-8; 1009
(:class:`~trio_feed.MessageTooBig`) for a frame or message over
``max_message_size``.  Sizes are checked from the header, before the payload
is awaited, so a hostile length never makes the buffer grow.

UTF-8 fails fast: a fragmented text message is checked fragment by fragment,
and a text frame whose payload is still arriving is checked as far as it has
arrived (on the cold path, when the parser stops for more bytes), so invalid
bytes are rejected when they arrive, not when their frame or message ends.

The hot path is a single ``if`` for the common frame (final, unfragmented
text, no RSV bits): it costs about as much as the slice that lends it.
"""

from __future__ import annotations

import codecs
import gc
import struct
from collections.abc import Callable, Iterator
from typing import Final

from .._errors import BorrowError, MessageTooBig, ProtocolError
from ._rfc6455 import Opcode, is_valid_close_code

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "POISON", "FrameParser"]

#: Default bound on one frame and on one reassembled message (bytes).
#: Binance's largest payloads, the all-market arrays, are a few hundred KB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 8 * 1024 * 1024

#: The byte written over consumed payloads in poison mode.
POISON: Final = 0xDB

_utf8_decode = codecs.utf_8_decode
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
#: The first four bytes of a frame header in one call: (byte 0, byte 1, a 16-bit length).
_header = struct.Struct("!BBH").unpack_from
_POISON_BYTE = bytes([POISON])


class FrameParser:
    """Parse server frames from a reusable buffer and lend each message as a view.

    ``max_message_size`` bounds one frame and one reassembled message.
    ``validate_utf8=False`` skips the UTF-8 check of unfragmented text
    messages; only do that when every message goes through a parser that
    rejects invalid UTF-8 itself (``orjson`` does) and maps that failure to
    close code 1007.  ``poison=True`` enables the debugging mode described in
    the module docstring.

    After :meth:`next_message` returns ``None``, look at :attr:`pings`,
    :attr:`pongs` and :attr:`close`, then feed more bytes with
    :meth:`receive_data`.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        validate_utf8: bool = True,
        poison: bool = False,
    ) -> None:
        if max_message_size < 125:
            raise ValueError("max_message_size must be at least 125 bytes")
        self._buf = bytearray()
        self._pos = 0
        self._frag = bytearray()
        self._frag_opcode = 0  # opcode of the fragmented message in progress, 0 if none
        self._frag_lent = False  # a reassembled message was lent from _frag
        self._frag_decoder: codecs.IncrementalDecoder | None = None
        # Bytes of the stream compacted away before _buf[0]: gives each frame an
        # absolute offset, the key of the partial UTF-8 check (_check_partial_text).
        self._offset = 0
        # (absolute offset of a text frame still arriving, payload bytes checked, decoder)
        self._partial: tuple[int, int, codecs.IncrementalDecoder] | None = None
        self._max = max_message_size
        self._utf8 = _utf8_decode if validate_utf8 else None
        self._validate_utf8 = validate_utf8
        #: The handler rejects invalid UTF-8 by raising: a text message is checked only
        #: when its handler raised (see :meth:`trust_handler_utf8`).
        self._recheck_utf8 = False
        self._generation_first = 0
        self._poison = poison
        self._delivering = False  # deliver() or messages() is lending: refuse re-entry
        #: Opcode of the message most recently lent (``Opcode.TEXT`` or ``Opcode.BINARY``).
        self.opcode: int = Opcode.TEXT
        #: Number of messages lent so far; message ``#n`` in errors is the n-th (from 1).
        self.messages_lent = 0
        #: Payloads of pings received and not yet answered (owned bytes, oldest first).
        self.pings: list[bytes] = []
        #: The :class:`~trio_feed.ProtocolError` that ended parsing, if any;
        #: :meth:`messages` raises it again on every later call.
        self.error: ProtocolError | None = None
        #: Number of pings received in all.
        self.pings_received = 0
        #: Payloads of pongs received and not yet consumed.
        self.pongs: list[bytes] = []
        #: ``(code, reason)`` once the peer's Close frame arrived (code 1005 if it had none).
        self.close: tuple[int, str] | None = None
        if poison:
            self.messages = self._messages_poisoning  # type: ignore[method-assign]

    # -- input -----------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the transport, reusing the consumed space.

        Raises :class:`~trio_feed.BorrowError` if a view of a message lent
        earlier is still alive (S1); the buffer is then left untouched.
        Data after the peer's Close frame is ignored.
        """
        if self._delivering:
            raise BorrowError(
                "receive_data() was called while deliver() or messages() is lending the "
                "receive buffer: it is lent until deliver() returns or the messages() "
                "iterator ends"
            )
        if self.close is not None:
            return
        try:
            if self._frag_lent:
                del self._frag[:]
                self._frag_lent = False
            if self._pos:
                del self._buf[: self._pos]
                self._offset += self._pos
                self._pos = 0
            self._buf += data
        except BufferError:
            raise BorrowError(self._describe_escape()) from None
        self._generation_first = self.messages_lent

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed as frames."""
        return len(self._buf) - self._pos

    def check_borrows(self) -> None:
        """Raise :class:`~trio_feed.BorrowError` if any view of this parser's buffers is alive.

        The connection calls this when it closes, and tests call it to prove
        that no view was left lent, whatever way a pipeline ended.
        """
        for buf in (self._buf, self._frag):
            try:
                buf.append(0)
                del buf[-1]
            except BufferError:
                raise BorrowError(self._describe_escape()) from None

    # -- output ----------------------------------------------------------------

    def messages(self) -> Iterator[memoryview]:
        """Lend each complete data message now buffered, one at a time, in order.

        Each view is read-only, and the caller must release it
        (``view.release()``) before taking the next one or calling
        :meth:`receive_data` (S1); the pipelines do it in a ``finally``.
        The message's opcode is in :attr:`opcode`.  Control frames met on the
        way are queued on :attr:`pings`, :attr:`pongs` and :attr:`close`, not
        yielded; iteration stops for good at the peer's Close frame.

        Run the iteration to its end (or break out of the ``for`` loop) before
        calling :meth:`receive_data`: a suspended iterator still holds the
        buffer, and until it ends the parser refuses re-entry
        (:meth:`deliver`, :meth:`messages`, :meth:`copy_messages` raise
        ``RuntimeError``, :meth:`receive_data` raises
        :class:`~trio_feed.BorrowError`).  Raises :class:`~trio_feed.ProtocolError` (or its subclass
        :class:`~trio_feed.MessageTooBig`) if the peer broke the protocol.

        :meth:`deliver` (lend each message to a callback) and
        :meth:`copy_messages` (owned copies of them all) walk the same frames
        with the same rules, faster; this generator is for callers that want
        to pull one message at a time.
        """
        if self.error is not None:
            raise self.error
        self._refuse_reentry()
        buf = self._buf
        pos = self._pos
        end = len(buf)
        last = end - 4  # the hot loop reads a 4-byte header word: "!BBH"
        limit = self._max
        check_utf8 = self._utf8
        whole = memoryview(buf).toreadonly()
        lent = 0
        # Until this generator ends, the walk owns the buffer: refuse re-entry
        # (deliver, messages, copy_messages) and receive_data, as deliver() does.
        self._delivering = True
        try:
            while end - pos >= 2:
                if not self._frag_opcode:
                    previous, self.opcode = self.opcode, Opcode.TEXT
                    before = lent
                    while pos <= last:
                        # The hot path: a final, unfragmented text frame with a 7- or
                        # 16-bit length, complete in the buffer.  Anything else breaks
                        # out to _slow_frame, which parses it (or rejects it) in full.
                        # deliver() and copy_messages() repeat these lines on purpose: a
                        # helper called per message would cost what the three loops save.
                        # The fuzz harness holds all three to the same reference decoder.
                        b0, n, n16 = _header(buf, pos)
                        if n < 126:
                            start = pos + 2
                        elif n == 126 and n16 > 125:
                            n, start = n16, pos + 4
                        else:
                            break
                        if b0 != 0x81 or n > limit:
                            break
                        stop = start + n
                        if stop > end:
                            break
                        self._pos = pos = stop
                        view = whole[start:stop]
                        if check_utf8 is not None:
                            try:
                                check_utf8(view, "strict", True)
                            except UnicodeDecodeError as exc:
                                view.release()
                                raise _not_utf8(exc) from None
                        lent += 1
                        yield view
                    if lent == before:
                        self.opcode = previous  # nothing lent: "most recent" is unchanged
                stop, message = self._slow_frame(whole, pos, end)
                if stop == pos:
                    return  # more bytes needed
                self._pos = pos = stop
                if message is not None:
                    lent += 1
                    yield message
        except ProtocolError as exc:
            # A violation ends the stream: never parse on past it (the bytes after
            # a fault mean nothing), and give the same answer if asked again.
            self.error = exc
            raise
        finally:
            self._delivering = False
            whole.release()
            self.messages_lent += lent

    def deliver(self, handler: Callable[[memoryview], object]) -> int:
        """Call ``handler(view)`` for each complete data message now buffered, in order.

        Returns the number of messages handed to ``handler``.  Each ``view`` is
        read-only, lent from the receive buffer, and released as soon as
        ``handler`` returns or raises (S1): ``handler`` must copy whatever
        it keeps (``bytes(view)``).  A slice of ``view`` kept anyway is caught
        by the next :meth:`receive_data` or :meth:`check_borrows`, which raise
        :class:`~trio_feed.BorrowError`.  During the call :attr:`opcode` is the
        message's opcode.  ``handler`` must not call back into this parser
        (:meth:`deliver`, :meth:`messages` and :meth:`copy_messages` raise
        ``RuntimeError`` if it does; :meth:`receive_data` raises
        :class:`~trio_feed.BorrowError`, the buffer being lent).  The
        parser's position (:attr:`buffered`) is brought up to date when
        ``deliver`` returns or raises, not after each message.

        The frames, control frames (queued on :attr:`pings`, :attr:`pongs` and
        :attr:`close`), limits and checks are exactly those of
        :meth:`messages`; this is the same walk without a generator in
        between, so it costs one Python call per message less.

        If ``handler`` raises, the exception propagates at once, its view
        released first: that message counts as delivered (in
        :attr:`messages_lent`), and the messages after it stay buffered for
        the next call.  A view that cannot be released because the handler
        kept an export of it (``pickle.PickleBuffer(view)``,
        ``struct.iter_unpack``, ``re.finditer``) raises
        :class:`~trio_feed.BorrowError` naming the message, or, if the handler
        raised, is noted on the handler's own exception (S1).  If the peer broke the protocol,
        every message before the violation is delivered first, then
        :class:`~trio_feed.ProtocolError` is raised; it is kept in
        :attr:`error`, and every later call raises it again.
        """
        if self.error is not None:
            raise self.error
        self._refuse_reentry()
        buf = self._buf
        pos = self._pos
        end = len(buf)
        last = end - 4
        limit = self._max
        check_utf8 = self._utf8
        poison = self._poison
        whole = memoryview(buf).toreadonly()
        lent = 0
        self._delivering = True
        try:
            while end - pos >= 2:
                if not self._frag_opcode:
                    previous, self.opcode = self.opcode, Opcode.TEXT
                    before = lent
                    while pos <= last:  # the hot path, as in messages()
                        b0, n, n16 = _header(buf, pos)
                        if n < 126:
                            start = pos + 2
                        elif n == 126 and n16 > 125:
                            n, start = n16, pos + 4
                        else:
                            break
                        if b0 != 0x81 or n > limit:
                            break
                        stop = start + n
                        if stop > end:
                            break
                        pos = stop  # stored in self._pos on the way out, not per message
                        view = whole[start:stop]
                        if check_utf8 is not None:
                            try:
                                check_utf8(view, "strict", True)
                            except UnicodeDecodeError as exc:
                                view.release()
                                raise _not_utf8(exc) from None
                        lent += 1
                        try:
                            handler(view)
                        except BaseException as exc:
                            not_utf8 = self._recheck(view) if self._recheck_utf8 else None
                            self._release_after(exc, view, pos, whole, lent)
                            if poison:
                                buf[start:stop] = _POISON_BYTE * (stop - start)
                            if not_utf8 is not None:
                                raise not_utf8 from None
                            raise
                        try:
                            view.release()
                        except BufferError:
                            raise BorrowError(self._describe_escape(pos, whole, lent)) from None
                        if poison:
                            buf[start:stop] = _POISON_BYTE * (stop - start)
                    if lent == before:
                        self.opcode = previous
                stop, message = self._slow_frame(whole, pos, end)
                if stop == pos:
                    break  # more bytes needed
                pos = stop
                if message is not None:
                    lent += 1
                    target, size = message.obj, message.nbytes
                    try:
                        handler(message)
                    except BaseException as exc:
                        not_utf8 = (self._recheck(message)
                                    if self._recheck_utf8 and self.opcode == Opcode.TEXT else None)
                        self._release_after(exc, message, pos, whole, lent)
                        if poison:
                            self._poison_message(target, size, stop)
                        if not_utf8 is not None:
                            raise not_utf8 from None
                        raise
                    try:
                        message.release()
                    except BufferError:
                        raise BorrowError(self._describe_escape(pos, whole, lent)) from None
                    if poison:
                        self._poison_message(target, size, stop)
            return lent
        except ProtocolError as exc:
            self.error = exc
            raise
        finally:
            self._pos = pos  # past every message handed over, the one whose handler raised too
            self._delivering = False
            whole.release()
            self.messages_lent += lent

    def copy_messages(self) -> list[bytes]:
        """Owned copies of every complete data message now buffered, in order.

        Nothing is lent: the payloads are ``bytes``, the caller may keep them,
        and the buffer may be refilled at once.  Control frames are queued on
        :attr:`pings`, :attr:`pongs` and :attr:`close` as by :meth:`messages`,
        with the same limits and checks.  Opcodes are not returned (Binance
        sends text only); :attr:`opcode` is that of the last message copied.
        :attr:`messages_lent` grows by the length of the list returned.

        The cost is one allocation per message: the common frames (final,
        unfragmented text up to 64 KiB) are sliced out of one ``bytes``
        snapshot of the receive buffer, taken at the first of them; others
        (binary, 64-bit lengths, reassembled fragments) are copied one by one.

        A violation found after some messages does not lose them: the list of
        the messages before it is returned, the error is kept in :attr:`error`,
        and the *next* call raises it (as does :meth:`messages` or
        :meth:`deliver`).  A caller that awaits more bytes between calls must
        therefore check :attr:`error` after each call.  With no message before
        the violation, it is raised at once.  A :class:`~trio_feed.BorrowError`
        (a view lent earlier by :meth:`messages` is still alive) works the same
        way, except that it is not final: the frame it stopped at stays
        buffered, the next call raises it, and once the view is gone a later
        call goes on from that frame.
        """
        if self.error is not None:
            raise self.error
        self._refuse_reentry()
        buf = self._buf
        pos = self._pos
        end = len(buf)
        last = end - 4
        limit = self._max
        check_utf8 = self._utf8
        out: list[bytes] = []
        append = out.append
        snapshot: bytes | None = None
        whole: memoryview | None = None
        try:
            while end - pos >= 2:
                if not self._frag_opcode:
                    before = len(out)
                    while pos <= last:  # the hot path, as in messages()
                        b0, n, n16 = _header(buf, pos)
                        if n < 126:
                            start = pos + 2
                        elif n == 126 and n16 > 125:
                            n, start = n16, pos + 4
                        else:
                            break
                        if b0 != 0x81 or n > limit:
                            break
                        stop = start + n
                        if stop > end:
                            break
                        if snapshot is None:
                            # One copy of the chunk, then slicing bytes needs no view.
                            # Taken only once a complete common frame is seen, so a
                            # large message still arriving is not copied for nothing.
                            snapshot = bytes(buf)
                        payload = snapshot[start:stop]
                        if check_utf8 is not None:
                            try:
                                check_utf8(payload, "strict", True)
                            except UnicodeDecodeError as exc:
                                raise _not_utf8(exc) from None
                        pos = stop
                        append(payload)
                    if len(out) > before:
                        self.opcode = Opcode.TEXT
                if whole is None:
                    whole = memoryview(buf).toreadonly()
                stop, message = self._slow_frame(whole, pos, end)
                if stop == pos:
                    break  # more bytes needed
                pos = stop
                if message is not None:
                    try:
                        append(bytes(message))
                    finally:
                        message.release()
        except ProtocolError as exc:
            self.error = exc
            if not out:
                raise
        except BorrowError:
            if not out:
                raise
        finally:
            self._pos = pos
            if whole is not None:
                whole.release()
        self.messages_lent += len(out)
        return out

    def next_message(self) -> memoryview | None:
        """Lend the next complete data message, or return ``None`` if more bytes are needed.

        A convenience over :meth:`messages` for callers that want one message
        at a time; the same lending rules apply.
        """
        for view in self.messages():
            return view
        return None

    # -- the cold paths ----------------------------------------------------------

    def _slow_frame(self, whole: memoryview, pos: int, end: int) -> tuple[int, memoryview | None]:
        """Parse the one frame at ``pos`` that the hot loops left to the general rules.

        That is any frame that is not a complete, final, unfragmented text
        frame with a 7- or 16-bit length, or one that starts fewer than 4
        bytes before ``end`` (the hot loops may also stop with fewer than 2
        bytes left, the shortest header).  Returns ``(pos, None)`` if more bytes are needed
        (nothing consumed); ``(stop, None)`` if a frame was consumed without
        completing a data message (a control frame, a fragment; ``stop`` is
        ``end`` after a Close, so that nothing more is parsed); or
        ``(stop, view)``: a complete data message, lent as a read-only view of
        ``whole`` or of the reassembly buffer, UTF-8 checked, :attr:`opcode`
        set.  The caller stores ``stop`` in ``_pos``: on an exception nothing
        has moved, so a :class:`~trio_feed.BorrowError` leaves the frame to be
        parsed again.
        """
        if end - pos < 2:
            return pos, None
        buf = self._buf
        b0 = buf[pos]
        n = buf[pos + 1]
        if n < 126:
            start = pos + 2
        elif n == 126 and end - pos >= 4:
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            start = pos + 4
            if n < 126:
                raise ProtocolError("frame length not minimally encoded (section 5.2)")
        else:
            header = self._long_header(buf, pos, end, n)
            if header is None:
                return pos, None
            n, start = header

        if b0 == 0x81 and n <= self._max and not self._frag_opcode:
            # A final, unfragmented text frame: a 64-bit length, or near the end.
            stop = start + n
            if stop > end:
                if self._utf8 is not None and end > start:
                    self._check_partial_text(b0, buf, pos, start, end)
                return pos, None
            view = whole[start:stop]
            if self._utf8 is not None:
                try:
                    self._utf8(view, "strict", True)
                except UnicodeDecodeError as exc:
                    view.release()
                    raise _not_utf8(exc) from None
            self.opcode = Opcode.TEXT
            return stop, view

        stop = self._check_header(b0, n, start)
        if stop > end:
            if end > start and b0 & 0x0F <= Opcode.TEXT:
                self._check_partial_text(b0, buf, pos, start, end)
            return pos, None
        opcode = b0 & 0x0F
        if opcode >= 8:
            self._on_control(opcode, bytes(buf[start:stop]))
            return (end if self.close is not None else stop), None
        if b0 & 0x80 and opcode:
            # A final, unfragmented binary frame (text took the branch above).
            self.opcode = opcode
            return stop, whole[start:stop]
        return stop, self._on_fragment(opcode, bool(b0 & 0x80), buf, start, stop)

    def _refuse_reentry(self) -> None:
        if self._delivering:
            raise RuntimeError(
                "a deliver() handler (or the body of a messages() loop) called back into "
                "its FrameParser; handle the view and return (or end the iteration) "
                "instead: the walk in progress owns the buffer"
            )

    def trust_handler_utf8(self) -> None:
        """From now on, let :meth:`deliver`'s handler validate UTF-8; check only on failure.

        For a handler that raises on every text message that is not UTF-8
        (``orjson.loads`` does: it validates its whole input first), checking
        before the handler too validates every message twice.  After this
        call :meth:`deliver` lends text messages unchecked; when a handler
        raises, the message is checked then, and if it is not UTF-8 the
        handler's exception is replaced by :class:`~trio_feed.ProtocolError`
        with close code 1007, kept in :attr:`error` like any violation.  So
        an invalid message still fails the connection with 1007.  A handler
        that accepts invalid UTF-8 must not be trusted this way.
        :meth:`messages` and :meth:`copy_messages` then skip the check as
        well: their caller takes the same responsibility.
        """
        self._utf8 = None
        self._validate_utf8 = False
        self._recheck_utf8 = True

    @staticmethod
    def utf8_error(payload: bytes | bytearray | memoryview) -> ProtocolError | None:
        """The close-1007 :class:`~trio_feed.ProtocolError` if ``payload`` is not UTF-8."""
        try:
            _utf8_decode(payload, "strict", True)
        except UnicodeDecodeError as exc:
            return _not_utf8(exc)
        return None

    _recheck = utf8_error

    def _release_after(
        self, exc: BaseException, view: memoryview, pos: int, whole: memoryview, lent: int
    ) -> None:
        """Release the view whose handler raised ``exc``; never replace ``exc``.

        If the handler left an export of ``view`` itself alive (a
        ``pickle.PickleBuffer``, a ``struct.iter_unpack`` or ``re.finditer``
        over it), the release fails: the borrow problem is then attached to
        ``exc`` as a note, and the unreleased view keeps the buffer pinned, so
        the next :meth:`receive_data` or :meth:`check_borrows` raises
        :class:`~trio_feed.BorrowError` as usual.
        """
        try:
            view.release()
        except BufferError:
            exc.add_note(f"BorrowError: {self._describe_escape(pos, whole, lent)}")

    def _poison_message(self, target: object, size: int, stop: int) -> None:
        """Poison mode: overwrite a message :meth:`deliver` lent from :meth:`_slow_frame`."""
        if target is self._frag:
            self._frag[:] = _POISON_BYTE * len(self._frag)
        else:
            self._buf[stop - size : stop] = _POISON_BYTE * size

    @staticmethod
    def _long_header(buf: bytearray, pos: int, end: int, n: int) -> tuple[int, int] | None:
        """Decode a 16- or 64-bit length, or reject a masked frame; ``None`` if incomplete."""
        if n > 127:
            raise ProtocolError("the server sent a masked frame (RFC 6455 section 5.1)")
        if n == 126:
            return None  # the 16-bit length is not all here yet
        if end - pos < 10:
            return None
        n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        if n >> 63:
            raise ProtocolError("64-bit frame length with its top bit set (section 5.2)")
        if n < 65536:
            raise ProtocolError("frame length not minimally encoded (section 5.2)")
        return n, pos + 10

    def _check_header(self, b0: int, n: int, start: int) -> int:
        """Validate a frame header that missed the hot path; return where its payload stops."""
        if b0 & 0x70:
            raise ProtocolError("RSV bits set, but no extension was negotiated (section 5.2)")
        opcode = b0 & 0x0F
        if opcode >= 8:
            if opcode > Opcode.PONG:
                raise ProtocolError(f"reserved control opcode {opcode:#x} (section 5.2)")
            if not b0 & 0x80:
                raise ProtocolError("fragmented control frame (section 5.5)")
            if n > 125:
                raise ProtocolError(f"control frame with a {n}-byte payload (section 5.5)")
        elif opcode > Opcode.BINARY:
            raise ProtocolError(f"reserved data opcode {opcode:#x} (section 5.2)")
        elif opcode == Opcode.CONTINUATION:
            if not self._frag_opcode:
                raise ProtocolError("continuation frame without a message to continue (5.4)")
            if len(self._frag) + n > self._max:
                raise MessageTooBig(
                    f"a fragmented message of over {len(self._frag) + n} bytes exceeds "
                    f"max_message_size={self._max}"
                )
        else:
            if self._frag_opcode:
                raise ProtocolError("new data message inside a fragmented message (5.4)")
            if n > self._max:
                raise MessageTooBig(f"a {n}-byte frame exceeds max_message_size={self._max}")
        return start + n

    def _check_partial_text(self, b0: int, buf: bytearray, pos: int, start: int, end: int) -> None:
        """Check the part of a text frame's payload that has arrived so far (fail fast).

        The frame at ``pos`` is incomplete; ``buf[start:end]`` is its payload
        so far.  Each byte is checked once here, as it arrives, with an
        incremental decoder kept across calls (keyed by the frame's absolute
        offset in the stream); the complete frame is then checked again as
        usual, so this changes when invalid UTF-8 is rejected, never whether.
        A continuation frame of a text message starts from the state of the
        message's decoder.  Binary frames and unchecked text return at once.
        """
        if b0 & 0x0F == Opcode.TEXT:
            if not self._validate_utf8:
                return
            base = None
        else:
            base = self._frag_decoder
            if base is None:
                return  # a binary message, or validate_utf8=False
        at = self._offset + pos
        if self._partial is not None and self._partial[0] == at:
            _, done, decoder = self._partial
        else:
            done, decoder = 0, _Utf8Decoder("strict")
            if base is not None:
                decoder.setstate(base.getstate())
        try:
            decoder.decode(buf[start + done : end], False)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"text message is not UTF-8: {exc}", 1007) from None
        self._partial = (at, end - start, decoder)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            self.pings.append(payload)
            self.pings_received += 1
        elif opcode == Opcode.PONG:
            self.pongs.append(payload)
        else:
            self.close = _parse_close(payload)

    def _on_fragment(
        self, opcode: int, fin: bool, buf: bytearray, start: int, stop: int
    ) -> memoryview | None:
        if opcode:
            # The first fragment: the reassembly buffer is reused, so S1 applies.
            if self._frag_lent or self._frag:
                try:
                    del self._frag[:]
                except BufferError:
                    raise BorrowError(self._describe_escape()) from None
                self._frag_lent = False
            self._frag_opcode = opcode
            self._frag_decoder = (
                _Utf8Decoder("strict") if opcode == Opcode.TEXT and self._validate_utf8 else None
            )
        chunk = buf[start:stop]
        if self._frag_decoder is not None:
            try:
                self._frag_decoder.decode(chunk, fin)
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"text message is not UTF-8: {exc}", 1007) from None
        self._frag += chunk
        if not fin:
            return None
        self.opcode = self._frag_opcode
        self._frag_opcode = 0
        self._frag_decoder = None
        self._frag_lent = True
        return memoryview(self._frag).toreadonly()

    def _messages_poisoning(self) -> Iterator[memoryview]:
        for view in FrameParser.messages(self):
            if view.obj is self._frag:
                target, start, stop = self._frag, 0, len(self._frag)
            else:
                target, start, stop = self._buf, self._pos - len(view), self._pos
            yield view
            target[start:stop] = bytes([POISON]) * (stop - start)

    def _describe_escape(
        self, pos: int | None = None, whole: memoryview | None = None, lent: int = 0
    ) -> str:
        """Name the message whose view escaped (an error path: slow is fine).

        ``pos``, ``whole`` and ``lent`` are the walk's position, its own view
        of the buffer and its count so far when called from inside
        :meth:`deliver`, which stores the first and last only on the way out.
        """
        if pos is not None:
            self._pos = pos
        escaped: list[tuple[str, bytes]] = []
        for obj in gc.get_objects():
            if type(obj) is memoryview and obj is not whole:
                try:
                    owner = obj.obj
                except ValueError:  # released
                    continue
                if owner is self._buf:
                    escaped.append(("receive", bytes(obj)))
                elif owner is self._frag:
                    escaped.append(("reassembly", bytes(obj)))
        lines = []
        for which, data in escaped:
            lines.append(self._name_message(which, data, lent))
        if not lines:
            lines.append("an export of the buffer that is not a memoryview (e.g. a numpy array)")
        return (
            "a view lent for one message outlived it and pins the receive buffer, which "
            "cannot be reused safely: " + "; ".join(lines) + ".  Copy what you need with "
            "bytes(view) inside the handler instead of keeping the view or a slice of it."
        )

    def _name_message(self, which: str, data: bytes, lent: int = 0) -> str:
        excerpt = data[:40]
        if which == "reassembly":
            return (
                f"a {len(data)}-byte view into the reassembled fragmented message "
                f"#{self.messages_lent + lent} (starts {excerpt!r})"
            )
        buf, pos, seq = self._buf, 0, self._generation_first
        while pos < self._pos:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                n, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif n == 127:
                n, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            opcode = b0 & 0x0F
            if b0 & 0x80 and opcode <= Opcode.BINARY:
                seq += 1
            if opcode in (Opcode.TEXT, Opcode.BINARY) and b0 & 0x80:
                if buf.find(data, start, start + n) >= 0:
                    kind = "text" if opcode == Opcode.TEXT else "binary"
                    return (
                        f"a {len(data)}-byte view into message #{seq} ({kind}, {n} bytes at "
                        f"offset {start} of the receive buffer; starts {excerpt!r})"
                    )
            pos = start + n
        return f"a {len(data)}-byte view into the receive buffer (starts {excerpt!r})"


def _not_utf8(exc: UnicodeDecodeError) -> ProtocolError:
    return ProtocolError(f"text message is not UTF-8: {exc}", 1007)


def _parse_close(payload: bytes) -> tuple[int, str]:
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("Close frame with a 1-byte payload (section 5.5.1)")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"Close frame with invalid status code {code} (section 7.4)")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("Close frame reason is not UTF-8", 1007) from None
    return code, reason
