"""The states of a run: spelled once here, used by the experiments, the store, the API and the dashboard.

Plain standard library (no torch, no pydantic), so the dashboard may import it too.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run is queued, then running, then ends in one of the finished states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED = tuple(status for status in RunStatus if status not in ACTIVE)
