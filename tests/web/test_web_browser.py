"""The status page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``,
driven by Selenium through ``/usr/bin/chromedriver``, so nothing is downloaded) against a
real ``devmesh serve`` with semantic search on: log in, the overview, an incident with an
approval that changes state in place, a log line arriving in the live tail without a
reload, and a semantic search. Each page is screenshotted into the test's tmp dir and must
not overflow horizontally at a 390-px phone viewport."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import start_server
from tests.web.conftest import PASSWORD, SECRET, Seeded, seed, settings_for, web_env

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not CHROMEDRIVER.exists(),
    reason="headless Chromium is not installed (apt-get install -y chromium chromium-driver; "
    "deploy/test-services.sh does it)",
)

PHONE_WIDTH = 390
NEW_LINES = [
    ("nginx", "web1", "ERROR", "upstream connection refused to database db:5432"),
    ("nginx", "web1", "ERROR", "upstream connection refused to database db:5432"),
    ("postgres", "db1", "WARNING", "checkpoints are occurring too frequently (12 seconds apart)"),
    ("backup", "nas", "INFO", "snapshot rotated: 14 kept"),
]


@dataclass
class Site:
    base: str
    seeded: Seeded
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, graph_server: Any) -> Iterator[Site]:
    """One seeded server for the module, with the embedding model and a fast worker."""
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    info = graph_server.ensure_running()
    graph_url = f"redis://:{info.password}@{info.host}:{info.port}/browser_{time.time_ns()}"
    with pytest.MonkeyPatch.context() as mp:
        seeded = seed(settings_for(data_dir, graph_url, mp))
    env = web_env(
        data_dir,
        graph_url,
        DEVMESH_VECTORS_ENABLED="true",
        DEVMESH_EMBED_INTERVAL="0.5",
    )
    proc, base = start_server(data_dir, env=env)
    try:
        now = datetime.now(UTC).isoformat()
        lines = [
            {"timestamp": now, "service": s, "host": h, "level": lvl, "message": m}
            for s, h, lvl, m in NEW_LINES
        ]
        stored = httpx.post(f"{base}/ingest/logs", json=lines, timeout=30)
        assert stored.status_code == 200, stored.text
        yield Site(base, seeded, proc)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={PHONE_WIDTH},844")
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(driver: WebDriver, seconds: float = 15) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds)


def _check_page(driver: WebDriver, shots: Path, name: str) -> None:
    """Screenshot, and the page must fit the phone's width (no sideways scrolling)."""
    shots.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(shots / f"{name}.png"))
    inner, scroll = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth];"
    )
    assert inner == PHONE_WIDTH
    assert scroll <= inner, f"{name}: page is {scroll}px wide on a {inner}px screen"
    assert SECRET not in driver.page_source


def _log_in(driver: WebDriver, site: Site, user: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{site.base}/ui/")
    _wait(driver).until(ec.presence_of_element_located((By.NAME, "username")))
    assert "/ui/login" in driver.current_url
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button.primary").click()
    _wait(driver).until(ec.presence_of_element_located((By.ID, "overview")))


def _mark_page(driver: WebDriver) -> None:
    """Set a variable that a reload would wipe."""
    driver.execute_script("window.__devmeshNoReload = 42;")


def _not_reloaded(driver: WebDriver) -> bool:
    return driver.execute_script("return window.__devmeshNoReload === 42;") is True


def test_login_and_overview(driver: WebDriver, site: Site, tmp_path: Path) -> None:
    _log_in(driver, site, "vera")
    body = driver.find_element(By.TAG_NAME, "main").text
    assert "Open incidents" in body and "web1" in body and "db1" in body
    assert "vera · viewer" in driver.find_element(By.CSS_SELECTOR, ".who").text
    sparks = driver.find_elements(By.CSS_SELECTOR, "svg.spark polyline")
    assert sparks, "no sparkline on the overview"
    _check_page(driver, tmp_path, "overview")


def test_incident_approval_changes_state_in_place(
    driver: WebDriver, site: Site, tmp_path: Path
) -> None:
    _log_in(driver, site, "alice")
    driver.find_element(By.PARTIAL_LINK_TEXT, site.seeded.incident_id).click()
    card_id = f"action-{site.seeded.low_request}"
    _wait(driver).until(ec.presence_of_element_located((By.ID, card_id)))
    assert driver.find_elements(By.CSS_SELECTOR, "svg.graph"), "no dependency picture"
    assert driver.find_elements(By.CSS_SELECTOR, "#diagnosis a[href^='/ui/logs/event/']")
    _check_page(driver, tmp_path, "incident")
    _mark_page(driver)
    card = driver.find_element(By.ID, card_id)
    assert card.find_element(By.CSS_SELECTOR, ".state").text == "pending"
    card.find_element(By.CSS_SELECTOR, "button.approve").click()
    # read the card by script each time: htmx replaces the element, so a held reference
    # would go stale between the find and the read
    status_js = (
        "var c = document.getElementById(arguments[0]);"
        "return c ? c.querySelector('.state').getAttribute('data-status') : null;"
    )
    _wait(driver).until(lambda d: d.execute_script(status_js, card_id) == "approved")
    assert "approved by you" in driver.find_element(By.ID, card_id).text
    assert _not_reloaded(driver), "the page reloaded instead of swapping the card"
    _check_page(driver, tmp_path, "incident-approved")


def test_live_tail_shows_a_new_line_without_reloading(
    driver: WebDriver, site: Site, tmp_path: Path
) -> None:
    _log_in(driver, site, "vera")
    driver.get(f"{site.base}/ui/logs?service=nginx")
    _wait(driver).until(ec.text_to_be_present_in_element((By.ID, "tail-state"), "Live tail: on"))
    _mark_page(driver)
    marker = f"browser-tail-{time.time_ns()}"
    stored = httpx.post(
        f"{site.base}/ingest/logs",
        json=[
            {
                "timestamp": datetime.now(UTC).isoformat(),
                "service": "nginx",
                "host": "web1",
                "level": "ERROR",
                "message": f"{marker} worker exited on signal 11",
            }
        ],
        timeout=10,
    )
    assert stored.status_code == 200
    _wait(driver).until(ec.text_to_be_present_in_element((By.ID, "log-rows"), marker))
    first = driver.find_element(By.CSS_SELECTOR, "#log-rows .ev")
    assert marker in first.text, "the new line is not on top"
    assert _not_reloaded(driver)
    _check_page(driver, tmp_path, "logs-live")


def test_semantic_search(driver: WebDriver, site: Site, tmp_path: Path) -> None:
    # the embedding worker embeds the new templates in the background: wait for them
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{site.base}/search", params={"q": "cannot connect to the database"}, timeout=30
        )
        if answer.status_code == 200 and answer.json()["hits"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"semantic search found nothing: {answer.status_code} {answer.text[:300]}")
    _log_in(driver, site, "vera")
    driver.get(f"{site.base}/ui/search")
    assert not driver.find_elements(By.ID, "search-off")
    _mark_page(driver)
    box = driver.find_element(By.NAME, "q")
    box.send_keys("cannot connect to the database")
    driver.find_element(By.CSS_SELECTOR, "form.filters button.primary").click()
    _wait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results .hit")))
    first = driver.find_element(By.CSS_SELECTOR, "#results .hit")
    assert "connection refused" in first.text
    assert first.find_elements(By.CSS_SELECTOR, ".ev"), "a hit without example lines"
    assert _not_reloaded(driver), "search reloaded the page instead of swapping results"
    assert "q=cannot" in driver.current_url  # hx-push-url keeps the search linkable
    _check_page(driver, tmp_path, "search")
