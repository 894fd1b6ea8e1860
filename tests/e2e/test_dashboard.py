"""The dashboard in a real browser (headless Debian Chromium driven by Selenium) against the real stack:
sign-in and its errors, a real build followed live to its final status, a rollback from the page, and a
100,000-line log scrolled to its end. Screenshots are kept under .fornax/test-artifacts/ (or
$FORNAX_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest

from shared.auth import create_user
from tests.fixtures.deploy_world import remove_deployed
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images
from tests.waits import wait_until

pytestmark = pytest.mark.e2e
os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads anything

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARTIFACTS = Path(os.environ.get("FORNAX_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".fornax" /
                 "test-artifacts")
APP = dockerfile(
    "RUN mkdir -p /www",
    "COPY index.html /www/index.html",
    "RUN for i in 1 2 3 4 5 6; do printf '\\033[32mgreen line %s\\033[0m\\n' $i; sleep 0.5; done",
    "EXPOSE 8080",
    'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]',
)


@pytest.fixture(scope="module")
def services(stack, busybox_image) -> Iterator:
    for name in ("projector", "gateway", "builder", "deployer", "logstream"):
        stack.start_service(name)
    yield stack
    remove_images(f"127.0.0.1:{stack.registry_port}/ui-")


@pytest.fixture(scope="module")
def user(services, store) -> tuple[str, str]:
    name = f"ui-{uuid.uuid4().hex[:6]}"
    return name, create_user(store, name)


@pytest.fixture(scope="module")
def api(services, user) -> Api:
    return Api(services.gateway_port, *user)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    assert shutil.which("chromium") and shutil.which("chromedriver"), "scripts/install.sh installs chromium"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(driver: webdriver.Chrome, check, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: check(d))


def text(driver: webdriver.Chrome, css: str) -> str:
    # Read in one script call: the log re-draws its rows, so an element handle can go stale between calls.
    return str(driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                                     css))


def sign_in(driver: webdriver.Chrome, base: str, token: str) -> None:
    driver.get(f"{base}/ui/signin")
    field = wait(driver, lambda d: d.find_elements(By.ID, "token"))[0]
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin button").click()


def test_sign_in_and_what_errors_say(services, user, browser, store) -> None:
    base = f"http://127.0.0.1:{services.gateway_port}"
    browser.get(f"{base}/")
    wait(browser, lambda d: "Sign in" in text(d, "h1"))
    sign_in(browser, base, "fx_not-a-token")
    wait(browser, lambda d: "not valid" in text(d, "#signin-msg"))
    # A version that does not exist says so (never a blank page).
    sign_in(browser, base, user[1])
    wait(browser, lambda d: "Services" in text(d, "h1"))
    browser.get(f"{base}/ui/versions/{uuid.uuid4().hex}")
    wait(browser, lambda d: "not found" in text(d, "#error"))
    # A token revoked meanwhile (expired, rotated) sends the user back to sign in, saying why.
    other = f"ui-{uuid.uuid4().hex[:6]}"
    token = create_user(store, other)
    sign_in(browser, base, token)
    wait(browser, lambda d: "Services" in text(d, "h1"))
    Api(services.gateway_port, other, token).http.post(f"/api/v1/{other}/token/revoke")
    browser.get(f"{base}/ui/")
    wait(browser, lambda d: "invalid, expired or revoked" in text(d, "#signin-msg"))
    shot(browser, "dashboard-token-revoked")


def test_a_build_followed_live_then_a_rollback_from_the_page(services, user, api, browser, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{services.gateway_port}"
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": APP, "index.html": "one\n"})
    sid = api.create_service("shop", repo.url, public=True)["service_id"]
    assert api.wait_repo_status(sid) == "healthy"
    sign_in(browser, base, user[1])
    wait(browser, lambda d: "Services" in text(d, "h1"))

    vid = api.new_version(sid, "v1")
    started = time.monotonic()
    browser.get(f"{base}/ui/versions/{vid}")
    # Live: the coloured lines arrive while the version is still running, then the final status shows.
    wait(browser, lambda d: "green line 1" in text(d, "#log"), 120)
    first_line = time.monotonic() - started
    assert "success" not in text(browser, "#status")
    assert "green line" in text(browser, "#log .f32")
    wait(browser, lambda d: "success" in text(d, "#status"), 120)
    assert "green line 6" in text(browser, "#log")
    assert "build" in text(browser, "#stages") and "push" in text(browser, "#stages")
    print(f"\nfirst log line on the page {first_line:.2f}s after the version was requested")
    shot(browser, "dashboard-version-live")

    # #L<n> links: line numbers are anchors, and opening one highlights that line.
    browser.get(f"{base}/ui/versions/{vid}#L3")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#log .row.target[data-line='3']"), 30)

    repo.commit({"index.html": "two\n"}, "second")
    v2 = api.new_version(sid, "v2")
    assert api.wait_version(vid)["status"] == "success" and api.wait_version(v2, timeout=120)["status"] == "success"
    for version in (vid, v2):
        resp = api.http.post(f"/api/v1/{api.user}/services/{sid}/deploy",
                             json={"version_id": version, "target": "local"})
        assert resp.status_code == 202, resp.text
        wait_until(lambda v=version: any(d["version_id"] == v and d["status"] == "success" for d in
                   api.http.get(f"/api/v1/{api.user}/services/{sid}/deployments").json()["deployments"]), 90,
                   f"deploy of {version}")
    try:
        browser.get(f"{base}/ui/services/{sid}")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#targets button.rollback"), 30)
        assert "v2" in text(browser, "#targets")
        shot(browser, "dashboard-service")
        browser.find_element(By.CSS_SELECTOR, "#targets button.rollback").click()
        wait(browser, lambda d: "pinned" in text(d, "#targets .pinned") and "v1" in text(d, "#targets"), 90)
        assert "rollback" in text(browser, "#history")
        shot(browser, "dashboard-rolled-back")
        deploys = api.http.get(f"/api/v1/{api.user}/services/{sid}/deployments").json()
        assert deploys["targets"][0]["pinned"] and deploys["targets"][0]["current_version_id"] == vid
    finally:
        remove_deployed(docker.from_env(), sid)

    browser.get(f"{base}/ui/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#services tr[data-service='shop'] img"), 30)
    assert "success" in text(browser, "#services tr[data-service='shop'] .latest-status")
    shot(browser, "dashboard-services")


def test_a_100000_line_log_scrolls_to_its_end(services, user, browser, store) -> None:
    base = f"http://127.0.0.1:{services.gateway_port}"
    name, token = user
    vid, sid = "big-" + uuid.uuid4().hex, "svc-" + uuid.uuid4().hex
    now = datetime.now(UTC).isoformat()
    store.versions.insert_one({"_id": vid, "service_id": sid, "user_id": name, "name": "huge", "status": "success",
                               "trigger": "api", "stages": {}, "created_at": now, "started_at": now,
                               "finished_at": now})
    total = 100_000
    for start in range(0, total, 10_000):
        store.logs.insert_many([{"_id": f"{vid}:{seq:012d}", "version_id": vid, "seq": seq, "stage": "build",
                                 "stream": "stdout", "ts": now,
                                 "text": f"\x1b[3{seq % 7}mline {seq}\x1b[0m of the big log"}
                                for seq in range(start + 1, min(start + 10_000, total) + 1)])
    try:
        sign_in(browser, base, token)
        wait(browser, lambda d: "Services" in text(d, "h1"))
        started = time.monotonic()
        browser.get(f"{base}/ui/versions/{vid}")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#log .row[data-line='{total}']"), 180)
        print(f"\n{total:,} lines shown, scrolled to the end, in {time.monotonic() - started:.1f}s")
        assert f"line {total} of the big log" in text(browser, f"#log .row[data-line='{total}']")
        rows = browser.find_elements(By.CSS_SELECTOR, "#log .row")
        assert len(rows) < 300, "only what is visible is rendered"
        # Scrolling stays cheap: jump to the middle and back to the end.
        browser.execute_script("const l = document.getElementById('log'); l.scrollTop = l.scrollHeight / 2;")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#log .row[data-line='50000']"), 30)
        browser.execute_script("const l = document.getElementById('log'); l.scrollTop = l.scrollHeight;")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#log .row[data-line='{total}']"), 30)
        # Search within the log.
        browser.find_element(By.ID, "search").send_keys("line 77777 ")
        wait(browser, lambda d: "1 match" in text(d, "#hits"), 30)
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#log .row.hit[data-line='77777'] mark"), 30)
        shot(browser, "dashboard-100k-lines")
    finally:
        store.logs.delete_many({"version_id": vid})
        store.versions.delete_one({"_id": vid})
