#!/bin/sh
# The testbed as a user installs it: build a wheel from this checkout, install it into a
# throwaway venv, and from an empty folder run `testbed exec -- true` and the main job
# (`testbed run`, by default only claim 1 to keep CI short; pass other `testbed run` options
# to change that), then a user's own project: examples/user-tests, copied out of the checkout
# and run with the venv's plain `pytest` (the plugin's fixtures, no conftest.py). The kernel
# and module caches in ~/.cache/p2p-testbed are reused.
#
#   ci/wheel-test.sh                 # exec -- true, then testbed run -k claim1
#   ci/wheel-test.sh -k 'claim1 or claim5'
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/p2p-testbed-wheel-XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
[ "$#" -gt 0 ] || set -- -k claim1

echo "wheel-test: building the wheel"
"$here/.venv/bin/python" -m pip wheel -q --no-deps -w "$work/dist" "$here"
echo "wheel-test: installing $(basename "$work"/dist/*.whl) into a fresh venv"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$work"/dist/*.whl
mkdir "$work/empty"
cd "$work/empty"

echo "wheel-test: testbed exec -- true (from an empty folder)"
"$work/venv/bin/testbed" exec -- true
echo "wheel-test: testbed run $*"
"$work/venv/bin/testbed" run --artifacts "$work/artifacts" "$@"
echo "wheel-test: a user's project (examples/user-tests) with the installed plugin"
cp -R "$here/examples/user-tests" "$work/user-tests"
cd "$work/user-tests"
"$work/venv/bin/pytest" -p no:cacheprovider -q --strict-markers \
    --testbed-artifacts "$work/artifacts-user"
echo "wheel-test: passed"
