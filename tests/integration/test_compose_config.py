"""docker-compose.yml + infra/compose/local.yml as docker-compose resolves them (`config`, nothing runs):
the builders' workspaces are a same-path bind mount, host ports come from the environment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.compose.stack import FILES, ComposeStack

pytestmark = pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose missing")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose") / "home"


@pytest.fixture(scope="module")
def config(home: Path) -> dict:
    return _config(home)


def _config(home: Path, files: tuple[Path, ...] = FILES) -> dict:
    stack = ComposeStack("fxconfig", home, {"FORNAX_IMAGE": "fornax-local/fornax:x",
                                                           "FORNAX_STANDINS_IMAGE": "fornax-local/standins:x"},
                         ports={"api": 17099, "logs": 17000, "registry": 17500, "mongo": 17017, "stats": 17404})
    argv = ["docker-compose", *(a for f in files for a in ("-f", str(f))), "config"]
    res = subprocess.run(argv, env=stack.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_builders_see_workspaces_at_the_host_path(config: dict, home: Path) -> None:
    builder = config["services"]["builder"]
    host = str(home.resolve())
    mounts = [v.split(":") for v in builder["volumes"]]  # docker-compose 1.29 prints source:target:mode
    assert [host, host, "rw"] in mounts, builder["volumes"]
    assert builder["environment"]["FORNAX_WORKSPACE_ROOT"] == f"{host}/workspaces"
    assert all(m[0].startswith("/") for m in mounts), builder["volumes"]  # no named volume: the engine
    # would resolve a step's bind source on the host, where the builder's volume path is empty


def test_published_ports_come_from_the_environment(config: dict) -> None:
    services = config["services"]
    # host_ip:published:target/proto
    published = {tuple(p.split(":")[:2]) for s in services.values() for p in s.get("ports", [])}
    assert published == {("127.0.0.1", "17099"), ("127.0.0.1", "17000"), ("127.0.0.1", "17500"),
                         ("127.0.0.1", "17017"), ("127.0.0.1", "17404")}
    assert services["gateway-1"]["environment"]["FORNAX_REGISTRY_LOCATION"] == "127.0.0.1:17500"
    for name in ("kafka", "mongo", "registry", "haproxy", "builder", "gateway-1"):
        assert services[name]["image"].startswith("fornax-local/"), (name, services[name]["image"])
