#!/bin/sh
# The project's own checks: lint, types, then every test (unit tests of the pure logic, then
# the tests that boot real QEMU guests, then the reference P2P suite), then the installed
# wheel (ci/wheel-test.sh).
#
#   ci/test.sh [PYTEST ARGS...]     e.g. ci/test.sh -k unplug --testbed-keep-artifacts
set -eu
cd "$(dirname "$0")/.."

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict)"
.venv/bin/mypy
for suite in tests/unit tests/vm tests/p2p; do  # one run each: every suite has a conftest.py
    .venv/bin/mypy "$suite"
done
.venv/bin/mypy examples/user-tests  # what a user writes against the plugin (no conftest.py)
echo "== CI templates (schemas)"
ci/check-templates.sh
echo "== pytest"
rc=0
.venv/bin/pytest -p no:cacheprovider --strict-markers --durations=10 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "ci/test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
echo "== wheel: build, install into a fresh venv, run from an empty folder, then examples/user-tests (~2 min)"
ci/wheel-test.sh || rc=$?
exit "$rc"
