#!/usr/bin/env bash
# Starts the whole system on the embedded local stack, then runs its main job (`fornax demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/python -m infra.local.cli up --dir .fornax
if .venv/bin/fornax demo --help >/dev/null 2>&1; then
  .venv/bin/fornax demo
fi
