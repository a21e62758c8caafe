"""Several hosts, for real (issue 23, item 7): the API and two workers that share nothing but PostgreSQL and Redis.

Each worker has its own data folder (``ANODE_DATA_DIR``) and its own process group, as a worker on a second machine
would; the API has a third folder. Runs' checkpoints and artifacts reach the API, and the other worker, only through
the store. A training run resumed after its worker's group is killed (kill -9) continues on the other worker from
its last stored checkpoint, and reports every step once, with the values of the uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from service_helpers import FAST_LEASES, Service, submit, wait_for, wait_status

from anode_lab.specs import CompareSpec
from backend.db import Database
from backend.models import RunCell
from backend.runs import artifacts

TRAIN: dict[str, Any] = {"dataset": "moons", "n_samples": 1024, "batch_size": 16, "epochs": 10, "hidden": 16,
                         "width": 2, "probe_every": 0, "checkpoint_every": 20, "device": "cpu", "threads": 1}
"""640 small steps (a few seconds on one core), a checkpoint every 20."""
COMPARED = ("train_loss", "train_acc", "grad_norm", "lr", "test_loss", "test_acc", "epoch")
"""Series that are functions of the spec (not of this machine's speed or memory)."""
SWEEP: dict[str, Any] = {"solvers": ["euler", "midpoint"], "steps": [2, 4], "blocks": 1, "batch": 4,
                         "timing_repeats": 1, "device": "cpu", "threads": 1}
"""Four parts (one per solver and method setting), fanned out over both workers."""


def series(client: httpx.Client, run_id: int) -> dict[str, dict[int, str]]:
    text = client.get(f"/runs/{run_id}/metrics", params={"format": "csv", "series": list(COMPARED)}).text
    table: dict[str, dict[int, str]] = {name: {} for name in COMPARED}
    for row in csv.DictReader(io.StringIO(text)):
        for name in COMPARED:
            if row[name] != "":
                table[name][int(row["step"])] = row[name]
    return table


def fetch_artifacts(client: httpx.Client, run_id: int) -> dict[str, bytes]:
    """Every artifact of the run, through the API, checked against its listing (size and sha256)."""
    listing = client.get(f"/runs/{run_id}/artifacts").json()["data"]
    files = {}
    for entry in listing:
        response = client.get(f"/runs/{run_id}/artifacts/{entry['name']}")
        assert response.status_code == 200, response.text
        assert len(response.content) == entry["size"]
        assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
        files[entry["name"]] = response.content
    return files


def test_two_hosts_share_only_the_store(postgres_server: Any, redis_server: Any, tmp_path: Path) -> None:
    env = {**FAST_LEASES, "ANODE_DATABASE_URL": postgres_server.new_url(), "ANODE_QUEUE_URL": redis_server.new_url()}
    folders = {name: tmp_path / name for name in ("api", "host-a", "host-b")}
    for folder in folders.values():
        folder.mkdir()
    api = Service(folders["api"], env)
    hosts = {name: Service(folders[name], env) for name in ("host-a", "host-b")}
    db = Database(env["ANODE_DATABASE_URL"])
    try:
        api.start_api()
        workers = {name: host.start_worker() for name, host in hosts.items()}
        with httpx.Client(base_url=api.url, timeout=10) as client:
            api.wait_workers(client, 2)
            reference, resumed = (submit(client, "train", TRAIN, name=name) for name in ("reference", "resumed"))

            # both run at once, one per host; the host of "resumed" is killed, group and all, once its run has
            # stored a checkpoint
            def stored_checkpoint() -> str | None:
                with db.session() as session:
                    row = artifacts.checkpoint(session, resumed)
                    return row.name if row is not None else None

            first = wait_for(stored_checkpoint, 90, f"run {resumed} to keep a checkpoint in the store")
            run = client.get(f"/runs/{resumed}").json()
            assert run["status"] == "running", run
            killed = next(name for name, worker in workers.items() if f":{worker.pid}:" in run["worker"])
            survivor = next(name for name in workers if name != killed)
            os.killpg(workers[killed].pid, signal.SIGKILL)
            workers[killed].wait()

            done = wait_status(client, reference, {"succeeded", "failed"}, timeout=120)
            assert done["status"] == "succeeded", done
            again = wait_status(client, resumed, {"succeeded", "failed"}, timeout=120)
            assert again["status"] == "succeeded" and again["attempt"] == 2, again
            assert f":{workers[survivor].pid}:" in again["worker"], (again["worker"], survivor)
            logs = hosts[survivor].logs("worker")
            assert f"run {resumed} (train) attempt 2 started; resumes from the stored checkpoints/step-" in logs, logs
            resumed_at = int(logs.split(f"run {resumed} (train) attempt 2 started; resumes from the stored "
                                        "checkpoints/step-")[1][:9])
            assert resumed_at >= int(first.removeprefix("checkpoints/step-").removesuffix(".pt")) > 0

            # every step once, as the uninterrupted run reported it
            expected, got = series(client, reference), series(client, resumed)
            assert sorted(got["train_loss"]) == list(range(1, done["summary"]["steps"] + 1))
            assert resumed_at < done["summary"]["steps"]  # killed mid-way
            assert got == expected
            model = fetch_artifacts(client, reference)["model.pt"]
            assert fetch_artifacts(client, resumed)["model.pt"] == model  # resumed bit for bit on the CPU

            # the killed host comes back; a sweep fans out over both hosts, the last part's worker writes the table
            workers[killed] = hosts[killed].start_worker()
            api.wait_workers(client, 2)
            sweep = submit(client, "compare", SWEEP)
            ended = wait_status(client, sweep, {"succeeded", "failed", "cancelled"}, timeout=180)
            assert ended["status"] == "succeeded", ended
            with db.session() as session:
                part_workers = {cell.worker for cell in session.query(RunCell).filter(RunCell.run_id == sweep)}
            assert len(part_workers) == 2, part_workers
            tables = fetch_artifacts(client, sweep)
            rows = list(csv.DictReader(io.StringIO(tables["results.csv"].decode())))
            cells = len(CompareSpec.model_validate(SWEEP).grid())
            assert [row["cell"] for row in rows] == [str(i) for i in range(cells)]
            assert "slopes.csv" in tables

        # nothing of a run is left on the API's disk, nor on a worker's once the run ended (the killed host's
        # working folder of "resumed" is removed when its worker starts again)
        for folder in folders.values():
            assert not (folder / "runs").is_dir() or not list((folder / "runs").iterdir()), folder
    finally:
        db.dispose()
        for host in hosts.values():
            host.stop()
        api.stop()


def test_an_upgrade_moves_the_artifact_files_of_the_data_folder_into_the_store(tmp_path: Path) -> None:
    """Before revision 0007 artifacts were files under ``<data_dir>/runs/<id>/artifacts``, indexed in SQL: the
    upgrade copies those it finds into the store (bytes and sha256) and drops the index rows of missing files."""
    from alembic import command
    from sqlalchemy import text

    from backend.db import _alembic_config, make_engine, migrate

    url = f"sqlite:///{tmp_path / 'anode.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        config = _alembic_config(url)
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
        conn.execute(text("INSERT INTO runs (id, kind, name, spec, status, device, attempt, cancel_requested, message, "
                          "created_at, updated_at) VALUES (1, 'demo', '', '{}', 'succeeded', 'cpu', 1, 0, '', "
                          "'2026-12-07 00:00:00', '2026-12-07 00:00:00')"))
        for name in ("results.csv", "gone.png"):
            conn.execute(text("INSERT INTO artifacts (run_id, name, size, media_type, created_at) VALUES "
                              "(1, :name, 3, 'text/csv', '2026-12-07 00:00:00')"), {"name": name})
    engine.dispose()
    folder = tmp_path / "runs" / "1" / "artifacts"
    folder.mkdir(parents=True)
    content = b"a,b\n" + os.urandom(artifacts.CHUNK_BYTES + 1)  # two chunks
    (folder / "results.csv").write_bytes(content)
    migrate(url, tmp_path)
    db = Database(url)
    try:
        with db.session() as session:
            kept = [(a.name, a.kind, a.size, a.sha256) for a in artifacts.artifacts(session, 1)]
            assert kept == [("results.csv", "artifact", len(content), hashlib.sha256(content).hexdigest())]
            assert artifacts.chunk(session, 1, "results.csv", 0) + artifacts.chunk(session, 1, "results.csv", 1) == (
                content)
    finally:
        db.dispose()
