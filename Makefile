# The single entry point: CI and people call the same targets.
.PHONY: install up down status test lint bench

install:
	scripts/install.sh

up:
	scripts/up.sh

down:
	@[ -x .venv/bin/python ] && .venv/bin/python -m infra.local.stack down --dir .fornax || true

status:
	.venv/bin/python -m infra.local.stack status --dir .fornax

test:
	scripts/test.sh

lint: install
	.venv/bin/ruff check shared services infra tests bench

bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || true
	@scripts/dockerd.sh sh -c 'for b in bench/*/run.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done'
