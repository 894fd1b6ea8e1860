"""The dashboard as a user's browser sees it (run by hand: `.venv/bin/python bench/dashboard/run.py`).

Its own local stack on free ports (projector, gateway, builder, logstream) and headless Debian Chromium
(Selenium), signed in as a user of the stack. Then:

  A. push → first log line on the page: BENCH_RUNS times (default 10), one at a time: commit, POST the
     signed GitHub push webhook, and at once open the version's page (/ui/versions/<id>; the id is derived
     from the delivery as the trigger does, like a user following the commit-status link). Latency = the
     first log row shown on the page − webhook sent, polled every 10 ms from the test driver.
  B. 1,000 lines/s arriving: one version whose build prints BENCH_LINES lines (default 10,000) at about
     1,000 lines/s while its page is open and following. Every 20 ms the driver reads the highest line
     number the page shows; afterwards each line's display time is compared with the time the builder read
     it (its `ts`): the page's lag behind the build, p50/p99/max, and the rate the page kept up with.

Prints the figures; never an assertion.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SE_OFFLINE", "true")

RUNS = int(os.environ.get("BENCH_RUNS", "10"))
LINES = int(os.environ.get("BENCH_LINES", "10000"))

_spec = importlib.util.spec_from_file_location("first_log", ROOT / "bench" / "first_log" / "run.py")
first_log = importlib.util.module_from_spec(_spec)  # its git, webhook and percentile helpers
assert _spec.loader is not None
_spec.loader.exec_module(first_log)

BURST = (
    "FROM fornax/busybox:latest\n"
    f"RUN i=0; while [ $i -lt {LINES} ]; do echo \"burst line $i\"; i=$((i+1)); "
    "[ $((i % 100)) -eq 0 ] && usleep 100000; done; true\n"
)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def highest_line(driver) -> int:
    return int(driver.execute_script(
        "const r = document.querySelectorAll('#log .row'); return r.length ? +r[r.length - 1].dataset.line : 0"))


def final(driver) -> bool:
    return bool(driver.execute_script(
        "const c = document.getElementById('conn'); return !!c && c.textContent.startsWith('ended')"))


def sign_in(driver, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/signin")
    time.sleep(0.5)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin button").click()
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def heading() -> str:
        try:
            return str(driver.find_element(By.TAG_NAME, "h1").text)
        except (NoSuchElementException, StaleElementReferenceException):  # the page is being rendered
            return ""

    deadline = time.monotonic() + 30
    while "Services" not in heading():
        if time.monotonic() > deadline:
            raise RuntimeError("sign-in did not reach the services page")
        time.sleep(0.1)


def main() -> int:
    import httpx

    from infra.local.images import ensure_busybox_image
    from infra.local.stack import Stack
    from shared.auth import create_user
    from shared.settings import Settings
    from shared.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="fornax-bench-dash-"))
    stack = Stack.on_free_ports(tmp / "stack", extra_env={"FORNAX_WORKSPACE_ROOT": str(tmp / "ws")})
    driver = None
    try:
        stack.start_infra()
        os.environ.update(stack.env())
        ensure_busybox_image()
        stack.start_services(("projector", "gateway", "builder", "logstream"))
        store = Store(Settings())
        token = create_user(store, "bench")
        base = f"http://127.0.0.1:{stack.gateway_port}"
        driver = browser()
        sign_in(driver, base, token)
        http = httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"})
        origin, work = tmp / "origin.git", tmp / "work"
        first_log.sh("git", "init", "-q", "--bare", "-b", "main", str(origin))
        first_log.sh("git", "init", "-q", "-b", "main", str(work))
        first_log.sh("git", "-C", str(work), "remote", "add", "origin", str(origin))
        first_log.commit(work, "init")
        secret = "bench-secret-123"
        created = http.post("/api/v1/bench/services",
                            json={"name": "dash", "webhook_secret": secret, "repository": {"url": str(origin)}})
        created.raise_for_status()
        sid = created.json()["service_id"]

        print(f"A. push → first log line on the page ({RUNS} runs, after one warm-up)", flush=True)
        firsts: list[float] = []
        for i in range(RUNS + 1):
            sha = first_log.commit(work, uuid.uuid4().hex)
            headers, body, delivery = first_log.signed_push(str(origin), sha, secret)
            vid = first_log.version_id_for(delivery, sid)
            t0 = time.time()
            http.post("/webhooks/github", content=body, headers=headers).raise_for_status()
            driver.get(f"{base}/ui/versions/{vid}")
            while highest_line(driver) == 0:
                if time.time() - t0 > 120:
                    raise RuntimeError(f"no log line on the page of {vid}")
                time.sleep(0.01)
            seen = time.time() - t0
            while not final(driver):
                time.sleep(0.1)
            if i:
                firsts.append(seen)
                print(f"  run {i}: first line on the page +{seen * 1000:.0f} ms", flush=True)
        print("  " + first_log.summary("push → first line on the page", firsts), flush=True)

        print(f"B. {LINES:,} lines at ~1,000 lines/s into an open, following page", flush=True)
        (work / "Dockerfile").write_text(BURST)
        first_log.sh("git", "-C", str(work), "add", "-A")
        first_log.sh("git", "-C", str(work), "-c", "user.name=B", "-c", "user.email=b@x", "commit", "-q", "-m", "burst")
        first_log.sh("git", "-C", str(work), "push", "-q", "origin", "HEAD:refs/heads/main")
        resp = http.post("/api/v1/bench/versions", json={"service_id": sid, "name": "burst"})
        resp.raise_for_status()
        vid = resp.json()["version_id"]
        driver.get(f"{base}/ui/versions/{vid}")
        shown: list[tuple[float, int]] = []
        deadline = time.time() + 600
        while not final(driver) and time.time() < deadline:
            shown.append((time.time(), highest_line(driver)))
            time.sleep(0.02)
        shown.append((time.time(), highest_line(driver)))
        lines = []
        since = 0
        while True:
            page = http.get(f"/api/v1/bench/versions/{vid}/logs", params={"since": since, "limit": 10000}).json()
            lines += page["lines"]
            if not page["has_more"]:
                break
            since = page["next_since"]
        lags, j = [], 0
        for n, line in enumerate(lines, start=1):
            while j < len(shown) and shown[j][1] < n:
                j += 1
            if j == len(shown):
                break
            if "burst line" in line["text"]:
                lags.append(shown[j][0] - float(line["ts"]))
        burst = [float(x["ts"]) for x in lines if "burst line" in x["text"]]
        rate = len(burst) / (burst[-1] - burst[0]) if len(burst) > 1 else float("nan")
        print(f"  the build printed {len(burst):,} lines at {rate:,.0f} lines/s; the page showed all "
              f"{lines and shown[-1][1]:,} rows", flush=True)
        print("  " + first_log.summary("line read by the builder → shown on the page", lags), flush=True)
        return 0
    finally:
        if driver is not None:
            driver.quit()
        stack.stop_all()
        from tests.integration.builder_helpers import remove_images

        remove_images(f"127.0.0.1:{stack.registry_port}/")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
