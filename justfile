# trio_feed tasks.  `just --list` shows them.

python := env_var_or_default("PYTHON", "python")

# Run the inline example on the embedded local exchange
demo *ARGS:
    {{python}} examples/inline.py --limit 200 {{ARGS}}

# The full test suite (the same command as in the README and .ci/run)
test *ARGS:
    {{python}} -m pytest -n auto {{ARGS}}

# ruff and mypy, both must be clean
lint:
    {{python}} -m ruff check trio_feed tests examples tools bench
    {{python}} -m mypy

# The side-by-side benchmark (a few minutes); writes its table to stdout
bench *ARGS:
    {{python}} bench/run.py {{ARGS}}

# Autobahn|Testsuite client cases 1-10 against the real client path
autobahn:
    bash tools/autobahn/run.sh

# Fuzz the frame parser (atheris if installed, else Hypothesis); e.g. just fuzz --seconds 60
fuzz *ARGS:
    {{python}} tools/fuzz.py {{ARGS}}

# Regenerate the fuzz seed corpus in tests/wire/corpus
corpus:
    {{python}} tools/make_corpus.py

# Build the API reference and docs site offline and strictly, into site/ (or DIR)
docs DIR="site":
    PYTHON={{python}} bash tools/build_docs.sh {{DIR}}

# Build the wheel and sdist, twine check them, and try the wheel in a fresh virtual environment
release-check:
    PYTHON={{python}} bash tools/release_check.sh

# docs/SAFETY.md checked: each row's mutation must make its tests fail (CI); e.g. --row S4.3
mutate-safety *ARGS:
    {{python}} tools/safety.py mutate {{ARGS}}

# Mutation score beyond the safety table (slow, not in CI); e.g. just mutmut --minutes 15
mutmut *ARGS:
    {{python}} tools/mutation_score.py {{ARGS}}
