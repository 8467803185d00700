"""Write the seed corpus of the frame-parser fuzzer: ``tests/wire/corpus/*.bin``.

Each file is one server-to-client byte stream that starts at a frame boundary
with a fresh parser, so it can be fed on its own, concatenated with others or
mutated.  The name says what the stream is:

- ``ok-<what>.bin``: every frame is valid for a parser whose
  ``max_message_size`` is at least 65536 (the 64-bit length cases need that);
- ``bad-<code>-<what>.bin``: the stream breaks RFC 6455, and ``<code>`` is the
  close code the client must answer with (1002, 1007 or 1009; 1009 assumes
  the default ``max_message_size`` of 8 MiB or anything below 2^63 - 1).

The frames are encoded with ``tests/wire/server_frames.py``, the unmasked
server-side encoder the tests already use (``trio_feed.wire`` only encodes
client frames, which are masked), and the close codes and opcodes come from
``trio_feed.wire``.  The output is deterministic: rerunning the tool rewrites
the same bytes, so ``git diff`` shows any change.

Usage (from the repository root)::

    python tools/make_corpus.py            # write tests/wire/corpus/
    python tools/make_corpus.py --check    # exit 1 if the files differ from what it would write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.wire.server_frames import server_frame  # noqa: E402
from trio_feed.wire import CloseCode, Opcode  # noqa: E402

CORPUS = ROOT / "tests" / "wire" / "corpus"

#: The max_message_size the fuzz tests use; the "max-size" seeds sit exactly on it.
FUZZ_MAX = 4096

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
PING, PONG, CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode("utf-8")


def trade(i: int) -> bytes:
    return (
        b'{"e":"trade","E":1700000000000,"s":"BTCUSDT","t":%d,"p":"43000.01",'
        b'"q":"0.00100000","T":1700000000000,"m":true,"M":true}' % i
    )


def sized_text(n: int) -> bytes:
    """``n`` bytes of valid UTF-8 whose last character is multi-byte."""
    tail = "\u20ac".encode()  # 3 bytes
    return b"a" * (n - len(tail)) + tail


def fragments(opcode: int, payload: bytes, cuts: list[int],
              between: list[bytes] | None = None) -> bytes:
    """``payload`` as a fragmented message cut at ``cuts``; ``between[i]`` after fragment i."""
    bounds = [0, *cuts, len(payload)]
    out = bytearray()
    for i in range(len(bounds) - 1):
        op = opcode if i == 0 else CONT
        out += server_frame(op, payload[bounds[i] : bounds[i + 1]], fin=i == len(bounds) - 2)
        if between and i < len(between):
            out += between[i]
    return bytes(out)


def seeds() -> dict[str, bytes]:
    euro, snowman, grin = "\u20ac".encode(), "\u2603".encode(), "\U0001f600".encode()
    multi = b"caf\xc3\xa9 " + euro + snowman + grin  # 2-, 3-, 3- and 4-byte characters
    s: dict[str, bytes] = {}

    # -- one frame of each opcode, each length encoding --------------------------------
    s["ok-text-7bit"] = server_frame(TEXT, trade(1))
    s["ok-text-empty"] = server_frame(TEXT, b"")
    s["ok-text-multibyte"] = server_frame(TEXT, multi)
    s["ok-binary-7bit"] = server_frame(BINARY, bytes(range(100)))
    s["ok-binary-empty"] = server_frame(BINARY, b"")
    s["ok-text-125"] = server_frame(TEXT, sized_text(125))
    s["ok-binary-126-16bit"] = server_frame(BINARY, bytes(range(126)))
    s["ok-text-127-16bit"] = server_frame(TEXT, sized_text(127))
    s["ok-binary-65535-16bit-max"] = server_frame(BINARY, bytes(i % 251 for i in range(65535)))
    s["ok-text-65536-64bit-min"] = server_frame(TEXT, sized_text(65536))
    s["ok-ping-empty"] = server_frame(PING, b"")
    s["ok-ping-125"] = server_frame(PING, bytes(range(125)))
    s["ok-pong"] = server_frame(PONG, b"pong payload")
    s["ok-close-empty"] = server_frame(CLOSE, b"")
    s["ok-close-1000-reason"] = server_frame(CLOSE, close_payload(CloseCode.NORMAL, "bye \u2603"))
    s["ok-close-1001"] = server_frame(CLOSE, close_payload(CloseCode.GOING_AWAY))
    s["ok-close-1014"] = server_frame(CLOSE, close_payload(CloseCode.BAD_GATEWAY))
    s["ok-close-3000"] = server_frame(CLOSE, close_payload(3000, "library"))
    s["ok-close-4999-max-reason"] = server_frame(CLOSE, close_payload(4999, "r" * 123))

    # -- sizes on the fuzz tests' max_message_size -------------------------------------
    s[f"ok-binary-{FUZZ_MAX}-max-size"] = server_frame(BINARY, bytes(i % 256 for i in
                                                                     range(FUZZ_MAX)))
    s[f"ok-text-{FUZZ_MAX}-max-size"] = server_frame(TEXT, sized_text(FUZZ_MAX))
    s[f"ok-text-{FUZZ_MAX}-max-size-fragmented"] = fragments(
        TEXT, sized_text(FUZZ_MAX), [1000, FUZZ_MAX - 2]  # the cut splits the final euro sign
    )
    s[f"ok-binary-{FUZZ_MAX + 1}-over-fuzz-max"] = server_frame(BINARY, b"\x00" * (FUZZ_MAX + 1))

    # -- fragmentation -----------------------------------------------------------------
    s["ok-frag-text-utf8-split"] = fragments(
        TEXT, multi, [4, 8, 9, len(multi) - 1]  # splits é, €, ☃ and 😀 between fragments
    )
    s["ok-frag-text-one-byte-fragments"] = fragments(TEXT, grin + euro, list(range(1, 7)))
    s["ok-frag-binary"] = fragments(BINARY, bytes(range(256)), [1, 128, 255])
    s["ok-frag-empty-fragments"] = fragments(TEXT, b"abc", [0, 0, 3, 3])
    s["ok-frag-controls-interleaved"] = fragments(
        TEXT, multi, [5, 10],
        between=[server_frame(PING, b"p1"), server_frame(PONG, b"") + server_frame(PING, b"p2")],
    )
    s["ok-frag-close-inside-then-ignored"] = (  # no message: data after the Close is ignored
        server_frame(TEXT, b"unfi", fin=False)
        + server_frame(CLOSE, close_payload(1000))
        + server_frame(CONT, b"nished")
    )

    # -- a realistic stream ------------------------------------------------------------
    s["ok-stream-trades-ping-close"] = b"".join(
        [server_frame(TEXT, trade(i)) for i in range(20)]
        + [server_frame(PING, b"1700000000000")]
        + [server_frame(TEXT, trade(i)) for i in range(20, 25)]
        + [fragments(TEXT, trade(99), [50, 100], between=[server_frame(PING, b"")])]
        + [server_frame(BINARY, b"\x00\xff" * 300)]
        + [server_frame(CLOSE, close_payload(CloseCode.GOING_AWAY, "serverShutdown"))]
    )

    # -- violations --------------------------------------------------------------------
    s["bad-1002-masked"] = server_frame(TEXT, b"masked", mask=b"\x01\x02\x03\x04")
    s["bad-1002-masked-64bit"] = server_frame(BINARY, b"m" * 70000, mask=b"\xff\x00\xff\x00")[:64]
    for rsv in (1, 2, 4):
        s[f"bad-1002-rsv{rsv}"] = server_frame(TEXT, b"rsv", rsv=rsv)
    for op in (3, 7, 0xB, 0xF):
        s[f"bad-1002-opcode-{op:x}"] = server_frame(op, b"reserved")
    s["bad-1002-fragmented-ping"] = server_frame(PING, b"x", fin=False)
    s["bad-1002-ping-126"] = server_frame(PING, b"x" * 126)
    s["bad-1002-continuation-without-start"] = server_frame(TEXT, b"a") + server_frame(CONT, b"b")
    s["bad-1002-new-message-inside-fragmented"] = (
        server_frame(TEXT, b"a", fin=False) + server_frame(BINARY, b"b")
    )
    s["bad-1002-len16-not-minimal"] = b"\x81\x7e\x00\x05hello"
    s["bad-1002-len64-not-minimal"] = server_frame(TEXT, b"x" * 200, force_64bit=True)
    s["bad-1002-len64-top-bit"] = b"\x82\x7f" + (2**63 + 5).to_bytes(8, "big")
    s["bad-1002-close-1-byte"] = server_frame(CLOSE, b"\x03")
    for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535):
        s[f"bad-1002-close-code-{code}"] = server_frame(CLOSE, close_payload(code))
    s["bad-1007-close-reason-not-utf8"] = server_frame(CLOSE, close_payload(1000) + b"\xc3")
    s["bad-1007-text-not-utf8"] = server_frame(TEXT, b"ok\xff")
    s["bad-1007-text-surrogate"] = server_frame(TEXT, b"\xed\xa0\x80")
    s["bad-1007-text-truncated"] = server_frame(TEXT, b"ok" + euro[:2])
    s["bad-1007-frag-split-invalid"] = fragments(TEXT, b"ok\xf4\x90\x80\x80", [3])
    s["bad-1007-frag-truncated-at-end"] = fragments(TEXT, b"ok" + grin[:3], [3])
    s["bad-1009-len64-2e63-1"] = b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big")
    s["bad-1009-text-len64-2e63-1"] = b"\x81\x7f" + (2**63 - 1).to_bytes(8, "big") + b"{}"
    return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare instead of writing; exit 1 on any difference")
    args = parser.parse_args()
    wanted = {f"{name}.bin": data for name, data in seeds().items()}
    if args.check:
        present = {p.name: p.read_bytes() for p in CORPUS.glob("*.bin")}
        if present != wanted:
            stale = sorted(set(present) ^ set(wanted)) + sorted(
                n for n in set(present) & set(wanted) if present[n] != wanted[n])
            print(f"corpus differs from tools/make_corpus.py: {stale}")
            return 1
        print(f"corpus up to date: {len(wanted)} files")
        return 0
    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.glob("*.bin"):
        if old.name not in wanted:
            old.unlink()
    for name, data in sorted(wanted.items()):
        (CORPUS / name).write_bytes(data)
    print(f"wrote {len(wanted)} files, {sum(map(len, wanted.values()))} bytes, to {CORPUS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
