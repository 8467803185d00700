"""Fuzz the frame parser for longer than CI can: atheris (libFuzzer) or Hypothesis at scale.

Both engines drive the harness of ``tests/wire/test_fuzz.py``: every input is
fed, in chunks, to a ``FrameParser`` and to the test's reference decoder, and
every chunk is checked (outcomes limited to messages, "needs more data" or a
``ProtocolError`` with close code 1002/1007/1009; the buffer bound; borrow
checks; agreement with the reference).  A broken check raises, and the run
stops and says which input did it.

``--engine atheris`` (the default when ``atheris`` is importable; ``pip
install atheris``) runs coverage-guided libFuzzer on raw byte streams, seeded
with ``tests/wire/corpus``.  Each input is one stream; how it is cut into
chunks (at most 8 KiB each) and which ``max_message_size`` it gets (4096
mostly, 125 or 70000 sometimes) are derived from a CRC of the input, so a
crashing input replays exactly.  New interesting inputs are kept in a
temporary directory (``--workdir`` to keep them), never in the seed corpus;
a crashing input is written to ``--artifacts`` (default ``reports/fuzz/``, gitignored).

``--engine hypothesis`` reruns the test's ``ParserMachine`` with a fresh
random seed per round until the time or example budget is spent.

Examples::

    python tools/fuzz.py --seconds 300                  # five minutes of atheris
    python tools/fuzz.py --engine hypothesis --seconds 120
    python tools/fuzz.py --runs 100000                  # a fixed number of atheris inputs
    python tools/fuzz.py reports/fuzz/crash-...         # replay one input and show the error
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS_DIR = ROOT / "tests" / "wire" / "corpus"

try:
    import atheris
except ImportError:  # the Hypothesis engine still works
    atheris = None

if atheris is not None:
    # Coverage-guide on the library only; the harness and Hypothesis stay uninstrumented.
    with atheris.instrument_imports(include=["trio_feed"]):
        import trio_feed.wire  # noqa: F401

from tests.wire import test_fuzz  # noqa: E402

STATS: collections.Counter[str] = collections.Counter()
#: Set by the atheris engine: (start, deadline or None, max inputs or 0, last progress print).
BUDGET: list[float] = []
#: A scratch corpus directory to delete when the run ends.
SCRATCH: list[Path] = []


def run_stream(data: bytes) -> None:
    """One fuzz input: a raw server byte stream, chunked and sized from its own CRC."""
    crc = zlib.crc32(data)
    harness = test_fuzz.Harness(max_size=(4096, 4096, 125, 70_000)[crc & 3])
    # Chunk sizes from a tiny LCG on the CRC: 1..64 bytes mostly, up to 8 KiB sometimes.
    state, pos = crc | 1, 0
    while pos < len(data):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + (state >> 8) % (test_fuzz.MAX_CHUNK if state & 0x7 == 0 else 64)
        code = harness.feed(data[pos : pos + size])
        STATS["chunks"] += 1
        if code is not None:
            STATS[f"ProtocolError {code}"] += 1
        pos += size
    STATS["inputs"] += 1
    STATS["bytes"] += len(data)
    STATS["messages"] += harness.messages
    STATS["closes"] += harness.closes
    if BUDGET:
        check_budget()


def check_budget() -> None:
    """libFuzzer ends the process without running atexit hooks, so the budget is enforced here."""
    started, deadline, runs, last = BUDGET
    now = time.monotonic()
    if (deadline and now >= deadline) or (runs and STATS["inputs"] >= runs):
        print_stats("atheris", started)
        for path in SCRATCH:
            shutil.rmtree(path, ignore_errors=True)
        sys.stdout.flush()
        os._exit(0)
    if now - last >= 30:
        BUDGET[3] = now
        print_stats("atheris", started)


def print_stats(engine: str, started: float) -> None:
    elapsed = time.monotonic() - started
    fields = ", ".join(f"{k}={v}" for k, v in sorted(STATS.items()))
    print(f"\n[fuzz.py] engine={engine} elapsed={elapsed:.0f}s {fields}", flush=True)


def run_atheris(args: argparse.Namespace) -> int:
    assert atheris is not None
    started = time.monotonic()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    libfuzzer_args = [
        sys.argv[0],
        f"-max_len={args.max_len}",
        f"-artifact_prefix={artifacts}/",
        "-timeout=20",
        f"-seed={args.seed}",
    ]
    # The budget is enforced by run_stream (to print the statistics); this is a backstop.
    libfuzzer_args.append(f"-max_total_time={args.seconds + 60 if not args.runs else 0}")
    # New inputs go to the first directory: the scratch one, never the seed corpus.
    libfuzzer_args += [str(workdir), str(CORPUS_DIR)]
    print(f"[fuzz.py] atheris {' '.join(libfuzzer_args[1:])}", flush=True)

    if not args.workdir:
        SCRATCH.append(workdir)
    BUDGET[:] = [started, 0 if args.runs else started + args.seconds, args.runs, started]
    atheris.Setup(libfuzzer_args, run_stream)
    atheris.Fuzz()
    return 0  # not reached: run_stream or libFuzzer ends the process


def run_hypothesis(args: argparse.Namespace) -> int:
    from hypothesis import settings

    started = time.monotonic()
    deadline = started + args.seconds
    per_round = 200
    rounds = 0
    original_feed = test_fuzz.Harness.feed

    def counting_feed(self: test_fuzz.Harness, chunk: bytes | bytearray) -> int | None:
        STATS["chunks"] += 1
        STATS["bytes"] += len(chunk)
        before = self.messages
        code = original_feed(self, chunk)
        STATS["messages"] += self.messages - before
        if code is not None:
            STATS[f"ProtocolError {code}"] += 1
        return code

    test_fuzz.Harness.feed = counting_feed  # type: ignore[method-assign]
    machine = test_fuzz.ParserMachine.TestCase
    machine.settings = settings(machine.settings, max_examples=per_round, database=None,
                                derandomize=False)
    while time.monotonic() < deadline and (not args.runs or STATS["examples"] < args.runs):
        rounds += 1
        try:
            machine("runTest").runTest()
        except Exception:
            print_stats("hypothesis", started)
            raise
        STATS["examples"] += per_round
        print(f"[fuzz.py] round {rounds}: {STATS['examples']} examples, "
              f"{time.monotonic() - started:.0f}s", flush=True)
    print_stats("hypothesis", started)
    return 0


def replay(paths: list[str]) -> int:
    for path in paths:
        data = Path(path).read_bytes()
        print(f"[fuzz.py] replaying {path} ({len(data)} bytes)")
        run_stream(data)
        print("[fuzz.py] no failure")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="replay these input files instead of fuzzing")
    parser.add_argument("--engine", choices=["atheris", "hypothesis"],
                        default="atheris" if atheris is not None else "hypothesis")
    parser.add_argument("--seconds", type=int, default=300, help="time budget (default 300)")
    parser.add_argument("--runs", type=int, default=0,
                        help="stop after this many inputs (atheris) or examples (hypothesis)")
    parser.add_argument("--max-len", type=int, default=16384,
                        help="atheris: longest input in bytes (default 16384)")
    parser.add_argument("--seed", type=int, default=0, help="atheris: libFuzzer seed (0: random)")
    parser.add_argument("--workdir", help="atheris: keep the inputs it finds here")
    parser.add_argument("--artifacts",
                        default=os.environ.get("FUZZ_ARTIFACTS", str(ROOT / "reports" / "fuzz")),
                        help="atheris: where a crashing input is written")
    args = parser.parse_args()
    if args.inputs:
        return replay(args.inputs)
    if args.engine == "atheris":
        if atheris is None:
            parser.error("atheris is not installed: pip install atheris, or --engine hypothesis")
        return run_atheris(args)
    return run_hypothesis(args)


if __name__ == "__main__":
    raise SystemExit(main())
