"""Every event model round-trips through the codec; malformed bytes raise EventDecodeError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import BY_TYPE, EVENT_TYPES, EventDecodeError, decode
from shared.events.versions import VersionRequestedPayload


def _sample_payload(cls):
    """Build a payload with every required field filled from its annotation."""
    payload_cls = cls.model_fields["payload"].annotation
    values = {}
    for name, f in payload_cls.model_fields.items():
        if not f.is_required():
            continue
        ann = str(f.annotation)
        if "Literal" in ann:
            values[name] = f.annotation.__args__[0]
        elif "int" in ann:
            values[name] = 1
        elif "float" in ann:
            values[name] = 1.5
        elif "bool" in ann:
            values[name] = True
        elif "Repository" in ann:
            values[name] = {"url": "file:///tmp/repo", "vcs": "git"}
        else:
            values[name] = f"{name}-value"
    return payload_cls(**values)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_round_trips(cls):
    event = cls.make("agg-1", _sample_payload(cls), actor="alice")
    again = decode(event.encode())
    assert again == event
    assert type(again) is cls
    assert BY_TYPE[event.type] is cls
    assert again.correlation_id == "agg-1"


def test_caused_event_inherits_correlation_and_actor():
    from shared.events import VersionCancelled, VersionRequested
    from shared.events.versions import VersionCancelledPayload

    first = VersionRequested.make("v1", VersionRequestedPayload(service_id="s", user_id="u", name="n"), actor="u")
    second = VersionCancelled.make("v1", VersionCancelledPayload(), cause=first)
    assert second.causation_id == first.event_id
    assert second.correlation_id == first.correlation_id
    assert second.actor == "u"


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b'{"type": "Nope"}', b'{"type": "VersionRequested"}', b"\xff"])
def test_malformed_events_raise_decode_error(raw):
    with pytest.raises(EventDecodeError):
        decode(raw)


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else(raw):
    try:
        decode(raw)
    except EventDecodeError:
        pass


def test_pre_encoded_events_are_the_models_encoding() -> None:
    import json

    from shared.events import PushReceived
    from shared.events.preencode import PreEncoder

    encoder = PreEncoder(PushReceived)
    values = {"provider": "gitlab", "delivery_id": "d", "service_id": "s", "user_id": "u", "repo_url": "r",
              "ref": "refs/heads/x", "branch": "x"}  # the rest take the model's defaults
    fast = encoder.encode("s", values, actor="u")
    model = decode(fast.encode())
    assert isinstance(model, PushReceived) and fast.TOPIC == "webhooks" and fast.key() == b"s"
    assert json.loads(fast.encode()) == json.loads(model.encode())
    assert list(json.loads(fast.encode())) == list(json.loads(model.encode()))
    assert model.payload.after == "" and model.payload.deleted is False and model.correlation_id == "s"
    with pytest.raises(TypeError, match="unknown payload fields"):
        encoder.encode("s", {**values, "colour": "red"})
