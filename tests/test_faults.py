"""Faults, injected into real processes: a worker killed (-9) while it writes metrics, the API killed during creates,
the whole embedded system killed mid-run and restarted, the database locked for a while, the disk full under a
run's folder (simulated: the journal's ``os.write`` raises ENOSPC; and, where the tests may mount, a real full
tmpfs), a run whose training raises, and a run whose loss becomes NaN.

After each: every submitted run is finished, cancelled, failed with a reason, or back in the queue; each metric
series holds every step once; the service still answers and runs new work.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import (
    EAGER,
    ENDED,
    TRAIN_SMALL,
    Service,
    fill,
    in_process_worker,
    submit,
    tmpfs,
    wait_for,
    wait_status,
)

from anode_lab.specs import parse_spec
from anode_lab.specs.train import DATA_FILES
from backend.db import Database, migrate
from backend.runs import journal, repository as runs
from backend.settings import Settings
from backend.workers.process import WorkerProcess

ENV = EAGER
SETTLED = ENDED | {"queued"}
LONG_TRAIN = {**TRAIN_SMALL, "n_samples": 1024, "batch_size": 16, "epochs": 4, "checkpoint_every": 10}
"""192 steps of a few milliseconds: long enough to be hit mid-run, short enough for the suite."""
QUICK_DEMO = {"kind": "demo", "spec": {"name": "non-invertible"}}


def last_step(client: httpx.Client, run_id: int) -> int:
    return int(client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"] or 0)


def assert_every_step_once(client: httpx.Client, run: dict[str, Any], series: tuple[str, ...] = ("train_loss",
                                                                                              "step_time")) -> None:
    """Each series has the steps 1..N, none missing and none twice (JSON and CSV alike)."""
    total = run["summary"]["steps"]
    got = client.get(f"/runs/{run['id']}/metrics").json()["series"]
    for name in series:
        assert got[name]["steps"] == list(range(1, total + 1)), name
    lines = client.get(f"/runs/{run['id']}/metrics", params={"format": "csv"}).text.splitlines()[1:]
    assert [int(line.split(",")[0]) for line in lines] == list(range(1, total + 1))


def assert_whole(client: httpx.Client) -> list[dict[str, Any]]:
    """Every stored run has a valid spec and a settled status; failed ones say why."""
    listed = client.get("/runs", params={"limit": 200}).json()["data"]
    for run in listed:
        parse_spec(run["kind"], run["spec"])
        assert run["status"] in SETTLED | {"running"}
        if run["status"] == "failed":
            assert run["error"]["type"] and run["error"]["message"] and run["status_detail"]
    return listed  # type: ignore[no-any-return]


def assert_still_serving(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    run = wait_status(client, submit(client, QUICK_DEMO["kind"], QUICK_DEMO["spec"]), ENDED, timeout=60)
    assert run["status"] == "succeeded", run


def kill(process: Any) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("faults"), ENV).start()
    yield svc
    svc.stop()


# -------------------------------------------------------------------------------------------- processes
def test_worker_killed_while_writing_metrics_with_a_torn_journal(client: httpx.Client, service: Service) -> None:
    """kill -9 in the middle of a stream of metric writes (one upsert per step), plus a record torn in half at
    the end of its journal: the next worker replays what is whole, resumes from the checkpoint, and every step is
    stored exactly once."""
    run_id = submit(client, "train", LONG_TRAIN)
    wait_for(lambda: last_step(client, run_id) >= 25, 60, "step 25")
    victim = client.get(f"/runs/{run_id}").json()
    worker = next(w for w in service.workers if w.pid == int(victim["worker"].split(":")[1]))
    kill(worker)
    with (service.data_dir / "runs" / str(run_id) / journal.FILE).open("ab") as torn:
        torn.write(b"\x40\x00\x00\x00(half a rec")
    service.start_worker()
    run = wait_status(client, run_id, ENDED, timeout=90)
    assert run["status"] == "succeeded" and run["attempt"] == 2, run
    assert_every_step_once(client, run)
    assert_still_serving(client)


def test_api_killed_during_creates(client: httpx.Client, service: Service) -> None:
    """Four clients create runs back to back; the API is killed -9 under them and started again. Every run a
    client was told about exists; no row is half-made; every stored run ends (those committed but never enqueued
    are queued again when the API starts)."""
    told: list[int] = []
    stop = threading.Event()

    def create() -> None:
        with httpx.Client(base_url=service.url, timeout=5) as own:
            while not stop.is_set():
                try:
                    response = own.post("/runs", json=QUICK_DEMO)
                except httpx.TransportError:
                    continue
                if response.status_code == 201:
                    told.append(response.json()["id"])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(told) >= 6, 30, "a few creations")
    assert service.api is not None
    kill(service.api)
    stop.set()
    for thread in threads:
        thread.join()
    service.start_api()
    listed = assert_whole(client)
    assert set(told) <= {run["id"] for run in listed}
    for run in listed:
        assert wait_status(client, run["id"], ENDED, timeout=120)["status"] == "succeeded"
    assert_still_serving(client)


def test_whole_system_killed_mid_run_and_restarted(client: httpx.Client, service: Service) -> None:
    """API and worker killed -9 together in the middle of a run (a power cut), then started again: the stale lease
    is reaped, the run resumes from its checkpoint on the new worker and no step is lost or doubled."""
    run_id = submit(client, "train", LONG_TRAIN)
    queued = submit(client, "train", {**TRAIN_SMALL, "epochs": 1})  # waits behind it
    wait_for(lambda: last_step(client, run_id) >= 25, 60, "step 25")
    assert service.api is not None
    for process in [*service.workers, service.api]:
        if process.poll() is None:
            kill(process)
    killed_at = time.monotonic()
    service.start_api()
    service.start_worker()
    wait_for(lambda: client.get(f"/runs/{run_id}").json()["attempt"] == 2, 60, "the run to be taken again")
    recovered_in = time.monotonic() - killed_at
    run = wait_status(client, run_id, ENDED, timeout=90)
    assert run["status"] == "succeeded", run
    assert_every_step_once(client, run)
    assert wait_status(client, queued, ENDED, timeout=60)["status"] == "succeeded"
    assert recovered_in < 30, recovered_in  # start-up + ANODE_HEARTBEAT_TIMEOUT_SECONDS=2 + a reaper period
    assert_still_serving(client)


def test_ctrl_c_of_up_mid_run_and_a_restart_resume_the_run(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) of a real ``anode-lab up`` in the middle of a training run that checkpoints often: the run
    goes back to the queue (not "process died"), and the next ``anode-lab up`` resumes it from its checkpoint to
    success with every step stored once."""
    import subprocess
    import sys

    from service_helpers import free_port, kill_tree

    port = free_port()
    env = {**os.environ, **EAGER, "ANODE_DATA_DIR": str(tmp_path), "ANODE_PORT": str(port),
           "ANODE_DASHBOARD_PORT": str(free_port())}

    def up(log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "anode_lab.cli", "up"], env=env, start_new_session=True,
                                stdout=open(tmp_path / log, "wb"), stderr=subprocess.STDOUT)

    def serving(client: httpx.Client) -> bool:
        try:
            return bool(client.get("/health").json()["workers"])
        except httpx.TransportError:
            return False

    first = up("up-1.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=5) as client:
            wait_for(lambda: serving(client), 90, "`anode-lab up` to serve with a worker")
            run_id = submit(client, "train", {**LONG_TRAIN, "epochs": 8})
            wait_for(lambda: last_step(client, run_id) >= 25, 60, "step 25")
            first.send_signal(signal.SIGINT)
            assert first.wait(60) == 0, (tmp_path / "up-1.log").read_text()
    finally:
        kill_tree(first)
    checkpoints = list((tmp_path / "runs" / str(run_id) / "checkpoints").glob("step-*.pt"))
    assert checkpoints, "the run saved no checkpoint when it was stopped"
    second = up("up-2.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=5) as client:
            wait_for(lambda: serving(client), 90, "the second `anode-lab up` to serve with a worker")
            run = wait_status(client, run_id, ENDED, timeout=120)
            assert run["status"] == "succeeded", (run, (tmp_path / "up-1.log").read_text())
            assert_every_step_once(client, run)
            second.send_signal(signal.SIGINT)
            assert second.wait(60) == 0
    finally:
        kill_tree(second)


def test_a_worker_with_a_broken_torchvision_says_so_and_its_runs_fail_naming_it(tmp_path: Path) -> None:
    """A torchvision that cannot be imported (a shim first on the worker's PYTHONPATH raises what a torchvision
    built for another torch raises): the worker's start-up check fails, ``/health`` is degraded and names the
    cause, and a run fails with the child's own error instead of "EOFError: unexpected EOF"."""
    shim = tmp_path / "shim" / "torchvision"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    svc = Service(tmp_path, ENV)
    try:
        svc.start_api()
        path = os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])
        svc.start_worker(env={"PYTHONPATH": path})
        with httpx.Client(base_url=svc.url, timeout=10) as client:
            def degraded() -> dict[str, Any] | None:
                health = client.get("/health").json()
                return health if health["status"] == "degraded" and health["workers"] else None

            health = wait_for(degraded, 120, "/health to report the worker's failed check")
            problem = health["workers"][0]["problem"]
            assert "cannot run experiments" in problem and "torchvision::nms does not exist" in problem, problem
            run = wait_status(client, submit(client, "train", TRAIN_SMALL), ENDED, timeout=60)
        assert run["status"] == "failed", run
        assert run["error"]["type"] == "RuntimeError", run["error"]
        assert "operator torchvision::nms does not exist" in run["status_detail"], run
    finally:
        svc.stop()


def test_database_locked_for_a_while(client: httpx.Client, service: Service) -> None:
    """Another process holds SQLite's write lock for 1.5 s (under the 2 s lease) while a run trains and a client
    creates a run: reads go on (WAL), the create waits and succeeds, the run finishes with every step."""
    run_id = submit(client, "train", LONG_TRAIN)
    wait_for(lambda: last_step(client, run_id) >= 10, 60, "step 10")
    locker = sqlite3.connect(service.data_dir / "anode.db", timeout=10, isolation_level=None)
    created: list[httpx.Response] = []
    try:
        locker.execute("BEGIN EXCLUSIVE")
        writer = threading.Thread(target=lambda: created.append(
            httpx.post(f"{service.url}/runs", json=QUICK_DEMO, timeout=30)))
        writer.start()
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            began = time.monotonic()
            assert client.get(f"/runs/{run_id}").status_code == 200
            assert time.monotonic() - began < 1.0  # readers are not blocked by the writer
            time.sleep(0.1)
    finally:
        locker.execute("COMMIT")
        locker.close()
    writer.join(30)
    assert created and created[0].status_code == 201, created
    run = wait_status(client, run_id, ENDED, timeout=90)
    assert run["status"] == "succeeded", run
    assert_every_step_once(client, run)
    assert wait_status(client, created[0].json()["id"], ENDED, timeout=60)["status"] == "succeeded"


def test_loss_becoming_nan_ends_the_run_as_diverged(client: httpx.Client) -> None:
    run = wait_status(client, submit(client, "train", {**TRAIN_SMALL, "optimizer": "sgd", "lr": 10.0}), ENDED)
    assert run["status"] == "diverged", run
    assert "nan" in run["message"].lower() and "lower `lr`" in run["message"]
    series = client.get(f"/runs/{run['id']}/metrics").json()["series"]["train_loss"]
    assert series["steps"] == list(range(1, len(series["steps"]) + 1)) and series["steps"]
    assert_still_serving(client)


def test_failing_training_reports_why(client: httpx.Client, service: Service) -> None:
    root = service.data_dir / "datasets" / "damaged"  # files where MNIST's go (the API refuses a root without them)
    for rel in DATA_FILES["mnist"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not MNIST")
    spec = {"model": "conv_ode", "dataset": "mnist", "root": str(root), "epochs": 1, "device": "cpu"}
    run = wait_status(client, submit(client, "train", spec), ENDED)
    assert run["status"] == "failed" and run["error"]["type"] and run["error"]["traceback"], run
    assert str(root) in run["error"]["message"] and "MNIST" in run["error"]["message"]
    assert_still_serving(client)


# ------------------------------------------------------------------------------------------ in the worker
@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = Settings(data_dir=tmp_path, metrics_flush_seconds=0, cancel_poll_seconds=0, torch_threads=1)
    with in_process_worker(settings) as process:
        yield process


def stored_run(worker: WorkerProcess, kind: str, spec: dict[str, Any]) -> int:
    with worker.db.session(write=True) as session:
        return runs.add(session, kind=kind, name="", spec=parse_spec(kind, spec).model_dump(mode="json"),
                        device="cpu", tags=[]).id


def outcome(worker: WorkerProcess, run_id: int) -> tuple[Any, list[int]]:
    with worker.db.session() as session:
        run = runs.get(session, run_id)
        steps = [step for name, step, _ in runs.read_metrics(session, run_id) if name == "train_loss"]
    return run, steps


def test_disk_full_under_the_journal_fails_the_run_with_the_reason(worker: WorkerProcess,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC simulated: the journal's ``os.write`` raises once the "disk" has taken two writes (a write is a batch
    of reports: the run is long enough for many). The run ends failed, saying so; the steps stored are contiguous;
    with room again the next run succeeds."""
    room = {"records": 2}
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if room["records"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        room["records"] -= 1
        return real_write(fd, data)

    monkeypatch.setattr(journal.os, "write", full_disk)
    run_id = stored_run(worker, "train", {**TRAIN_SMALL, "n_samples": 512, "batch_size": 16, "epochs": 6})
    worker.execute(run_id)
    run, steps = outcome(worker, run_id)
    assert run.status == "failed" and "No space left on device" in run.message, run.message
    assert run.error["type"] and run.error["traceback"]
    assert steps == list(range(1, len(steps) + 1))
    room["records"] = 10**9
    again = stored_run(worker, "train", {**TRAIN_SMALL, "n_samples": 128})
    worker.execute(again)
    assert outcome(worker, again)[0].status == "succeeded"


def test_a_really_full_disk_under_the_run_folder(worker: WorkerProcess, tmp_path: Path) -> None:
    """The run's folder on a real filesystem that fills up (the store stays on its own disk): the run fails with
    ENOSPC and its steps so far; on a disk with room, the next run succeeds."""
    run_id = stored_run(worker, "train", {**TRAIN_SMALL, "n_samples": 512, "batch_size": 16, "epochs": 6})
    with tmpfs(worker.settings.run_dir(run_id), "256k") as disk:  # 144 steps: the journal outgrows 4 KiB at ~60
        fill(disk, 4096)
        worker.execute(run_id)
        run, steps = outcome(worker, run_id)
    assert run.status == "failed" and "No space left on device" in run.message, run.message
    assert run.message.startswith("disk full: ")
    assert steps == list(range(1, len(steps) + 1))
    again = stored_run(worker, "train", TRAIN_SMALL)
    with tmpfs(worker.settings.run_dir(again), "256k"):
        worker.execute(again)
        assert outcome(worker, again)[0].status == "succeeded"


def test_training_that_raises_midway_fails_with_its_error(worker: WorkerProcess,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from worker_stand_ins import exploding_child

    monkeypatch.setattr(worker, "child_target", exploding_child)
    run_id = stored_run(worker, "train", TRAIN_SMALL)
    worker.execute(run_id)
    run, steps = outcome(worker, run_id)
    assert run.status == "failed" and run.error["type"] == "FloatingPointError"
    assert run.message == "FloatingPointError: the field blew up at step 6" and run.error["traceback"]
    assert steps == [1, 2, 3, 4, 5]  # reported before the error: all kept
    assert run.finished_at is not None and run.worker == worker.id


def test_api_start_requeues_a_run_committed_but_never_enqueued(tmp_path: Path) -> None:
    """The window the API-kill test may or may not hit: a run row committed, the process killed before the queue
    message was sent. The next API start queues it."""
    from fastapi.testclient import TestClient

    from backend.app import create_app

    settings = Settings(data_dir=tmp_path)
    migrate(settings.db_url, settings.data_dir)
    db = Database(settings.db_url)
    with db.session(write=True) as session:
        orphan = runs.add(session, kind="demo", name="", spec={"name": "non-invertible"}, device="cpu", tags=[]).id
    db.dispose()
    with TestClient(create_app(settings)) as client:
        huey = client.app.state.queues.hueys["cpu"]  # type: ignore[attr-defined]
        assert [huey.deserialize_task(p).args for p in huey.storage.enqueued_items()] == [(orphan,)]
