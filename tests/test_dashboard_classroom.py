"""A classroom on one dashboard: thirty viewers of one live run, all through the dashboard's one process, against
a real API (with a per-client cap of two metric reads at once, so thirty viewers polling on their own would get
429s) and a real worker. Every viewer sees the run move, none is refused, and the API's access log shows about
one poll of the run per refresh interval, not thirty."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from service_helpers import EAGER, TRAIN_SMALL, Service, submit, wait_for
from streamlit.testing.v1 import AppTest

from dashboard.api_client import ApiClient, ClientSettings
from dashboard.components import shared_poll
from dashboard.live import MAX_AGE, SharedPoll

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
VIEWERS = 30
CAP = 2
"""``ANODE_MAX_STREAMS_PER_CLIENT`` of the test API: one shared poll needs one slot per watched run."""
SLOW = {**TRAIN_SMALL, "n_samples": 20_000, "batch_size": 16, "epochs": 50, "threads": 1, "optimizer": "adam",
        "lr": 0.005}
"""Minutes of small steps: live for the whole test, cancelled at its end."""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("classroom"), {**EAGER, "ANODE_MAX_STREAMS_PER_CLIENT": str(CAP)})
    svc.start(workers=1)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def live_run(service: Service) -> Iterator[int]:
    with httpx.Client(base_url=service.url, timeout=10, headers={"X-Requested-With": "test"}) as client:
        run_id = submit(client, "train", SLOW)
        wait_for(lambda: (client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"})
                          .json()["last_step"] or 0) >= 3, 90, "a few steps")
        yield run_id
        client.post(f"/runs/{run_id}/cancel")


def access_log(service: Service) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(service.data_dir.glob("api-*.log")))


def metric_polls(service: Service, run_id: int) -> int:
    """``GET /runs/{run_id}/metrics`` requests in the API's access log so far."""
    return len(re.findall(rf"GET /api/v1/runs/{run_id}/metrics[ ?]", access_log(service)))


def refused(service: Service) -> int:
    return len(re.findall(r'" 429', access_log(service)))


def wait_log(service: Service, run_id: int, at_least: int) -> int:
    return wait_for(lambda: (n := metric_polls(service, run_id)) >= at_least and n, 20, "the access log")


def test_thirty_viewers_share_one_poll_and_all_see_the_run_move(service: Service, live_run: int) -> None:
    """Three refreshes of thirty viewers at once: each refresh is one poll for all of them."""
    api = ApiClient(ClientSettings(api_url=service.url))
    poll = SharedPoll()
    start = threading.Barrier(VIEWERS)
    seen: list[list[int]] = [[] for _ in range(VIEWERS)]
    ages: list[float] = []
    refreshes = 3

    def viewer(index: int) -> None:
        for _ in range(refreshes):
            start.wait(timeout=30)
            run = poll.run(api, live_run)
            payload = poll.metrics(api, run)
            ages.append(time.monotonic() - poll._runs[live_run].payload_at)
            seen[index].append(payload["last_step"])
            time.sleep(MAX_AGE + 0.2)  # the next refresh finds the shared answer too old

    before, refused_before = wait_log(service, live_run, 1), refused(service)
    try:
        with ThreadPoolExecutor(VIEWERS) as pool:
            list(pool.map(viewer, range(VIEWERS)))  # an ApiError (a 429) would be raised here
    finally:
        api.close()
    polls = wait_log(service, live_run, before + refreshes) - before
    assert refused(service) == refused_before
    assert refreshes <= polls <= refreshes + 1, f"{polls} metric reads for {refreshes} refreshes of {VIEWERS} viewers"
    assert all(steps[-1] > steps[0] for steps in seen), f"a viewer saw no new step: {seen}"
    assert len({tuple(steps) for steps in seen}) == 1  # every viewer drew the same answers
    assert max(ages) <= MAX_AGE  # so a point is on every page within REFRESH + MAX_AGE = 2 s


@pytest.mark.slow
def test_thirty_dashboard_sessions_of_a_live_run_all_update_without_429(service: Service, live_run: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Thirty Streamlit sessions of the run's page, each drawn twice, one refresh interval apart: every one draws
    the curves, shows a newer step the second time and no error, and the API read the run's metrics once per
    refresh, not once per session. AppTest draws one session at a time (it owns Streamlit's runtime), and a
    page takes seconds to draw on this machine, so the shared poll's clock stands still while the thirty are
    drawn and moves by a refresh interval between the two rounds, as if they had been drawn at once."""
    monkeypatch.setenv("ANODE_API_URL", service.url)
    st.cache_resource.clear()
    st.cache_data.clear()
    now = [0.0]
    shared_poll().clock = lambda: now[0]  # the instance every session of this process reads through
    sessions = [AppTest.from_file(str(APP), default_timeout=120) for _ in range(VIEWERS)]

    def render(at: AppTest) -> int:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        assert any("Loss" in (c.proto.spec or "") for c in at.get("plotly_chart"))
        step: int = at.session_state["run_detail.train.last_step"]
        return step

    for at in sessions:  # opened on the landing page, as a browser opens the dashboard, then the run's page
        at.run()
        at.query_params["run"] = str(live_run)
        at.switch_page("app_pages/run_detail.py")
    before, refused_before = wait_log(service, live_run, 1), refused(service)
    first = [render(at) for at in sessions]
    now[0] += MAX_AGE + 0.5
    second = [render(at) for at in sessions]
    polls = wait_log(service, live_run, before + 2) - before
    assert refused(service) == refused_before
    assert all(b > a for a, b in zip(first, second, strict=True)), f"not every session moved: {first} → {second}"
    assert len(set(first)) == len(set(second)) == 1  # one answer per refresh, the same for every session
    assert polls == 2, f"{polls} metric reads for two refreshes of {VIEWERS} sessions"


def test_a_shared_poll_keeps_an_ended_runs_metrics_and_forgets_runs_nobody_watches() -> None:
    """At the edge only (the API answered by a handler counting its reads): an ended run's points, read after it
    ended, are not asked for again; a run nobody read for ``keep_s`` is dropped."""
    reads: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        reads.append(request.url.path)
        return httpx.Response(200, json={"series": {"train_loss": {"steps": [1], "values": [0.5]}}, "last_step": 1,
                                         "decimated": False})

    now = [0.0]
    poll = SharedPoll(max_age=1.0, keep_s=10.0, clock=lambda: now[0])
    api = ApiClient(ClientSettings(api_url="http://api.test"), transport=httpx.MockTransport(answer))
    ended: Any = {"id": 1, "status": "succeeded"}
    poll.metrics(api, ended)
    now[0] += 5.0
    assert poll.metrics(api, ended)["last_step"] == 1 and len(reads) == 1  # complete: kept, not asked again
    poll.metrics(api, {**ended, "id": 2})
    now[0] += 10.5
    poll.metrics(api, {**ended, "id": 2})
    assert len(poll) == 1  # run 1 was not read for 15.5 s > keep_s; run 2 was just read
