"""Several processes on one SQLite file at once: no "database is locked", no lost or doubled metric."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import EAGER, TRAIN_SMALL, Service, wait_status

from backend.db import Database, migrate
from backend.runs import repository as runs

WRITERS = 4
STEPS = 400
SERIES = ("loss", "acc", "grad_norm", "step_time", "lr")

WRITER = """
import sys
from pathlib import Path
from backend.db import Database
from backend.runs import lifecycle, repository as runs
from backend.runs.ingest import MetricWriter
url, run_id, workdir, steps, series = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
db = Database(url)
with db.session(write=True) as s:
    lease = lifecycle.claim(s, run_id, f"w{run_id}", "cpu")
assert lease is not None
hold = lifecycle.Hold(db, lease, window=60)
writer = MetricWriter(hold, Path(workdir), flush_seconds=0).start()
for step in range(1, steps + 1):
    writer.add(step, {name: step * 0.5 for name in series.split(",")})
    with db.session() as s:
        runs.cancel_requested(s, run_id)
    if step % 20 == 0:
        hold.progress = (step, steps, "")
        assert hold.heartbeat()
writer.close()
assert hold.conclude(status="succeeded", summary={"steps": steps})
"""


def test_four_writer_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'anode.db'}"
    migrate(url, tmp_path)
    db = Database(url)
    with db.session(write=True) as session:
        ids = [runs.add(session, kind="train", name="", spec={}, device="cpu", tags=[]).id for _ in range(WRITERS)]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(i), str(tmp_path / f"w{i}"), str(STEPS),
                               ",".join(SERIES)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in ids]
    reads = 0
    while any(p.poll() is None for p in procs):  # an API-like reader on the same file meanwhile
        with db.session() as session:
            runs.read_metrics(session, ids[0], after_step=max(0, (runs.last_step(session, ids[0]) or 0) - 10))
        reads += 1
    outputs = [p.communicate() for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert "database is locked" not in err
        assert proc.returncode == 0, err
    with db.session() as session:
        for run_id in ids:
            rows = runs.read_metrics(session, run_id)
            assert len(rows) == STEPS * len(SERIES)
            assert sorted({step for _, step, _ in rows}) == list(range(1, STEPS + 1))
            assert runs.get(session, run_id).status == "succeeded"  # type: ignore[union-attr]
    assert reads > 0
    db.dispose()


@pytest.fixture
def four_workers(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, EAGER)
    try:
        svc.start_api()
        for _ in range(4):
            svc.start_worker()
        yield svc
    finally:
        svc.stop()


def test_four_real_workers_train_at_once(four_workers: Service) -> None:
    with httpx.Client(base_url=four_workers.url, timeout=10) as client:
        four_workers.wait_workers(client, 4)
        ids = [client.post("/runs", json={"kind": "train", "spec": {**TRAIN_SMALL, "seed": i}}).json()["id"]
               for i in range(8)]
        finished = [wait_status(client, run_id, {"succeeded", "failed", "diverged", "cancelled"}, 180)
                    for run_id in ids]
        assert [run["status"] for run in finished] == ["succeeded"] * len(ids), finished
        assert len({run["worker"] for run in finished}) >= 2  # the work was actually shared
        for run in finished:
            steps = client.get(f"/runs/{run['id']}/metrics", params={"series": "train_loss"}).json()
            assert steps["series"]["train_loss"]["steps"] == list(range(1, run["summary"]["steps"] + 1))
    logs = four_workers.logs("worker") + four_workers.logs("api")
    assert "database is locked" not in logs and "Traceback" not in logs
