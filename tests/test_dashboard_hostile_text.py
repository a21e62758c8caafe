"""Hostile names in a real browser: ``anode-lab up`` (API, worker, dashboard) and Debian's Chromium, with runs,
tags and a side-by-side group named from a payload corpus (frames with script, meta refresh, markdown images,
``<style>`` backgrounds, audio, embeds, spreadsheet formulas, ``javascript:`` links, Plotly markup). Run detail,
Runs, Compare (runs and group) and Teaching demos are each opened once: no request may leave for another host,
no payload script may run, the tab may not navigate away, and each name must read as the text it is.

Then the same machine under a name of another site (Chromium resolves ``rebound.test`` to 127.0.0.1, as DNS
rebinding would): the API answers it 400 whatever the method, and the dashboard never renders a page for it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright
from service_helpers import ENDED, wait_for, wait_status
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, System, settle

REBOUND = "rebound.test"
PAYLOADS = (
    '=HYPERLINK("http://evil.example/f","open") <iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    '<meta http-equiv="refresh" content="0;url=http://evil.example/m"> ![x](http://evil.example/x.png) '
    "[link](javascript:window.__pwned=2) <script>window.__pwned=3</script>",
    "<style>*{background:url(http://evil.example/b.png)}</style> "
    '<audio src="http://evil.example/a.mp3" autoplay></audio> <embed src="http://evil.example/e.swf"> '
    '<a href="http://evil.example/p">plotly</a>',
)
GROUP = '<img src="http://evil.example/g.png" onerror="window.__pwned=4"> ![g](http://evil.example/g2.png)'
TAGS = ["-2+3", "+cmd", "x:red"]
SMALL = {"dataset": "moons", "n_samples": 64, "batch_size": 32, "epochs": 1, "device": "cpu", "threads": 1}
OWN = re.compile(r"(https?|wss?)://(127\.0\.0\.1|localhost)[:/]|data:|blob:|about:")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(tmp_path_factory.mktemp("anode-hostile"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def seeded(system: System) -> dict[str, Any]:
    """The group first, so the three payload runs are the newest succeeded ones (Compare's default choice)."""
    assert all(len(name) <= 200 for name in PAYLOADS)
    with httpx.Client(base_url=system.api, timeout=10) as client:
        group = client.post("/groups", json={"kind": "train", "spec": SMALL, "name": GROUP, "tags": TAGS,
                                             "methods": [{"method": "direct"}, {"method": "anode"}]})
        assert group.status_code == 201, group.text
        runs = [client.post("/runs", json={"kind": "train", "spec": SMALL, "name": name, "tags": TAGS}).json()
                for name in PAYLOADS]
        demo = client.post("/runs", json={"kind": "demo", "spec": {"name": "wrong-sign"}, "name": PAYLOADS[1],
                                          "tags": TAGS}).json()
        ids = [r["id"] for r in group.json()["runs"]] + [r["id"] for r in [*runs, demo]]
        for run_id in ids:
            assert wait_status(client, run_id, ENDED, timeout=180)["status"] == "succeeded"
    return {"group": group.json()["id"], "runs": [r["id"] for r in runs]}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"])
        try:
            yield chromium
        finally:
            chromium.close()


class Watch:
    """What a page does that no stored text may make it do: fetch from another host, leave, open a dialog."""

    def __init__(self, page: Any, home: str) -> None:
        self.outside: list[str] = []
        self.left: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: None if OWN.match(r.url) else self.outside.append(r.url))
        page.on("framenavigated", lambda f: None if f.parent_frame is not None or f.url.startswith(home)
                else self.left.append(f.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def check(self, page: Any, where: str) -> None:
        pwned = [frame.evaluate("() => window.__pwned ?? null") for frame in page.frames]
        assert not any(pwned), f"{where}: a payload's script ran ({pwned})"
        assert not page.locator("iframe[srcdoc], meta[http-equiv], audio, embed, img[src*='evil']").count(), where
        assert not self.outside, f"{where}: requests to other hosts {self.outside}"
        assert not self.left and not self.dialogs, (where, self.left, self.dialogs)
        assert not page.locator("[data-testid='stException']").count(), where


def test_hostile_names_stay_text_on_every_page(system: System, seeded: dict[str, Any], browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    watch = Watch(page, system.dashboard)

    for run_id, name in zip(seeded["runs"], PAYLOADS, strict=True):
        page.goto(f"{system.dashboard}/run?run={run_id}")
        heading = page.get_by_role("heading", level=1).filter(has_text=f"#{run_id}")
        heading.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        settle(page)
        assert heading.inner_text().strip().endswith(f"#{run_id} {name}")  # the name, character for character
        captions = [c.strip() for c in page.locator("[data-testid='stCaptionContainer']").all_inner_texts()]
        assert "tags: " + ", ".join(sorted(TAGS)) in captions, captions  # the API keeps tags sorted
        watch.check(page, f"Run detail {run_id}")

    page.goto(f"{system.dashboard}/runs")
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=120_000)
    settle(page)
    watch.check(page, "Runs")

    page.goto(f"{system.dashboard}/compare")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=120_000)
    settle(page)
    legends = plot.locator("text.legendtext")
    wait_for(lambda: legends.count() >= len(PAYLOADS), 30, "a legend entry per payload run")
    shown = set(legends.all_text_contents())
    assert {f"#{i} {n}" for i, n in zip(seeded["runs"], PAYLOADS, strict=True)} <= shown, shown
    assert not plot.locator("a").count()  # Plotly drew the <a href> of a name as text, not as a link
    watch.check(page, "Compare")

    page.goto(f"{system.dashboard}/compare?group={seeded['group']}")
    title = page.get_by_role("heading", level=1).filter(has_text="Side by side")
    title.wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    settle(page)
    assert title.inner_text().strip() == f"Side by side: {GROUP}"
    watch.check(page, "Compare group")

    page.goto(f"{system.dashboard}/demos?demo=Wrong+sign")
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    settle(page)
    watch.check(page, "Teaching demos")
    assert not watch.errors, watch.errors


def test_a_rebound_host_name_reaches_neither_the_api_nor_a_page(system: System, browser: Any) -> None:
    api_port = int(re.search(r":(\d+)/", system.api).group(1))  # type: ignore[union-attr]
    dashboard_port = int(system.dashboard.rsplit(":", 1)[1])
    before = httpx.get(f"{system.api}/runs", timeout=5).json()["count"]
    page = browser.new_page()
    # the attacker's page now resolves to this machine: same origin as the API, so it could read the answer
    answer = page.goto(f"http://{REBOUND}:{api_port}/api/v1/runs")
    assert answer is not None and answer.status == 400
    posted = page.evaluate("""async () => (await fetch('/api/v1/runs', {method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({kind: 'demo', spec: {name: 'wrong-sign'}})})).status""")
    assert posted == 400
    assert httpx.get(f"{system.api}/runs", timeout=5).json()["count"] == before
    # and the dashboard: Streamlit refuses the websocket (server.allowedHosts), so no page ever renders
    page.goto(f"http://{REBOUND}:{dashboard_port}/")
    page.wait_for_timeout(8_000)
    assert not page.get_by_role("heading", name="Launch a run").count()
    assert not page.locator("[data-testid='stSidebarNav']").count()
    # the same dashboard under its own name works
    page.goto(system.dashboard)
    page.get_by_role("heading", name="Launch a run").wait_for(timeout=60_000)
