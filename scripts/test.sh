#!/usr/bin/env bash
# The whole test suite on real components. Starts dockerd if none answers and stops it (by PID) after
# (scripts/dockerd.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh

set +e
# Two workers by default (FORNAX_TEST_WORKERS; 0 runs in this process): most tests wait on brokers,
# builds and restarts rather than compute: two modules at a time took the suite from ~21 to ~12.5 min on two cores. Each
# worker runs whole modules (--dist loadfile) on a stack of its own (free ports, its own temp dir).
workers="${FORNAX_TEST_WORKERS:-2}"
xdist=()
[ "$workers" != 0 ] && xdist=(-n "$workers" --dist loadfile)
scripts/dockerd.sh .venv/bin/python -m pytest -p no:cacheprovider "${xdist[@]}" "$@"
rc=$?
set -e
[ $rc -eq 5 ] && { echo "fornax: no tests were collected" >&2; exit 1; }
exit $rc
