"""The rollback rule on plain read-model documents (no Mongo)."""

from __future__ import annotations

from shared.rollback import rollback_source, rollback_target


def _d(i: str, target: str, digest: str) -> dict[str, str]:
    return {"_id": i, "target": target, "digest": digest, "version_id": f"v-{i}"}


def test_no_successes_nothing_to_roll_back() -> None:
    assert rollback_source([]) is None
    assert rollback_source([], "local") is None
    assert rollback_target([]) is None


def test_one_success_nothing_to_roll_back() -> None:
    assert rollback_source([_d("a", "local", "sha:1")]) is None


def test_same_digest_redeployed_is_skipped() -> None:
    done = [_d("c", "local", "sha:2"), _d("b", "local", "sha:2"), _d("a", "local", "sha:1")]
    assert rollback_source(done) == done[2]


def test_only_same_digest_is_nothing() -> None:
    done = [_d("b", "local", "sha:1"), _d("a", "local", "sha:1")]
    assert rollback_source(done) is None


def test_default_target_is_the_latest_ones() -> None:
    done = [_d("c", "prod", "sha:3"), _d("b", "local", "sha:2"), _d("a", "prod", "sha:1")]
    assert rollback_target(done) == "prod"
    assert rollback_source(done) == done[2]


def test_explicit_target_ignores_other_targets() -> None:
    done = [_d("c", "prod", "sha:3"), _d("b", "local", "sha:2"), _d("a", "local", "sha:1")]
    assert rollback_target(done, "local") == "local"
    assert rollback_source(done, "local") == done[2]
    assert rollback_source(done, "staging") is None
    assert rollback_source([_d("c", "prod", "sha:3"), _d("b", "local", "sha:2")], "local") is None
