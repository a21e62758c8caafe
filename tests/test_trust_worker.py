"""Issue 11, worker side: each attack a client (or a careless operator) could make, replayed against real
processes (the API and worker started as a user would, or a real worker driven by the test with its real child
process and limits), with a real tmpfs and real symlinks.

1. data from a client-chosen folder, and a hand-made pickle in an allowed one;
2. specs within every field's bounds that cost too much; a run over its memory or time limit;
5. a full disk during a checkpoint;
6. a symlinked artifacts folder or file;
8. cancel of a long sweep cell, and of a run resumed from a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import signal
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
    NOT_A_FORM,
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
from backend.runs import artifacts, repository as runs
from backend.settings import Settings
from backend.workers.process import WorkerProcess

ENV = EAGER
QUICK_DEMO = {"name": "non-invertible"}
COMPARE_34_GB = {"field": "mlp", "hidden": 512, "batch": 1024, "blocks": 8, "solvers": ["rk4"], "steps": [256],
                 "dtypes": ["float64"], "timing_repeats": 1}
TRAIN_75M_STEPS = {"dataset": "moons", "n_samples": 100000, "epochs": 1000, "batch_size": 1}
LONG_CELL = {"field": "mlp", "hidden": 256, "batch": 512, "blocks": 1, "solvers": ["rk4"], "steps": [256],
             "dtypes": ["float64"], "methods": [{"method": "direct"}], "fd_check": 16, "device": "cpu"}
"""One sweep cell of about half a minute on one core (32 extra solves of 256 RK4 steps for the FD check): far
longer than the cancel test's 2 s + grace (a 128 batch, ~8 s, finished inside it once in a clean CI run)."""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("trust"), ENV).start()
    yield svc
    svc.stop()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    with in_process_worker(Settings(data_dir=tmp_path, metrics_flush_seconds=0, cancel_poll_seconds=0,
                                    torch_threads=1)) as process:
        yield process


def stored_run(worker: WorkerProcess, kind: str, spec: dict[str, Any]) -> int:
    with worker.db.session(write=True) as session:
        return runs.add(session, kind=kind, name="", spec=parse_spec(kind, spec).model_dump(mode="json"),
                        device="cpu", tags=[]).id


def row(worker: WorkerProcess, run_id: int) -> Any:
    with worker.db.session() as session:
        return runs.get(session, run_id)


# ------------------------------------------------------------------------------------ 1. code from a data file
def test_a_root_outside_the_data_folders_is_refused(client: httpx.Client, service: Service, tmp_path: Path) -> None:
    allowed = service.data_dir / "datasets"
    allowed.mkdir(exist_ok=True)
    (allowed / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    for root in ("/etc", str(tmp_path), "../..", str(allowed / ".." / "runs"), str(allowed / "elsewhere")):
        response = client.post("/runs", json={"kind": "train", "spec": {"model": "conv_ode", "dataset": "mnist",
                                                                        "root": root}})
        assert response.status_code == 422, (root, response.text)
        body = response.json()
        assert str(allowed.resolve()) in body["detail"] and "ANODE_DATA_ROOTS" in body["detail"], body
        assert [e["loc"] for e in body["errors"]] == [["spec", "root"]]


class _RunsCode:
    """What a hand-made CIFAR batch holds: unpickling it creates ``marker`` (it could run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_a_hand_made_pickle_in_an_allowed_folder_is_never_unpickled(client: httpx.Client, service: Service) -> None:
    root = service.data_dir / "datasets" / "cifar-lookalike"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    marker = service.data_dir / "pwned"
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (folder / name).write_bytes(pickle.dumps(_RunsCode(marker)))
    spec = {"model": "conv_ode", "dataset": "cifar10", "root": str(root), "width": 4, "batch_size": 8,
            "max_steps": 1, "device": "cpu"}
    run = wait_status(client, submit(client, "train", spec), ENDED)
    assert run["status"] == "failed", run
    assert str(folder / "data_batch_1") in run["message"] and "MD5" in run["message"], run["message"]
    assert "Replace it with the original" in run["message"]
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ 2. bounded in cost
@pytest.mark.parametrize(("kind", "spec", "words"), [
    pytest.param("compare", COMPARE_34_GB, ("32.5 GiB", "ANODE_MAX_RUN_BYTES", "`steps`", "`batch`", "`hidden`"),
                 id="compare-34GB"),
    pytest.param("train", TRAIN_75M_STEPS, ("3e+08 ODE solver steps", "ANODE_MAX_RUN_STEPS", "`epochs`",
                                            "`n_samples`", "`batch_size`"), id="train-75M-steps"),
])
def test_over_budget_specs_are_refused_with_estimate_limit_and_fields(client: httpx.Client, kind: str,
                                                                       spec: dict[str, Any],
                                                                       words: tuple[str, ...]) -> None:
    stored = client.get("/runs").json()["count"]
    response = client.post("/runs", json={"kind": kind, "spec": spec})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_spec" and all(w in body["detail"] for w in words), body["detail"]
    assert body["errors"] and all(e["loc"][0] == "spec" for e in body["errors"])
    assert client.get("/runs").json()["count"] == stored  # nothing stored, nothing queued


def test_threads_are_clamped_to_the_workers_setting(worker: WorkerProcess) -> None:
    spec = worker.admitted_spec("compare", {"threads": 256, "device": "auto"})
    assert spec["threads"] == 1 and spec["device"] == "cpu"
    assert worker.admitted_spec("train", {})["threads"] == 1


def test_a_run_over_its_memory_limit_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child asks for 8 GiB in one tensor, over its 1 GiB allowance: the run fails "out of memory" and the same
    worker runs the next run under the same limit."""
    from worker_stand_ins import memory_hog_child

    settings = Settings(data_dir=tmp_path, metrics_flush_seconds=0, torch_threads=1, max_run_bytes=2**30)
    with in_process_worker(settings) as worker:
        monkeypatch.setattr(worker, "child_target", memory_hog_child)
        hog = stored_run(worker, "train", TRAIN_SMALL)
        worker.execute(hog)
        failed = row(worker, hog)
        assert failed.status == "failed", failed.message
        assert failed.message.startswith("out of memory (limit 1 GiB per run, ANODE_MAX_RUN_BYTES)"), failed.message
        monkeypatch.undo()
        again = stored_run(worker, "train", TRAIN_SMALL)
        worker.execute(again)
        assert row(worker, again).status == "succeeded"


def test_a_run_over_its_time_limit_fails_and_the_worker_goes_on(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, metrics_flush_seconds=0, torch_threads=1, max_run_seconds=3)
    with in_process_worker(settings) as worker:
        slow = stored_run(worker, "train", {**TRAIN_SMALL, "n_samples": 20000, "batch_size": 4, "epochs": 50})
        started = time.monotonic()
        worker.execute(slow)
        took = time.monotonic() - started
        failed = row(worker, slow)
        assert failed.status == "failed" and failed.message.startswith("time limit: stopped after 3 s"), failed.message
        assert failed.error["type"] == "TimeLimit" and failed.error["message"] == failed.message
        assert took < 3 + 10, took  # start-up plus the kill, not the run's hours
        quick = stored_run(worker, "demo", QUICK_DEMO)
        worker.execute(quick)
        assert row(worker, quick).status == "succeeded"


# ---------------------------------------------------------------------------------------------- 5. disk full
def test_a_full_disk_during_a_checkpoint_fails_the_run_and_frees_the_space(worker: WorkerProcess) -> None:
    """The run's folder on a real 256 KiB tmpfs with 8 KiB left: the journal fits, the first checkpoint does not.
    The run fails "disk full" (not running, not re-queued), and the half-written checkpoint is gone."""
    run_id = stored_run(worker, "train", {**TRAIN_SMALL, "checkpoint_every": 3})
    folder = worker.settings.run_dir(run_id)
    with tmpfs(folder, "256k") as disk:
        fill(disk, 8192)
        worker.execute(run_id)
        leftovers = sorted(p.name for p in (folder / "checkpoints").glob("*")) if (folder / "checkpoints").is_dir() \
            else []
    run = row(worker, run_id)
    assert run.status == "failed" and run.message.startswith("disk full: "), run.message
    assert leftovers == [], leftovers
    assert run.attempt == 1
    worker.reap()
    assert row(worker, run_id).status == "failed" and worker.queues.hueys["cpu"].pending_count() == 0


# ----------------------------------------------------------------------------------------- 6. symlinked folders
def test_a_symlinked_artifact_is_not_kept(worker: WorkerProcess, tmp_path: Path) -> None:
    """A symlink in the run's artifacts folder (to a secret elsewhere) is not copied into the store, which is what the
    API serves: the run's own files are."""
    run_id = stored_run(worker, "demo", QUICK_DEMO)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("SECRET")
    folder = worker.settings.run_dir(run_id) / "artifacts"
    folder.mkdir(parents=True)
    (folder / "leak.csv").symlink_to(outside / "secret.csv")
    worker.execute(run_id)
    assert row(worker, run_id).status == "succeeded"
    with worker.db.session() as session:
        names = [a.name for a in artifacts.artifacts(session, run_id)]
    assert names and "leak.csv" not in names, names


def test_a_worker_writes_nothing_through_a_symlinked_artifacts_folder(worker: WorkerProcess, tmp_path: Path) -> None:
    run_id = stored_run(worker, "demo", QUICK_DEMO)
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = worker.settings.run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "artifacts").symlink_to(outside, target_is_directory=True)
    worker.execute(run_id)
    run = row(worker, run_id)
    assert run.status == "failed" and "symlink" in run.message, run.message
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------------------------------- 8. cancel
def test_cancel_stops_a_long_sweep_cell_within_the_grace(worker: WorkerProcess) -> None:
    """One sweep cell of about ten seconds: cancelled two seconds in, the run ends *cancelled* within the stop
    grace (3 s) plus start-up, and its message matches its metrics (none: no cell finished)."""
    from backend.workers.supervise import STOP_GRACE_S

    run_id = stored_run(worker, "compare", LONG_CELL)
    thread = threading.Thread(target=worker.execute, args=(run_id,))
    thread.start()
    wait_for(lambda: row(worker, run_id).status == "running", 30, "the run to start")
    time.sleep(2.0)
    with worker.db.session(write=True) as session:
        assert runs.request_cancel(session, run_id)
    asked = time.monotonic()
    thread.join(60)
    took = time.monotonic() - asked
    run = row(worker, run_id)
    assert run.status == "cancelled", (run.status, run.message)
    assert took < STOP_GRACE_S + 3.0, took
    with worker.db.session() as session:
        assert runs.last_step(session, run_id) is None
    assert run.message == "cancelled before its first step"


def test_a_resumed_then_cancelled_run_names_the_step_its_metrics_reach(client: httpx.Client,
                                                                        service: Service) -> None:
    """Killed after its checkpoint at step 20 with steps up to ~25 journaled, resumed by another worker from step 20,
    then cancelled: the message names the last stored step."""
    spec = {**TRAIN_SMALL, "n_samples": 2048, "batch_size": 16, "epochs": 20, "checkpoint_every": 20}
    run_id = submit(client, "train", spec)

    def last() -> int:
        return int(client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"] or 0)

    wait_for(lambda: last() >= 25, 60, "step 25")
    victim = client.get(f"/runs/{run_id}").json()
    os.kill(int(victim["worker"].split(":")[1]), signal.SIGKILL)
    service.start_worker()
    wait_for(lambda: client.get(f"/runs/{run_id}").json()["attempt"] == 2
             and client.get(f"/runs/{run_id}").json()["status"] == "running", 60, "the resumed attempt")
    assert client.post(f"/runs/{run_id}/cancel", headers=NOT_A_FORM).status_code == 200
    run = wait_status(client, run_id, ENDED, timeout=30)
    assert run["status"] == "cancelled", run
    assert run["message"] == f"cancelled after step {last()}", (run["message"], last())
