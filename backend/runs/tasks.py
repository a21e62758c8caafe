"""Task ``runs.execute(run_id)``: the only message the queue carries.

The API registers the task to enqueue it; a worker registers the same name with the body that runs the
experiment (:meth:`backend.workers.process.WorkerProcess.execute`). Huey keys tasks by module and name, so both
sides build the task here.
"""

from __future__ import annotations

from collections.abc import Callable

from huey import Huey
from huey.api import TaskWrapper

EXECUTE = "runs.execute"


def register_execute(huey: Huey, body: Callable[[int], None]) -> TaskWrapper:
    """Register ``runs.execute`` on ``huey`` with ``body(run_id)``; no Huey retries (the reaper re-queues)."""

    def execute(run_id: int) -> None:
        body(run_id)

    return huey.task(name=EXECUTE, retries=0)(execute)


def enqueue_only(run_id: int) -> None:
    raise RuntimeError(f"{EXECUTE} runs in a worker (`anode-lab worker`), not in the API process; run {run_id}")
