"""Reads that a run's size cannot blow up (issue 11, finding 3), against a real API process (``anode-lab api``) over a
real SQLite store holding a million metric rows: the API's peak memory while it serves the whole history as JSON,
CSV, decimated and as an event stream; streams refused beyond the caps; a client that leaves or stops reading
frees its stream.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import NOT_A_FORM, Service, wait_for

from backend.app import API_PREFIX, create_app
from backend.db import Database, migrate
from backend.runs import repository as runs
from backend.settings import Settings

ROWS_PER_SERIES = 500_000
SERIES = ("step_time", "train_loss")
WINDOW = 1_000
PEAK_BOUND_BYTES = 64 * 2**20
"""What the API may add over idle while serving a million rows: before, one JSON read took about 550 MB."""
KEY_A, KEY_B = "reads-key-a", "reads-key-b"
ENV = {"ANODE_API_KEYS": f"{KEY_A},{KEY_B}", "ANODE_MAX_STREAMS": "3", "ANODE_MAX_STREAMS_PER_CLIENT": "2",
       "ANODE_STREAM_SEND_TIMEOUT_SECONDS": "2", "ANODE_SSE_WINDOW_POINTS": str(WINDOW),
       "ANODE_SSE_POLL_SECONDS": "0.2"}


def fill_store(data_dir: Path, rows_per_series: int) -> int:
    """A run with ``len(SERIES)`` series of ``rows_per_series`` points (value 1/step), inserted by SQLite itself."""
    settings = Settings(data_dir=data_dir)
    migrate(settings.db_url, data_dir)
    db = Database(settings.db_url)
    with db.session(write=True) as session:
        run_id = runs.add(session, kind="train", name="long", spec={}, device="cpu", tags=[]).id
    db.dispose()
    with sqlite3.connect(data_dir / "anode.db") as conn:
        for name in SERIES:
            conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                         "INSERT INTO metrics (run_id, series, step, value) SELECT ?, ?, i, 1.0 / i FROM c",
                         (rows_per_series, run_id, name))
    return run_id


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak resident set) of a process, in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, int]]:
    data_dir = tmp_path_factory.mktemp("reads")
    run_id = fill_store(data_dir, ROWS_PER_SERIES)
    service = Service(data_dir, ENV)
    try:
        service.start_api(headers={"X-API-Key": KEY_A})
        yield service, run_id
    finally:
        service.stop()


@pytest.fixture
def client(big: tuple[Service, int]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=big[0].url, headers={"X-API-Key": KEY_A}, timeout=120) as http:
        yield http


def active_streams(client: httpx.Client) -> int:
    return int(client.get("/health").json()["streams"]["active"])


@pytest.mark.slow
def test_whole_history_reads_stay_within_a_memory_bound(big: tuple[Service, int], client: httpx.Client) -> None:
    service, run_id = big
    assert service.api is not None
    client.get(f"/runs/{run_id}/metrics", params={"after_step": ROWS_PER_SERIES - 5})  # warm every code path
    idle = memory(service.api.pid)["VmRSS"]

    whole = client.get(f"/runs/{run_id}/metrics")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("application/json")
    body = whole.json()
    assert body["last_step"] == ROWS_PER_SERIES and not body["decimated"]
    for name in SERIES:
        steps, values = body["series"][name]["steps"], body["series"][name]["values"]
        assert steps == list(range(1, ROWS_PER_SERIES + 1))
        for i in (0, 1, 4_999, 5_000, 123_456, ROWS_PER_SERIES - 1):  # page edges and beyond
            assert values[i] == pytest.approx(1.0 / steps[i], rel=1e-12)
    del body, whole

    with client.stream("GET", f"/runs/{run_id}/metrics", params={"format": "csv"}) as csv:
        lines = [line for line in csv.iter_lines() if line]
    assert lines[0] == "step,step_time,train_loss" and len(lines) == ROWS_PER_SERIES + 1
    step, first, second = lines[250_000].split(",")
    assert int(step) == 250_000 and float(first) == float(second) == pytest.approx(1 / 250_000, rel=1e-12)
    del lines

    thin = client.get(f"/runs/{run_id}/metrics", params={"points": 500}).json()
    assert thin["decimated"] and thin["last_step"] == ROWS_PER_SERIES
    for name in SERIES:
        values = thin["series"][name]["values"]
        assert len(values) <= 500 and values[0] == 1.0 and min(values) == pytest.approx(1 / ROWS_PER_SERIES)

    with client.stream("GET", f"/runs/{run_id}/events") as events:  # a queued run: the stream stays open
        first_event = next(line for line in events.iter_lines() if line.startswith("data:") and "steps" in line)
    window = json.loads(first_event.removeprefix("data:"))
    assert window["more_before"] == ROWS_PER_SERIES - WINDOW + 1
    assert window["series"]["train_loss"]["steps"] == list(range(ROWS_PER_SERIES - WINDOW + 1, ROWS_PER_SERIES + 1))
    back = client.get(f"/runs/{run_id}/metrics", params={"before_step": window["more_before"],
                                                        "after_step": window["more_before"] - 11}).json()
    expected = list(range(ROWS_PER_SERIES - WINDOW - 9, ROWS_PER_SERIES - WINDOW + 1))
    assert back["series"]["train_loss"]["steps"] == expected

    peak = memory(service.api.pid)["VmHWM"]
    assert peak - idle < PEAK_BOUND_BYTES, f"the API grew by {(peak - idle) / 2**20:.0f} MiB over idle"


def test_streams_beyond_the_caps_get_429_with_retry_after(big: tuple[Service, int], client: httpx.Client) -> None:
    service, run_id = big
    url = f"{service.url}/runs/{run_id}/events"
    with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b:
        held = []
        try:
            for http, key in ((a, KEY_A), (a, KEY_A), (b, KEY_B)):
                stream = http.stream("GET", url, headers={"X-API-Key": key})
                held.append(stream)
                assert stream.__enter__().status_code == 200
            wait_for(lambda: active_streams(client) == 3, 10, "three streams held")
            per_client = a.get(url, headers={"X-API-Key": KEY_A})
            assert per_client.status_code == 429 and per_client.json()["error"] == "too_many_streams"
            assert "ANODE_MAX_STREAMS_PER_CLIENT" in per_client.json()["detail"]
            assert int(per_client.headers["Retry-After"]) >= 1
            assert per_client.headers["x-content-type-options"] == "nosniff"
            in_all = b.get(url, headers={"X-API-Key": KEY_B})
            assert in_all.status_code == 429 and "ANODE_MAX_STREAMS)" in in_all.json()["detail"]
            made_up = b.get(url, headers={"X-API-Key": "made-up"})  # not a client of its own: refused as such
            assert made_up.status_code in (401, 429)
        finally:
            for stream in held:
                stream.__exit__(None, None, None)
    wait_for(lambda: active_streams(client) == 0, 15, "the streams to be released once their clients left")


def test_a_client_that_leaves_mid_download_stops_the_read(big: tuple[Service, int], client: httpx.Client) -> None:
    service, run_id = big
    cut = "stopped reading"
    before = service.logs("api").count(cut)
    with client.stream("GET", f"/runs/{run_id}/metrics") as download:
        assert next(download.iter_bytes()).startswith(b'{"run_id"')
    wait_for(lambda: active_streams(client) == 0, 15, "the read to stop after its client left")
    time.sleep(0.5)  # the log is written as the read ends
    assert service.logs("api").count(cut) == before  # ended by the disconnect, not by the send timeout


def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(big: tuple[Service, int],
                                                                    client: httpx.Client) -> None:
    service, run_id = big
    request = (f"GET /api/v1/runs/{run_id}/metrics?format=csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"X-API-Key: {KEY_A}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sock.sendall(request)  # and never read: the server's send buffer fills and its send blocks
        wait_for(lambda: active_streams(client) == 1, 10, "the download to start")
        started = time.monotonic()
        wait_for(lambda: active_streams(client) == 0, 60, "the stalled download to be cut")
        assert time.monotonic() - started >= 1.0  # cut by the 2 s send timeout, not at once
        sock.settimeout(30)
        received = bytearray()
        while chunk := sock.recv(1 << 16):  # what was in flight, then the server's close
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and f"\n{ROWS_PER_SERIES},".encode() not in received


# ------------------------------------------------------------------------- pages, in process, with tiny pages
def expected(rows: dict[str, list[tuple[int, float | None]]], after: int | None, before: int | None) -> dict:
    series = {}
    for name, points in rows.items():
        kept = [(s, v) for s, v in points if (after is None or s > after) and (before is None or s < before)]
        if kept:
            series[name] = {"steps": [s for s, _ in kept], "values": [v for _, v in kept]}
    return series


@pytest.fixture(params=["sqlite", "postgresql"])
def paged(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, int, dict]]:
    """On both stores: PostgreSQL answers a read that fits in a page per series with the JSON it aggregates."""
    from backend.runs import reads

    monkeypatch.setattr(reads, "PAGE_ROWS", 7)  # most reads below span several pages
    url = request.getfixturevalue("postgres_server").new_url() if request.param == "postgresql" else None
    settings = Settings(data_dir=tmp_path, database_url=url)
    rows = {"acc": [(s, s / 100) for s in range(10, 61, 10)],
            "loss": [(s, None if s == 33 else 1.0 / s) for s in range(1, 51)],
            "late": [(s, float(s)) for s in range(40, 56)]}
    with TestClient(create_app(settings), base_url=f"http://localhost{API_PREFIX}") as client:
        run_id = client.post("/runs", json={"kind": "demo", "spec": {}}).json()["id"]
        db = Database(settings.db_url)
        with db.session(write=True) as session:
            for name, points in rows.items():
                runs.upsert_metrics(session, run_id, [(name, s, v) for s, v in points])
        db.dispose()
        yield client, run_id, rows


@pytest.mark.parametrize(("after", "before"), [(None, None), (5, None), (None, 41), (12, 45), (50, None), (0, 3),
                                               (45, 52)])
def test_paged_json_equals_the_history(paged: tuple[TestClient, int, dict], after: int | None,
                                       before: int | None) -> None:
    client, run_id, rows = paged
    params = {k: v for k, v in (("after_step", after), ("before_step", before)) if v is not None}
    body = client.get(f"/runs/{run_id}/metrics", params=params).json()  # streamed or whole: the same answer
    want = expected(rows, after, before)
    assert body["series"] == want and not body["decimated"]
    assert body["last_step"] == max((v["steps"][-1] for v in want.values()), default=after)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_upsert_stores_each_value_exactly_and_a_step_once(store: str, postgres_server: Any, tmp_path: Path) -> None:
    """``upsert_metrics`` (PostgreSQL: one statement over arrays; SQLite: one executemany) stores floats exactly at
    the extremes, a missing value, an int as a float, a name that needs escaping; a step reported again, in a
    later batch or twice in one, keeps its last value; the count is of distinct points."""
    url = postgres_server.new_url() if store == "postgresql" else f"sqlite:///{tmp_path / 'anode.db'}"
    migrate(url, tmp_path)
    db = Database(url)
    values = [1 / 3, 9.329432214144617e-05, 1e300, -1e-300, 5e-324, None, -0.0, 7]
    try:
        with db.session(write=True) as session:
            run_id = runs.add(session, kind="demo", name="", spec={}, device="cpu", tags=[]).id
            assert runs.upsert_metrics(session, run_id, [("all none", 1, None), ("all none", 2, None)]) == 2
            first = [(name, step, value) for name in ("loss", 'a "q\\uoted" name') for step, value in enumerate(values)]
            assert runs.upsert_metrics(session, run_id, first) == 2 * len(values)
        with db.session(write=True) as session:
            assert runs.upsert_metrics(session, run_id, [("loss", 2, 0.5), ("loss", 3, 0.25), ("loss", 2, 2.5)]) == 2
        with db.session() as session:
            stored = runs.read_metrics(session, run_id)
        expected = {(name, step): value for name, step, value in first}
        expected |= {("loss", 2): 2.5, ("loss", 3): 0.25, ("all none", 1): None, ("all none", 2): None}
        assert len(stored) == len(expected)
        for name, step, value in stored:
            want = expected[(name, step)]
            # exact equality (SQLite stores -0.0 as 0.0, which equals it)
            assert (value is None and want is None) or (isinstance(value, float) and value == want)
    finally:
        db.dispose()


def test_postgres_aggregates_a_block_into_the_same_json(postgres_server: Any, tmp_path: Path) -> None:
    """The JSON PostgreSQL builds equals, value for value, the rows read one by one: floats at the extremes of
    their range and precision, a missing value, a name that needs escaping; a block over a page per series is
    left to the stream (no body)."""
    from backend.runs import reads

    url = postgres_server.new_url()
    migrate(url, tmp_path)
    db = Database(url)
    values = [1 / 3, 0.1, 9.329432214144617e-05, 1e300, -1e-300, 5e-324, None, 2.0, -0.0, 123456789.12345679]
    try:
        with db.session(write=True) as session:
            run_id = runs.add(session, kind="demo", name="", spec={}, device="cpu", tags=[]).id
            runs.upsert_metrics(session, run_id, [(name, step, value) for name in ("loss", 'a "quoted" name')
                                                  for step, value in enumerate(values)])
        with db.session() as session:
            for after, before in [(None, None), (2, None), (None, 5), (3, 8), (20, None)]:
                built = reads.read_new_json(session, run_id, None, after_step=after, before_step=before)
                names, block = reads.read_new(session, run_id, None, after_step=after, before_step=before)
                assert built is not None and built[0] == names and built[1] is not None
                assert json.loads(built[1]) == reads.public(run_id, block).model_dump(mode="json")
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(reads, "PAGE_ROWS", len(values))
                assert reads.read_new_json(session, run_id, None, after_step=None) == (names, None)
    finally:
        db.dispose()


def test_paged_csv_and_decimation_equal_the_history(paged: tuple[TestClient, int, dict]) -> None:
    from backend.runs.reads import decimate

    client, run_id, rows = paged
    lines = client.get(f"/runs/{run_id}/metrics", params={"format": "csv"}).text.splitlines()
    assert lines[0] == "step,acc,late,loss" and len(lines) == 1 + 55 + 1  # steps 1..55 and 60
    assert lines[33] == "33,,," and lines[40] == "40,0.4,40.0,0.025" and lines[-1] == "60,0.6,,"
    thin = client.get(f"/runs/{run_id}/metrics", params={"points": 6}).json()
    assert thin["decimated"]
    for name, points in rows.items():
        steps, values = decimate([s for s, _ in points], [v for _, v in points], 6)
        assert thin["series"][name] == {"steps": steps, "values": values}


def test_event_stream_pages_forward_from_a_cursor(paged: tuple[TestClient, int, dict]) -> None:
    client, run_id, rows = paged
    assert client.post(f"/runs/{run_id}/cancel", headers=NOT_A_FORM).status_code == 200  # ended: the stream ends
    with client.stream("GET", f"/runs/{run_id}/events", params={"after_step": 4}) as response:
        events = [json.loads(line.removeprefix("data:")) for line in response.iter_lines()
                  if line.startswith("data:") and '"series"' in line]
    assert len(events) > 3 and all(len(v["steps"]) <= 7 for e in events for v in e["series"].values())
    got: dict[str, list[int]] = {}
    for event in events:
        for name, points in event["series"].items():
            got.setdefault(name, []).extend(points["steps"])
    assert got == {name: points["steps"] for name, points in expected(rows, 4, None).items()}


# ------------------------------------------------------------------------------- what a series name is
# The request schemathesis 4.32.5 sent (issue 25): an empty name and one of non-ASCII characters, answered 200 {}.
SCHEMA_VIOLATING_SERIES = "series=&series=%3F%F3%A0%80%B7%C3%B3%F1%88%90%BF%F0%9E%B4%99"


@pytest.mark.parametrize("query", [SCHEMA_VIOLATING_SERIES, "series=", "series=loss%00", "series=" + "x" * 65,
                                   "series=a%20b", "series=%C3%BCn%C3%AF", "&".join(["series=acc"] * 101)])
def test_series_outside_the_contract_get_422_naming_series(paged: tuple[TestClient, int, dict], query: str) -> None:
    client, run_id, _ = paged
    for extra in ("", "&format=csv", "&points=10"):
        response = client.get(f"/runs/{run_id}/metrics?{query}{extra}")
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request" and "series" in response.json()["detail"]


@pytest.mark.parametrize("name", ["train_loss", "anode/grad_rel_error", "adjoint(stored)/loss", "anode(c=2)_x",
                                  "probe:cosine+1", "a-b.c"])
def test_series_names_the_lab_writes_are_inside_the_contract(paged: tuple[TestClient, int, dict], name: str) -> None:
    client, run_id, _ = paged
    response = client.get(f"/runs/{run_id}/metrics", params={"series": [name, "acc"]})
    assert response.status_code == 200 and set(response.json()["series"]) == {"acc"}


def test_the_worker_refuses_to_store_a_series_outside_the_contract(tmp_path: Path) -> None:
    from backend.runs import lifecycle, repository
    from backend.runs.ingest import MetricWriter

    settings = Settings(data_dir=tmp_path)
    migrate(settings.db_url, tmp_path)
    db = Database(settings.db_url)
    with db.session(write=True) as session:
        run_id = repository.add(session, kind="train", name="", spec={}, device="cpu", tags=[]).id
        lease = lifecycle.claim(session, run_id, "w", "cpu")
    assert lease is not None
    writer = MetricWriter(lifecycle.Hold(db, lease, window=60), tmp_path, flush_seconds=0)
    writer.add(1, {"train_loss": 0.5})
    with pytest.raises(ValueError, match=r"series name 'lo ss' .*letters, digits"):
        writer.add(2, {"lo ss": 0.5})
    db.dispose()
