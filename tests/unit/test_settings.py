from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings


def test_original_env_names_are_aliases(monkeypatch):
    monkeypatch.setenv("MONGO_DB_IP", "10.1.2.3")
    monkeypatch.setenv("KAFKA_SERVER_IP", "kafka.local")
    monkeypatch.setenv("MEMORYFORCONTAINER", "256")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    monkeypatch.setenv("DOCKER_HOST", "tcp://a:2375,tcp://b:2375")
    for k in ("FORNAX_MONGO_URL", "FORNAX_KAFKA_BOOTSTRAP", "FORNAX_REGISTRY_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert s.mongo_url == "mongodb://10.1.2.3:27017"
    assert s.kafka_bootstrap == "kafka.local:9092"
    assert s.memory_for_container == 256
    assert s.docker_hosts == ["tcp://a:2375", "tcp://b:2375"]
    assert "s3cret" not in repr(s)


def test_bad_values_are_loud(monkeypatch):
    monkeypatch.setenv("FORNAX_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "topic_partitions" in str(err.value).lower()


def test_settings_file(tmp_path, monkeypatch):
    f = tmp_path / "fornax.yml"
    f.write_text("docker_targets:\n  edge: {base_url: 'tcp://127.0.0.1:2375'}\nstage_timeout: 5\n")
    monkeypatch.setenv("FORNAX_SETTINGS_FILE", str(f))
    s = Settings()
    assert s.stage_timeout == 5
    assert s.docker_targets["edge"].base_url == "tcp://127.0.0.1:2375"
