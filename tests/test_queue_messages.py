"""The queue carries data, never code (issue 20, finding 4): messages are JSON holding a run id only, on the
embedded SQLite queue and on Redis. A pickle written straight into the queue (as anyone who can write the queue
file or reach Redis could) used to be unpickled by the worker, running what it named as the worker's user."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import ENDED, FAST_LEASES, Service, submit, wait_for, wait_status

from backend.queue import RunQueues
from backend.runs.tasks import InvalidMessage, RunMessages
from backend.settings import Settings


class Opens:
    """Unpickling this calls ``open(path, "w")``: the file appears only if some code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def hostile_messages(marker: Path) -> list[bytes]:
    return [pickle.dumps(Opens(marker)),                         # code, the finding
            b'{"run_id": "1"}', b'{"run_id": 1, "then": "x"}',    # JSON of another shape
            b'{"run_id": true}', b"[1]", b"\xff\xfe not text",
            b'{"run_id": 1, "cell": -1}', b'{"run_id": 1, "cell": "0"}', b'{"cell": 0}']  # a sweep part's, bent


@pytest.mark.parametrize("queue", ["sqlite", "redis"])
def test_a_pickle_in_the_queue_runs_nothing_and_the_worker_goes_on(queue: str, tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
    env = dict(FAST_LEASES)
    if queue == "redis":
        env["ANODE_QUEUE_URL"] = request.getfixturevalue("redis_server").new_url()  # type: ignore[attr-defined]
    service = Service(tmp_path, env).start()
    marker = tmp_path / "the-pickle-ran"
    queues = RunQueues(Settings(data_dir=tmp_path, queue_url=env.get("ANODE_QUEUE_URL")))
    try:
        storage = queues.hueys["cpu"].storage
        for message in hostile_messages(marker):
            storage.enqueue(message)  # straight into the queue's table / list, past the serializer
        wait_for(lambda: queues.sizes()["cpu"] == 0, 30, "the worker to take every message")
        with httpx.Client(base_url=service.url, timeout=10) as client:
            run = wait_status(client, submit(client, "demo", {"name": "non-invertible"}), ENDED, timeout=90)
            assert run["status"] == "succeeded", run  # the worker still serves valid runs
        assert not marker.exists()
        assert service.logs("worker").count("dropped a cpu queue message that is not a run id") == len(
            hostile_messages(marker))
    finally:
        queues.close()
        service.stop()


def test_run_messages_are_json_holding_the_run_id_only(tmp_path: Path) -> None:
    queues = RunQueues(Settings(data_dir=tmp_path))
    try:
        queues.enqueue(42, "cpu")
        huey = queues.hueys["cpu"]
        assert huey.storage.enqueued_items() == [b'{"run_id": 42}']
        task = huey.dequeue()
        assert task is not None and task.args == (42,) and task.kwargs == {}
        queues.enqueue(42, "cpu", 3)  # part 3 of a fanned-out sweep
        assert huey.storage.enqueued_items() == [b'{"run_id": 42, "cell": 3}']
        task = huey.dequeue()
        assert task is not None and task.args == (42, 3) and task.kwargs == {}
    finally:
        queues.close()


@pytest.mark.parametrize("data", hostile_messages(Path("/nonexistent/never")))
def test_anything_else_is_refused_on_reading(data: bytes) -> None:
    with pytest.raises(InvalidMessage):
        RunMessages().deserialize(data)


def test_only_run_messages_are_written() -> None:
    from huey.registry import Message

    with pytest.raises(TypeError, match="carry only runs.execute"):
        RunMessages().serialize(Message(id="x", name="os.system", args=("touch x",), kwargs={}))
