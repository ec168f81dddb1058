#!/bin/sh
# The suite's power, measured: plant each bug of qemu-devices/p2p/mutants/ in the P2P drivers,
# run the reference suite on each, print the matrix mutant x tests that caught it. Exits
# non-zero if any mutant survives, no longer applies or does not compile.
#
# One suite run per mutant (plus a baseline): about 50 minutes under TCG on 2 cores, so CI
# runs it on a schedule (ci/templates/github-actions-mutants.yml), not on every push.
#
#   ci/mutants.sh [TESTBED MUTANTS ARGS...]   e.g. ci/mutants.sh --only 04 --only 14
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/testbed mutants "$@"
