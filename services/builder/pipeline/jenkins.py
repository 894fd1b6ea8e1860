"""The integration stage delegated to Jenkins (`integration.jenkins` in the config file).

Remote API used (the documented Jenkins endpoints):
- `GET  {server}/crumbIssuer/api/json`                 CSRF crumb (404: the server issues none)
- `POST {server}/job/{a}/job/{b}/buildWithParameters`  FORNAX_COMMIT, FORNAX_VERSION, FORNAX_VERSION_ID
                                                       → 201 + Location: the queue item
- `GET  {queue item}api/json`                          until `executable.url` (the build) or `cancelled`
- `GET  {build}logText/progressiveText?start=N`        console text from N; X-Text-Size is the next N,
                                                       X-More-Data: true while the build runs
- `GET  {build}api/json`                               `result`: SUCCESS | UNSTABLE | FAILURE | ABORTED
- `POST {build}stop`                                   on cancel or timeout (best effort)

The server must be one the operator allows (settings.jenkins_servers); the credentials are names of
the service's secrets, sent as HTTP basic auth (user + API token) and masked in the log like every
secret. Jenkins unreachable for settings.jenkins_unreachable_after seconds fails the stage with a
reason naming Jenkins.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from .config import Jenkins
from .errors import StageFailed


def job_url(server: str, job: str) -> str:
    return server.rstrip("/") + "".join(f"/job/{quote(part, safe='')}" for part in job.split("/")) + "/"


def allowed(server: str, allowlist: list[str]) -> bool:
    """The server is one of the operator's Jenkins servers (same scheme, host, port and path prefix)."""
    url = httpx.URL(server.rstrip("/") + "/")
    for entry in allowlist:
        ok = httpx.URL(entry.rstrip("/") + "/")
        if (url.scheme, url.host, url.port) == (ok.scheme, ok.host, ok.port) and url.path.startswith(ok.path):
            return True
    return False


class _Job:
    def __init__(self, ctx: Any, spec: Jenkins, stage: str) -> None:
        self.ctx, self.spec, self.stage = ctx, spec, stage
        settings = ctx.settings
        self.poll = float(settings.jenkins_poll_seconds)
        self.unreachable_after = float(settings.jenkins_unreachable_after)
        self.max_log = int(settings.jenkins_max_log_bytes)
        self.logged = 0
        self.truncated = False
        self.build_url: str | None = None
        auth = None
        if spec.credentials is not None:
            secrets = ctx.secrets or {}
            values = []
            for key in ("user", "token"):
                name = getattr(spec.credentials, key)
                if not isinstance(secrets.get(name), str):
                    raise StageFailed(f"{stage}: jenkins.credentials.{key}: the service has no secret "
                                      f"named {name!r}")
                values.append(secrets[name])
            auth = httpx.BasicAuth(values[0], values[1])
        self.client = httpx.AsyncClient(auth=auth, timeout=httpx.Timeout(float(settings.jenkins_request_timeout)),
                                        follow_redirects=False)
        self.headers: dict[str, str] = {}

    def _fail(self, why: str) -> StageFailed:
        return StageFailed(f"{self.stage}: Jenkins {self.spec.server}: {why}")

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request; transport errors are retried until Jenkins counts as unreachable."""
        since = time.monotonic()
        while True:
            try:
                return await self.client.request(method, url, headers=self.headers, **kw)
            except httpx.TransportError as exc:
                if time.monotonic() - since >= self.unreachable_after:
                    raise self._fail(f"unreachable ({type(exc).__name__}: {exc or 'no answer'})") from None
                await asyncio.sleep(min(self.poll, 1.0))

    async def json(self, url: str) -> dict[str, Any]:
        resp = await self.request("GET", url)
        if resp.status_code != 200:
            raise self._fail(f"GET {url} answered {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            raise self._fail(f"GET {url} did not answer JSON") from None
        if not isinstance(data, dict):
            raise self._fail(f"GET {url} did not answer a JSON object")
        return data

    def _same_server(self, url: str) -> str:
        """Jenkins' own URLs (queue item, build) must stay on the configured server."""
        full = urljoin(self.spec.server + "/", url)
        if not allowed(full, [self.spec.server]):
            raise self._fail(f"pointed outside itself ({full})")
        return full if full.endswith("/") else full + "/"

    async def trigger(self) -> str:
        crumb = await self.request("GET", self.spec.server + "/crumbIssuer/api/json")
        if crumb.status_code == 200:
            try:
                data = crumb.json()
                self.headers[str(data["crumbRequestField"])] = str(data["crumb"])
            except (ValueError, KeyError, TypeError):
                raise self._fail("the crumb issuer answered no crumb") from None
        elif crumb.status_code in (401, 403):
            raise self._fail(f"refused the credentials ({crumb.status_code})")
        params = {"FORNAX_COMMIT": self.ctx.commit or "", "FORNAX_VERSION": self.ctx.version_name or "",
                  "FORNAX_VERSION_ID": self.ctx.version_id}
        url = job_url(self.spec.server, self.spec.job) + "buildWithParameters"
        resp = await self.request("POST", url, data=params)
        if resp.status_code in (401, 403):
            raise self._fail(f"refused the credentials ({resp.status_code})")
        if resp.status_code == 404:
            raise self._fail(f"has no job {self.spec.job!r}")
        if resp.status_code != 201 or "location" not in resp.headers:
            raise self._fail(f"did not queue job {self.spec.job!r} (answered {resp.status_code})")
        return self._same_server(resp.headers["location"])

    async def wait_for_build(self, queue_item: str) -> str:
        while True:
            item = await self.json(queue_item + "api/json")
            if item.get("cancelled"):
                raise self._fail(f"cancelled job {self.spec.job!r} in its queue")
            executable = item.get("executable")
            if isinstance(executable, dict) and executable.get("url"):
                return self._same_server(str(executable["url"]))
            await asyncio.sleep(self.poll)

    async def stream_console(self, build: str) -> None:
        start, pending = 0, ""
        while True:
            async with self.client.stream("GET", f"{build}logText/progressiveText",
                                          params={"start": start}, headers=self.headers) as resp:
                if resp.status_code != 200:
                    raise self._fail(f"console of {build} answered {resp.status_code}")
                more = resp.headers.get("x-more-data", "").lower() == "true"
                size = resp.headers.get("x-text-size", "")
                data, total = b"", 0
                async for chunk in resp.aiter_bytes():  # kept up to the log budget, the rest dropped
                    total += len(chunk)
                    room = self.max_log - self.logged - len(data)
                    if room > 0:
                        data += chunk[:room]
            self.logged += len(data)
            text = pending + data.decode("utf-8", "replace")
            lines = text.split("\n")
            pending = lines.pop() if more else ""
            if not more and lines and lines[-1] == "":
                lines.pop()
            for line in lines:
                await self.ctx.log.write(self.stage, line.rstrip("\r"))
            if total > len(data) and not self.truncated:
                self.truncated = True
                await self.ctx.log.write(
                    self.stage, f"Jenkins console truncated at {self.max_log} bytes", "system")
            if not more:
                return
            if size.isdigit():
                start = int(size)
            await asyncio.sleep(self.poll)

    async def result(self, build: str) -> str:
        while True:
            data = await self.json(build + "api/json")
            if data.get("result") is not None and not data.get("building", False):
                return str(data["result"])
            await asyncio.sleep(self.poll)

    async def run(self) -> None:
        write = self.ctx.log.write
        await write(self.stage, f"Jenkins {self.spec.server}: queueing job {self.spec.job}", "system")
        queue_item = await self.trigger()
        self.build_url = await self.wait_for_build(queue_item)
        await write(self.stage, f"Jenkins build {self.build_url}", "system")
        await self.stream_console(self.build_url)
        result = await self.result(self.build_url)
        await write(self.stage, f"Jenkins result: {result}", "system")
        if result == "SUCCESS" or (result == "UNSTABLE" and self.spec.unstable_passes):
            return
        if result == "ABORTED":
            raise self._fail(f"job {self.spec.job!r} was aborted")
        raise self._fail(f"job {self.spec.job!r} ended {result}")

    async def stop(self) -> None:
        if self.build_url:
            try:
                await self.client.post(self.build_url + "stop", headers=self.headers, timeout=5.0)
            except httpx.HTTPError:
                pass


async def run_job(ctx: Any, spec: Jenkins, stage: str, timeout: float) -> None:
    """Run the stage as a Jenkins job; StageFailed on failure, timeout or cancel (the build is stopped)."""
    if not allowed(spec.server, list(ctx.settings.jenkins_servers)):
        raise StageFailed(f"{stage}: jenkins.server {spec.server} is not one of the Jenkins servers the "
                          "operator allows (settings jenkins_servers)")
    job = _Job(ctx, spec, stage)
    try:
        work = asyncio.create_task(job.run())
        cancel = asyncio.create_task(ctx.cancelled.wait())
        try:
            done, _ = await asyncio.wait({work, cancel}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                work.result()
                return
            if cancel in done:
                failure = StageFailed("cancelled", kind="cancelled")
            else:
                failure = StageFailed(f"{stage} timed out after {timeout:.0f}s", kind="timed_out")
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await ctx.log.write(stage, f"{failure}: stopping the Jenkins build", "system")
            await job.stop()
            raise failure
        finally:
            cancel.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
    finally:
        await job.client.aclose()
