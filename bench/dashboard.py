"""Dashboard benchmark: how long the run page of a long run, and the compare page of a side-by-side group of three
long runs, take to open (target: under 2 s each).

A train run with 10,000 optimizer steps of metrics, shaped like a real one (loss, accuracy, gradient norm, step
time and learning rate every step; the gradient probe every 50 steps; test metrics and memory every 100), is
written straight into the API's store of an ``anode-lab api`` process on loopback with a temporary data folder.
Then its detail page is opened

1. in ``streamlit.testing.v1.AppTest`` (the page script with every HTTP call, no browser), cold and warm;
2. in Debian's Chromium against ``streamlit run dashboard/app.py``: from navigation until the loss chart's SVG
   is drawn (skipped with ``--no-browser`` or without chromium/playwright).

3. the compare page of a group (``POST /groups``: Direct, ANODE and the adjoint, each with the same history),
   ``/compare?group=ID``, in AppTest and in Chromium (until the loss chart is drawn with all three curves).

The API decimates each series to the points the page asks for (min and max per bucket); the raw and decimated
metrics reads are timed too, to show what decimation buys.

    python bench/dashboard.py [--steps 10000] [--repeats 5] [--no-browser]

Numbers from a shared machine are noisy: rerun before trusting an absolute.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from loopback import free_port, wait  # noqa: E402

API = "/api/v1"
TARGET_S = 2.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def metric_rows(steps: int) -> list[tuple[str, int, float]]:
    """A plausible training history: every series a real train run reports, at its real cadence."""
    rows: list[tuple[str, int, float]] = []
    for step in range(1, steps + 1):
        loss = 0.7 * math.exp(-step / 3000) + 0.05 + 0.05 * math.sin(step * 0.37) ** 2
        rows += [
            ("train_loss", step, loss),
            ("train_acc", step, 1 - loss / 1.5),
            ("grad_norm", step, 1 + loss),
            ("step_time", step, 0.004 + 0.001 * math.cos(step)),
            ("lr", step, 0.1),
        ]
        if (step - 1) % 50 == 0:
            rows += [
                ("probe_rel_error", step, 0.2 * loss),
                ("probe_cosine", step, 1 - 0.01 * loss),
                ("probe_sign_agreement", step, 0.95),
            ]
        if step % 100 == 0:
            rows += [("test_loss", step, loss * 1.1), ("test_acc", step, 1 - loss / 1.4), ("epoch", step, step // 100)]
        if step % 100 == 1:
            rows += [("peak_memory_bytes", step, 12_544.0), ("nfe_forward", step, 2.0), ("nfe_backward", step, 2.0)]
    return rows


def seed_run(url: str, data_dir: Path, steps: int) -> int:
    """A train run created through the API, its metrics written through the store's repository, then ended."""
    spec = {"dataset": "moons", "epochs": 100, "device": "cpu", "probe_every": 50}
    run = httpx.post(f"{url}/runs", json={"kind": "train", "spec": spec, "name": f"{steps} steps"}, timeout=10).json()
    fill_run(data_dir, int(run["id"]), steps)
    return int(run["id"])


def seed_group(url: str, data_dir: Path, steps: int) -> int:
    """A side-by-side group of three runs (Direct, ANODE, adjoint), each with a ``steps``-step history."""
    spec = {"dataset": "moons", "epochs": 100, "device": "cpu", "probe_every": 50}
    methods = [{"method": "direct"}, {"method": "anode"}, {"method": "adjoint"}]
    group = httpx.post(
        f"{url}/groups", json={"spec": spec, "methods": methods, "name": f"{steps} steps"}, timeout=10
    ).json()
    for run in group["runs"]:
        fill_run(data_dir, int(run["id"]), steps)
    return int(group["id"])


def fill_run(data_dir: Path, run_id: int, steps: int) -> None:
    """Claim the queued run, write its metrics through the store's repository, and end it."""
    from backend.db import Database
    from backend.runs import repository
    from backend.settings import Settings

    settings = Settings(data_dir=data_dir)
    db = Database(settings.db_url)
    rows = metric_rows(steps)
    with db.session(write=True) as session:
        assert repository.claim(session, run_id, "bench", "cpu")
    for start in range(0, len(rows), 20_000):
        with db.session(write=True) as session:
            repository.upsert_metrics(session, run_id, rows[start : start + 20_000])
    with db.session(write=True) as session:
        assert repository.finish(
            session,
            run_id,
            "bench",
            status="succeeded",
            message=f"trained {steps} steps",
            summary={"steps": steps, "epochs": steps // 100, "best_test_acc": 0.95},
        )
    db.dispose()


def time_group_apptest(url: str, group_id: int, repeats: int) -> tuple[float, list[float]]:
    """Seconds for the compare page of a group to run to completion in AppTest: cold, then warm."""
    os.environ["ANODE_API_URL"] = url
    from streamlit.testing.v1 import AppTest

    samples = []
    for _ in range(repeats + 1):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
        at.query_params["group"] = str(group_id)
        start = time.perf_counter()
        at.switch_page("app_pages/compare.py").run()
        samples.append(time.perf_counter() - start)
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.get("plotly_chart")) >= 4 and len(at.dataframe) == 1
    return samples[0], samples[1:]


GROUP_DRAWN = """(reach) => {
    const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.textContent.includes('Training loss'));
    return !!plot && !!plot._fullLayout && plot.querySelectorAll('path.js-line').length >= 3
        && plot._fullLayout.xaxis.range[1] >= reach;
}"""


def time_group_browser(url: str, group_id: int, steps: int, repeats: int) -> list[float] | None:
    """Seconds until the group's loss chart is drawn with its three curves, a fresh tab each time."""
    samples = []
    with dashboard_in_chromium(url) as opened:
        if opened is None:
            return None
        base, browser = opened
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": 1440, "height": 1200})
            page = context.new_page()
            start = time.perf_counter()
            page.goto(f"{base}/compare?group={group_id}")
            page.wait_for_function(GROUP_DRAWN, arg=steps / 2, timeout=60_000)
            samples.append(time.perf_counter() - start)
            context.close()
    return samples


@contextmanager
def dashboard_in_chromium(url: str) -> Iterator[tuple[str, Any] | None]:
    """A real Streamlit server of the dashboard against the API at ``url`` and a Chromium driven by playwright:
    ``(dashboard URL, browser)``, or ``None`` where playwright or Debian's chromium is missing."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield None
        return
    if not Path(chromium).exists():
        yield None
        return
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboard" / "app.py"),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        env={**os.environ, "ANODE_API_URL": url},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: httpx.get(f"{base}/_stcore/health", timeout=2).status_code == 200, 60, "streamlit")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            yield base, browser
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)


def time_metrics_reads(url: str, run_id: int, repeats: int) -> dict[str, tuple[float, int]]:
    """Median seconds and bytes of the full and the decimated metrics read."""
    from dashboard.views import METRIC_POINTS

    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for label, params in (("full", {}), (f"points={METRIC_POINTS}", {"points": METRIC_POINTS})):
            samples, size = [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                size = len(client.get(f"/runs/{run_id}/metrics", params=params).content)
                samples.append(time.perf_counter() - start)
            out[label] = (statistics.median(samples), size)
    return out


def time_apptest(url: str, run_id: int, repeats: int) -> tuple[float, list[float]]:
    """Seconds for the run page to run to completion in AppTest: the first (imports, caches cold), then warm."""
    os.environ["ANODE_API_URL"] = url
    from streamlit.testing.v1 import AppTest

    samples = []
    for _ in range(repeats + 1):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()  # the Launch page
        at.query_params["run"] = str(run_id)
        start = time.perf_counter()
        at.switch_page("app_pages/run_detail.py").run()
        samples.append(time.perf_counter() - start)
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.get("plotly_chart")) >= 6
    return samples[0], samples[1:]


X_RANGE = """() => {
    const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.textContent.includes('Loss'));
    return plot && plot._fullLayout && plot.querySelector('path.js-line') ? plot._fullLayout.xaxis.range[1] : null;
}"""


def _loss_drawn(page: Any, at_least: float, at_most: float = math.inf) -> None:
    """Wait until the loss chart is drawn with an x axis reaching between ``at_least`` and ``at_most``."""
    top = "Infinity" if math.isinf(at_most) else at_most
    page.wait_for_function(
        f"() => {{ const r = ({X_RANGE})(); return r !== null && r >= {at_least} && r <= {top}; }}", timeout=60_000
    )


def time_browser(url: str, long_run: int, short_run: int, steps: int, repeats: int) -> dict[str, list[float]] | None:
    """Seconds until the loss chart is drawn in Chromium, against a real Streamlit server:

    * ``new tab``: a fresh browser context opens the run's URL (Streamlit's page load and Plotly's start-up
      included), for the long run and, as a control, for a 12-step run;
    * ``in the app``: in an open dashboard showing the short run, the long run is picked in the sidebar."""
    samples: dict[str, list[float]] = {"new tab, long run": [], "new tab, 12-step run": [], "in the app, long run": []}
    with dashboard_in_chromium(url) as opened:
        if opened is None:
            return None
        base, browser = opened
        for _ in range(repeats):
            for label, run_id, reach in (
                ("new tab, long run", long_run, steps / 2),
                ("new tab, 12-step run", short_run, 1),
            ):
                context = browser.new_context(viewport={"width": 1440, "height": 1200})
                page = context.new_page()
                start = time.perf_counter()
                page.goto(f"{base}/run?run={run_id}")
                _loss_drawn(page, reach)
                samples[label].append(time.perf_counter() - start)
                context.close()
        context = browser.new_context(viewport={"width": 1440, "height": 1200})
        page = context.new_page()
        page.goto(f"{base}/run?run={short_run}")
        _loss_drawn(page, 1, 100)
        picker = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox")
        for _ in range(repeats):
            picker.click()
            start = time.perf_counter()
            page.get_by_role("option", name=f"#{long_run} ").click()
            _loss_drawn(page, steps / 2)
            samples["in the app, long run"].append(time.perf_counter() - start)
            picker.click()
            page.get_by_role("option", name=f"#{short_run} ").click()
            _loss_drawn(page, 1, 100)
        context.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="anode-bench-dashboard-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        env = {**os.environ, "ANODE_DATA_DIR": str(data_dir), "ANODE_PORT": str(port)}
        api = subprocess.Popen(
            [sys.executable, "-m", "anode_lab.cli", "api"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}{API}"
        try:
            wait(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 60, "the API")
            start = time.perf_counter()
            run_id = seed_run(url, data_dir, args.steps)
            short_run = seed_run(url, data_dir, 12)
            rows = len(metric_rows(args.steps))
            print(f"seeded run {run_id}: {args.steps} steps, {rows} metric rows in {time.perf_counter() - start:.1f} s")
            for label, (seconds, size) in time_metrics_reads(url, run_id, args.repeats).items():
                print(f"GET /runs/{run_id}/metrics {label:<12} median {seconds * 1000:7.1f} ms  {size / 1024:8.1f} KiB")
            cold, warm = time_apptest(url, run_id, args.repeats)
            print(
                f"run page in AppTest        cold {cold:.2f} s   warm median {statistics.median(warm):.2f} s "
                f"(max {max(warm):.2f} s, {len(warm)} runs)"
            )
            browser = None if args.no_browser else time_browser(url, run_id, short_run, args.steps, args.repeats)
            for label, times in (browser or {}).items():
                print(
                    f"run page in Chromium, {label:<22} median {statistics.median(times):.2f} s "
                    f"(min {min(times):.2f}, max {max(times):.2f}) to the loss chart"
                )
            if browser is None:
                print("run page in Chromium       skipped (needs playwright and Debian's chromium)")
            group_id = seed_group(url, data_dir, args.steps)
            group_cold, group_warm = time_group_apptest(url, group_id, args.repeats)
            print(
                f"group of 3 on compare page in AppTest  cold {group_cold:.2f} s   warm median "
                f"{statistics.median(group_warm):.2f} s (max {max(group_warm):.2f} s)"
            )
            group_browser = None if args.no_browser else time_group_browser(url, group_id, args.steps, args.repeats)
            if group_browser:
                print(
                    "group of 3 on compare page in Chromium, new tab  "
                    f"median {statistics.median(group_browser):.2f} s "
                    f"(min {min(group_browser):.2f}, max {max(group_browser):.2f}) to the three loss curves"
                )
        finally:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(20)
    opened = [
        statistics.median(warm),
        *([statistics.median(browser["in the app, long run"])] if browser else []),
        statistics.median(group_warm),
    ]  # a new tab's time is mostly Streamlit's start: see the 12-step control
    verdict = "ok" if max(opened) < TARGET_S else "SLOWER THAN TARGET"
    print(
        f"target: the run page of a {args.steps}-step run and the compare page of a group of three open in under "
        f"{TARGET_S:.0f} s (AppTest, and in the browser) -> {verdict}"
    )
    return 0 if max(opened) < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
