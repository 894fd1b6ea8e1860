"""The builder's reaches into docker-py and the HTTP stack under it (services/builder/engine.py), each
held to what the library does today, so a library change that would make one of them silently stop
working fails here instead. None buys speed; each buys a behaviour (said in its comment there):
cancelling a running build or push, the CPU quota of RUN steps, no stored registry login sent with a
build, and a Dockerfile outside the build context."""

from __future__ import annotations

import inspect
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import requests
from docker.api.build import BuildApiMixin, process_dockerfile

from services.builder.engine import _abort, _TrackingAPI


def test_build_and_push_go_through_the_hooked_methods() -> None:
    build = inspect.getsource(BuildApiMixin.build)
    assert "self._set_auth_headers(" in build  # no stored login rides along
    assert "self._post(" in build and "/build" in build  # the CPU quota joins the build's params
    assert "self._stream_helper(" in build  # the response is remembered, so it can be aborted
    push = inspect.getsource(docker.api.image.ImageApiMixin.push)
    assert "self._stream_helper(" in push
    for name, params in (("_stream_helper", ["response", "decode"]),
                         ("_set_auth_headers", ["headers"])):
        method = inspect.unwrap(getattr(docker.APIClient, name))
        assert list(inspect.signature(method).parameters)[1:len(params) + 1] == params


def test_the_cpu_quota_rides_along_with_a_build_request() -> None:
    api = _TrackingAPI(base_url="unix:///nonexistent.sock", version="1.41")
    sent: dict[str, object] = {}

    def post(self: object, url: str, **kwargs: object) -> None:
        sent.update(url=url, **kwargs)

    original = docker.APIClient._post
    docker.APIClient._post = post  # type: ignore[method-assign]  # stands in for the HTTP request
    try:
        _TrackingAPI._tls.build_params = {"cpuperiod": 100000, "cpuquota": 50000}
        api._post("http://docker/v1.41/build", params={"t": "x"})
    finally:
        docker.APIClient._post = original  # type: ignore[method-assign]
        _TrackingAPI._tls.build_params = None
    assert sent["params"] == {"t": "x", "cpuperiod": 100000, "cpuquota": 50000}


def test_abort_unblocks_a_reader_of_an_endless_streaming_response() -> None:
    """`_abort` shuts the socket under requests/urllib3/http.client (`raw._fp.fp.raw`): a thread blocked
    reading the stream returns at once, as when a build is cancelled."""

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"2\r\n{}\r\n")
            self.wfile.flush()
            time.sleep(30)  # then nothing more, like a long build step

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = requests.get(f"http://127.0.0.1:{server.server_address[1]}/", stream=True, timeout=60)
        sock = response.raw._fp.fp.raw
        assert isinstance(getattr(sock, "_sock", sock), socket.socket)
        done = threading.Event()

        def read() -> None:
            try:
                for _ in response.iter_content(1):
                    pass
            except Exception:  # noqa: BLE001 - a reset is as good as an end here
                pass
            done.set()

        threading.Thread(target=read, daemon=True).start()
        time.sleep(0.2)
        assert not done.is_set()  # blocked on the endless stream
        began = time.monotonic()
        _abort(response)
        assert done.wait(5), "the reader stayed blocked after _abort"
        assert time.monotonic() - began < 5
    finally:
        server.shutdown()
        server.server_close()


def test_a_dockerfile_outside_the_context_is_sent_inline(tmp_path: Path) -> None:
    context, elsewhere = tmp_path / "ctx", tmp_path / "other"
    context.mkdir()
    elsewhere.mkdir()
    (context / "Dockerfile").write_text("FROM a\n")
    (elsewhere / "Dockerfile").write_text("FROM b\n")
    assert process_dockerfile(str(context / "Dockerfile"), str(context)) == ("Dockerfile", None)
    name, inline = process_dockerfile(str(elsewhere / "Dockerfile"), str(context))
    assert name.startswith(".dockerfile.") and inline == "FROM b\n"
