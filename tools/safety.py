"""The SAFETY.md map as data: render it, check it, and mutate the code it names.

``docs/safety.toml`` holds one ``[[row]]`` per enforcing line of a rule in
``docs/SAFETY.md``: the rule id (``S1`` .. ``S11``), what the line does, the
file, a code fragment that must occur exactly once in that file, the mutation
(the fragment's replacement, ``''`` for a deletion) and the test ids that must
fail with the mutation applied.

    python tools/safety.py render            # rewrite the tables in docs/SAFETY.md
    python tools/safety.py check             # stale tables, orphaned fragments, unknown tests
    python tools/safety.py mutate [--row S1.2] [--jobs 2] [--timeout 180]

``mutate`` runs ``check`` first, then runs every row's tests once, unmutated,
in one batched pytest run ("broken baseline" if one fails), then for each row
copies the package and the tests into a scratch directory, applies the
mutation there and runs the row's tests.  A row is *killed* when every test it
names fails (a hang past ``--timeout`` counts as failing); if any named test
still passes, the mutant *survived*.  The exit status is non-zero on any
survivor, broken baseline, orphaned fragment or unknown test id.

Only the standard library is used (``tomllib``, Python 3.11+).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "safety.toml"
DOC = ROOT / "docs" / "SAFETY.md"
RULES = tuple(f"S{n}" for n in range(1, 12))
REQUIRED = ("rule", "what", "file", "fragment", "replacement", "tests")
OPTIONAL = ("id", "note")
# What a scratch copy needs: the package, the tests and pytest's configuration.
COPIED = ("trio_feed", "tests", "examples", "pyproject.toml", "conftest.py")
# The pytest plugins the suite needs, loaded by name with autoloading off: other
# plugins installed beside the project (xdist, anyio, ...) cost seconds per run.
# ``--all-plugins`` autoloads every installed plugin instead.
PLUGINS = ("pytest_trio.plugin", "_hypothesis_pytestplugin", "trio_feed.testing._plugin")
ALL_PLUGINS = False
START = re.compile(r"<!-- safety-table (S\d+) -->")
END = "<!-- /safety-table -->"

# Loaded into each pytest run with ``-p``: records every test's outcome as a
# JSON line, and refuses to run if ``trio_feed`` is not imported from the copy.
PLUGIN = '''
import json, os, pathlib, sys

_OUT = os.environ["SAFETY_OUTCOMES"]


def pytest_configure(config):
    # A killed mutant needs one failing example, not the smallest: no shrinking,
    # and no example database shared between mutants.
    try:
        from hypothesis import Phase, settings
    except ImportError:
        return
    settings.register_profile(
        "safety", database=None, phases=[Phase.explicit, Phase.reuse, Phase.generate]
    )
    settings.load_profile("safety")


def pytest_sessionstart(session):
    import trio_feed
    where = pathlib.Path(trio_feed.__file__).resolve()
    root = pathlib.Path(os.environ["SAFETY_ROOT"]).resolve()
    if root not in where.parents:
        raise SystemExit(f"safety: trio_feed imported from {where}, not from {root}")


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        with open(_OUT, "a") as f:
            f.write(json.dumps([report.nodeid, report.when, report.outcome]) + "\\n")
'''


class DataError(Exception):
    pass


@dataclass
class Row:
    id: str
    rule: str
    what: str
    file: str
    fragment: str
    replacement: str
    tests: list[str]
    note: str = ""
    problems: list[str] = field(default_factory=list)


def load(path: Path = DATA) -> list[Row]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    extra = set(data) - {"row"}
    if extra:
        raise DataError(f"{path.name}: unknown top-level keys {sorted(extra)}")
    rows: list[Row] = []
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for n, raw in enumerate(data.get("row", []), 1):
        where = f"{path.name} row {n}"
        unknown = set(raw) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            raise DataError(f"{where}: unknown keys {sorted(unknown)}")
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise DataError(f"{where}: missing keys {missing}")
        for k in (*REQUIRED, *OPTIONAL):
            if k in raw and k != "tests" and not isinstance(raw[k], str):
                raise DataError(f"{where}: {k} must be a string")
        tests = raw["tests"]
        if not tests or not all(isinstance(t, str) and "::" in t for t in tests):
            raise DataError(f"{where}: tests must be a non-empty list of pytest node ids")
        if raw["rule"] not in RULES:
            raise DataError(f"{where}: rule {raw['rule']!r} is not one of S1..S11")
        if not raw["fragment"]:
            raise DataError(f"{where}: empty fragment")
        if raw["fragment"] == raw["replacement"]:
            raise DataError(f"{where}: the replacement equals the fragment")
        counts[raw["rule"]] = counts.get(raw["rule"], 0) + 1
        row_id = raw.get("id") or f"{raw['rule']}.{counts[raw['rule']]}"
        if row_id in seen:
            raise DataError(f"{where}: duplicate id {row_id}")
        seen.add(row_id)
        rows.append(
            Row(
                id=row_id,
                rule=raw["rule"],
                what=raw["what"],
                file=raw["file"],
                fragment=raw["fragment"],
                replacement=raw["replacement"],
                tests=list(tests),
                note=raw.get("note", ""),
            )
        )
    return rows


# -- render -----------------------------------------------------------------


def _code(text: str) -> str:
    """One table cell of code: lines joined with ⏎, pipes escaped."""
    lines = [line.strip() for line in text.strip("\n").splitlines() if line.strip()]
    joined = " ⏎ ".join(lines).replace("|", "\\|")
    ticks = "``" if "`" in joined else "`"
    pad = " " if ticks == "``" else ""
    return f"{ticks}{pad}{joined}{pad}{ticks}"


def _test(node: str) -> str:
    return "`" + node.replace("|", "\\|") + "`"


def table(rows: list[Row], rule: str) -> str:
    out = [
        "| row | enforced by | code | mutation | tests that must fail |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.rule != rule:
            continue
        what = r.what + (f" ({r.note})" if r.note else "")
        mutation = "delete" if r.replacement == "" else "→ " + _code(r.replacement)
        code = f"`{r.file}`: {_code(r.fragment)}"
        tests = "<br>".join(_test(t) for t in r.tests)
        out.append(f"| {r.id} | {what.replace('|', '/')} | {code} | {mutation} | {tests} |")
    return "\n".join(out)


def rendered(doc: str, rows: list[Row]) -> str:
    parts: list[str] = []
    pos = 0
    for m in START.finditer(doc):
        end = doc.find(END, m.end())
        if end < 0:
            raise DataError(f"SAFETY.md: {m.group(0)} has no {END}")
        parts.append(doc[pos : m.end()])
        parts.append("\n" + table(rows, m.group(1)) + "\n")
        pos = end
    parts.append(doc[pos:])
    return "".join(parts)


def cmd_render(args: argparse.Namespace) -> int:
    rows = load()
    doc = DOC.read_text()
    new = rendered(doc, rows)
    if new != doc:
        DOC.write_text(new)
        print(f"rewrote {DOC.relative_to(ROOT)}")
    else:
        print(f"{DOC.relative_to(ROOT)} is up to date")
    return 0


# -- check ------------------------------------------------------------------


def _collect(root: Path, files: list[str]) -> set[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    plugins = _plugin_args(env)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *plugins,
         *files],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    ids = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    if proc.returncode not in (0, 5) and not ids:
        raise DataError(f"pytest --collect-only failed:\n{proc.stdout}\n{proc.stderr}")
    return ids


def _matches(node: str, collected: set[str]) -> list[str]:
    """The collected items a named id stands for (itself, or its parametrizations)."""
    return sorted(
        c for c in collected if c == node or c.startswith((node + "[", node + "::"))
    )


def check(rows: list[Row], selected: list[Row] | None = None) -> list[str]:
    """Problems with the document and with ``selected`` rows (default: all of them)."""
    problems: list[str] = []
    doc = DOC.read_text()
    marked = START.findall(doc)
    for rule in RULES:
        if rule not in marked:
            problems.append(f"SAFETY.md has no table for {rule}")
        elif not any(r.rule == rule for r in rows):
            problems.append(f"{rule} has no rows")
    if rendered(doc, rows) != doc:
        problems.append("SAFETY.md tables are stale: run `python tools/safety.py render`")
    rows = rows if selected is None else selected
    for r in rows:
        path = ROOT / r.file
        if not path.is_file():
            r.problems.append(f"orphaned: {r.file} does not exist")
            continue
        n = path.read_text().count(r.fragment)
        if n != 1:
            what = "no longer matches" if n == 0 else f"occurs {n} times in"
            r.problems.append(f"orphaned: the fragment {what} {r.file}")
    files = sorted({t.split("::")[0] for r in rows for t in r.tests})
    missing_files = [f for f in files if not (ROOT / f).is_file()]
    collected = _collect(ROOT, [f for f in files if f not in missing_files])
    for r in rows:
        for t in r.tests:
            if not _matches(t, collected):
                r.problems.append(f"unknown test id {t}")
    problems.extend(f"{r.id}: {p}" for r in rows for p in r.problems)
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    rows = load()
    problems = check(rows)
    for p in problems:
        print(p)
    print(f"{len(rows)} rows, {len(problems)} problems")
    return 1 if problems else 0


# -- mutate -----------------------------------------------------------------


def _scratch(base: Path, template: Path | None = None) -> Path:
    """A copy of what the tests need, with ``../shared`` beside it as in the repo.

    From ``template`` (the baseline's copy) if given: its ``__pycache__``
    comes along, so only the mutated module is compiled again (its new mtime
    invalidates its cached bytecode).
    """
    repo = base / "repo"
    if template is not None:
        shutil.copytree(template, repo, symlinks=True)
    else:
        repo.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, repo / name, ignore=ignore)
            elif src.is_file():
                shutil.copy2(src, repo / name)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (base / "shared").symlink_to(shared)
    (base / "safety_plugin.py").write_text(PLUGIN)
    return repo


@dataclass
class Run:
    outcomes: dict[str, set[str]]  # node id -> outcomes of its phases
    returncode: int | None  # None: timed out
    seconds: float
    output: str


def _plugin_args(env: dict[str, str]) -> list[str]:
    if ALL_PLUGINS:
        return []
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return [arg for name in PLUGINS for arg in ("-p", name)]


def _pytest(repo: Path, tests: list[str], timeout: float, extra: tuple[str, ...] = ()) -> Run:
    out = repo.parent / "outcomes.jsonl"
    out.unlink(missing_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(repo), str(repo.parent)]),
        SAFETY_OUTCOMES=str(out),
        SAFETY_ROOT=str(repo),
    )
    plugins = _plugin_args(env)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins,
           "-p", "safety_plugin", *extra, *tests]
    began = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    seconds = time.monotonic() - began
    outcomes: dict[str, set[str]] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            node, _when, outcome = json.loads(line)
            outcomes.setdefault(node, set()).add(outcome)
    return Run(outcomes, code, seconds, output)


def _passed(node: str, run: Run) -> bool:
    """Every collected item of ``node`` ran and passed."""
    items = _matches(node, set(run.outcomes))
    return bool(items) and all(run.outcomes[i] == {"passed"} for i in items)


def _failed(node: str, run: Run) -> bool:
    """At least one collected item of ``node`` failed or errored."""
    return any(run.outcomes[i] & {"failed", "error"} for i in _matches(node, set(run.outcomes)))


def _mutate_one(
    row: Row, template: Path, timeout: float, verbose: bool
) -> tuple[Row, str, float, str]:
    with tempfile.TemporaryDirectory(prefix=f"safety-{row.id}-") as tmp:
        repo = _scratch(Path(tmp), template)
        target = repo / row.file
        source = target.read_text()
        assert source.count(row.fragment) == 1
        mutated = source.replace(row.fragment, row.replacement)
        try:
            compile(mutated, str(target), "exec")
        except SyntaxError as exc:
            # A mutant that cannot even be imported would "kill" any test: a bad row.
            return row, f"INVALID mutation (syntax error: {exc.msg}, line {exc.lineno})", 0.0, ""
        target.write_text(mutated)
        run = _pytest(repo, row.tests, timeout)
    if run.returncode is None:
        verdict = "killed (timeout)"
    elif run.returncode not in (0, 1) and not run.outcomes:
        # The mutant broke collection or import: no named test can pass.
        verdict = "killed (collection)"
    else:
        survivors = [t for t in row.tests if not _failed(t, run)]
        verdict = "SURVIVED " + " ".join(survivors) if survivors else "killed"
    detail = run.output if verbose or verdict.startswith("SURVIVED") else ""
    return row, verdict, run.seconds, detail


def cmd_mutate(args: argparse.Namespace) -> int:
    began = time.monotonic()
    rows = load()
    selected = rows
    if args.row:
        wanted = set(args.row)
        unknown = wanted - {r.id for r in rows} - set(RULES)
        if unknown:
            print(f"no such row: {', '.join(sorted(unknown))}")
            return 2
        selected = [r for r in rows if r.id in wanted or r.rule in wanted]
    problems = check(rows, selected)
    doc_problems = [p for p in problems if not any(p.startswith(f"{r.id}: ") for r in rows)]
    rows = selected
    for p in doc_problems:
        print(p)
    bad = {r.id for r in rows if r.problems}
    for r in rows:
        for p in r.problems:
            print(f"{r.id} {p}")
    runnable = [r for r in rows if r.id not in bad]

    # Baseline: every named test passes unmutated, in one batched run.
    tests = sorted({t for r in runnable for t in r.tests})
    baseline_dir = tempfile.TemporaryDirectory(prefix="safety-baseline-")
    template = _scratch(Path(baseline_dir.name))
    base = _pytest(template, tests, args.timeout * 4)
    broken = {t for t in tests if not _passed(t, base)}
    for r in runnable:
        names = [t for t in r.tests if t in broken]
        if names:
            print(f"{r.id} broken baseline  {' '.join(names)}")
            bad.add(r.id)
    if broken and args.verbose:
        print(base.output)
    print(f"baseline: {len(tests)} test ids in {base.seconds:.1f}s", flush=True)

    survived = 0
    todo = [r for r in runnable if r.id not in bad]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_mutate_one, r, template, args.timeout, args.verbose) for r in todo]
        for fut in concurrent.futures.as_completed(futures):
            row, verdict, seconds, detail = fut.result()
            if verdict.startswith(("SURVIVED", "INVALID")):
                survived += 1
                print(f"{row.id} {verdict}  {seconds:.1f}s", flush=True)
            else:
                print(f"{row.id} {verdict}  {' '.join(row.tests)}  {seconds:.1f}s", flush=True)
            if detail:
                print(detail.rstrip(), flush=True)
    baseline_dir.cleanup()
    wall = time.monotonic() - began
    print(
        f"{len(todo) - survived} killed, {survived} survived or invalid, {len(bad)} not run"
        f" ({len(rows)} rows, {wall:.0f}s wall, {args.jobs} jobs)"
    )
    return 1 if survived or bad or doc_problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("render", help="rewrite the tables in docs/SAFETY.md from docs/safety.toml")
    sub.add_parser("check", help="fail on stale tables, orphaned fragments or unknown test ids")
    m = sub.add_parser(
        "mutate", help="apply each row's mutation to a scratch copy and run its tests"
    )
    m.add_argument("--row", action="append", help="a row id (S1.2) or a rule (S1); repeatable")
    m.add_argument("--jobs", type=int, default=2)
    m.add_argument("--timeout", type=float, default=180.0,
                   help="seconds per row before a hang counts as killed")
    m.add_argument("--all-plugins", action="store_true",
                   help="autoload every installed pytest plugin, not only " + ", ".join(PLUGINS))
    m.add_argument("-v", "--verbose", action="store_true",
                   help="print pytest's output for every row")
    args = parser.parse_args(argv)
    global ALL_PLUGINS
    ALL_PLUGINS = getattr(args, "all_plugins", False)
    try:
        return {"render": cmd_render, "check": cmd_check, "mutate": cmd_mutate}[args.command](args)
    except DataError as exc:
        print(f"safety: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
