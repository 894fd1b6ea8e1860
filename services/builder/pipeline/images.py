"""Which images a version may use: the operator's allowed prefixes, or the user's own namespace of
the managed registry (`<registry>/<user>/...`). Everything else — another user's images above all —
fails the version before anything runs, naming the image (and the Dockerfile line).

Checked: every step and service image of the config file, and every image the Dockerfile reads
(`FROM`, `COPY --from`, `RUN --mount=from=`, `ONBUILD`; see dockerfile.py). Only images of the user's
own namespace are pulled, with the registry credentials given explicitly for that pull; nothing else is
pulled (the engine never falls back to a login stored on the host).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .dockerfile import DockerfileError, ImageUse, referenced_images

# The Docker reference grammar (distribution/reference): [domain/]path[:tag][@digest], lower-case path.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*" \
          r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


class ImageRefused(ValueError):
    """An image the version may not use; the message names it (and where it was named)."""


def valid_reference(ref: str) -> bool:
    return len(ref) <= 512 and bool(_REFERENCE.match(ref))


def own_namespace(registry: str, user: str) -> str:
    """`<registry>/<user>/`, as image_name() writes the user's images."""
    return f"{registry.rstrip('/')}/{user}/".lower()


def refusal(ref: str, *, user: str, registry: str, allowed: Iterable[str]) -> str | None:
    """Why `ref` may not be used by `user` (None: it may)."""
    prefixes = [p for p in allowed if p]
    if not valid_reference(ref):
        return f"{ref!r} is not a valid image reference"
    own = own_namespace(registry, user)
    if ref.startswith(own) or any(ref.startswith(p) for p in prefixes):
        return None
    allowed_text = ", ".join(prefixes) if prefixes else "none"
    return (f"image {ref} is not allowed: a build may use only images under {own} "
            f"(your own) or the operator's allowed prefixes ({allowed_text})")


def check_image(ref: str, *, user: str, settings: Any, where: str) -> None:
    """ImageRefused('<where>: image ... is not allowed: ...') unless `ref` may be used by `user`."""
    why = refusal(ref, user=user, registry=settings.registry_location,
                  allowed=settings.builder_allowed_images)
    if why:
        raise ImageRefused(f"{where}: {why}")


def pull_auth(ref: str, *, user: str, settings: Any) -> dict[str, str] | None:
    """Registry credentials for pulling `ref`: only for the user's own namespace, else None (no pull)."""
    if not ref.startswith(own_namespace(settings.registry_location, user)):
        return None
    return {
        "username": settings.registry_username,
        "password": settings.registry_password.get_secret_value(),
        "serveraddress": settings.registry_location,
    }


def step_images(config: Any) -> list[tuple[str, str]]:
    """(key path, image) of every container the config file runs."""
    out: list[tuple[str, str]] = []
    for stage in ("integration", "pre_build", "post_build"):
        step = config.step(stage)
        if step is None:
            continue
        out.append((f"{stage}.image", step.image))
        for name, spec in (getattr(step, "services", None) or {}).items():
            out.append((f"{stage}.services.{name}.image", spec.image))
    return out


def check_config(config: Any, *, user: str, settings: Any, stages: Iterable[str] | None = None) -> None:
    """Every step/service image of the stages that will run (all when None) may be used."""
    wanted = None if stages is None else set(stages)
    source = config.source or "config"
    for key, image in step_images(config):
        if wanted is None or key.split(".", 1)[0] in wanted:
            check_image(image, user=user, settings=settings, where=f"{source}: {key}")


def check_dockerfile(path: Path, *, user: str, settings: Any, shown: str,
                     build_args: dict[str, str] | None = None) -> list[ImageUse]:
    """The images the Dockerfile reads, each checked; ImageRefused names `shown` and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImageRefused(f"{shown}: the Dockerfile is not UTF-8 text") from None
    try:
        uses = referenced_images(text, build_args)
    except DockerfileError as exc:
        raise ImageRefused(f"{shown} {exc}") from None
    for use in uses:
        check_image(use.image, user=user, settings=settings,
                    where=f"{shown} line {use.line}: {use.instruction}")
    return uses
