#!/usr/bin/env bash
# Is this checkout releasable?  Builds the wheel and the sdist into a temporary folder, checks
# them (twine check --strict, and the metadata and files a release needs), installs the wheel
# in a fresh virtual environment (dependencies come from the package index), then runs
# `trio-feed --version` and the README's library snippet against the embedded exchange.
# Exits non-zero on the first failure.  Needs `build` and `twine` (the dev extra).
#
#   bash tools/release_check.sh          # or: just release-check
#   PYTHON=/path/to/python bash tools/release_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
SNIPPET_TIMEOUT="${SNIPPET_TIMEOUT:-120}"   # seconds; the snippet stops by itself after 200 events

fail() { echo "release check: FAILED: $*" >&2; exit 1; }

"$PYTHON" -c "import build, twine" 2>/dev/null \
    || fail "$PYTHON has no 'build' and 'twine': pip install -e '.[dev]'"

work="$(mktemp -d "${TMPDIR:-/tmp}/trio_feed_release.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== build: sdist, then the wheel from the sdist"
"$PYTHON" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; fail "python -m build"; }
shopt -s nullglob
wheels=("$work"/dist/*.whl)
sdists=("$work"/dist/*.tar.gz)
[ "${#wheels[@]}" -eq 1 ] && [ "${#sdists[@]}" -eq 1 ] \
    || fail "expected one wheel and one sdist, got: $(ls "$work/dist")"
wheel="${wheels[0]}"
sdist="${sdists[0]}"
echo "   $(basename "$wheel")"
echo "   $(basename "$sdist")"

echo "== twine check --strict"
"$PYTHON" -m twine check --strict "$wheel" "$sdist" || fail "twine check"

echo "== metadata and files"
version="$("$PYTHON" - "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile
from email.parser import Parser

wheel, sdist = sys.argv[1:]
problems = []
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(zf.read(meta_name).decode())
    for needed in ("trio_feed/py.typed", "trio_feed/__init__.py"):
        if needed not in names:
            problems.append(f"the wheel lacks {needed}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("the wheel lacks its LICENSE")
    if not any(n.endswith(".dist-info/entry_points.txt") for n in names):
        problems.append("the wheel has no entry points (trio-feed, the pytest plugin)")
expect = {"Name": "trio_feed", "License-Expression": "MIT", "Requires-Python": ">=3.11",
          "Description-Content-Type": "text/markdown"}
for key, value in expect.items():
    if meta.get(key) != value:
        problems.append(f"METADATA {key} is {meta.get(key)!r}, not {value!r}")
classifiers = meta.get_all("Classifier") or []
for needed in ("Typing :: Typed", "Framework :: Trio", "Programming Language :: Python :: 3.11"):
    if needed not in classifiers:
        problems.append(f"METADATA lacks the classifier {needed!r}")
urls = {u.split(",")[0] for u in meta.get_all("Project-URL") or []}
for needed in ("Homepage", "Documentation", "Changelog"):
    if needed not in urls:
        problems.append(f"METADATA lacks the project URL {needed!r}")
if not meta.get_payload() or "trio_feed" not in meta.get_payload():
    problems.append("METADATA has no long description (the README)")
with tarfile.open(sdist) as tf:
    names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
for needed in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "trio_feed/py.typed",
               "docs/testing.md", "tests/test_docs.py", "examples/inline.py"):
    if needed not in names:
        problems.append(f"the sdist lacks {needed}")
if problems:
    sys.exit("\n".join(problems))
print(meta["Version"])
EOF
)" || fail "metadata and files"
echo "   trio_feed $version: metadata complete"

echo "== a fresh virtual environment with the wheel"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel" \
    || fail "pip install the wheel"
cd "$work"   # from here on nothing of the checkout is importable
unset PYTHONPATH

echo "== trio-feed --version"
got="$("$work/venv/bin/trio-feed" --version)" || fail "trio-feed --version exited non-zero"
[ "$got" = "trio-feed $version" ] || fail "trio-feed --version printed '$got', not 'trio-feed $version'"
echo "   $got"
imported="$("$work/venv/bin/python" -c 'import trio_feed; print(trio_feed.__file__)')"
case "$imported" in
    "$work/venv/"*) ;;
    *) fail "trio_feed was imported from $imported, not from the fresh environment" ;;
esac

echo "== the README's library snippet, on the embedded exchange"
"$work/venv/bin/python" - "$OLDPWD/README.md" > "$work/snippet.py" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("## The library in", 1)[1]
match = re.search(r"^```python\n(.*?)^```", section, re.S | re.M)
if match is None:
    sys.exit("no python block under '## The library in ...' in README.md")
print(match.group(1), end="")
EOF
status=0
timeout -k 10 "$SNIPPET_TIMEOUT" "$work/venv/bin/python" "$work/snippet.py" \
    > "$work/snippet.out" 2> "$work/snippet.err" || status=$?
[ "$status" -eq 0 ] || { tail -n 30 "$work/snippet.err" >&2; fail "the snippet exited with $status"; }
[ ! -s "$work/snippet.err" ] || { cat "$work/snippet.err" >&2; fail "the snippet wrote to stderr"; }
lines="$(wc -l < "$work/snippet.out")"
[ "$lines" -eq 200 ] || fail "the snippet printed $lines lines, not 200"
grep -q "btcusdt@trade  trade #" "$work/snippet.out" || fail "the snippet printed no trade"
grep -q "btcusdt@bookTicker  bookTicker" "$work/snippet.out" || fail "the snippet printed no bookTicker"
echo "   200 events, nothing on stderr"

echo "release check: OK (trio_feed $version)"
