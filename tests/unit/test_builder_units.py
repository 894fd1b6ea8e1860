"""Pure builder logic: image names, the host pool's choice, the build context, step guarding."""

from __future__ import annotations

import asyncio
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.builder.core import Active, Cancelled, Failed
from services.builder.engine import build_context, image_name, image_tag
from services.builder.hosts import HostPool, NoHost
from services.builder.run import Run
from services.builder.vcs import FakeVcs, RepoSpec

# The registry's tag grammar (distribution/reference), lower-case as Fornax writes them.
_DOCKER_TAG = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,127}")


def test_image_name_keeps_a_plain_tag_and_encodes_the_rest() -> None:
    assert image_name("127.0.0.1:5000", "alice", "webapp", "v1.0") == "127.0.0.1:5000/alice/webapp:v1.0"
    assert image_name("reg:5000/", "u", "s", "main-0123abc") == "reg:5000/u/s:main-0123abc"
    encoded = image_name("reg:5000/", "u", "s", "release/1.0+build")
    assert re.fullmatch(r"reg:5000/u/s:release-1\.0-build__[0-9a-f]{20}", encoded), encoded
    assert re.fullmatch(r"r/u/s:v__[0-9a-f]{20}", image_name("r", "u", "s", "..."))


@pytest.mark.parametrize(
    ("one", "other"),
    [("V1", "v1"), ("feat/x", "feat-x"), ("feat/x", "feat_x"), ("a+b", "a-b"), ("x" * 128, "x" * 127 + "y")],
)
def test_distinct_version_names_never_share_a_tag(one: str, other: str) -> None:
    assert image_tag(one) != image_tag(other)


@given(st.text(min_size=1, max_size=140), st.text(min_size=1, max_size=140))
def test_image_tag_is_one_to_one_and_a_valid_docker_tag(one: str, other: str) -> None:
    for name in (one, other):
        assert _DOCKER_TAG.fullmatch(image_tag(name)), name
    assert (image_tag(one) == image_tag(other)) == (one == other)


def test_an_encoded_tag_is_never_another_names_plain_tag() -> None:
    encoded = image_tag("feat/x")
    assert "__" in encoded and image_tag(encoded) != encoded  # a name spelling the encoding is encoded too


class _Versions:
    def __init__(self, running: dict[str, int]) -> None:
        self.running = running
        self.queries: list[dict] = []

    def find(self, query: dict, projection: dict) -> list[dict]:
        self.queries.append(query)
        return [{"_id": f"{query['host']}-{n}"} for n in range(self.running.get(query["host"], 0))]


class _Client:
    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def ping(self) -> bool:
        if not self.alive:
            raise ConnectionError("down")
        return True


def _pool(running: dict[str, int], dead: set[str] = frozenset()) -> HostPool:
    store = SimpleNamespace(versions=_Versions(running))
    return HostPool(["a", "b", "c"], store, connect=lambda host, cert: _Client(host not in dead))


def test_host_pool_picks_the_least_loaded_reachable_host() -> None:
    pool = _pool({"a": 3, "b": 1, "c": 2})
    assert asyncio.run(pool.pick("v1")) == "b"
    # v1 now counts on b in memory: b=2, c=2 → the first of the two by order
    assert asyncio.run(pool.pick("v2")) == "b"
    assert asyncio.run(pool.pick("v3")) == "c"
    assert asyncio.run(pool.pick("v1")) == "b"  # a version keeps its host
    pool.release("v1")
    pool.release("v2")
    assert pool.local["b"] == 0
    # this process's own versions are not counted twice from the read model
    assert pool.store.versions.queries[-1]["_id"] == {"$nin": ["v1", "v2"]}


def test_host_pool_skips_dead_hosts_and_says_so() -> None:
    assert asyncio.run(_pool({"a": 0, "b": 5, "c": 9}, dead={"a"}).pick("v")) == "b"
    with pytest.raises(NoHost, match="no Docker host answers"):
        asyncio.run(_pool({}, dead={"a", "b", "c"}).pick("v"))


def test_build_context_leaves_out_vcs_metadata_and_honours_dockerignore(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("secret-ish")
    (tmp_path / ".svn").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "notes.log").write_text("x\n")
    (tmp_path / ".dockerignore").write_text("# comment\n*.log\n")
    name, tar = build_context(tmp_path, tmp_path / "Dockerfile")
    names = set(tarfile.open(fileobj=tar).getnames())
    assert name == "Dockerfile"
    assert {"Dockerfile", "app.py"} <= names
    assert not any(n.startswith((".git", ".svn")) or n.endswith(".log") for n in names)


def test_fake_vcs_is_steerable(tmp_path: Path) -> None:
    vcs = FakeVcs(heads={"u": "a" * 40})
    repo = RepoSpec("u")
    lines: list[str] = []

    async def on_line(text: str) -> None:
        lines.append(text)

    assert asyncio.run(vcs.clone(repo, tmp_path / "w", None, None, on_line)) == "a" * 40
    assert (tmp_path / "w" / "Dockerfile").exists()
    asyncio.run(vcs.tag(repo, tmp_path / "w", "v1", "a" * 40, on_line))
    asyncio.run(vcs.tag(repo, tmp_path / "w", "v1", "a" * 40, on_line))  # same commit: fine
    with pytest.raises(Exception, match="already exists at"):
        asyncio.run(vcs.tag(repo, tmp_path / "w", "v1", "b" * 40, on_line))
    assert asyncio.run(vcs.probe(RepoSpec("x", vcs="hg"))).status == "unknownvcs"


def _run(timeout: float = 3600) -> Run:
    b = SimpleNamespace(settings=SimpleNamespace(version_timeout=timeout), registry_secret="registry-pw")
    return Run(b, None, {"_id": "v1", "user_id": "u"}, Active("v1"))  # type: ignore[arg-type]


def test_guard_returns_the_result_or_stops_on_cancel_and_timeout() -> None:
    async def scenario() -> None:
        run = _run()
        assert await run.guard(asyncio.sleep(0, result=7), "build") == 7

        stopped = asyncio.Event()

        async def long_step() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                stopped.set()  # the step itself is cancelled (its docker call aborted)

        asyncio.get_running_loop().call_later(0.05, run.active.cancelled.set)
        with pytest.raises(Cancelled):
            await run.guard(long_step(), "build")
        assert stopped.is_set()

        with pytest.raises(Failed, match="build timed out after 0s"):
            await _run().guard(asyncio.sleep(30), "build", timeout=0.05)
        with pytest.raises(Failed, match="timed out"):
            await _run(timeout=0.05).guard(asyncio.sleep(30), "push")  # the version's own deadline

    asyncio.run(scenario())


def test_secrets_are_masked_in_messages() -> None:
    run = _run()
    assert run.masked("login with registry-pw failed") == "login with **** failed"


class _EmittedState:
    """In-memory stand-in for BuilderState's record of published milestones (the claim document)."""

    def __init__(self) -> None:
        self.marks: set[tuple[str, str]] = set()

    async def emitted(self, vid: str, event_type: str) -> bool:
        return (vid, event_type) in self.marks

    async def record_emitted(self, vid: str, event_type: str) -> None:
        self.marks.add((vid, event_type))


def test_a_milestone_is_published_once_across_resumed_runs() -> None:
    from shared.events import VersionTagged
    from shared.events.versions import VersionTaggedPayload

    published: list[str] = []
    fail_next = [True]

    async def emit(*events: Any) -> None:
        if fail_next[0]:
            fail_next[0] = False
            raise ConnectionError("broker away")
        published.extend(e.type for e in events)

    state = _EmittedState()
    b = SimpleNamespace(settings=SimpleNamespace(version_timeout=3600), emit=emit, state=state)

    def run() -> Run:  # each run stands for a worker resuming the version after a crash
        return Run(b, None, {"_id": "v1", "user_id": "u"}, Active("v1"))  # type: ignore[arg-type]

    def tagged(r: Run) -> Any:
        return r.make(VersionTagged, VersionTaggedPayload(tag="v1", commit="a" * 40))

    async def scenario() -> None:
        first = run()
        with pytest.raises(ConnectionError):  # not acknowledged: not recorded, the next run publishes it
            await first.publish_once(tagged(first))
        assert published == [] and state.marks == set()
        second = run()
        await second.publish_once(tagged(second))
        third = run()
        await third.publish_once(tagged(third))  # resumed after a crash that followed the publish
        assert published == ["VersionTagged"]
        assert state.marks == {("v1", "VersionTagged")}

    asyncio.run(scenario())


def test_a_milestone_published_again_after_a_crash_before_it_was_noted_is_the_same_event() -> None:
    """The window publish_once cannot close: acknowledged, then the worker dies before noting it. The
    resumed run publishes it again, with the same event id (the archive keeps one)."""
    from shared.events import VersionTagged
    from shared.events.versions import VersionTaggedPayload

    published: list[Any] = []

    async def emit(*events: Any) -> None:
        published.extend(events)

    state = _EmittedState()
    b = SimpleNamespace(settings=SimpleNamespace(version_timeout=3600), emit=emit, state=state)

    async def scenario() -> None:
        for _worker in range(2):
            r = Run(b, None, {"_id": "v1", "user_id": "u"}, Active("v1"))  # type: ignore[arg-type]
            await r.publish_once(r.make(VersionTagged, VersionTaggedPayload(tag="v1", commit="a" * 40)))
            state.marks.clear()  # the note is lost with the crash
        other = Run(b, None, {"_id": "v2", "user_id": "u"}, Active("v2"))  # type: ignore[arg-type]
        await other.publish_once(other.make(VersionTagged, VersionTaggedPayload(tag="v2", commit="a" * 40)))

    asyncio.run(scenario())
    first, again, other = published
    assert first.event_id == again.event_id
    assert other.event_id != first.event_id
