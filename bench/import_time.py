"""Import cost of trio_feed against ``import trio``, measured in one run.

Each repetition runs ``python -X importtime -c "import <module>"`` for every
statement in a fresh interpreter, in shuffled order, and reads the
cumulative time of the top-level import from stderr.  The ratio to
``import trio`` is taken within each repetition, so a machine that is busy
for a while slows both sides alike; the report gives the median and range
of the ratios.  Byte-code caches are written and warmed first, even where
``PYTHONDONTWRITEBYTECODE`` is set: an installed wheel has its ``.pyc``
files, as trio's do, and compiling the sources on every run would measure
the compiler.

    python bench/import_time.py            # 21 repetitions
    python bench/import_time.py --reps 51
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import subprocess
import sys

STATEMENTS = {
    "trio": "import trio",
    "trio_feed": "import trio_feed",
    "open_feed": "from trio_feed import open_feed",
}

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$")


def cumulative_us(statement: str) -> int:
    """The cumulative import time of the statement's first module, in microseconds."""
    top = statement.split()[1]
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                         capture_output=True, text=True, check=True, env=_ENV).stderr
    for line in err.splitlines():
        match = _LINE.match(line)
        if match and match.group(2) == top:
            return int(match.group(1))
    raise RuntimeError(f"no import-time line for {top!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args()
    for statement in STATEMENTS.values():  # warm the byte-code caches
        cumulative_us(statement)
    ratios: dict[str, list[float]] = {name: [] for name in STATEMENTS if name != "trio"}
    times: dict[str, list[int]] = {name: [] for name in STATEMENTS}
    for _ in range(args.reps):
        order = list(STATEMENTS)
        random.shuffle(order)
        rep = {name: cumulative_us(STATEMENTS[name]) for name in order}
        for name, us in rep.items():
            times[name].append(us)
            if name != "trio":
                ratios[name].append(us / rep["trio"])
    print(f"python {platform.python_version()} on {platform.machine()}, {args.reps} repetitions")
    print(f"{'statement':36} {'median ms':>9}  {'ratio to import trio: median [min-max]'}")
    for name, statement in STATEMENTS.items():
        ms = statistics.median(times[name]) / 1000
        if name == "trio":
            print(f"{statement:36} {ms:9.1f}  1.00")
        else:
            r = ratios[name]
            print(f"{statement:36} {ms:9.1f}  {statistics.median(r):.2f} "
                  f"[{min(r):.2f}-{max(r):.2f}]")


if __name__ == "__main__":
    main()
