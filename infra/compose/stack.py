"""The whole system in containers with Debian's docker-compose: docker-compose.yml + infra/compose/local.yml.

Two gateways and two logstream instances behind HAProxy, `builder` scaled to 2, the deployer, the
projector, on the stand-ins built by `make images`. One compose project per stack; host ports are
chosen free (or given) and published on 127.0.0.1 only.

    python -m infra.compose.stack up   [--project fornax-compose] [--dir .fornax/compose] [--api-port 17099]
    python -m infra.compose.stack demo  # `fornax demo` against it, through HAProxy
    python -m infra.compose.stack down  # containers, networks and volumes of the project
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from infra.local.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
FILES = (ROOT / "docker-compose.yml", ROOT / "infra/compose/local.yml")
REGISTRY_USER = "admin"
PORT_NAMES = ("api", "logs", "registry", "mongo", "stats")
# Variables the compose files interpolate that are not Fornax settings (docs/compose.md).
COMPOSE_VARIABLES = frozenset({
    "FORNAX_IMAGE", "FORNAX_STANDINS_IMAGE", "FORNAX_HOST_DIR", "FORNAX_BIND", "FORNAX_API_PORT",
    "FORNAX_LOGS_PORT", "FORNAX_REGISTRY_PORT", "FORNAX_REGISTRY_AUTH_DIR", "FORNAX_MONGO_PORT",
    "FORNAX_STATS_PORT",
})
FORNAX_SERVICES = ("projector", "gateway-1", "gateway-2", "builder", "deployer", "logstream-1", "logstream-2")


class ComposeError(RuntimeError):
    pass


@dataclass
class ComposeStack:
    project: str
    home: Path  # absolute: bind-mounted at the same path into the builders (workspaces, demo repositories)
    images: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    registry_password: str = "admin_password"
    builders: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    secrets_key: str = ""  # Fernet key for the stored secrets; a new one per stack unless given
    _picked: list[str] = field(default_factory=list, init=False, repr=False)  # ports picked free here

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        if not self.secrets_key:
            from cryptography.fernet import Fernet

            self.secrets_key = Fernet.generate_key().decode()
        self._picked = [name for name in PORT_NAMES if name not in self.ports]
        for name in self._picked:
            self.ports[name] = free_port()

    # -- configuration ---------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment docker-compose interpolates the two files with."""
        return {
            **os.environ,
            **self.images,
            "COMPOSE_PROJECT_NAME": self.project,
            "FORNAX_HOST_DIR": str(self.home),
            "FORNAX_BIND": "127.0.0.1",
            "FORNAX_API_PORT": str(self.ports["api"]),
            "FORNAX_LOGS_PORT": str(self.ports["logs"]),
            "FORNAX_REGISTRY_PORT": str(self.ports["registry"]),
            "FORNAX_MONGO_PORT": str(self.ports["mongo"]),
            "FORNAX_STATS_PORT": str(self.ports["stats"]),
            "FORNAX_REGISTRY_PASSWORD": self.registry_password,
            "FORNAX_SECRETS_KEY": self.secrets_key,
            "FORNAX_REGISTRY_AUTH_DIR": str(self.home / "registry-auth"),
            # the demo and the tests build repositories on this machine, under FORNAX_HOST_DIR
            "FORNAX_REPO_ALLOW_LOCAL": "true",
            **self.extra_env,
        }

    def client_env(self) -> dict[str, str]:
        """Settings for host-side clients (CLI, demo, tests): everything through the published ports."""
        return {
            "FORNAX_GATEWAY_HOST": "127.0.0.1",
            "FORNAX_GATEWAY_PORT": str(self.ports["api"]),
            "FORNAX_LOGSTREAM_HOST": "127.0.0.1",
            "FORNAX_LOGSTREAM_PORT": str(self.ports["logs"]),
            "FORNAX_MONGO_URL": f"mongodb://127.0.0.1:{self.ports['mongo']}",
            "FORNAX_REGISTRY_LOCATION": f"127.0.0.1:{self.ports['registry']}",
            "FORNAX_REGISTRY_USERNAME": REGISTRY_USER,
            "FORNAX_REGISTRY_PASSWORD": self.registry_password,
            "FORNAX_DATA_DIR": str(self.home),
            "FORNAX_SECRETS_KEY": self.secrets_key,
        }

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def logs(self) -> str:
        return f"http://127.0.0.1:{self.ports['logs']}"

    # -- docker-compose --------------------------------------------------------------------------------
    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "--no-ansi", *(a for f in FILES for a in ("-f", str(f))), *args]
        res = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and res.returncode != 0:
            raise ComposeError(f"docker-compose {' '.join(args)}: {res.stderr.strip()[-3000:]}")
        return res

    def write_htpasswd(self) -> None:
        auth = self.home / "registry-auth"
        auth.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(ROOT / "scripts/registry-htpasswd.sh"), str(auth)], check=True,
                       env={**os.environ, "FORNAX_REGISTRY_PASSWORD": self.registry_password})

    def up(self, timeout: float = 180) -> None:
        if not shutil.which("docker-compose"):
            if os.getuid() != 0:
                raise ComposeError("docker-compose missing: apt-get install docker-compose")
            subprocess.run(["apt-get", "install", "-y", "-qq", "docker-compose"], check=True,
                           stdout=subprocess.DEVNULL)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "workspaces").mkdir(exist_ok=True)
        self.write_htpasswd()
        for attempt in range(3):
            try:
                self.compose("up", "-d", "--no-build", "--scale", f"builder={self.builders}", timeout=timeout)
                break
            except ComposeError as exc:
                # A port picked free here may be taken by another process before Docker binds it: new ones
                # (compose recreates the containers whose published ports changed).
                taken = "port is already allocated" in str(exc) or "address already in use" in str(exc)
                if not taken or not self._picked or attempt == 2:
                    raise
                for name in self._picked:
                    self.ports[name] = free_port()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until HAProxy sees every gateway and logstream up and the gateway answers /readyz through it."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                states = self.server_states()
                up = all(states.get(s) == "UP" for s in ("gateways/gw1", "gateways/gw2",
                                                          "logstreams/ls1", "logstreams/ls2"))
                with urllib.request.urlopen(f"{self.api}/readyz", timeout=3) as resp:
                    if up and resp.status == 200:
                        return
                last = json.dumps(states)
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        logs = self.compose("logs", "--tail", "30", check=False).stdout[-6000:]
        raise ComposeError(f"the compose stack {self.project} was not ready within {timeout:.0f}s ({last})\n{logs}")

    def server_states(self) -> dict[str, str]:
        """HAProxy's view: 'backend/server' -> status (UP, DOWN, ...), from its stats CSV."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['stats']}/stats;csv", timeout=2) as resp:
            rows = resp.read().decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            cells = dict(zip(header, row.split(","), strict=False))
            if cells.get("svname") not in ("FRONTEND", "BACKEND", None):
                out[f"{cells['pxname']}/{cells['svname']}"] = cells.get("status", "")
        return out

    def containers(self, service: str) -> list[str]:
        """Container ids of a service, in instance order."""
        ids = self.compose("ps", "-q", service).stdout.split()
        return sorted(ids, key=lambda c: self._name(c))

    def _name(self, container: str) -> str:
        return subprocess.run(["docker", "inspect", "-f", "{{.Name}}", container], capture_output=True,
                              text=True).stdout.strip()

    def down(self) -> None:
        """Containers, networks and volumes of the project, then what it left on the host's engine: apps
        deployed from its registry, step containers and images tagged for its registry."""
        import docker

        versions = self._version_ids()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False, timeout=180)

        client = docker.from_env()
        prefix = f"127.0.0.1:{self.ports['registry']}/"
        # the engine is shared: list without inspecting each (others' containers come and go meanwhile)
        for c in client.api.containers(all=True):
            labels = c.get("Labels") or {}
            deployed = labels.get("fornax.deploy.image", "")
            if str(c.get("Image", "")).startswith(prefix) or deployed.startswith(prefix) \
                    or labels.get("fornax.version") in versions:
                try:
                    client.api.remove_container(c["Id"], force=True)
                except docker.errors.NotFound:
                    pass
                if deployed.startswith(prefix) and labels.get("fornax.deploy.service"):
                    from services.deployer.targets.docker_host import remove_app_networks

                    remove_app_networks(client, labels["fornax.deploy.service"])  # its service's only
        for image in client.api.images():
            refs = [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]
            if any(r.startswith(prefix) for r in refs):
                try:
                    client.api.remove_image(image["Id"], force=True)
                except docker.errors.APIError:
                    pass
        for net in client.networks.list(filters={"label": "fornax.version"}):
            if (net.attrs.get("Labels") or {}).get("fornax.version") in versions:
                try:
                    net.remove()
                except docker.errors.APIError:
                    pass


    def _version_ids(self) -> set[str]:
        """Every version this stack's store knows (their step containers and networks are ours)."""
        import pymongo

        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{self.ports['mongo']}", serverSelectionTimeoutMS=2000)
        try:
            return {d["_id"] for d in client.fornax.versions.find({}, {"_id": 1})}
        except Exception:  # noqa: BLE001 - store already gone: nothing to match
            return set()
        finally:
            client.close()


def _saved(home: Path) -> Path:
    return home / "compose.json"


def _save(stack: ComposeStack) -> None:
    _saved(stack.home).write_text(json.dumps({"project": stack.project, "images": stack.images,
                                              "ports": stack.ports, "secrets_key": stack.secrets_key}))
    _saved(stack.home).chmod(0o600)  # it holds the secrets key


def load(home: Path) -> ComposeStack:
    data = json.loads(_saved(home).read_text())
    return ComposeStack(project=data["project"], home=home, images=data["images"], ports=data["ports"],
                        secrets_key=data["secrets_key"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.compose.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "demo", "env", "status"))
    parser.add_argument("--project", default="fornax-compose")
    parser.add_argument("--dir", type=Path, default=ROOT / ".fornax" / "compose")
    parser.add_argument("--api-port", type=int, help="HAProxy's API port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--logs-port", type=int)
    parser.add_argument("--builders", type=int, default=2)
    args = parser.parse_args(argv)
    home = args.dir.resolve()
    if args.command == "up":
        from infra.compose.images import ensure_images

        ports = {k: v for k, v in (("api", args.api_port), ("logs", args.logs_port)) if v}
        stack = ComposeStack(args.project, home, ensure_images().env(), ports=ports, builders=args.builders)
        home.mkdir(parents=True, exist_ok=True)
        _save(stack)  # before `up`, so that `down` finds a stack that failed half way
        stack.up()
        _save(stack)  # `up` may have picked other ports
        print(f"compose project {stack.project} is up: API {stack.api}  logs {stack.logs}  "
              f"registry 127.0.0.1:{stack.ports['registry']}  HAProxy stats "
              f"http://127.0.0.1:{stack.ports['stats']}/stats")
        return 0
    if not _saved(home).exists():
        print(f"no compose stack recorded under {home}", file=sys.stderr)
        return 0 if args.command == "down" else 1
    stack = load(home)
    if args.command == "down":
        stack.down()
        _saved(home).unlink()
        return 0
    if args.command == "env":
        print("".join(f"export {k}={v}\n" for k, v in stack.client_env().items()), end="")
        return 0
    if args.command == "status":
        print(json.dumps(stack.server_states(), indent=2))
        return 0
    return subprocess.run([sys.executable, "-m", "services.cli", "demo", "--service", f"demo-{stack.project}"],
                          env={**os.environ, **stack.client_env()}, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
