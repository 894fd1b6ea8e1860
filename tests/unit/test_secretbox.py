"""Secrets at rest: sealing and opening values and secrets documents, older plaintext, key rotation."""

from __future__ import annotations

import pytest

from shared.secretbox import PREFIX, SecretBox, SecretsKeyError, new_key
from shared.settings import Settings


def test_a_sealed_value_holds_no_plaintext_and_opens_again() -> None:
    box = SecretBox(new_key())
    sealed = box.seal("hunter2-password")
    assert sealed is not None and sealed.startswith(PREFIX) and "hunter2" not in sealed
    assert box.open(sealed) == "hunter2-password"
    assert box.seal(sealed) == sealed  # sealing twice does not wrap it again
    assert box.seal(None) is None and box.open(None) is None


def test_older_plaintext_values_are_read_as_they_are() -> None:
    assert SecretBox(new_key()).open("stored-before-encryption") == "stored-before-encryption"


def test_a_sealed_value_without_its_key_is_a_clear_error() -> None:
    sealed = SecretBox(new_key()).seal("pw")
    with pytest.raises(SecretsKeyError, match="no secrets_key"):
        SecretBox(None).open(sealed)
    with pytest.raises(SecretsKeyError, match="does not open"):
        SecretBox(new_key()).open(sealed)


def test_rotation_new_key_first_still_opens_the_old_ones() -> None:
    old, new = new_key(), new_key()
    sealed_old = SecretBox(old).seal("pw")
    rotated = SecretBox(f"{new},{old}")
    assert rotated.open(sealed_old) == "pw"
    assert SecretBox(new).open(rotated.seal("pw2")) == "pw2"


def test_whole_documents_are_sealed_and_opened() -> None:
    box = SecretBox(new_key())
    doc = {
        "_id": "svc",
        "webhook_secret": "hook-secret",
        "repo_password": "repo-pw",
        "repo_token": None,
        "values": {"API_KEY": "value-1"},
        "repo_key": "https://git.example/a/b",
    }
    sealed = box.seal_doc(doc)
    assert "hook-secret" not in str(sealed) and "repo-pw" not in str(sealed) and "value-1" not in str(sealed)
    assert sealed["repo_key"] == doc["repo_key"] and sealed["repo_token"] is None
    assert box.open_doc(sealed) == doc
    assert box.open_doc(None) is None


def test_no_key_means_plaintext_and_a_bad_key_is_refused_at_start() -> None:
    assert SecretBox(None).seal("pw") == "pw" and not SecretBox(None).enabled
    with pytest.raises(ValueError, match="secrets_key"):
        Settings(secrets_key="not-a-fernet-key")
    assert Settings(secrets_key="").secrets_key is None
