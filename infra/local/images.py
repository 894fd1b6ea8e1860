"""Base images made locally (nothing can be pulled here): a busybox rootfs imported into Docker."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import docker

BUSYBOX_IMAGE = "fornax/busybox:latest"


def busybox_binary() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("busybox")
    if not found:
        raise RuntimeError("busybox not found: apt-get install busybox-static")
    return Path(found)


def ensure_busybox_image(client: docker.DockerClient | None = None, tag: str = BUSYBOX_IMAGE) -> str:
    """Import a minimal busybox rootfs as `tag` unless it exists; returns the tag."""
    client = client or docker.from_env()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "root", "usr", "var", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = busybox_binary().read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "echo", "cat", "ls", "sleep", "nc", "wget", "httpd", "env", "mkdir", "cp",
                       "true", "false", "test", "grep", "timeout", "nslookup", "ping", "touch", "rm"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, body in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    repo, _, version = tag.rpartition(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=version,
                                      changes=['ENV PATH=/bin:/usr/bin', 'CMD ["sh"]'])
    return tag
