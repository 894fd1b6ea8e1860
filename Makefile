# The single entry point: CI and people call the same targets.
.PHONY: install up down clean status test lint bench images compose-up compose-demo compose-down

install:
	scripts/install.sh

up:
	scripts/up.sh

down:
	@[ -x .venv/bin/python ] && .venv/bin/python -m infra.local.cli down --dir .fornax || true

# Stops everything, then deletes .fornax/ (broker records and offsets, Mongo data, registry, logs).
clean:
	@if [ -x .venv/bin/python ]; then .venv/bin/python -m infra.local.cli clean --dir .fornax; else rm -rf .fornax; fi

status:
	.venv/bin/python -m infra.local.cli status --dir .fornax

test:
	scripts/test.sh

lint: install
	.venv/bin/ruff check shared services infra tests bench
	.venv/bin/python -m mypy shared services

bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || true
	@scripts/dockerd.sh sh -c 'for b in bench/*/run.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done'

# Container images built here without pulling (debootstrap base, wheelhouse); cached by content hash.
images: install
	.venv/bin/python -m infra.compose.images

# The scaled-out system in containers (docker-compose.yml + infra/compose/local.yml); docs/compose.md.
COMPOSE_PROJECT ?= fornax-compose
COMPOSE_API_PORT ?= 17099
COMPOSE_LOGS_PORT ?= 17000
compose-up: images
	.venv/bin/python -m infra.compose.stack up --project $(COMPOSE_PROJECT) --api-port $(COMPOSE_API_PORT) --logs-port $(COMPOSE_LOGS_PORT)

compose-demo:
	.venv/bin/python -m infra.compose.stack demo

compose-down:
	.venv/bin/python -m infra.compose.stack down
