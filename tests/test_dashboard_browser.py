"""The whole system in a real browser: ``anode-lab up`` (API, worker, dashboard) in a temporary data folder on
free ports, driven by Debian's Chromium through Playwright. Launch a small training run from the form, watch it
finish on its page with its loss chart drawn, run the default sweep and a teaching demo whose images must load,
and save screenshots for the README under ``docs/screenshots/``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from playwright import sync_api as playwright
from service_helpers import FAST_LEASES, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
# The README's pictures are refreshed on purpose (ANODE_UPDATE_SCREENSHOTS=1); otherwise they go under build/.
SCREENSHOTS = ROOT / ("docs" if os.environ.get("ANODE_UPDATE_SCREENSHOTS") else "build") / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# scripts/test installs chromium, so under CI a missing browser is a failure, never a skip.
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium (apt-get install chromium; scripts/test does)")


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class System:
    """``anode-lab up`` as a child process; its printed URLs; stopped with SIGTERM like Ctrl-C."""

    def __init__(self, data_dir: Path) -> None:
        api_port = free_port()
        env = {**os.environ, **FAST_LEASES, "ANODE_DATA_DIR": str(data_dir), "ANODE_PORT": str(api_port),
               "ANODE_METRICS_FLUSH_SECONDS": "0"}
        env.pop("ANODE_API_URL", None)
        env["ANODE_DASHBOARD_PORT"] = str(free_port())
        self.log = data_dir / "up.log"
        self.process = subprocess.Popen([sys.executable, "-m", "anode_lab.cli", "up"], cwd=ROOT, env=env,
                                        stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.api = f"http://127.0.0.1:{api_port}/api/v1"
        self.dashboard = wait_for(self._dashboard_url, 90, "`anode-lab up` to print the dashboard URL", 0.2)
        wait_for(self._ready, 90, "the API, a worker and the dashboard to answer", 0.25)

    def _dashboard_url(self) -> str | None:
        assert self.process.poll() is None, f"`anode-lab up` exited:\n{self.log.read_text()}"
        found = re.search(r"dashboard\s+(http://\S+)", self.log.read_text())
        assert "not installed" not in self.log.read_text(), self.log.read_text()
        return found.group(1) if found else None

    def _ready(self) -> bool:
        try:
            workers = httpx.get(f"{self.api}/health", timeout=2).json()["workers"]
            page = httpx.get(f"{self.dashboard}/_stcore/health", timeout=2)
        except (httpx.TransportError, ValueError, KeyError):
            return False
        return bool(workers) and page.status_code == 200

    def stop(self) -> None:
        children = children_of(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in children:  # anything the launcher failed to stop
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(tmp_path_factory.mktemp("anode-up"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def settle(page: object) -> None:
    """Wait until Streamlit has finished the rerun the last action started."""
    page.wait_for_timeout(300)  # type: ignore[attr-defined]
    status = page.locator("[data-testid='stStatusWidget']")  # type: ignore[attr-defined]
    status.wait_for(state="hidden", timeout=60_000)


def set_number(page: object, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)  # type: ignore[attr-defined]
    field.fill(value)
    field.press("Enter")
    settle(page)


def test_launch_watch_compare_and_teach_in_a_browser(system: System, browser: object) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1700})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(system.dashboard)
    page.get_by_role("heading", name="Launch a run").wait_for(timeout=60_000)
    settle(page)
    for label, value in (("Points (a quarter held out)", "256"), ("Epochs", "3"), ("Batch size", "32"),
                         ("Probe interval (compare with exact DTO every k steps; 0 = off)", "4"),
                         ("CPU threads", "1")):
        set_number(page, label, value)
    page.get_by_label("Run name").fill("browser-moons")
    page.get_by_label("Run name").press("Enter")
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "launch.png"))

    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r".*/run\?run=\d+"), timeout=60_000)
    run_id = int(page.url.rsplit("=", 1)[1])
    page.get_by_text("trained", exact=False).first.wait_for(timeout=120_000)  # the status line of a finished run
    run = httpx.get(f"{system.api}/runs/{run_id}", timeout=5).json()
    assert run["status"] == "succeeded" and run["name"] == "browser-moons" and run["spec"]["epochs"] == 3
    loss = page.locator(".js-plotly-plot").filter(has_text="Loss").first
    loss.wait_for(timeout=30_000)
    assert loss.locator("svg.main-svg").count() >= 1
    assert loss.locator("path.js-line").count() >= 2  # train and test curves drawn
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "run-detail.png"))

    page.goto(f"{system.dashboard}/gradient-lab")
    page.get_by_role("button", name="Run the default sweep").click()
    page.locator(".js-plotly-plot").filter(has_text="Gradient error vs N_t").first.wait_for(timeout=120_000)
    wait_for(lambda: page.locator(".js-plotly-plot").count() >= 4, 30, "the four sweep figures")
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "gradient-lab.png"))

    page.goto(f"{system.dashboard}/demos?demo=Reconstruction+blowup")
    page.get_by_role("button", name="Run this demo").click()
    images = page.locator("[data-testid='stImage'] img")
    wait_for(lambda: images.count() >= 5, 120, "the demo's images")
    settle(page)
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed()
        loaded = partial(images.nth(index).evaluate, "img => img.complete && img.naturalWidth > 0")
        wait_for(loaded, 20, f"image {index} to load")
    page.screenshot(path=str(SCREENSHOTS / "teaching-demo.png"))
    assert not page.locator("[data-testid='stException']").count()
    assert not errors, errors
