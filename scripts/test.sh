#!/usr/bin/env bash
# The whole test suite on real components. Starts dockerd if none answers and stops it (by PID) after.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh

mkdir -p .fornax
dockerd_pid=""
if ! docker info >/dev/null 2>&1; then
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid   # left behind by a killed dockerd
  fi
  dockerd >.fornax/dockerd-test.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "fornax: dockerd did not start; see .fornax/dockerd-test.log" >&2; exit 1; }
fi
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
[ $rc -eq 5 ] && { echo "fornax: no tests were collected" >&2; exit 1; }
exit $rc
