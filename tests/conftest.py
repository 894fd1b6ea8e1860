"""Shared fixtures: one real local stack per test session (free ports, a temp dir), torn down by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.stack import Stack
from tests.integration.builder_helpers import remove_images

LEFT_BEHIND: list[str] = []


def _docker_names(kind: str) -> set[str]:
    cmd = ["docker", kind, "ls", "--format", "{{.Name}}"] if kind == "network" else \
        ["docker", "ps", "-a", "--format", "{{.Names}}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    return set(out.stdout.split()) if out.returncode == 0 else set()


def _stacks_of(item: pytest.Item) -> list[Stack]:
    found = []
    for value in getattr(item, "funcargs", {}).values():
        for candidate in (value, getattr(value, "stack", None)):
            if isinstance(candidate, Stack) and candidate not in found:
                found.append(candidate)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report ends with the last lines each process of its stack logged (CI keeps no files)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.failed and report.when == "call"):
        return
    for st in _stacks_of(item):
        for log in sorted(st.log_dir.glob("*.log")) if st.log_dir.is_dir() else []:
            try:
                lines = log.read_text(errors="replace").splitlines()[-25:]
            except OSError:
                continue
            report.sections.append((f"{log.name} (its last 25 lines)", "\n".join(lines)))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if LEFT_BEHIND:
        terminalreporter.section("left behind by the tests")
        for line in LEFT_BEHIND:
            terminalreporter.write_line(line)


def _own_service_ids(st: Stack) -> set[str]:
    """The services this session's store knows (read before the store stops)."""
    try:
        from pymongo import MongoClient

        client: MongoClient = MongoClient(st.env()["FORNAX_MONGO_URL"], serverSelectionTimeoutMS=3000)
        try:
            db = client[st.env().get("FORNAX_MONGO_DB", "fornax")]
            return {str(d["_id"]) for d in db["services"].find({}, {"_id": 1})}
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - a clean-up aid: the store may be gone already
        return set()


def _remove_app_networks(service_ids: set[str]) -> None:
    """Docker-host app networks (one per service) of this session's services that no test removed; others'
    (another worker's, another checkout's) are never touched."""
    from services.deployer.targets.docker_host import app_network

    ours = {app_network(sid) for sid in service_ids}
    listed = subprocess.run(["docker", "network", "ls", "--filter", "name=fornax-apps-", "--format", "{{.Name}}"],
                            capture_output=True, text=True)
    names = sorted(set(listed.stdout.split()) & ours)
    if names:
        subprocess.run(["docker", "network", "rm", *names], capture_output=True)  # one still in use stays


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Tansu, nx-27017, docker-registry (and dockerd if none answers) on free ports."""
    base = Path(tempfile.mkdtemp(prefix="fornax-test-"))
    st = Stack.on_free_ports(base, extra_env={
        "FORNAX_WORKSPACE_ROOT": str(base / "workspaces"),
        # Tests serve private repositories (Basic auth, OAuth) from plain-HTTP servers on 127.0.0.1; the
        # default policy (tests/integration/test_gateway_repo_urls.py checks it) has no `http`.
        "FORNAX_REPO_URL_SCHEMES": "https,http,ssh,git,svn,svn+ssh",
    })
    saved = dict(os.environ)
    before: dict[str, set[str]] = {}
    try:
        st.start_infra()
        before = {k: _docker_names(k) for k in ("network", "container")}
        os.environ.update(st.env())
        from shared.settings import get_settings

        get_settings.cache_clear()
        yield st
    finally:
        services = _own_service_ids(st)
        st.stop_all()
        _remove_app_networks(services)
        # Every image tagged for this session's registry (its port is this session's alone), once every
        # builder has stopped: a build that finished after its module's own clean-up leaves none.
        remove_images(f"127.0.0.1:{st.registry_port}/")
        # Docker networks and containers the session made and did not remove (each costs an address pool
        # slot: an engine that runs out fails every later build).
        for kind, names in before.items():
            for name in sorted(_docker_names(kind) - names):
                LEFT_BEHIND.append(f"{kind} {name}")
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack: Stack):
    from shared.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def store(settings):
    from shared.store import Store

    s = Store(settings)
    s.ensure_indexes()
    yield s
    s.close()


@pytest.fixture(scope="module")
def no_build_workers(stack: Stack) -> Iterator[None]:
    """For modules that publish synthetic version/service events: no builder or deployer (left running
    by an earlier module) may act on them. Modules that need those workers start them again."""
    for name in [n for n in list(stack.procs) if n.startswith(("builder", "deployer"))]:
        stack.stop(name)
    yield


@pytest.fixture(scope="session")
def busybox_image(stack: Stack) -> str:
    from infra.local.images import ensure_busybox_image

    return ensure_busybox_image()
