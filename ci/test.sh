#!/bin/sh
# The project's own checks: lint, types, a guest kernel built from source, then every test
# (unit tests of the pure logic, the kernel-build tests, the tests that boot real QEMU guests,
# the reference P2P suite on the stock kernel), then the reference suite again on each built
# kernel.
#
#   ci/test.sh [PYTEST ARGS...]     e.g. ci/test.sh -k unplug --testbed-keep-artifacts
set -eu
cd "$(dirname "$0")/.."

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict)"
.venv/bin/mypy
for suite in tests/unit tests/kbuild tests/vm tests/p2p; do  # one run each: every suite has a conftest.py
    .venv/bin/mypy "$suite"
done
# The kernels built from guest-kernel-config/kernels/ that the reference suite also runs on.
# 'patched' (base + patches/rfc-p2p-vma) joins as soon as that series exists. Cold (a fresh CI
# runner, empty ccache) base takes ~4-6 min on 2 cores; patched then rebuilds in the same tree.
KERNELS=base
[ -f guest-kernel-config/patches/rfc-p2p-vma/series ] && KERNELS="$KERNELS patched"
echo "== kernel build: $KERNELS"
.venv/bin/testbed kernel build $KERNELS
echo "== pytest"
rc=0
.venv/bin/pytest -p no:cacheprovider --strict-markers --durations=10 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "ci/test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
for kernel in $KERNELS; do
    echo "== the reference P2P suite on kernel $kernel"
    .venv/bin/testbed run --kernel "$kernel" --artifacts "testbed-artifacts/kernel-$kernel" || rc=$?
done
exit "$rc"
