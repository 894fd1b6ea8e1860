"""A pipeline step must not make the builder host run anything through git: hooks and config it
plants in the workspace's `.git` (or unpacks there as a pre_build output) are never used by the tag
stage's `git tag` / `git push`, and the tag is still made. Real git, real Docker containers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.builder.pipeline import StageFailed, cleanup_version, parse_config, run_stage
from services.builder.vcs import RepoSpec
from services.builder.vcs.clients import GitSvn
from tests.integration.builder_helpers import GitRepo
from tests.integration.pipeline_helpers import Versions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HOOKS = ("pre-push", "post-checkout", "reference-transaction")


def _vector_config(name: str, marker: Path, origin: str) -> list[str]:
    """git config lines that turn a key into a command run by the host's git."""
    if name == "core.fsmonitor":
        return ["[core]", f"    fsmonitor = touch {marker}-{name}"]
    if name == "core.sshCommand":  # with the origin reached over ssh through a rewrite
        return ["[core]", f"    sshCommand = touch {marker}-{name}; false",
                '[url "ssh://fornax.invalid/r"]', f"    insteadOf = {origin}"]
    if name == "url.insteadOf-ext":  # the push URL rewritten to a transport that runs a command
        return ['[protocol "ext"]', "    allow = always",
                f'[url "ext::sh -c touch% {marker}-{name}"]', f"    insteadOf = {origin}"]
    return []


VECTORS = [*(f"hook {h}" for h in HOOKS), "core.fsmonitor", "core.sshCommand", "url.insteadOf-ext"]


class Lines(list):
    async def __call__(self, text: str) -> None:
        self.append(text)


def _write(path: str, *lines: str) -> str:
    """A step command writing `lines` to `path` (printf '%s\\n': no format characters in the text)."""
    return "printf '%s\\n' " + " ".join(json.dumps(line) for line in lines) + f" > {path}"


def _plant(gitdir: str, marker: Path, origin: str, vectors: list[str]) -> list[str]:
    """Commands a hostile step runs to plant `vectors` in `gitdir` (kept: what is there already)."""
    commands = [f"mkdir -p {gitdir}/hooks", "touch /tmp/planted"]
    for vector in vectors:
        if vector.startswith("hook "):
            hook = vector.removeprefix("hook ")
            commands.append(_write(f"{gitdir}/hooks/{hook}", "#!/bin/sh", f"touch {marker}-{hook}"))
            commands.append(f"chmod 755 {gitdir}/hooks/{hook}")
        else:
            commands.append(_write("/tmp/more", *_vector_config(vector, marker, origin)))
            commands.append("cat /tmp/more >> /tmp/planted")
    commands.append(f"cat {gitdir}/config > /tmp/c 2>/dev/null || true")
    commands.append(f"cat /tmp/c /tmp/planted > {gitdir}/config")
    return commands


def _markers(marker: Path) -> list[str]:
    return sorted(p.name for p in marker.parent.glob(f"{marker.name}-*"))


@pytest.fixture
def versions(tmp_path: Path, settings, busybox_image):
    import docker

    client = docker.from_env()
    v = Versions(client, tmp_path / "workspaces", settings)
    yield v
    assert v.leaks() == []
    client.close()


def _config(image: str, stage: str, commands: list[str], outputs: list[str] | None = None) -> str:
    body = {"image": image, "commands": commands}
    if outputs:
        body["outputs"] = outputs
    return json.dumps({stage: body})


@pytest.mark.parametrize("vector", VECTORS)
async def test_hooks_and_config_planted_in_the_workspace_git_never_run_on_the_host(
    vector: str, tmp_path: Path, versions: Versions, busybox_image: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit({"Dockerfile": f"FROM {busybox_image}\n"})
    marker = tmp_path / "host-marker"
    vcs = GitSvn(probe_timeout=20)
    ctx = versions.context()
    try:
        assert await vcs.clone(RepoSpec(repo.url), ctx.workspace, commit, None, Lines()) == commit
        config = parse_config(
            _config(busybox_image, "integration", _plant(".git", marker, repo.url, [vector]))
        )
        await run_stage(ctx, config, "integration")
        assert (ctx.workspace / ".git" / "config").is_file()  # the step did plant it
        await vcs.tag(RepoSpec(repo.url), ctx.workspace, "v1", commit, Lines())
    finally:
        cleanup_version(ctx.backend.client, ctx.version_id)
    assert _markers(marker) == [], f"{vector} ran on the host"
    assert repo.tag_commit("v1") == commit and repo.tag_type("v1") == "tag"


async def test_a_pre_build_output_unpacked_over_git_never_runs_on_the_host(
    tmp_path: Path, versions: Versions, busybox_image: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit({"Dockerfile": f"FROM {busybox_image}\n"})
    marker = tmp_path / "host-marker"
    vcs = GitSvn(probe_timeout=20)
    ctx = versions.context()
    try:
        await vcs.clone(RepoSpec(repo.url), ctx.workspace, commit, None, Lines())
        commands = ["mkdir -p /out", "cd /out", *_plant(".git", marker, repo.url, VECTORS)]
        config = parse_config(_config(busybox_image, "pre_build", commands, outputs=["/out/.git"]))
        await run_stage(ctx, config, "pre_build")
        assert (ctx.workspace / ".git" / "hooks" / "pre-push").is_file()  # copied into the workspace
        await vcs.tag(RepoSpec(repo.url), ctx.workspace, "v1", commit, Lines())
    finally:
        cleanup_version(ctx.backend.client, ctx.version_id)
    assert _markers(marker) == [], "a hook unpacked from an output ran on the host"
    assert repo.tag_commit("v1") == commit


async def test_tagging_where_this_process_did_not_clone_uses_a_fresh_clone(tmp_path: Path) -> None:
    """Another worker built the version: the workspace here holds only what a step left (a planted
    `.git`), so the tag comes from a fresh bare clone, and the planted hooks stay inert."""
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit({"a": "1"})
    marker = tmp_path / "host-marker"
    workspace = tmp_path / "workspaces" / "v-elsewhere"
    hooks = workspace / ".git" / "hooks"
    hooks.mkdir(parents=True)
    for hook in HOOKS:
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {marker}-{hook}\n")
        (hooks / hook).chmod(0o755)
    config = [line for v in VECTORS for line in _vector_config(v, marker, repo.url)]
    (workspace / ".git" / "config").write_text("\n".join(config) + "\n")
    await GitSvn(probe_timeout=20).tag(RepoSpec(repo.url), workspace, "v2", commit, Lines())
    assert _markers(marker) == []
    assert repo.tag_commit("v2") == commit


async def test_the_checkout_has_no_git_metadata_and_its_git_dir_lies_beside_it(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit({"f": "x"})
    workspace = tmp_path / "workspaces" / "v1"
    lines = Lines()
    await GitSvn().clone(RepoSpec(repo.url), workspace, commit, None, lines)
    assert sorted(p.name for p in workspace.iterdir()) == ["f"]
    assert (tmp_path / "workspaces" / "v1.git" / "HEAD").is_file()
    # the clone's log names no host path (the workspace), only the repository as given
    assert not any(str(tmp_path / "workspaces") in line for line in lines), lines


async def test_an_output_cannot_reach_the_git_dir_through_a_planted_link(
    tmp_path: Path, versions: Versions, busybox_image: str
) -> None:
    """A link in the workspace to the git directory beside it (dangling inside the container, real on
    the host), then an output unpacked through it: refused, and the git directory is unchanged."""
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit({"a": "1"})
    marker = tmp_path / "host-marker"
    vcs = GitSvn(probe_timeout=20)
    ctx = versions.context()
    try:
        await vcs.clone(RepoSpec(repo.url), ctx.workspace, commit, None, Lines())
        link = f"../{ctx.workspace.name}.git"
        commands = [f"ln -s {link} gd", "mkdir -p /out/gd/hooks",
                    _write("/out/gd/hooks/pre-push", "#!/bin/sh", f"touch {marker}-through-link"),
                    "chmod 755 /out/gd/hooks/pre-push"]
        config = parse_config(_config(busybox_image, "pre_build", commands, outputs=["/out/gd"]))
        with pytest.raises(StageFailed, match="could not be copied"):
            await run_stage(ctx, config, "pre_build")
        assert not (ctx.workspace.with_name(ctx.workspace.name + ".git") / "hooks" / "pre-push").exists()
        await vcs.tag(RepoSpec(repo.url), ctx.workspace, "v1", commit, Lines())
    finally:
        cleanup_version(ctx.backend.client, ctx.version_id)
    assert _markers(marker) == []
    assert repo.tag_commit("v1") == commit
