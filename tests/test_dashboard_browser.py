"""The whole system in a real browser: ``anode-lab up`` (API, worker, dashboard) in a temporary data folder on
free ports, driven by Debian's Chromium through Playwright. A preset fills the form and launches exactly itself;
N_t 0 launches nothing and says why under N_t; "Run side by side" makes a group whose compare page overlays one
curve per method; a run's page, the default sweep, and teaching demos in projector mode (every chart keeps its
height and its large ticks, images load); dopri5 on the launch form (tolerances instead of N_t, sent as shown)
and a dopri5 sweep's error against rtol in the gradient lab; at 1280×800 in projector mode no label, tab, button or
chart title is cut. Nothing is fetched from outside the machine.
Screenshots for the README go under ``docs/screenshots/`` (``ANODE_UPDATE_SCREENSHOTS=1``), else under
``build/screenshots/``."""

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
from service_helpers import FAST_LEASES, NOT_A_FORM, free_port, kill_tree, submit, wait_for

ROOT = Path(__file__).resolve().parent.parent
# The README's pictures are refreshed on purpose (ANODE_UPDATE_SCREENSHOTS=1); otherwise they go under build/.
SCREENSHOTS = ROOT / ("docs" if os.environ.get("ANODE_UPDATE_SCREENSHOTS") else "build") / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# scripts/test installs chromium, so under CI a missing browser is a failure, never a skip.
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium (apt-get install chromium; scripts/test does)")


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
        try:
            self.dashboard = wait_for(self._dashboard_url, 90, "`anode-lab up` to print the dashboard URL", 0.2)
            wait_for(self._ready, 90, "the API, a worker and the dashboard to answer", 0.25)
        except BaseException:
            kill_tree(self.process)  # a start that failed must not leave the API, a worker or Streamlit behind
            raise

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
        """SIGTERM, as a supervisor stops it; whatever is left after 40 s is killed, process group and all."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            kill_tree(self.process)


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


def to_top(page: object) -> None:
    """Scroll Streamlit's main pane (not the window) back to the top, for a screenshot that starts at the title."""
    page.evaluate("() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop > 0) e.scrollTop = 0; })")  # type: ignore[attr-defined]
    page.wait_for_timeout(300)  # type: ignore[attr-defined]


def select(page: object, label: str, option: str) -> None:
    """Choose ``option`` (the start of its text) in the select box labelled ``label``."""
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()  # type: ignore[attr-defined]
    page.get_by_role("option", name=re.compile("^" + re.escape(option))).first.click()  # type: ignore[attr-defined]
    settle(page)


def run_count(system: System) -> int:
    return int(httpx.get(f"{system.api}/runs", timeout=5).json()["count"])


def wait_ended(system: System, run_ids: list[int], timeout: float) -> list[dict[str, object]]:
    def ended() -> list[dict[str, object]] | None:
        runs = [httpx.get(f"{system.api}/runs/{i}", timeout=5).json() for i in run_ids]
        return runs if all(r["status"] not in ("queued", "running") for r in runs) else None

    return wait_for(ended, timeout, f"runs {run_ids} to end", 0.5)


def projector_on(page: object) -> None:
    """Turn the demos page's projector mode on (it starts off)."""
    page.get_by_text("Projector mode (large type)").click()  # type: ignore[attr-defined]
    settle(page)


def projector_charts_readable(page: object) -> None:
    """Every chart keeps a plotting area of at least 250 px and draws its ticks in projector type (20 px)."""
    page.keyboard.press("End")  # type: ignore[attr-defined]  # charts below the fold are drawn when scrolled to
    page.mouse.wheel(0, 20_000)  # type: ignore[attr-defined]
    plots = page.locator(".js-plotly-plot")  # type: ignore[attr-defined]
    wait_for(lambda: plots.count() >= 1, 60, "the demo's charts")
    for index in range(plots.count()):
        plot = plots.nth(index)
        plot.scroll_into_view_if_needed()
        area = plot.locator("rect.nsewdrag").first
        assert float(area.get_attribute("height") or 0) >= 250, f"chart {index} is squeezed"
        size = plot.locator("g.xtick text").first.evaluate("t => getComputedStyle(t).fontSize")
        assert size == "20px", f"chart {index} ticks are {size}"


CUT_TEXT = r"""
() => {
  const cut = [];
  const width = document.documentElement.clientWidth;
  const html = ['button', '[role=tab]', 'label', '[data-testid=stWidgetLabel]', '[data-testid=stMarkdownContainer] p',
                'h1', 'h2', 'h3', '[data-testid=stCaptionContainer]', '[data-testid=stMetricLabel]',
                '[data-testid=stMetricValue]', 'th', '[role=columnheader]'].join(', ');
  for (const el of document.querySelectorAll(html)) {
    const box = el.getBoundingClientRect();
    const text = (el.innerText || '').trim().replace(/\s+/g, ' ').slice(0, 70);
    if (box.width === 0 || box.height === 0 || !text) continue;
    const clips = getComputedStyle(el).overflowX !== 'visible';
    if (clips && el.scrollWidth > el.clientWidth + 1) cut.push(['ellipsis', el.tagName, text]);
    if (box.right > width + 1 || box.left < -1) cut.push(['off the window', el.tagName, text]);
  }
  for (const row of document.querySelectorAll('[role=tablist]')) {
    if (row.scrollWidth > row.clientWidth + 1) cut.push(['tab row scrolls', 'TABS', row.innerText.slice(0, 120)]);
  }
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const edge = plot.getBoundingClientRect();
    for (const t of plot.querySelectorAll('text')) {
      const text = (t.textContent || '').trim().slice(0, 70);
      const box = t.getBoundingClientRect();
      if (!text || box.width === 0 || edge.width === 0) continue;
      if (box.left < edge.left - 1 || box.right > edge.right + 1 || box.top < edge.top - 1 ||
          box.bottom > edge.bottom + 1) cut.push(['past the chart', t.getAttribute('class') || 'text', text]);
    }
  }
  return cut;
}
"""
"""Every label, tab, button, heading, caption and chart text that the page draws cut: HTML text whose box is narrower
than its text (an ellipsis) or runs past the window's edge, a tab row that scrolls, and chart text (titles, ticks,
legends) reaching past its chart's edge, where Plotly clips it."""


def cut_text(page: object) -> list[list[str]]:
    """What :data:`CUT_TEXT` finds on ``page``, after scrolling to the end so every chart is drawn."""
    page.keyboard.press("End")  # type: ignore[attr-defined]
    page.mouse.wheel(0, 20_000)  # type: ignore[attr-defined]
    page.wait_for_timeout(500)  # type: ignore[attr-defined]
    return list(page.evaluate(CUT_TEXT))  # type: ignore[attr-defined]


def test_launch_side_by_side_watch_and_teach_in_a_browser(system: System, browser: object) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1700})  # type: ignore[attr-defined]
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: outside.append(request.url)
            if not re.match(r"(https?|wss?)://(127\.0\.0\.1|localhost)[:/]|data:|blob:", request.url) else None)

    # A preset fills the form, and Launch runs exactly the preset.
    page.goto(system.dashboard)
    page.get_by_role("heading", name="Launch a run").wait_for(timeout=60_000)
    settle(page)
    catalog = httpx.get(f"{system.api}/catalog", timeout=5).json()
    preset = next(p for p in catalog["presets"]["train"] if p["name"] == "moons-adjoint")
    select(page, "Start from", "moons-adjoint")
    method = page.get_by_role("combobox", name="Gradient method", exact=True)
    wait_for(lambda: method.input_value() == "adjoint", 30, "the preset's method in the form")
    settle(page)
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url(re.compile(r".*/run\?run=\d+"), timeout=60_000)
    run_id = int(page.url.rsplit("=", 1)[1])
    assert httpx.get(f"{system.api}/runs/{run_id}", timeout=5).json()["spec"] == preset["spec"]
    httpx.post(f"{system.api}/runs/{run_id}/cancel", headers=NOT_A_FORM, timeout=5)

    # N_t 0 creates no run and says why under N_t.
    page.goto(system.dashboard)
    page.get_by_role("heading", name="Launch a run").wait_for(timeout=60_000)
    settle(page)
    before = run_count(system)
    set_number(page, "N_t (steps per block)", "0")
    page.get_by_text("N_t (steps per block): must be ≥ 1; got 0").wait_for(timeout=10_000)
    page.get_by_role("button", name="Launch", exact=True).click()
    settle(page)
    page.get_by_text("Nothing was launched: fix N_t (steps per block) above.").wait_for(timeout=10_000)
    assert run_count(system) == before and "/run" not in page.url
    set_number(page, "N_t (steps per block)", "2")

    # Run side by side: a group of three runs, overlaid on the compare page, one curve per method.
    for label, value in (("Points (a quarter held out)", "256"), ("Epochs", "3"), ("Batch size", "32"),
                         ("Probe interval (compare with the exact gradient every k steps; 0 = off)", "4"),
                         ("CPU threads", "1")):
        set_number(page, label, value)
    page.get_by_label("Run name").fill("browser-moons")
    page.get_by_label("Run name").press("Enter")
    settle(page)
    to_top(page)
    page.screenshot(path=str(SCREENSHOTS / "launch.png"))
    page.get_by_role("button", name="Run side by side").click()
    page.wait_for_url(re.compile(r".*/compare\?group=\d+"), timeout=60_000)
    group = httpx.get(f"{system.api}/groups/{int(page.url.rsplit('=', 1)[1])}", timeout=5).json()
    runs = wait_ended(system, [r["id"] for r in group["runs"]], 180)
    assert [r["status"] for r in runs] == ["succeeded"] * 3
    assert [r["spec"]["ode"]["gradient"]["method"] for r in runs] == ["direct", "anode", "adjoint"]
    loss = page.locator(".js-plotly-plot").filter(has_text="Training loss")
    names = [f"{m} (#{r['id']})" for m, r in zip(("direct", "anode", "adjoint"), runs, strict=True)]
    wait_for(lambda: all(loss.first.locator("text.legendtext", has_text=n).count() for n in names), 60,
             "one curve per method in the loss chart")
    assert loss.first.locator("text.legendtext").count() == 3
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=10_000)  # the one-glance table leads
    for column in ("final test accuracy", "gradient error at the end", "peak memory ×Direct", "time ×Direct"):
        assert page.get_by_role("columnheader", name=column, include_hidden=True).count() == 1
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "side-by-side.png"))

    # A run's page: its curves, with the gradient error against the exact gradient.
    page.goto(f"{system.dashboard}/run?run={runs[2]['id']}")
    chart = page.locator(".js-plotly-plot").filter(has_text="Loss").first
    chart.wait_for(timeout=60_000)
    assert chart.locator("path.js-line").count() >= 2  # train and test curves drawn
    page.locator(".js-plotly-plot").filter(has_text="Gradient error").first.wait_for(timeout=30_000)
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "run-detail.png"))

    page.goto(f"{system.dashboard}/gradient-lab")
    page.get_by_role("button", name="Run the default sweep").click()
    page.locator(".js-plotly-plot").filter(has_text="Gradient error vs N_t").first.wait_for(timeout=180_000)
    wait_for(lambda: page.locator(".js-plotly-plot").count() >= 4, 30, "the four sweep figures")
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "gradient-lab.png"))

    # Teaching demos in projector mode (turned on; it starts off): charts keep their height and large ticks.
    page.goto(f"{system.dashboard}/demos?demo=Memory")
    projector_on(page)
    page.get_by_role("button", name="Run this demo").click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=180_000)
    settle(page)
    projector_charts_readable(page)
    page.goto(f"{system.dashboard}/demos?demo=Reconstruction+blowup")
    projector_on(page)
    page.get_by_role("button", name="Run this demo").click()
    images = page.locator("[data-testid='stImage'] img")
    wait_for(lambda: images.count() >= 5, 120, "the demo's images")
    settle(page)
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed()
        loaded = partial(images.nth(index).evaluate, "img => img.complete && img.naturalWidth > 0")
        wait_for(loaded, 20, f"image {index} to load")
    projector_charts_readable(page)
    to_top(page)
    page.screenshot(path=str(SCREENSHOTS / "teaching-demo.png"))
    for tab, chart in (("Adaptive+adjoint", "follows the tolerance"), ("Reversible+exact", "reversible one is exact")):
        page.goto(f"{system.dashboard}/demos?demo={tab}")
        projector_on(page)
        page.get_by_role("button", name="Run this demo").click()
        page.locator(".js-plotly-plot").filter(has_text=chart).first.wait_for(timeout=180_000)
        wait_for(lambda: page.locator(".js-plotly-plot").count() >= 2, 30, f"both charts of {tab}")
        settle(page)
        projector_charts_readable(page)
    assert not page.locator("[data-testid='stException']").count()
    assert not page.get_by_role("button", name="Deploy").count()  # Streamlit's toolbar is minimal under `up`
    assert not errors, errors
    assert not outside, outside  # the page works offline: nothing is fetched from another host


def slider_value(page: object, label: str) -> str:
    """The value a slider labelled ``label`` shows on its thumb."""
    slider = page.locator("[data-testid='stSlider']").filter(has_text=label).first  # type: ignore[attr-defined]
    return str(slider.locator("[data-testid='stSliderThumbValue']").inner_text())


def test_adaptive_solvers_on_the_launch_form_and_in_the_gradient_lab(system: System, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 1700})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # dopri5 replaces N_t by rtol, atol and a step limit at once, and Launch sends what they show, without steps.
    page.goto(system.dashboard)
    page.get_by_role("heading", name="Launch a run").wait_for(timeout=60_000)
    settle(page)
    select(page, "Solver", "dopri5")
    page.get_by_text("rtol (relative tolerance per step)").wait_for(timeout=10_000)
    assert page.get_by_label("N_t (steps per block)", exact=True).count() == 0
    rtol = page.locator("[data-testid='stSlider']").filter(has_text="rtol (relative").get_by_role("slider")
    rtol.focus()
    rtol.press("ArrowLeft")  # one notch tighter on the 1-2-5 scale
    settle(page)
    assert slider_value(page, "rtol (relative") == "0.0005"
    for label, value in (("Points (a quarter held out)", "256"), ("Epochs", "1"), ("Batch size", "64"),
                         ("CPU threads", "1"), ("Step limit per block (accepted and rejected)", "60")):
        set_number(page, label, value)
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url(re.compile(r".*/run\?run=\d+"), timeout=60_000)
    run = httpx.get(f"{system.api}/runs/{int(page.url.rsplit('=', 1)[1])}", timeout=5).json()
    ode = run["spec"]["ode"]
    assert (ode["solver"], ode["steps"], ode["rtol"], ode["atol"], ode["step_limit"]) == (
        "dopri5", None, 5e-4, 1e-5, 60)
    httpx.post(f"{system.api}/runs/{run['id']}/cancel", headers=NOT_A_FORM, timeout=5)

    # A sweep of dopri5 over two tolerances: the gradient lab draws its error and its cost against rtol.
    sweep = {"solvers": ["dopri5"], "tolerances": [1e-3, 1e-6], "methods": [{"method": "direct"},
             {"method": "adjoint"}], "blocks": 1, "batch": 4, "timing_repeats": 1, "device": "cpu", "threads": 1}
    with httpx.Client(base_url=system.api, timeout=10) as client:
        sweep_id = submit(client, "compare", sweep, name="dopri5 sweep")
    (ended,) = wait_ended(system, [sweep_id], 120)
    assert ended["status"] == "succeeded", ended.get("error")
    page.goto(f"{system.dashboard}/gradient-lab")
    select(page, "Sweep", f"#{ended['id']} dopri5 sweep")
    chart = page.locator(".js-plotly-plot").filter(has_text="Gradient error vs rtol").first
    chart.wait_for(timeout=60_000)
    assert set(chart.locator("g.xtick text").all_text_contents()) == {"1e-06", "0.001"}  # ticked at its tolerances
    assert chart.locator("text.legendtext", has_text="adjoint · dopri5").count() == 1
    page.locator(".js-plotly-plot").filter(has_text="Field evaluations vs rtol").first.wait_for(timeout=10_000)
    settle(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "gradient-lab-rtol.png"))
    assert not page.locator("[data-testid='stException']").count()
    assert not errors, errors


def test_the_api_docs_render_with_no_request_to_another_host(system: System, browser: object) -> None:
    """``/api/v1/docs`` (printed by ``up`` and the README) shows the API's operations, with Swagger UI's script
    and style served by the API itself: nothing is fetched from another host."""
    page = browser.new_page()  # type: ignore[attr-defined]
    outside: list[str] = []
    page.on("request", lambda request: outside.append(request.url)
            if not re.match(r"(https?)://(127\.0\.0\.1|localhost)[:/]|data:|blob:", request.url) else None)
    page.goto(f"{system.api}/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/runs" in operations and "/api/v1/health" in operations, operations
    assert not outside, outside
    page.close()


def test_a_tracked_training_loop_shows_on_run_detail_with_its_probes(system: System, browser: object) -> None:
    import torch
    from torch import nn

    import anode_core as ac
    import anode_lab

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.field, self.head = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = lambda t, y: torch.relu(self.field(y))  # noqa: E731
            return self.head(ac.odeint(f, x, torch.tensor([0.0, 1.0]), method="euler",
                                       options={"step_size": 0.25})[-1])

    torch.manual_seed(0)
    model, x = Net(), torch.randn(32, 2)
    batch = (x, (x[:, 0] > 0).long())
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with anode_lab.track(name="my own loop", url=system.api, probe=(model, batch, loss), probe_every=4) as run:
        for step in range(12):
            optimizer.zero_grad()
            value = loss(model, batch)
            value.backward()
            optimizer.step()
            run.log(step, loss=value.item())
    page = browser.new_page(viewport={"width": 1440, "height": 1700})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{system.dashboard}/run?run={run.id}")
    page.get_by_text("reported by its own training script", exact=False).or_(
        page.get_by_text("succeeded", exact=False)).first.wait_for(timeout=60_000)
    for title in ("Loss", "Gradient error against exact (each probe)", "Memory held for backward (each probe)"):
        page.locator(".js-plotly-plot").filter(has_text=title).first.wait_for(timeout=60_000)
    chart = page.locator(".js-plotly-plot").filter(has_text="Gradient error against exact (each probe)").first
    assert {"anode", "adjoint"} <= set(chart.locator("text.legendtext").all_text_contents())
    assert page.get_by_role("button", name="Rerun").count() == 0  # a tracked run is repeated by its script
    assert not page.locator("[data-testid='stException']").count()
    assert not errors, errors


def test_projector_mode_at_1280_by_800_cuts_no_label_tab_button_or_title(system: System, browser: object) -> None:
    """A laptop on a projector (1280×800, sidebar open): every page, and every demo with its results in projector
    type, shows each label, tab, button and chart title whole."""
    demos = httpx.get(f"{system.api}/catalog", timeout=5).json()["demos"]
    with httpx.Client(base_url=system.api, timeout=10) as client:
        run_ids = [submit(client, "demo", d["spec"], name=d["name"]) for d in demos]
    ended = wait_ended(system, run_ids, 300)
    assert [r["status"] for r in ended] == ["succeeded"] * len(demos), [r.get("error") for r in ended]
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    cut: dict[str, list[list[str]]] = {}
    for path, heading in (("", "Launch a run"), ("runs", "Runs"), (f"run?run={run_ids[0]}", None),
                          ("compare", "Compare runs"), ("gradient-lab", "Gradient lab")):
        page.goto(f"{system.dashboard}/{path}")
        if heading:
            page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
        settle(page)
        if path == "runs":  # the sort toggle, cut on a projector before, is there to be measured
            assert page.get_by_text("Descending", exact=True).is_visible()
        cut[path or "launch"] = cut_text(page)
    page.goto(f"{system.dashboard}/demos")
    page.get_by_role("heading", name="Teaching demos").wait_for(timeout=60_000)
    projector_on(page)
    tabs = page.get_by_role("tab").all_inner_texts()
    assert len(tabs) == len(demos), tabs
    for tab in tabs:
        page.get_by_role("tab", name=tab).click()
        settle(page)
        page.locator(".js-plotly-plot, [data-testid='stImage']").first.wait_for(timeout=60_000)
        settle(page)
        cut[f"demos/{tab}"] = cut_text(page)
    assert page.locator(".js-plotly-plot text.xtick, .js-plotly-plot g.xtick text").first.evaluate(
        "t => getComputedStyle(t).fontSize") == "20px"  # projector type is on while the walk measures
    assert {where: found for where, found in cut.items() if found} == {}
    assert not errors, errors
