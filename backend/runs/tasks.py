"""Task ``runs.execute(run_id, cell=None)``: the only message the queue carries, as JSON ``{"run_id": N}`` (a run)
or ``{"run_id": N, "cell": i}`` (part ``i`` of a fanned-out sweep, :mod:`backend.runs.cells`).

The API registers the task to enqueue it; a worker registers the same name with the body that runs the
experiment (:meth:`backend.workers.process.WorkerProcess.execute`). Huey keys tasks by module and name, so both
sides build the task here. Huey pickles its messages by default, and unpickling runs whatever the message names:
:class:`RunMessages` replaces that serializer on every queue (SQLite and Redis), so a message is data, and one
that is not a run id (a pickle written into the queue, a damaged row) is refused before anything runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from huey import Huey
from huey.api import TaskWrapper
from huey.registry import Message
from huey.serializer import Serializer

EXECUTE = "runs.execute"
MESSAGE_NAME = f"{__name__}.{EXECUTE}"
"""How Huey's registry names the task (its module, then its name)."""


class InvalidMessage(ValueError):
    """A queue message that is not ``{"run_id": <positive int>}`` (with ``"cell": <int >= 0>`` or not): logged
    and dropped, never executed."""


class RunMessages(Serializer):  # type: ignore[misc]  # huey ships no type hints
    """Huey's serializer for the run queues: JSON holding the run id only, both ways; nothing is unpickled."""

    def _serialize(self, data: Any) -> bytes:
        if not (isinstance(data, Message) and data.name == MESSAGE_NAME and not data.kwargs
                and len(data.args) in (1, 2) and all(type(arg) is int for arg in data.args)):
            raise TypeError(f"the run queues carry only {EXECUTE}(run_id[, cell]); got {data!r}")
        body = {"run_id": data.args[0]} if len(data.args) == 1 else {"run_id": data.args[0], "cell": data.args[1]}
        return json.dumps(body).encode()

    def _deserialize(self, data: bytes) -> Message:
        try:
            body = json.loads(data)
        except ValueError:  # not UTF-8 or not JSON: a pickle, say
            raise InvalidMessage(f"not JSON ({len(data)} bytes starting {bytes(data[:16])!r})") from None
        keys = body.keys() if isinstance(body, dict) else set()
        run_id = body.get("run_id") if keys in ({"run_id"}, {"run_id", "cell"}) else None
        cell = body.get("cell", 0) if isinstance(body, dict) else None
        if type(run_id) is not int or run_id < 1 or type(cell) is not int or cell < 0:
            raise InvalidMessage(f'not {{"run_id": <positive integer>}} or {{"run_id": …, "cell": <integer >= 0>}}: '
                                 f"{str(body)[:200]!r}")
        args = (run_id,) if "cell" not in keys else (run_id, cell)
        return Message(id=str(uuid.uuid4()), name=MESSAGE_NAME, retries=0, retry_delay=0, args=args, kwargs={})


def register_execute(huey: Huey, body: Callable[[int, int | None], None]) -> TaskWrapper:
    """Register ``runs.execute`` on ``huey`` with ``body(run_id, cell)``; no Huey retries (the reaper re-queues)."""

    def execute(run_id: int, cell: int | None = None) -> None:
        body(run_id, cell)

    return huey.task(name=EXECUTE, retries=0)(execute)


def enqueue_only(run_id: int, cell: int | None = None) -> None:
    raise RuntimeError(f"{EXECUTE} runs in a worker (`anode-lab worker`), not in the API process; run {run_id}")
