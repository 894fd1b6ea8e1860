#!/usr/bin/env bash
# The whole test suite on real components. Starts dockerd if none answers and stops it (by PID) after
# (scripts/dockerd.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh

set +e
scripts/dockerd.sh .venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
[ $rc -eq 5 ] && { echo "fornax: no tests were collected" >&2; exit 1; }
exit $rc
