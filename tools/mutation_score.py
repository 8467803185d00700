"""A mutation score beyond docs/SAFETY.md's table: mutmut over the modules it names.

    python tools/mutation_score.py [--minutes 15] [--only trio_feed/wire/_parser.py ...]

Copies the package and the tests to a scratch directory (mutmut writes its
``mutants/`` tree and its cache beside the code), configures mutmut there,
runs it for at most ``--minutes`` and prints ``mutmut results`` (every
mutant not killed, by name) and the counts.  ``mutmut show <name>`` in the
printed directory shows a survivor's diff.  Not part of CI: a full run takes
far longer than the table's.  docs/SAFETY.md records the last score and says
why each survivor is equivalent or harmless.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ONLY = [
    "trio_feed/wire/*",
    "trio_feed/_pipelines.py",
    "trio_feed/feed/_outbox.py",
    "trio_feed/feed/_continuity.py",
    "trio_feed/feed/_statistics.py",
]
TESTS = [
    "tests/wire", "tests/test_pipelines.py", "tests/safety", "tests/feed", "tests/test_feed.py",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--only", action="append", help="glob of files to mutate (repeatable)")
    parser.add_argument("--tests", action="append", help="test paths to run (repeatable)")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    only = args.only or DEFAULT_ONLY
    tests = args.tests or TESTS

    scratch = Path(tempfile.mkdtemp(prefix="mutmut-"))
    repo = scratch / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in ("trio_feed", "tests", "examples"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    shared = ROOT.parent / "shared"
    if shared.exists():
        (scratch / "shared").symlink_to(shared)
    def listed(items: list[str]) -> str:  # setup.cfg lists: one item per line
        return "".join(f"\n    {item}" for item in items)

    (repo / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = trio_feed/\n"
        f"only_mutate ={listed(only)}\n"
        f"pytest_add_cli_args_test_selection ={listed(tests)}\n"
        f"pytest_add_cli_args ={listed(['-pno:cacheprovider', '-q'])}\n"
    )
    mutmut = [sys.executable, "-m", "mutmut"]
    print(f"mutmut in {repo}, for at most {args.minutes} min", flush=True)
    proc = subprocess.Popen([*mutmut, "run", "--max-children", str(args.max_children)],
                            cwd=repo, start_new_session=True)
    try:
        proc.wait(timeout=args.minutes * 60)
    except subprocess.TimeoutExpired:
        print(f"stopped after {args.minutes} min: the counts below are partial", flush=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    subprocess.run([*mutmut, "results"], cwd=repo)
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=repo)
    stats = repo / "mutants" / "mutmut-cicd-stats.json"
    if stats.exists():
        print(stats.read_text())
    if args.keep:
        print(f"(scratch kept for `mutmut show`: {repo}; delete it when done)")
    else:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
