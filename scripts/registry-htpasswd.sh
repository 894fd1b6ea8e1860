#!/usr/bin/env bash
# Writes the registry's htpasswd (bcrypt, as Distribution requires) for user FORNAX_REGISTRY_USERNAME
# (default admin) with FORNAX_REGISTRY_PASSWORD, into DIR (default infra/registry), for docker-compose.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-infra/registry}
: "${FORNAX_REGISTRY_PASSWORD:?set FORNAX_REGISTRY_PASSWORD}"
command -v htpasswd >/dev/null || { echo "htpasswd missing: apt-get install apache2-utils" >&2; exit 1; }
mkdir -p "$dir"
umask 022
htpasswd -Bbn "${FORNAX_REGISTRY_USERNAME:-admin}" "$FORNAX_REGISTRY_PASSWORD" > "$dir/htpasswd.tmp"
mv "$dir/htpasswd.tmp" "$dir/htpasswd"
echo "fornax: wrote $dir/htpasswd"
