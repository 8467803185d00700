"""Fuzzing the frame parser: arbitrary bytes, mutated frames and valid streams, any splits.

A :class:`Harness` feeds one :class:`~trio_feed.wire.FrameParser` and one
:class:`ReferenceDecoder` (written here, for clarity rather than speed) the
same bytes, chunk by chunk, and after every chunk checks:

- the only outcomes are lent messages (released at once), "needs more data",
  or a :class:`~trio_feed.ProtocolError` whose ``close_code`` is 1002, 1007 or
  1009 (:class:`~trio_feed.MessageTooBig` exactly when it is 1009); anything
  else propagates and fails the test;
- after a ``ProtocolError`` the parser lends nothing more, even when fed
  more bytes: every later ``messages()`` raises the same error;
- ``parser.buffered`` stays within ``max_message_size + 14`` plus the chunk
  just fed, and within ``max_message_size + 14`` once the chunk is parsed
  (14 is the longest header: 2 bytes, a 64-bit length and a masking key);
- every message is a read-only view of at most ``max_message_size`` bytes,
  and ``check_borrows()`` passes once it is released;
- differential: the messages, pings, pongs and Close equal the reference's;
  the parser raises as soon as the reference has a complete frame that breaks
  RFC 6455, never when the reference sees nothing wrong, and its close code
  is one the reference allows for that frame.  It may raise earlier than the
  reference insists, on a header or on invalid UTF-8 that has only partly
  arrived, as long as the bytes so far already break the protocol.

After a ``ProtocolError`` or a Close the harness starts a fresh parser.

The harness drives the parser through one of its three walks, drawn per run
(:data:`MODES`): ``messages()`` (a generator of lent views), ``deliver()`` (a
callback given each lent view) or ``copy_messages()`` (owned copies, no
opcodes).  All three must agree with the reference, and with each other, on
every input; after a violation, all three raise the same error.

The inputs come from a Hypothesis state machine (:class:`ParserMachine`)
that mixes valid messages (fragmented, with control frames in between), the
seed corpus in ``tests/wire/corpus`` (written by ``tools/make_corpus.py``),
mutants of both (bit flips, truncation, rewritten lengths, random opcodes,
RSV, FIN and mask bits, splices) and raw garbage, fed in arbitrary splits.
``TRIO_FEED_FUZZ_EXAMPLES`` scales the number of runs (default 200, about
20 s on the 2-core project machine); ``tools/fuzz.py`` runs the same harness for minutes under
atheris.
"""

from __future__ import annotations

import codecs
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from trio_feed import MessageTooBig, ProtocolError
from trio_feed.wire import FrameParser

from .server_frames import server_frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: The longest frame header: 2 bytes, a 64-bit length and a 4-byte masking key.
MAX_HEADER = 14
#: The largest chunk the fuzzers feed at once.
MAX_CHUNK = 8192
#: The max_message_size the fuzzers mostly use: small, so the memory bound bites.
FUZZ_MAX = 4096
#: The machine draws one of these per run: the fuzz size, the RFC's minimum
#: control-frame size (the parser's floor), and one that admits 64-bit lengths.
MAX_SIZES = (FUZZ_MAX, 125, 70_000)
FAIL_CODES = frozenset({1002, 1007, 1009})

CORPUS_DIR = Path(__file__).parent / "corpus"
CORPUS: dict[str, bytes] = {p.stem: p.read_bytes() for p in sorted(CORPUS_DIR.glob("*.bin"))}

EXAMPLES = int(os.environ.get("TRIO_FEED_FUZZ_EXAMPLES", "200"))

#: The parser's three ways of handing out messages; each fuzzer draws one per run.
MODES = ("messages", "deliver", "copy")


# -- the reference decoder ------------------------------------------------------------


def utf8_ok(data: bytes, *, final: bool) -> bool:
    """True if ``data`` is UTF-8, or (``final=False``) a prefix that UTF-8 can still complete."""
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(data, final)
    except UnicodeDecodeError:
        return False
    return True


def close_code_ok(code: int) -> bool:
    """RFC 6455 section 7.4 plus the IANA registry: the codes a Close frame may carry."""
    return code in range(1000, 1004) or code in range(1007, 1015) or code in range(3000, 5000)


class Verdict:
    """The reference's view of the stream after its last accepted frame.

    ``state`` is ``"clean"`` (nothing wrong so far), ``"pending"`` (the next
    frame has only partly arrived but already breaks the protocol: a parser
    may fail now or once it is complete) or ``"bad"`` (a complete frame breaks
    it: the parser must have failed).  ``codes`` are the close codes that fit
    the violations found in that frame.
    """

    def __init__(self, state: str, codes: frozenset[int] = frozenset()) -> None:
        self.state = state
        self.codes = codes

    def __repr__(self) -> str:
        return f"Verdict({self.state!r}, {sorted(self.codes)})"


CLEAN = Verdict("clean")


class ReferenceDecoder:
    """RFC 6455 server-to-client framing, decoded the obvious way.

    :meth:`advance` is given the whole stream so far; it accepts every
    complete, valid frame after the last one it accepted, collecting
    messages, pings, pongs and the Close, and judges what follows.  Every
    violation a frame has is listed, so the parser's close code only has to
    be one of them: the RFC does not order the checks.  Violations of the
    header come first, because a payload cannot be judged under a header that
    is already wrong (its meaning depends on an extension, say).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.pos = 0
        self.messages: list[tuple[int, bytes]] = []
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        self.close: tuple[int, str] | None = None
        self.frag_opcode: int | None = None
        self.frag = b""

    def advance(self, stream: bytes | bytearray) -> Verdict:
        while self.close is None:
            verdict, frame = self._examine(stream, self.pos)
            if frame is None:
                return verdict
            self._accept(*frame)
        return CLEAN

    def _examine(
        self, stream: bytes | bytearray, pos: int
    ) -> tuple[Verdict, tuple[bool, int, bytes, int] | None]:
        if len(stream) - pos < 2:
            return CLEAN, None
        b0, b1 = stream[pos], stream[pos + 1]
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F
        masked, len7 = bool(b1 & 0x80), b1 & 0x7F
        control = opcode >= 8
        codes = set()
        if masked:
            codes.add(1002)  # section 5.1: a server never masks
        if rsv:
            codes.add(1002)  # no extension is negotiated
        if opcode not in (CONT, TEXT, BINARY, CLOSE, PING, PONG):
            codes.add(1002)
        if control and not fin:
            codes.add(1002)
        if opcode in (TEXT, BINARY) and self.frag_opcode is not None:
            codes.add(1002)
        if opcode == CONT and self.frag_opcode is None:
            codes.add(1002)
        ext = {126: 2, 127: 8}.get(len7, 0)
        start = pos + 2 + ext
        if len(stream) < start:
            return _judge(codes, complete=False), None
        n = int.from_bytes(stream[pos + 2 : start], "big") if ext else len7
        if ext == 2 and n < 126:
            codes.add(1002)  # not the minimal encoding
        if ext == 8 and (n >= 2**63 or n < 65536):
            codes.add(1002)  # top bit set, or not the minimal encoding
        if control and n > 125:
            codes.add(1002)
        if opcode == CLOSE and n == 1:
            codes.add(1002)
        if opcode in (TEXT, BINARY) and n > self.max_size:
            codes.add(1009)
        if opcode == CONT and self.frag_opcode is not None and len(self.frag) + n > self.max_size:
            codes.add(1009)
        if masked:
            start += 4
        complete = len(stream) >= start + n
        if codes:
            return _judge(codes, complete=complete), None
        payload = bytes(stream[start : start + n])
        if opcode == TEXT or (opcode == CONT and self.frag_opcode == TEXT):
            so_far = (self.frag if opcode == CONT else b"") + payload
            if not utf8_ok(so_far, final=complete and fin):
                codes.add(1007)
        if opcode == CLOSE and len(payload) >= 2:
            if not close_code_ok(int.from_bytes(payload[:2], "big")):
                codes.add(1002)
            if not utf8_ok(payload[2:], final=complete):
                codes.add(1007)
        if codes:
            return _judge(codes, complete=complete), None
        if not complete:
            return CLEAN, None
        return CLEAN, (fin, opcode, payload, start + n)

    def _accept(self, fin: bool, opcode: int, payload: bytes, end: int) -> None:
        self.pos = end
        if opcode == PING:
            self.pings.append(payload)
        elif opcode == PONG:
            self.pongs.append(payload)
        elif opcode == CLOSE:
            if payload:
                self.close = (int.from_bytes(payload[:2], "big"), payload[2:].decode())
            else:
                self.close = (1005, "")
        elif opcode == CONT:
            assert self.frag_opcode is not None
            self.frag += payload
            if fin:
                self.messages.append((self.frag_opcode, self.frag))
                self.frag_opcode, self.frag = None, b""
        elif fin:
            self.messages.append((opcode, payload))
        else:
            self.frag_opcode, self.frag = opcode, payload


def _judge(codes: set[int], *, complete: bool) -> Verdict:
    if not codes:
        return CLEAN
    return Verdict("bad" if complete else "pending", frozenset(codes))


# -- the harness ------------------------------------------------------------------------


class Harness:
    """Feeds a FrameParser and a ReferenceDecoder the same chunks and checks they agree."""

    def __init__(self, max_size: int = FUZZ_MAX, *, record: bool = False,
                 reset_on_close: bool = True, mode: str = "messages") -> None:
        assert mode in MODES
        self.max_size = max_size
        self.mode = mode
        #: False keeps the parser after the peer's Close, to check that later bytes are ignored.
        self.reset_on_close = reset_on_close
        #: With ``record=True``, every message, ping and pong seen, in order.
        self.log: list[tuple[int, bytes]] | None = [] if record else None
        self.failures: list[int] = []  # close codes of the ProtocolErrors seen
        self.closes = 0
        self.messages = 0
        self.reset()

    def reset(self) -> None:
        self.parser = FrameParser(max_message_size=self.max_size)
        self.reference = ReferenceDecoder(self.max_size)
        self.stream = bytearray()
        self.got: list[tuple[int, bytes]] = []

    def feed(self, chunk: bytes | bytearray) -> int | None:
        """Feed one chunk; return the close code if the parser failed (it is then replaced)."""
        assert len(chunk) <= MAX_CHUNK
        parser, limit = self.parser, self.max_size
        parser.receive_data(chunk)
        self.stream += chunk
        assert parser.buffered <= limit + MAX_HEADER + len(chunk), "the buffer outgrew its bound"
        code = None
        lent_before = parser.messages_lent
        try:
            self._walk()
        except ProtocolError as exc:
            code = exc.close_code
            assert code in FAIL_CODES, f"close code {code} for {exc}"
            assert isinstance(exc, MessageTooBig) == (code == 1009), repr(exc)
            assert parser.error is exc
            self._check_sticky(exc)
        assert parser.messages_lent - lent_before == len(self.got), "messages_lent is off"
        parser.check_borrows()
        self._compare(code)
        return code

    def _walk(self) -> None:
        """Take every complete message with the harness's walk; raise what the parser raises."""
        parser, limit, got = self.parser, self.max_size, self.got

        def check(view: memoryview) -> None:
            assert view.readonly, "a lent view must be read-only"
            assert len(view) <= limit, f"a {len(view)}-byte message exceeds {limit}"
            assert parser.opcode in (TEXT, BINARY)
            got.append((parser.opcode, bytes(view)))

        if self.mode == "messages":
            for view in parser.messages():
                try:
                    check(view)
                finally:
                    view.release()
        elif self.mode == "deliver":
            before = len(got)
            assert parser.deliver(check) == len(got) - before
        else:
            payloads = parser.copy_messages()
            for payload in payloads:
                assert type(payload) is bytes, "copy_messages() must return owned bytes"
                assert len(payload) <= limit, f"a {len(payload)}-byte message exceeds {limit}"
            got += [(None, payload) for payload in payloads]  # no opcodes: compared by payload
            if parser.error is not None:
                raise parser.error  # the messages before a violation came first

    def _check_sticky(self, error: ProtocolError) -> None:
        """A violation ends the stream: the parser never parses past it, even given more bytes."""
        parser = self.parser

        def never(view: memoryview) -> None:
            raise AssertionError("a message was delivered after a ProtocolError")

        walks = {"messages": lambda: [view.release() for view in parser.messages()],
                 "deliver": lambda: parser.deliver(never),
                 "copy": parser.copy_messages}
        for extra in (b"", server_frame(TEXT, b"after the fault")):
            parser.receive_data(extra)
            for name, walk in walks.items():
                with pytest.raises(ProtocolError) as again:
                    walk()
                assert again.value is error, f"{name}: {again.value!r} raised after {error!r}"

    def _compare(self, code: int | None) -> None:
        parser, ref = self.parser, self.reference
        verdict = ref.advance(self.stream)
        if self.mode == "copy":
            assert [p for _, p in self.got] == [p for _, p in ref.messages], (
                "the messages differ from the reference's")
        else:
            assert self.got == ref.messages, "the messages differ from the reference's"
        assert parser.pings == ref.pings, "the pings differ from the reference's"
        assert parser.pongs == ref.pongs, "the pongs differ from the reference's"
        if self.log is not None:
            self.log += ref.messages if self.mode == "copy" else self.got
            self.log += [(PING, p) for p in parser.pings] + [(PONG, p) for p in parser.pongs]
        self.messages += len(self.got)
        self.got.clear()
        ref.messages.clear()
        parser.pings.clear()
        ref.pings.clear()
        parser.pongs.clear()
        ref.pongs.clear()
        if code is not None:
            assert verdict.state != "clean", (
                f"the parser failed with {code} on a stream the reference accepts")
            assert code in verdict.codes, f"close code {code}, the reference allows {verdict}"
            self.failures.append(code)
            self.reset()
            return
        assert verdict.state != "bad", (
            f"the parser accepted a frame the reference rejects: {verdict}")
        assert parser.close == ref.close
        if parser.close is not None and self.reset_on_close:
            self.closes += 1
            self.reset()
            return
        assert parser.buffered <= self.max_size + MAX_HEADER, "unparsed bytes outgrew their bound"
        if ref.pos > 65536:  # keep the re-examined stream short
            del self.stream[: ref.pos]
            ref.pos = 0


def cut(data: bytes | bytearray, bounds: list[int]) -> list[bytes | bytearray]:
    """``data`` cut at ``bounds`` (any order, any values), no chunk over MAX_CHUNK."""
    points = sorted({0, len(data), *(b for b in bounds if 0 < b < len(data))})
    chunks = []
    for a, b in itertools.pairwise(points):
        for i in range(a, b, MAX_CHUNK):
            chunks.append(data[i : min(b, i + MAX_CHUNK)])
    return chunks


# -- strategies ---------------------------------------------------------------------------


@st.composite
def payloads(draw: st.DrawFn, opcode: int, max_size: int) -> bytes:
    """A valid payload, sized to hit the length-encoding boundaries and ``max_size``."""
    sizes = [0, 1, 2, 125, 126, 127, 128, 1000, 65535, 65536, 65537,
             max_size - 1, max_size]
    size = draw(st.one_of(
        st.integers(0, 40),
        st.sampled_from([s for s in sizes if 0 <= s <= max_size]),
        st.integers(0, max_size),
    ))
    if opcode == TEXT:
        unit = draw(st.text(min_size=1, max_size=6)).encode("utf-8", "surrogatepass")
        if not utf8_ok(unit, final=True):
            unit = b"?"
        return unit * (size // len(unit)) + b"x" * (size % len(unit))
    unit = draw(st.binary(min_size=1, max_size=6))
    return (unit * (size // len(unit) + 1))[:size]


#: A ping or pong, as (opcode, payload).
controls = st.tuples(
    st.sampled_from([PING, PONG]),
    st.one_of(st.binary(max_size=8), st.binary(min_size=120, max_size=125)),
)
control_frames = controls.map(lambda c: server_frame(*c))

close_frames = st.one_of(
    st.just(server_frame(CLOSE, b"")),
    st.builds(
        lambda code, reason: server_frame(CLOSE, code.to_bytes(2, "big") + reason),
        st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                         1014, 3000, 4999]),
        st.text(max_size=30).map(lambda t: t.encode("utf-8", "ignore")[:123]),
    ),
)


@st.composite
def valid_messages(
    draw: st.DrawFn, max_size: int
) -> tuple[bytes, tuple[int, bytes], list[tuple[int, bytes]]]:
    """One valid data message, maybe fragmented with pings and pongs between the fragments.

    Returns the frames, the message they encode and the control frames, as (opcode, payload).
    """
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    payload = draw(payloads(opcode, max_size))
    nfrag = draw(st.sampled_from([1, 1, 2, 3, 5]))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=nfrag - 1,
                                max_size=nfrag - 1)))
    bounds = [0, *cuts, len(payload)]
    out, between = bytearray(), []
    for i in range(nfrag):
        op = opcode if i == 0 else CONT
        out += server_frame(op, payload[bounds[i] : bounds[i + 1]], fin=i == nfrag - 1)
        if i < nfrag - 1:
            for control in draw(st.lists(controls, max_size=2)):
                out += server_frame(*control)
                between.append(control)
    return bytes(out), (opcode, payload), between


def frame_starts(data: bytes | bytearray) -> list[int]:
    """Where frames start in ``data``, reading each header's length at face value."""
    starts, pos = [], 0
    while pos + 2 <= len(data) and len(starts) < 64:
        starts.append(pos)
        n, hl = data[pos + 1] & 0x7F, 2
        if n == 126:
            n, hl = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, hl = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if data[pos + 1] & 0x80:
            hl += 4
        pos += hl + n
    return starts or [0]


LENGTHS = [0, 1, 2, 124, 125, 126, 127, 65535, 65536, FUZZ_MAX - 1, FUZZ_MAX, FUZZ_MAX + 1,
           2**31, 2**63 - 1, 2**63, 2**64 - 1]


@st.composite
def mutants(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with one to four structural or bitwise mutations."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(
            ["flip", "byte", "truncate", "extend", "length", "opcode", "rsv", "fin", "mask",
             "splice"]))
        if not data:
            data += draw(st.binary(min_size=2, max_size=16))
        at = draw(st.sampled_from(frame_starts(data)))
        if kind == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "splice":
            a = draw(st.integers(0, len(data)))
            b = draw(st.integers(a, min(len(data), a + 256)))
            data[draw(st.integers(0, len(data))) : 0] = data[a:b]
        elif at + 2 > len(data):
            continue
        elif kind == "length":
            # Rewrite the length, in any of the three encodings, minimal or not.
            n, hl = data[at + 1] & 0x7F, 2
            hl = {126: 4, 127: 10}.get(n, 2)
            new = draw(st.one_of(st.sampled_from(LENGTHS), st.integers(0, 70_000)))
            width = draw(st.sampled_from([0, 2, 8]))
            mask_bit = data[at + 1] & 0x80
            if width == 0 or new >= 1 << (8 * width):
                width = 0 if new < 126 else 2 if new < 65536 else 8
            if width == 0:
                header = bytes([mask_bit | new])
            else:
                header = bytes([mask_bit | (126 if width == 2 else 127)]) + new.to_bytes(
                    width, "big")
            data[at + 1 : at + hl] = header
        elif kind == "opcode":
            data[at] = (data[at] & 0xF0) | draw(st.integers(0, 15))
        elif kind == "rsv":
            data[at] = (data[at] & 0x8F) | (draw(st.integers(0, 7)) << 4)
        elif kind == "fin":
            data[at] ^= 0x80
        elif kind == "mask":
            data[at + 1] ^= 0x80
    return bytes(data)


corpus_seeds = st.sampled_from(sorted(CORPUS))


@st.composite
def split_points(draw: st.DrawFn, length: int) -> list[int]:
    """Where to cut ``length`` bytes: nowhere, anywhere, or (short inputs) everywhere."""
    if length <= 600 and draw(st.integers(0, 7)) == 0:
        return list(range(1, length))
    return draw(st.lists(st.integers(1, max(1, length - 1)), max_size=12))


# -- the state machine ------------------------------------------------------------------


class ParserMachine(RuleBasedStateMachine):
    """Bytes of every kind into one parser, fed from an outbox in arbitrary splits.

    Each rule appends bytes to the outbox, then feeds some prefix of it, so
    frames from different rules share chunks and a rule's frame may be split
    across steps.
    """

    @initialize(max_size=st.sampled_from(MAX_SIZES), mode=st.sampled_from(MODES))
    def start(self, max_size: int, mode: str) -> None:
        self.harness = Harness(max_size, mode=mode)
        self.outbox = bytearray()

    def _send(self, data: st.DataObject, new: bytes) -> None:
        self.outbox += new
        total = len(self.outbox)
        upto = data.draw(st.one_of(st.just(total), st.integers(0, total)), label="feed upto")
        harness = self.harness
        for chunk in cut(self.outbox[:upto], data.draw(split_points(upto), label="cuts")):
            closes = harness.closes
            if harness.feed(chunk) is not None or harness.closes != closes:
                # The connection is over: what it still had queued is dropped with it, and
                # the fresh parser starts on the next rule's bytes.
                self.outbox.clear()
                return
        del self.outbox[:upto]

    @rule(data=st.data())
    def valid_message(self, data: st.DataObject) -> None:
        frames, _, _ = data.draw(valid_messages(self.harness.max_size), label="message")
        self._send(data, frames)

    @rule(data=st.data())
    def valid_burst(self, data: st.DataObject) -> None:
        max_size = min(self.harness.max_size, 600)  # many small messages in few chunks
        burst = data.draw(st.lists(valid_messages(max_size), min_size=2, max_size=6), label="burst")
        self._send(data, b"".join(frames for frames, _, _ in burst))

    @rule(data=st.data(), frame=st.one_of(control_frames, close_frames))
    def control(self, data: st.DataObject, frame: bytes) -> None:
        self._send(data, frame)

    @rule(data=st.data(), name=corpus_seeds)
    def corpus_seed(self, data: st.DataObject, name: str) -> None:
        self._send(data, CORPUS[name])

    @rule(data=st.data(), garbage=st.binary(max_size=300))
    def garbage(self, data: st.DataObject, garbage: bytes) -> None:
        self._send(data, garbage)

    @rule(data=st.data())
    def mutant(self, data: st.DataObject) -> None:
        if data.draw(st.booleans(), label="seed from corpus"):
            seed = CORPUS[data.draw(corpus_seeds, label="seed")]
        else:
            seed, _, _ = data.draw(valid_messages(self.harness.max_size), label="seed")
        self._send(data, data.draw(mutants(seed), label="mutant"))

    @invariant()
    def nothing_lent(self) -> None:
        self.harness.parser.check_borrows()


ParserMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestParserMachine = ParserMachine.TestCase


# -- the valid-only differential, and the corpus itself ---------------------------------------


@settings(max_examples=max(20, EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data(), st.sampled_from([FUZZ_MAX, 70_000]), st.sampled_from(MODES))
def test_valid_streams_decode_as_encoded_whatever_the_splits(
    data: st.DataObject, max_size: int, mode: str
) -> None:
    """Only valid frames: the parser yields exactly what was encoded, as the reference does."""
    stream = bytearray()
    messages: list[tuple[int, bytes]] = []
    controls_sent: list[tuple[int, bytes]] = []
    for _ in range(data.draw(st.integers(1, 8), label="messages")):
        control = data.draw(st.none() | controls, label="control")
        if control is not None:
            stream += server_frame(*control)
            controls_sent.append(control)
        frames, message, between = data.draw(valid_messages(max_size), label="message")
        stream += frames
        messages.append(message)
        controls_sent += between
    harness = Harness(max_size, record=True, mode=mode)
    for chunk in cut(stream, data.draw(split_points(len(stream)), label="cuts")):
        assert harness.feed(chunk) is None
    assert harness.log is not None
    assert [m for m in harness.log if m[0] in (TEXT, BINARY)] == messages
    assert sorted(m for m in harness.log if m[0] in (PING, PONG)) == sorted(controls_sent)
    assert harness.parser.buffered == 0


def corpus_expectation(name: str) -> int | None:
    """The close code a corpus file's name promises (``bad-1002-...``), ``None`` for ``ok-``."""
    kind, _, rest = name.partition("-")
    assert kind in ("ok", "bad"), f"corpus file {name!r} must start with ok- or bad-"
    return int(rest[:4]) if kind == "bad" else None


def test_corpus_is_there_and_up_to_date() -> None:
    assert len(CORPUS) >= 40, "run tools/make_corpus.py"
    tool = Path(__file__).parents[2] / "tools" / "make_corpus.py"
    result = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_seed_whole_and_split(name: str, mode: str) -> None:
    """Each seed does what its name says, fed whole, in pieces and byte by byte (if short)."""
    data = CORPUS[name]
    expected = corpus_expectation(name)
    splits = [[], list(range(0, len(data), 7)), list(range(0, len(data), 1000))]
    if len(data) <= 2000:
        splits.append(list(range(len(data))))
    for bounds in splits:
        harness = Harness(max_size=70_000, reset_on_close=False, mode=mode)
        failure = None
        for chunk in cut(data, bounds):
            failure = harness.feed(chunk)
            if failure is not None:
                break  # what follows would go to a fresh parser
        assert failure == expected, f"{name} gave {failure}"
        # With the fuzzers' small max_message_size the reference alone decides.
        small = Harness(max_size=FUZZ_MAX, mode=mode)
        for chunk in cut(data, bounds):
            small.feed(chunk)


@settings(max_examples=max(20, EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(corpus_seeds, min_size=1, max_size=6), st.data())
def test_corpus_seeds_concatenated_with_random_splits(names: list[str], data: st.DataObject
                                                      ) -> None:
    stream = b"".join(CORPUS[n] for n in names)
    harness = Harness(max_size=data.draw(st.sampled_from(MAX_SIZES)),
                      mode=data.draw(st.sampled_from(MODES)))
    for chunk in cut(stream, data.draw(split_points(len(stream)))):
        harness.feed(chunk)
