"""Task ``runs.execute(run_id)``: the only message the queue carries, as JSON ``{"run_id": N}``.

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
    """A queue message that is not ``{"run_id": <positive int>}``: logged and dropped, never executed."""


class RunMessages(Serializer):  # type: ignore[misc]  # huey ships no type hints
    """Huey's serializer for the run queues: JSON holding the run id only, both ways; nothing is unpickled."""

    def _serialize(self, data: Any) -> bytes:
        if not (isinstance(data, Message) and data.name == MESSAGE_NAME and not data.kwargs
                and len(data.args) == 1 and type(data.args[0]) is int):
            raise TypeError(f"the run queues carry only {EXECUTE}(run_id); got {data!r}")
        return json.dumps({"run_id": data.args[0]}).encode()

    def _deserialize(self, data: bytes) -> Message:
        try:
            body = json.loads(data)
        except ValueError:  # not UTF-8 or not JSON: a pickle, say
            raise InvalidMessage(f"not JSON ({len(data)} bytes starting {bytes(data[:16])!r})") from None
        run_id = body.get("run_id") if isinstance(body, dict) and body.keys() == {"run_id"} else None
        if type(run_id) is not int or run_id < 1:
            raise InvalidMessage(f'not {{"run_id": <positive integer>}}: {str(body)[:200]!r}')
        return Message(id=str(uuid.uuid4()), name=MESSAGE_NAME, retries=0, retry_delay=0, args=(run_id,), kwargs={})


def register_execute(huey: Huey, body: Callable[[int], None]) -> TaskWrapper:
    """Register ``runs.execute`` on ``huey`` with ``body(run_id)``; no Huey retries (the reaper re-queues)."""

    def execute(run_id: int) -> None:
        body(run_id)

    return huey.task(name=EXECUTE, retries=0)(execute)


def enqueue_only(run_id: int) -> None:
    raise RuntimeError(f"{EXECUTE} runs in a worker (`anode-lab worker`), not in the API process; run {run_id}")
