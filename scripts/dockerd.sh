#!/usr/bin/env bash
# scripts/dockerd.sh COMMAND [ARGS...]: run COMMAND with a Docker engine answering. When none answers,
# starts dockerd (log in .fornax/dockerd-run.log), runs COMMAND, then stops that dockerd by its PID.
# An engine that was already running is used and left alone. Exits with COMMAND's status.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/dockerd.sh COMMAND [ARGS...]" >&2; exit 64; }

mkdir -p .fornax
dockerd_pid=""
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "fornax: no Docker engine answers and dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid   # left behind by a killed dockerd
  fi
  # Room for many networks (a network per version and per service): the same flags as
  # infra/local/procs.py DOCKERD_ARGS.
  dockerd --default-address-pool base=172.20.0.0/14,size=24 >.fornax/dockerd-run.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "fornax: dockerd did not start; see .fornax/dockerd-run.log" >&2; exit 1; }
  # App networks an earlier run could not remove (dockerd keeps a stale endpoint until it restarts):
  # a fresh engine removes them; one a deployed app still uses is refused and stays.
  for net in $(docker network ls -q --filter label=fornax.deploy.target); do
    docker network rm "$net" >/dev/null 2>&1 || true
  done
fi

set +e
"$@"
rc=$?
set -e
exit $rc
