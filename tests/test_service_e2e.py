"""End to end, as a user runs it: ``anode-lab api`` (uvicorn) and ``anode-lab worker`` processes on loopback, a
temporary ``ANODE_DATA_DIR``, an httpx client. Short leases (see ``FAST_LEASES``) let the reaper act in seconds.

Every test on the ``service`` fixture runs twice: ``embedded`` (SQLite store and queue, one worker) and
``distributed`` (PostgreSQL store, Redis queue, two workers: the settings docker-compose.yml uses)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import (
    FAST_LEASES,
    NOT_A_FORM,
    TRAIN_SMALL,
    Service,
    submit,
    wait_for,
    wait_status,
)

from anode_lab.specs.train import DATA_FILES

E2E_ENV = {
    **FAST_LEASES,
    "ANODE_METRICS_FLUSH_SECONDS": "0",  # every complete step is written at once: the store trails by one step
    "ANODE_CANCEL_POLL_SECONDS": "0",  # the cancel flag is read before every step
    "ANODE_CREATE_BURST": "1000",  # one test client creates 50 runs at once, and ~60 runs per configuration
}


def distributed_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Store and queue settings of the distributed configuration, on the session's Redis and PostgreSQL."""
    redis, postgres = request.getfixturevalue("redis_server"), request.getfixturevalue("postgres_server")
    return {"ANODE_QUEUE_URL": redis.new_url(), "ANODE_DATABASE_URL": postgres.new_url()}


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    distributed = request.param == "distributed"
    env = {**E2E_ENV, **(distributed_env(request) if distributed else {})}
    svc = Service(tmp_path_factory.mktemp(f"anode-{request.param}"), env).start(workers=2 if distributed else 1)
    yield svc
    svc.stop()


def read_sse(client: httpx.Client, run_id: int, headers: dict[str, str] | None = None) -> list[tuple[str, str, Any]]:
    """(event, id, data) of a whole stream, which ends by itself once the run has ended."""
    events, event, event_id, data = [], "", "", ""
    with client.stream("GET", f"/runs/{run_id}/events", headers=headers or {}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                event_id = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line.split(":", 1)[1].strip()
            elif not line and event:
                events.append((event, event_id, json.loads(data)))
                event, data = "", ""
    return events


def test_train_run_goes_queued_running_succeeded_with_live_metrics(client: httpx.Client) -> None:
    spec = {**TRAIN_SMALL, "epochs": 4}
    run_id = submit(client, "train", spec, name="moons", tags=["e2e"])
    seen: list[str] = []
    polled: dict[str, dict[int, float | None]] = {}
    cursor: int | None = None

    def poll() -> bool:
        nonlocal cursor
        status = client.get(f"/runs/{run_id}").json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        params = {} if cursor is None else {"after_step": cursor}
        batch = client.get(f"/runs/{run_id}/metrics", params=params).json()
        for name, points in batch["series"].items():
            polled.setdefault(name, {}).update(zip(points["steps"], points["values"], strict=True))
        cursor = batch["last_step"] if batch["last_step"] is not None else cursor
        return status in {"succeeded", "failed", "diverged", "cancelled"}

    wait_for(poll, 120, "the train run to end", interval=0.02)
    run = client.get(f"/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    assert seen[-1] == "succeeded" and "running" in seen and seen.index("running") < seen.index("succeeded")
    assert run["summary"]["steps"] > 0 and run["finished_at"] >= run["started_at"] >= run["created_at"]
    full = client.get(f"/runs/{run_id}/metrics").json()["series"]
    steps = run["summary"]["steps"]
    assert full["train_loss"]["steps"] == list(range(1, steps + 1))
    # incremental == full
    assert {name: dict(zip(p["steps"], p["values"], strict=True)) for name, p in full.items()} == polled
    events = read_sse(client, run_id)  # a finished run: the whole history, then end
    streamed: dict[str, dict[int, Any]] = {}
    for event, _, data in events:
        if event == "metrics":
            for name, points in data["series"].items():
                streamed.setdefault(name, {}).update(zip(points["steps"], points["values"], strict=True))
    assert streamed == polled
    assert events[-1][0] == "end" and events[-1][2]["status"] == "succeeded"
    resumed = read_sse(client, run_id, headers={"Last-Event-ID": str(steps - 3)})
    newer = [data for event, _, data in resumed if event == "metrics"]
    assert newer and newer[0]["series"]["train_loss"]["steps"] == [steps - 2, steps - 1, steps]


def test_sse_streams_a_live_run(client: httpx.Client) -> None:
    run_id = submit(client, "train", {**TRAIN_SMALL, "epochs": 3})
    events = read_sse(client, run_id)
    statuses = [data["status"] for event, _, data in events if event == "status"]
    assert statuses[-1] == "succeeded" and len(statuses) >= 2
    metric_steps = [s for event, _, data in events if event == "metrics" for s in data["series"]["train_loss"]["steps"]]
    assert metric_steps == sorted(set(metric_steps)) and metric_steps[0] == 1
    ids = [int(event_id) for _, event_id, _ in events]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        ("compare", {"solvers": ["euler"], "steps": [1, 2, 4], "device": "cpu"}, "results.csv"),
        ("demo", {"name": "wrong-sign"}, "explanation.md"),
    ],
)
def test_compare_and_demo_runs_succeed_and_artifacts_download(client: httpx.Client, service: Service, kind: str,
                                                              spec: dict[str, Any], expected: str) -> None:
    run_id = submit(client, kind, spec)
    run = wait_status(client, run_id, {"succeeded", "failed", "diverged"}, timeout=120)
    assert run["status"] == "succeeded", run
    listing = client.get(f"/runs/{run_id}/artifacts").json()
    names = [a["name"] for a in listing["data"]]
    assert expected in names and listing["count"] == len(names)
    for artifact in listing["data"]:
        response = client.get(f"/runs/{run_id}/artifacts/{artifact['name']}")
        assert response.status_code == 200
        assert len(response.content) == artifact["size"] == int(response.headers["content-length"])
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        assert response.headers["content-disposition"] == f'attachment; filename="{artifact["name"]}"'
    assert not (service.data_dir / "runs" / str(run_id)).exists()  # the worker's copy: the store serves them


def journal_last_step(service: Service, run_id: int) -> int:
    """The worker's own record of the steps it finished: its metrics journal (a batch of steps at a time)."""
    from backend.runs import journal

    return max(step for step, _ in journal.read(service.data_dir / "runs" / str(run_id)))


def test_cancel_ends_a_running_run_within_one_step(client: httpx.Client, service: Service) -> None:
    run_id = submit(client, "train", {**TRAIN_SMALL, "n_samples": 2048, "batch_size": 16, "epochs": 50})
    wait_for(lambda: (client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"] or 0)
             >= 5, 60, "a few steps")
    assert client.post(f"/runs/{run_id}/cancel", headers=NOT_A_FORM).json()["cancel_requested"]
    done_at_cancel = journal_last_step(service, run_id)  # read after the flag was committed
    run = wait_status(client, run_id, {"cancelled", "succeeded", "failed"}, timeout=30)
    assert run["status"] == "cancelled", run
    # The worker reads the flag at least every 50 ms (ANODE_CANCEL_POLL_SECONDS=0) and tells the child "stop" at
    # once; the child reads it before every step. Its reports reach the journal a batch (0.1 s) at a time. So the
    # steps after the cancel are at most what 0.1 s of batching + 50 ms of polling + the pipe take: bounded here by
    # one second's worth of steps at the run's own step time (of 6,400 steps), one step at the least.
    times = client.get(f"/runs/{run_id}/metrics", params={"series": "step_time"}).json()["series"]["step_time"]
    step_s = statistics.median(times["values"])
    assert 0 < step_s and run["summary"]["steps"] <= done_at_cancel + max(1, round(1.0 / step_s)), (
        run["summary"]["steps"], done_at_cancel, step_s)
    final = client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"]
    assert final == run["summary"]["steps"]


def test_killed_worker_run_is_requeued_and_finished_without_gaps(client: httpx.Client, service: Service) -> None:
    service.start_worker()
    service.wait_workers(client, 2)
    spec = {**TRAIN_SMALL, "n_samples": 1024, "batch_size": 16, "epochs": 6, "checkpoint_every": 25}
    run_id = submit(client, "train", spec)
    wait_for(lambda: (client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"] or 0)
             >= 40, 60, "the run to pass step 40")
    victim = client.get(f"/runs/{run_id}").json()
    assert victim["status"] == "running" and victim["attempt"] == 1
    pid = int(victim["worker"].split(":")[1])
    os.kill(pid, signal.SIGKILL)
    service.start_worker()  # the killed one is replaced, as a supervisor would
    run = wait_status(client, run_id, {"succeeded", "failed", "cancelled", "diverged"}, timeout=120)
    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2 and run["worker"] != victim["worker"]
    series = client.get(f"/runs/{run_id}/metrics").json()["series"]
    total = run["summary"]["steps"]
    for name in ("train_loss", "step_time", "train_acc"):
        assert series[name]["steps"] == list(range(1, total + 1)), name  # none missing, none twice
    lines = client.get(f"/runs/{run_id}/metrics", params={"format": "csv"}).text.splitlines()[1:]
    assert [int(line.split(",")[0]) for line in lines] == list(range(1, total + 1))


def test_a_failing_run_reports_its_error_with_a_traceback_summary(client: httpx.Client, service: Service) -> None:
    root = service.data_dir / "datasets" / "damaged"  # files where MNIST's go, so the API admits it
    for rel in DATA_FILES["mnist"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not MNIST")
    spec = {"model": "conv_ode", "dataset": "mnist", "root": str(root), "epochs": 1, "device": "cpu"}
    run = wait_status(client, submit(client, "train", spec), {"succeeded", "failed"})
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert run["error"]["type"] and run["error"]["message"] and run["error"]["traceback"]
    assert run["status_detail"].startswith(run["error"]["type"])


def test_invalid_spec_and_unknown_run_over_http(client: httpx.Client) -> None:
    response = client.post("/runs", json={"kind": "train", "spec": {"ode": {"solver": "rk45"}}})
    assert response.status_code == 422
    assert ["spec", "ode", "solver"] in [e["loc"] for e in response.json()["errors"]]
    assert client.get("/runs/987654").status_code == 404
    assert client.post("/runs/987654/cancel", headers=NOT_A_FORM).json()["error"] == "not_found"


def test_health_lists_live_workers(client: httpx.Client, service: Service) -> None:
    distributed = "ANODE_QUEUE_URL" in service.env
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["database"]["ok"]
    assert health["queue"]["backend"] == ("redis" if distributed else "sqlite")
    assert health["database"]["detail"] == ("postgresql" if distributed else "sqlite")
    assert health["devices"] == ["cpu"] and all(w["device"] == "cpu" for w in health["workers"])
    assert all(w["device_name"].startswith("cpu") and w["device_memory"] > 0 for w in health["workers"])


def test_fifty_runs_submitted_at_once_each_run_exactly_once(client: httpx.Client, service: Service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    spec = {"solvers": ["euler"], "steps": [1], "device": "cpu"}
    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(lambda i: submit(client, "compare", spec, name=f"burst-{i}"), range(50)))
    assert len(set(ids)) == 50
    finished = [wait_status(client, run_id, {"succeeded", "failed", "cancelled", "diverged"}, 180) for run_id in ids]
    assert [run["status"] for run in finished] == ["succeeded"] * 50, finished
    assert all(run["attempt"] == 1 for run in finished)
    logs = "\n".join(path.read_text() for path in service.data_dir.glob("worker-*.log"))
    started = {run_id: len(re.findall(rf"run {run_id} \(compare\) attempt \d+ started", logs)) for run_id in ids}
    assert started == dict.fromkeys(ids, 1)  # no run executed twice, by one worker or by two
    if "ANODE_QUEUE_URL" in service.env:
        assert len({run["worker"] for run in finished}) >= 2  # both workers took a share


def test_a_worker_waits_for_the_api_to_migrate_and_never_migrates_itself(service: Service, tmp_path: Path) -> None:
    """A worker pointed at an empty store waits (for the API's migration) instead of creating the schema."""
    from sqlalchemy import inspect

    from backend.db import make_engine

    if "ANODE_DATABASE_URL" in service.env:
        url = service.env["ANODE_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"  # an empty database
    else:
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    lone = Service(tmp_path, {**service.env, "ANODE_DATABASE_URL": url})
    worker = lone.start_worker()
    try:
        wait_for(lambda: "waiting for the API to migrate" in lone.logs("worker"), 60, "the worker to wait")
        assert worker.poll() is None
        engine = make_engine(url)
        assert "runs" not in inspect(engine).get_table_names()
        engine.dispose()
    finally:
        lone.stop()


def test_keys_are_enforced_by_a_real_server(tmp_path: Path) -> None:
    svc = Service(tmp_path, {"ANODE_API_KEYS": "s3cret"})
    try:
        svc.start_api(headers={"X-API-Key": "s3cret"})
        with httpx.Client(base_url=svc.url, timeout=10) as client:
            assert client.get("/runs").status_code == 401
            refused = client.get("/runs").json()
            assert refused["error"] == "unauthorized" and "X-API-Key" in refused["detail"]
            assert client.get("/runs", headers={"X-API-Key": "s3cret"}).status_code == 200
    finally:
        svc.stop()


def test_api_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "ANODE_DATA_DIR": str(tmp_path), "ANODE_HOST": "0.0.0.0", "ANODE_API_KEYS": ""}
    done = subprocess.run([sys.executable, "-m", "anode_lab.cli", "api"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "ANODE_API_KEYS" in done.stderr


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job (`cmd &`) or some supervisors


@pytest.mark.parametrize(("stop", "sigint_ignored", "access_log"), [
    (signal.SIGINT, False, False), (signal.SIGINT, True, False), (signal.SIGTERM, False, True),
], ids=["ctrl-c", "ctrl-c-with-sigint-ignored-at-start", "sigterm-with-access-log"])
def test_up_starts_everything_and_a_signal_stops_it(tmp_path: Path, stop: signal.Signals, sigint_ignored: bool,
                                                   access_log: bool) -> None:
    import subprocess
    import sys

    from service_helpers import free_port, kill_tree

    port = free_port()
    env = {**os.environ, **FAST_LEASES, "ANODE_DATA_DIR": str(tmp_path), "ANODE_PORT": str(port),
           "ANODE_DASHBOARD_PORT": str(free_port())}
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "anode_lab.cli", "up", *(["--access-log"] if access_log else [])],
                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                          preexec_fn=ignore_sigint if sigint_ignored else None)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=5) as client:
            def workers() -> list[dict[str, Any]] | None:
                try:
                    return client.get("/health").json()["workers"] or None
                except httpx.TransportError:
                    return None

            live = wait_for(workers, 90, "`anode-lab up` to serve the API with a worker")
            for _ in range(3):
                assert client.get("/runs").status_code == 200
        assert [w["device"] for w in live] == ["cpu"]
        up.send_signal(stop)  # SIGINT: what Ctrl-C sends to the terminal's foreground process
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            kill_tree(up)
    text = (tmp_path / "up.log").read_text()
    assert f"http://127.0.0.1:{port}/api/v1" in text
    assert ("GET /api/v1/runs" in text) == access_log, text  # quiet unless asked: the dashboard polls often
    assert "alembic" not in text.lower() and "Context impl" not in text, text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
    with pytest.raises(ProcessLookupError):
        os.kill(live[0]["pid"], 0)


def test_health_probes_of_the_containers(service: Service) -> None:
    """docker-compose.yml's health checks, under the same settings: `anode-lab health` (API) and
    `anode-lab health --worker` (a fresh heartbeat of a worker on this host), each failing when it should."""
    import subprocess
    import sys

    from service_helpers import free_port

    def probe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "anode_lab.cli", "health", *args], check=False,
                              env={**service.env, **env}, capture_output=True, text=True, timeout=60)

    assert probe().returncode == 0
    assert probe("--worker").returncode == 0
    down = probe(ANODE_PORT=str(free_port()))
    assert down.returncode == 1 and "did not answer" in down.stdout
    # No live worker on this host: asked for another host name (a tiny timeout would race the 0.2 s heartbeats)
    elsewhere = subprocess.run(
        [sys.executable, "-c", "from backend.health.probe import worker_problem; from backend.settings import "
         "Settings; print(worker_problem(Settings(), hostname='no-worker-here'))"],
        check=True, env=service.env, capture_output=True, text=True, timeout=60)
    assert "no worker on no-worker-here renewed its heartbeat" in elsewhere.stdout


@pytest.mark.cuda
def test_gpu_worker_honours_cuda_runs_and_reports_its_device(tmp_path: Path) -> None:
    """On a CUDA machine: the gpu worker reports its GPU (name, memory) in /health, runs a ``device: cuda`` run
    on the GPU and stores the allocator's peak (``cuda_peak_bytes``)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    props = torch.cuda.get_device_properties(0)
    svc = Service(tmp_path, E2E_ENV).start(device="gpu")
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as client:
            (worker,) = client.get("/health").json()["workers"]
            assert (worker["device"], worker["device_name"], worker["device_memory"]) == ("gpu", props.name,
                                                                                       props.total_memory)
            run = wait_status(client, submit(client, "train", {**TRAIN_SMALL, "device": "cuda"}),
                              {"succeeded", "failed", "diverged"}, timeout=180)
            assert run["status"] == "succeeded" and run["device"] == "cuda", run
            peaks = client.get(f"/runs/{run['id']}/metrics", params={"series": "cuda_peak_bytes"}).json()
            values = peaks["series"]["cuda_peak_bytes"]["values"]
            assert values and min(values) > 0
    finally:
        svc.stop()
