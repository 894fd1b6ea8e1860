"""Service request models: what the projector could not store is refused at the API (422), never accepted
and then dropped."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from services.gateway.routes.services import ServiceIn


def _service(targets: list[dict[str, str]]) -> str:
    return json.dumps({"name": "web", "repository": {"url": "https://git.example/acme/web.git"},
                       "deploy_targets": targets})


@pytest.mark.parametrize("key", ["a\x00b", "$set", "a.b", "", "x" * 65])
def test_deploy_target_keys_that_are_not_plain_names_are_refused(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        ServiceIn.model_validate_json(_service([{key: "v"}]))
    assert "deploy_targets" in str(info.value)


def test_plain_deploy_target_keys_are_kept() -> None:
    body = ServiceIn.model_validate_json(_service([{"target": "local", "cluster_name": "c-1"}]))
    assert body.deploy_targets == [{"target": "local", "cluster_name": "c-1"}]
