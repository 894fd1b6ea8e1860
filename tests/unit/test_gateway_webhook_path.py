"""The webhook hot path without I/O: the pre-encoded PushReceived equals the model's encoding, the
body reader's limits, and the group-commit bus's deadlines and cancellation (against a fake producer)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.batching import BatchingEventBus
from services.gateway.errors import ApiError
from services.gateway.http_protocol import CorkedTransport
from services.gateway.repo_index import HookTarget
from services.gateway.routes.webhooks import _encoded, _event, _read_body
from services.gateway.webhooks import Push
from shared.bus import BusUnavailable, EventTooLarge
from shared.events import PushReceived, decode
from shared.settings import Settings

texts = st.text(max_size=40)
pushes = st.builds(
    Push,
    provider=st.sampled_from(["github", "gitlab"]),
    repo_urls=st.just(("https://git.example.test/a/b.git",)),
    ref=texts,
    branch=st.none() | texts,
    tag=st.none() | texts,
    deleted=st.booleans(),
    after=texts,
    before=texts,
    pusher=st.none() | texts,
    message=st.none() | st.text(max_size=300),
    delivery_id=texts,
)
targets = st.builds(HookTarget, service_id=texts, user_id=texts, repo_url=texts, secret=st.none() | texts)


def _without_ids(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    doc.pop("event_id"), doc.pop("occurred_at")
    return doc


@given(push=pushes, target=targets)
def test_encoded_push_is_the_models_encoding(push: Push, target: HookTarget) -> None:
    fast, model = _encoded(push, target), _event(push, target)
    assert fast.TOPIC == PushReceived.TOPIC and fast.key() == model.key()
    fast_doc, model_doc = json.loads(fast.encode()), json.loads(model.encode())
    assert list(fast_doc) == list(model_doc)  # the same fields in the same order...
    assert list(fast_doc["payload"]) == list(model_doc["payload"])
    assert _without_ids(fast.encode()) == _without_ids(model.encode())  # ...with the same values
    decoded = decode(fast.encode())  # and it is a valid PushReceived
    assert isinstance(decoded, PushReceived)
    assert decoded == model.model_copy(update={"event_id": decoded.event_id, "occurred_at": decoded.occurred_at})


def _receiver(*chunks: bytes) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def test_read_body_joins_chunks_and_enforces_the_limit() -> None:
    assert await _read_body({}, _receiver(b"ab", b"cd", b""), 10) == b"abcd"
    assert await _read_body({"content-length": "4"}, _receiver(b"abcd"), 10) == b"abcd"
    for headers, chunks in (({}, (b"x" * 6, b"x" * 6)), ({"content-length": "11"}, (b"",))):
        with pytest.raises(ApiError) as err:
            await _read_body(headers, _receiver(*chunks), 10)
        assert err.value.status == 413 and err.value.code == "payload_too_large"
    with pytest.raises(ApiError) as err:
        await _read_body({"content-length": "x"}, _receiver(b""), 10)
    assert err.value.status == 400
    with pytest.raises(ApiError) as err:  # the client went away half-way
        await _read_body({}, _disconnecting(), 10)
    assert err.value.status == 400 and "disconnected" in err.value.message


def _disconnecting() -> Any:
    messages = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


class _Batch:
    def append(self, **_: Any) -> object:
        return object()


class _SilentProducer:
    """A producer whose broker never acknowledges; remembers how many batches were handed to it."""

    def __init__(self) -> None:
        self.batches = 0
        self.acks: list[asyncio.Future[Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.batches += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        return fut


def _push_event(i: int) -> PushReceived:
    push = Push("github", ("u",), "refs/heads/main", "main", None, False, "a" * 40, "b" * 40, None, None, f"d{i}")
    return _event(push, HookTarget("svc", "user", "u", "s"))


async def test_unacknowledged_publish_fails_after_the_timeout_and_later_ones_are_not_sent() -> None:
    bus = BatchingEventBus(Settings(), timeout=0.3)
    producer = _SilentProducer()
    bus._producer = producer  # type: ignore[assignment]  # the fake stands in for aiokafka
    first = asyncio.ensure_future(bus.publish(_push_event(1)))
    await asyncio.sleep(0.05)  # the first batch is in flight (never acknowledged) ...
    second = asyncio.ensure_future(bus.publish(_push_event(2)))  # ... so this one waits behind it
    for caller in (first, second):
        with pytest.raises(BusUnavailable):
            await caller
    producer.acks[0].set_result(None)  # the broker finally answers the first batch
    await asyncio.sleep(0.05)
    assert producer.batches == 1  # the second caller got its 503: its event is never published


async def test_cancelled_publish_is_not_sent_and_acknowledged_ones_return() -> None:
    bus = BatchingEventBus(Settings(), timeout=5)
    producer = _SilentProducer()
    bus._producer = producer  # type: ignore[assignment]
    first = asyncio.ensure_future(bus.publish(_push_event(1)))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(bus.publish(_push_event(2)))
    await asyncio.sleep(0.05)
    second.cancel()
    producer.acks[0].set_result(None)
    await first  # acknowledged: returns
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.sleep(0.05)
    assert producer.batches == 1
    assert not bus._deadlines or all(f.done() for _, fs in bus._deadlines for f in fs)


class _KafkaLikeProducer(_SilentProducer):
    """Acknowledges a batch at once, unless it holds more than the broker's 1 MiB (then, as Kafka's
    message.max.bytes, the whole batch is refused)."""

    LIMIT = 1024 * 1024

    def create_batch(self) -> Any:
        batch: Any = _Batch()
        batch.size = 0

        def append(*, value: bytes, **_: Any) -> object:
            batch.size += len(value)
            return object()

        batch.append = append
        return batch

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        fut = await super().send_batch(batch, topic, partition)
        if batch.size > self.LIMIT:
            fut.set_exception(MessageSizeTooLargeError())
        else:
            fut.set_result(None)
        return fut


async def test_an_oversized_event_fails_its_own_caller_only() -> None:
    bus = BatchingEventBus(Settings(), timeout=5)
    bus._producer = _KafkaLikeProducer()  # type: ignore[assignment]
    huge = _push_event(2).model_copy(update={"aggregate_id": "svc" + "x" * (2 * 1024 * 1024)})
    small, big = await asyncio.gather(
        bus.publish(_push_event(1)), bus.publish(huge), return_exceptions=True
    )
    assert small is None  # sent and acknowledged, though it was published together with the huge one
    assert isinstance(big, EventTooLarge) and "exceeds the limit of 524288 bytes" in str(big)


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_corked_transport_sends_one_loop_turns_writes_as_one() -> None:
    real = _RecordingTransport()
    corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    corked.write(b"")
    corked.write(b'{"ok": 1}')
    assert real.writes == []  # held until the end of this loop turn
    await asyncio.sleep(0)
    assert real.writes == [b'HTTP/1.1 202 Accepted\r\n\r\n{"ok": 1}']
    corked.writelines([b"a", b"b"])
    corked.close()  # what is held goes out before the close
    assert real.writes[-1] == b"ab" and real.closed
    assert corked.get_extra_info("peername") == "info:peername"  # the rest is the real transport's


class _SocketLikeTransport(_RecordingTransport):
    """The rest of what uvicorn's protocol reads of an asyncio transport."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)


async def _uvicorn_writes(protocol_class: type) -> list[bytes]:
    """The socket writes of the given uvicorn protocol class answering one request with a JSON body."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"8")]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"ok":1}'})

    config = Config(app, log_level="warning", access_log=False, lifespan="off")
    config.load()
    protocol = protocol_class(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    real = _SocketLikeTransport()
    protocol.connection_made(real)
    protocol.data_received(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    for _ in range(50):
        await asyncio.sleep(0)
        if real.writes and real.writes[-1].endswith(b'{"ok":1}'):
            break
    protocol.connection_lost(None)
    return real.writes


async def test_corked_protocol_turns_uvicorns_two_writes_into_one() -> None:
    # Fails when uvicorn changes under the wrapper: its protocol's constructor or connection_made(transport)
    # contract, the transport methods it calls, or its writing a response in two parts (the cork's reason).
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from services.gateway.http_protocol import CorkedHTTPProtocol

    plain = await _uvicorn_writes(AutoHTTPProtocol)
    assert len(plain) == 2 and plain[1] == b'{"ok":1}'  # status line and headers, then the body
    assert await _uvicorn_writes(CorkedHTTPProtocol) == [b"".join(plain)]


def test_fast_dispatch_answers_errors_in_the_one_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from services.gateway import app as gateway_app
    from services.gateway.errors import EXCEPTION_HANDLERS
    from services.gateway.routes import webhooks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    async def refused(scope: Any, receive: Any, send: Any) -> None:
        raise ApiError(401, "invalid_signature", "no")

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setitem(webhooks.ENDPOINTS, "/webhooks/refused", refused)
    monkeypatch.setitem(webhooks.ENDPOINTS, "/webhooks/broken", broken)
    app = gateway_app.Gateway(routes=[], exception_handlers=EXCEPTION_HANDLERS)
    client = TestClient(app, raise_server_exceptions=False)
    resp = client.post("/webhooks/refused")
    assert resp.status_code == 401 and resp.json() == {"error": {"code": "invalid_signature", "message": "no"}}
    resp = client.post("/webhooks/broken")
    assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal_error"
    assert client.get("/webhooks/refused").status_code == 404  # not a POST: the ordinary way
