"""The rules of a run's life (:mod:`backend.runs.lifecycle`), once, on a real SQLite store: claim, heartbeat,
writes under a lease, conclude, release, reap (a stale lease, a dead process on this host) and cancel."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from anode_lab.status import RunStatus
from backend.db import Database, migrate, utcnow
from backend.models import Run
from backend.runs import artifacts, lifecycle, repository as runs
from backend.runs.artifacts import CHUNK_BYTES, LocalFile
from backend.runs.lifecycle import Hold, Lease, LeaseLost
from backend.workers import repository as workers

LEASE_S = 5.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'anode.db'}"
    migrate(url, tmp_path)
    database = Database(url)
    yield database
    database.dispose()


def new_run(db: Database) -> int:
    with db.session(write=True) as session:
        return runs.add(session, kind="train", name="", spec={}, device="cpu", tags=[]).id


def claim(db: Database, run_id: int, worker: str) -> Lease:
    with db.session(write=True) as session:
        lease = lifecycle.claim(session, run_id, worker, "cpu")
    assert lease is not None
    return lease


def row(db: Database, run_id: int) -> Run:
    with db.session() as session:
        run = runs.get(session, run_id)
        assert run is not None
        return run


def go_stale(db: Database, run_id: int) -> None:
    with db.session(write=True) as session:
        session.get(Run, run_id).heartbeat = utcnow() - timedelta(minutes=1)  # type: ignore[union-attr]


def reap(db: Database, retry_limit: int = 1) -> list[tuple[int, str]]:
    with db.session(write=True) as session:
        return lifecycle.reap(session, cutoff=utcnow() - timedelta(seconds=LEASE_S), retry_limit=retry_limit,
                              space=lifecycle.process_space())


def stored_bytes(db: Database, run_id: int, name: str) -> bytes:
    with db.session() as session:
        pieces, seq = [], 0
        while (piece := artifacts.chunk(session, run_id, name, seq)) is not None:
            pieces.append(piece)
            seq += 1
    return b"".join(pieces)


def test_checkpoints_and_artifacts_are_kept_in_the_store_under_the_lease(db: Database, tmp_path: Path) -> None:
    """A kept checkpoint replaces the one before (the store holds the latest only) and comes back byte for byte,
    in chunks, with its sha256; the run's end stores its artifacts in place of the checkpoint."""
    import hashlib

    run_id = new_run(db)
    hold = Hold(db, claim(db, run_id, "a"), window=LEASE_S / 2)
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    first.write_bytes(b"one")
    second.write_bytes(os.urandom(2 * CHUNK_BYTES + 5))  # three chunks, the last of 5 bytes
    hold.keep_checkpoint(LocalFile("checkpoints/step-000000001.pt", first))
    hold.keep_checkpoint(LocalFile("checkpoints/step-000000002.pt", second))
    with db.session() as session:
        kept = artifacts.checkpoint(session, run_id)
        assert kept is not None and kept.name == "checkpoints/step-000000002.pt" and kept.size == 2 * CHUNK_BYTES + 5
        assert kept.sha256 == hashlib.sha256(second.read_bytes()).hexdigest()
        assert artifacts.artifacts(session, run_id) == []  # a checkpoint is not an artifact
        artifacts.copy_out(session, kept, tmp_path / "back" / "step.pt")
    assert stored_bytes(db, run_id, "checkpoints/step-000000001.pt") == b""
    assert (tmp_path / "back" / "step.pt").read_bytes() == second.read_bytes()
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    assert hold.conclude(status="succeeded", files=[LocalFile("results.csv", tmp_path / "results.csv", "text/csv")])
    with db.session() as session:
        assert artifacts.checkpoint(session, run_id) is None
        assert [(a.name, a.size, a.media_type) for a in artifacts.artifacts(session, run_id)] == [
            ("results.csv", 8, "text/csv")]
    assert stored_bytes(db, run_id, "results.csv") == b"a,b\n1,2\n"
    assert stored_bytes(db, run_id, "checkpoints/step-000000002.pt") == b""


def test_one_claim_wins_and_its_lease_names_the_attempt(db: Database) -> None:
    run_id = new_run(db)
    assert claim(db, run_id, "a") == Lease(run_id, "a", 1)
    with db.session(write=True) as session:
        assert lifecycle.claim(session, run_id, "b", "cpu") is None  # a duplicate queue message
    assert row(db, run_id).worker == "a" and row(db, run_id).attempt == 1


def test_a_lost_lease_writes_nothing_even_when_its_worker_claims_the_run_again(db: Database, tmp_path: Path) -> None:
    """Attempt 1 of worker ``a`` is reaped, and ``a`` itself claims the run again (attempt 2): the run is running
    and held by ``a``, yet nothing written under attempt 1's lease lands: no heartbeat, metric, outcome,
    artifact or release."""
    run_id = new_run(db)
    old = Hold(db, claim(db, run_id, "a"), window=LEASE_S / 2)
    assert old.store_metrics([("loss", 1, 0.5)]) == 1
    go_stale(db, run_id)
    assert reap(db) == [(run_id, "cpu")]
    new = Hold(db, claim(db, run_id, "a"), window=LEASE_S / 2)
    before = row(db, run_id)
    old.progress = (9, 9, "stale")
    assert not old.heartbeat() and old.lost.is_set()
    with pytest.raises(LeaseLost, match=f"run {run_id}: attempt 1 on a lost its lease"):
        old.store_metrics([("loss", 2, 0.25)])
    with pytest.raises(LeaseLost):
        old.confirm()
    (tmp_path / "model.pt").write_bytes(b"weights")
    with pytest.raises(LeaseLost):
        old.keep_checkpoint(LocalFile("checkpoints/step-000000002.pt", tmp_path / "model.pt"))
    assert not old.conclude(status="succeeded", files=[LocalFile("model.pt", tmp_path / "model.pt")])
    assert not old.release("stopping", requeue=lambda: pytest.fail("a lost lease must not re-queue"))
    after = row(db, run_id)
    assert (after.status, after.attempt, after.progress, after.updated_at) == ("running", 2, before.progress,
                                                                              before.updated_at)
    with db.session() as session:
        assert runs.read_metrics(session, run_id) == [("loss", 1, 0.5)]
        assert artifacts.artifacts(session, run_id) == [] and artifacts.checkpoint(session, run_id) is None
    assert new.store_metrics([("loss", 2, 0.25)]) == 1 and new.conclude(status="succeeded")
    assert row(db, run_id).status == "succeeded"


def test_confirm_asks_the_store_only_once_its_window_has_passed(db: Database) -> None:
    run_id = new_run(db)
    hold = Hold(db, claim(db, run_id, "a"), window=3600)
    go_stale(db, run_id)
    reap(db)
    hold.confirm()  # within the window: held, as far as this worker may know without asking
    hold.valid_until = 0.0  # the worker was stopped past its window
    with pytest.raises(LeaseLost):
        hold.confirm()
    assert hold.lost.is_set()


def test_a_renewed_lease_is_not_reaped_and_release_gives_back_the_attempt(db: Database) -> None:
    run_id = new_run(db)
    hold = Hold(db, claim(db, run_id, "a"), window=LEASE_S / 2)
    go_stale(db, run_id)
    hold.progress = (3, 10, "epoch 1")
    assert hold.heartbeat()
    assert reap(db) == [] and row(db, run_id).progress == {"done": 3, "total": 10, "note": "epoch 1"}
    requeued: list[int] = []
    assert hold.release("worker stopped", requeue=lambda: requeued.append(run_id))
    run = row(db, run_id)
    assert (run.status, run.attempt, run.worker, requeued) == ("queued", 0, None, [run_id])


def test_a_stale_run_is_requeued_then_failed_past_the_retry_limit(db: Database) -> None:
    run_id = new_run(db)
    claim(db, run_id, "dead")
    assert reap(db) == []  # fresh lease: left alone
    go_stale(db, run_id)
    assert reap(db) == [(run_id, "cpu")]
    requeued = row(db, run_id)
    assert requeued.status == "queued" and requeued.worker is None
    assert "attempt 1 (its lease expired)" in requeued.message
    claim(db, run_id, "dead again")
    go_stale(db, run_id)
    assert reap(db) == []
    failed = row(db, run_id)
    assert failed.status == "failed" and failed.error is not None and failed.error["type"] == "WorkerLost"
    assert "lost 2 times (ANODE_RETRY_LIMIT=1)" in failed.error["message"]


def gone_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


@pytest.mark.parametrize("how", ["exited", "zombie"])
def test_a_dead_worker_on_this_host_is_reaped_at_once_with_a_fresh_lease(db: Database, how: str) -> None:
    """Its process is gone (or killed and not yet waited for: a zombie), so its run is re-queued at the next pass
    without waiting for the lease; live workers, and workers of another host or container (another process space,
    even under the same host name), are left to their leases."""
    zombie = None
    if how == "zombie":
        zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        zombie.kill()
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped
    dead_pid = zombie.pid if zombie else gone_pid()
    here = lifecycle.process_space()
    assert here is not None
    dead, live, remote = new_run(db), new_run(db), new_run(db)
    with db.session(write=True) as session:
        for worker, space, pid in (("dead", here, dead_pid), ("live", here, os.getppid()),
                                   ("remote", "another boot or pid namespace", dead_pid)):
            workers.register(session, worker_id=worker, device="cpu", hostname=socket.gethostname(), pid=pid,
                             device_name="", process_space=space)
    claim(db, dead, "dead")
    claim(db, live, "live")
    claim(db, remote, "remote")
    try:
        assert reap(db) == [(dead, "cpu")]
    finally:
        if zombie is not None:
            zombie.wait()
    assert "its process" in row(db, dead).message and "is gone" in row(db, dead).message
    assert row(db, live).status == row(db, remote).status == "running"
    with db.session() as session:
        assert {w.id for w in workers.live(session, utcnow() - timedelta(hours=1))} == {"live", "remote"}


def test_cancel_ends_a_queued_run_at_once_and_flags_a_running_one(db: Database) -> None:
    queued, running = new_run(db), new_run(db)
    hold = Hold(db, claim(db, running, "a"), window=LEASE_S / 2)
    with db.session(write=True) as session:
        assert lifecycle.cancel(session, queued) and lifecycle.cancel(session, running)
    assert row(db, queued).status == RunStatus.CANCELLED and row(db, queued).finished_at is not None
    assert row(db, running).status == "running" and row(db, running).cancel_requested
    assert hold.should_stop(poll_seconds=0)  # its own autocommit read sees the new commit
    hold.close()
    with db.session(write=True) as session:
        assert not lifecycle.cancel(session, queued)  # ended: nothing to cancel


def open_external(db: Database, holder: str = "external:abc") -> Lease:
    with db.session(write=True) as session:
        run = runs.add(session, kind="external", name="", spec={}, device="cpu", tags=[])
        return lifecycle.open_external(session, run, holder)


def test_an_external_run_is_held_by_its_tracker_and_failed_as_lost_when_it_goes_quiet(db: Database) -> None:
    lease = open_external(db)
    assert (row(db, lease.run_id).status, row(db, lease.run_id).worker) == (RunStatus.RUNNING, "external:abc")
    with db.session(write=True) as session:
        assert runs.renew(session, lease)  # its tracker's batches are its heartbeats
        assert not runs.renew(session, Lease(lease.run_id, "external:other", 1))  # another client holds nothing
    go_stale(db, lease.run_id)
    assert reap(db) == []  # never re-queued: no worker could run a script of its own
    ended = row(db, lease.run_id)
    assert ended.status == RunStatus.FAILED and ended.error is not None and ended.error["type"] == "Lost"
    with db.session(write=True) as session:
        assert not runs.renew(session, lease)  # and its tracker's later writes are refused


def test_cancel_ends_an_external_run_at_once(db: Database) -> None:
    lease = open_external(db)
    with db.session(write=True) as session:
        assert lifecycle.cancel(session, lease.run_id)
    assert row(db, lease.run_id).status == RunStatus.CANCELLED
    with db.session(write=True) as session:
        assert not runs.renew(session, lease) and not lifecycle.cancel(session, lease.run_id)
