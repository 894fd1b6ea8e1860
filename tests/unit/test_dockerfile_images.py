"""The Dockerfile image scan (services/builder/pipeline/dockerfile.py) and the image policy (images.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.builder.pipeline import parse_config
from services.builder.pipeline.dockerfile import DockerfileError, referenced_images
from services.builder.pipeline.images import (
    ImageRefused,
    check_config,
    check_dockerfile,
    pull_auth,
    refusal,
    valid_reference,
)
from shared.settings import Settings

REG = "127.0.0.1:5000"
BOB = f"{REG}/bob/web:v1"
ALLOWED = ["fornax/", "fornax-base/"]


def images(text: str, **args: str) -> list[tuple[str, int, str]]:
    return [(u.image, u.line, u.instruction) for u in referenced_images(text, args or None)]


# -- the scan ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("FROM fornax/busybox:latest\n", [("fornax/busybox:latest", 1, "FROM")]),
        ("from fornax/busybox\nrun true\n", [("fornax/busybox", 1, "FROM")]),
        ("FROM scratch\nCOPY a /a\n", []),
        ("FROM --platform=linux/amd64 fornax/busybox AS b\n", [("fornax/busybox", 1, "FROM")]),
        (f"FROM fornax/busybox\nFROM {BOB}\n", [("fornax/busybox", 1, "FROM"), (BOB, 2, "FROM")]),
        # a later stage names an earlier one: no image
        ("FROM fornax/busybox AS build\nRUN x\nFROM build\nCOPY --from=build /a /a\nCOPY --from=0 /a /a\n",
         [("fornax/busybox", 1, "FROM")]),
        ("FROM fornax/busybox AS Build\nFROM build\nCOPY --from=BUILD /a /a\n", [("fornax/busybox", 1, "FROM")]),
        # a stage named before it exists is an image (as Docker reads it)
        ("FROM fornax/busybox\nCOPY --from=later /a /a\nFROM fornax/busybox AS later\n",
         [("fornax/busybox", 1, "FROM"), ("later", 2, "COPY --from"), ("fornax/busybox", 3, "FROM")]),
        # a stage index that does not exist yet
        ("FROM fornax/busybox\nCOPY --from=1 /a /a\n", [("fornax/busybox", 1, "FROM"), ("1", 2, "COPY --from")]),
        (f"FROM fornax/busybox\nCOPY --from={BOB} /etc /stolen\n",
         [("fornax/busybox", 1, "FROM"), (BOB, 2, "COPY --from")]),
        (f'FROM fornax/busybox\nCOPY --chown=0:0 --from="{BOB}" /etc /stolen\n',
         [("fornax/busybox", 1, "FROM"), (BOB, 2, "COPY --from")]),
        (f"FROM fornax/busybox\nRUN --mount=type=bind,from={BOB},target=/x cat /x/secret\n",
         [("fornax/busybox", 1, "FROM"), (BOB, 2, "RUN --mount from")]),
        (f'FROM fornax/busybox\nRUN --mount="type=bind,from={BOB}" true\n',
         [("fornax/busybox", 1, "FROM"), (BOB, 2, "RUN --mount from")]),
        ("FROM fornax/busybox AS b\nRUN --mount=type=cache,target=/c --mount=from=b,target=/x true\n",
         [("fornax/busybox", 1, "FROM")]),
        (f"FROM fornax/busybox\nONBUILD COPY --from={BOB} / /x\n",
         [("fornax/busybox", 1, "FROM"), (BOB, 2, "ONBUILD COPY --from")]),
        (f"FROM fornax/busybox\nONBUILD RUN --mount=from={BOB} true\n",
         [("fornax/busybox", 1, "FROM"), (BOB, 2, "ONBUILD RUN --mount from")]),
        # ARG substitution: defaults, braces, the :- and :+ forms, chained defaults
        (f"ARG BASE={BOB}\nFROM $BASE\n", [(BOB, 2, "FROM")]),
        (f"ARG BASE={BOB}\nFROM ${{BASE}}\n", [(BOB, 2, "FROM")]),
        ("ARG T\nFROM fornax/busybox:${T:-latest}\n", [("fornax/busybox:latest", 2, "FROM")]),
        ("ARG T=v1\nFROM fornax/busybox:${T:-latest}\n", [("fornax/busybox:v1", 2, "FROM")]),
        (f"ARG U=bob\nFROM {REG}/${{U:+$U}}/web:v1\n", [(BOB, 2, "FROM")]),
        (f"ARG R={REG}\nARG U=bob\nARG B=$R/$U/web:v1\nFROM $B\n", [(BOB, 4, "FROM")]),
        (f'ARG B="{BOB}"\nFROM $B\n', [(BOB, 2, "FROM")]),
        # an in-stage ARG takes the global value; ENV in the stage feeds --from
        (f"ARG B={BOB}\nFROM fornax/busybox\nARG B\nCOPY --from=$B / /x\n",
         [("fornax/busybox", 2, "FROM"), (BOB, 4, "COPY --from")]),
        (f"FROM fornax/busybox\nENV SRC={BOB}\nCOPY --from=${{SRC}} / /x\n",
         [("fornax/busybox", 1, "FROM"), (BOB, 3, "COPY --from")]),
        (f"FROM fornax/busybox\nENV SRC {BOB}\nCOPY --from=$SRC / /x\n",
         [("fornax/busybox", 1, "FROM"), (BOB, 3, "COPY --from")]),
        # continuation lines, comments inside them, the escape directive, CRLF
        (f"FROM \\\n# a comment\n  {BOB} \\\n  AS x\n", [(BOB, 1, "FROM")]),
        ("# escape=`\nFROM fornax/busy`\nbox\nRUN dir c:\\\n", [("fornax/busybox", 2, "FROM")]),
        (f"# syntax=docker/dockerfile:1\n\nFROM {BOB}\r\n", [(BOB, 3, "FROM")]),
        ("FROM fornax/bus\\ybox\n", [("fornax/busybox", 1, "FROM")]),
    ],
)
def test_referenced_images(text: str, want: list[tuple[str, int, str]]) -> None:
    assert images(text) == want


def test_build_args_replace_arg_defaults() -> None:
    assert images("ARG B=fornax/busybox\nFROM $B\n", B=BOB) == [(BOB, 2, "FROM")]
    assert images(f"ARG B={BOB}\nFROM $B\n", B="fornax/busybox") == [("fornax/busybox", 2, "FROM")]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("FROM fornax/busybox\nCOPY --from=$X / /\n", 2, "$X"),  # the base image's ENV may set it
        ("FROM fornax/busybox\nRUN --mount=from=${X} true\n", 2, "$X"),
        ("FROM fornax/busybox\nONBUILD COPY --from=$X / /\n", 2, "variables"),
        ("ARG B\nFROM $B\n", 2, "names no image"),
        ("FROM ${B#x}\n", 1, "unsupported"),
        ("FROM ${B\n", 1, "unclosed"),
        ("FROM 'fornax/busybox\n", 1, "unclosed quote"),
        ("RUN true\nFROM fornax/busybox\n", 1, "before the first FROM"),
        ("FROM a b c d\n", 1, "AS"),
        ("FROM\n", 1, "no image"),
        ("FROM fornax/busybox AS 127.0.0.1:5000/bob\n", 1, "stage name"),
        ("# escape=x\nFROM fornax/busybox\n", 1, "escape"),
        ("FROM fornax/busybox\nONBUILD FROM x\n", 2, "ONBUILD FROM"),
    ],
)
def test_what_cannot_be_checked_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(DockerfileError) as err:
        referenced_images(text)
    assert err.value.line == line
    assert str(err.value).startswith(f"line {line}: ") and words in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("FROMARGCOPYRUN --=:${}ab/\\\n\"'#`0.")), max_size=80))
def test_scan_never_fails_otherwise(text: str) -> None:
    try:
        referenced_images(text)
    except DockerfileError:
        pass


# -- the policy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("fornax/busybox:latest", True),
        ("fornax-base/debian:bookworm", True),
        (f"{REG}/alice/web:v1", True),
        (f"{REG}/alice/tools/sub:v1@sha256:{'a' * 64}", True),
        (BOB, False),
        (f"{REG}/alice2/web:v1", False),  # a prefix of the name is not the namespace
        (f"{REG}/bob/../alice/web", False),
        ("localhost:5000/bob/web:v1", False),  # the same registry under another name
        ("busybox", False),
        ("docker.io/fornax/busybox", False),  # prefixes are matched as written
        (f"sha256:{'b' * 64}", False),  # an image id: someone's image, by another name
        ("b" * 64, False),
        ("Fornax/busybox", False),
        ("", False),
    ],
)
def test_refusal(ref: str, ok: bool) -> None:
    why = refusal(ref, user="alice", registry=REG, allowed=ALLOWED)
    assert (why is None) == ok, why
    if not ok:
        assert (ref or "''") in why


def test_valid_reference() -> None:
    assert valid_reference("a/b:c") and valid_reference("[::1]:5000/x/y") and valid_reference("x@sha256:" + "f" * 64)
    assert not valid_reference("a b") and not valid_reference("a/B") and not valid_reference("a/b:")


def _settings(**extra) -> Settings:
    return Settings(registry_location=REG, builder_allowed_images=ALLOWED, **extra)


def test_pull_auth_only_for_the_own_namespace() -> None:
    s = _settings()
    assert pull_auth(f"{REG}/alice/web:v1", user="alice", settings=s)["serveraddress"] == REG
    assert pull_auth(BOB, user="alice", settings=s) is None
    assert pull_auth("fornax/busybox", user="alice", settings=s) is None


def test_check_config_names_the_key_and_image() -> None:
    config = parse_config(
        "integration:\n  image: fornax/busybox\n  commands: [true]\n"
        f"  services:\n    db:\n      image: {BOB}\n"
        f"post_build:\n  image: {REG}/alice/tools:v1\n  commands: [true]\n"
    )
    with pytest.raises(ImageRefused) as err:
        check_config(config, user="alice", settings=_settings())
    assert str(err.value).startswith(f"fornax.yml: integration.services.db.image: image {BOB} is not allowed")
    check_config(config, user="alice", settings=_settings(), stages=["post_build"])  # own image: fine
    with pytest.raises(ImageRefused, match="post_build.image"):
        check_config(config, user="carol", settings=_settings(), stages=["post_build"])


def test_check_dockerfile_names_file_line_and_image(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM fornax/busybox AS a\nRUN true\nFROM a\nCOPY --from={BOB} /x /x\n")
    with pytest.raises(ImageRefused) as err:
        check_dockerfile(path, user="alice", settings=_settings(), shown="app/Dockerfile")
    assert str(err.value).startswith(f"app/Dockerfile line 4: COPY --from: image {BOB} is not allowed")
    path.write_text("FROM fornax/busybox\nCOPY --from=$X / /\n")
    with pytest.raises(ImageRefused, match=r"^Dockerfile line 2: COPY --from"):
        check_dockerfile(path, user="alice", settings=_settings(), shown="Dockerfile")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ImageRefused, match="not UTF-8"):
        check_dockerfile(path, user="alice", settings=_settings(), shown="Dockerfile")


def test_allowed_images_setting_parses_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORNAX_BUILDER_ALLOWED_IMAGES", "a/, b/ ,")
    assert Settings().builder_allowed_images == ["a/", "b/"]
    monkeypatch.setenv("FORNAX_BUILDER_ALLOWED_IMAGES", json.dumps(["x/"]))
    assert Settings().builder_allowed_images == ["x/"]
    monkeypatch.delenv("FORNAX_BUILDER_ALLOWED_IMAGES")
    s = Settings()
    assert s.builder_allowed_images == ["fornax/", "fornax-base/"]
    assert s.builder_pids_limit == 256 and s.builder_cpus == 1.0


def test_builds_send_no_stored_registry_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login stored on the host (docker login) never rides along with a build."""
    from services.builder.engine import _TrackingAPI

    (tmp_path / "config.json").write_text(json.dumps({"auths": {REG: {"auth": "YWRtaW46c2VjcmV0"}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    api = _TrackingAPI(base_url="unix:///nonexistent.sock", version="1.41")  # what connect() uses
    headers: dict[str, str] = {}
    api._set_auth_headers(headers)
    assert headers == {}
