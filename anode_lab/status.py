"""The states of a run: spelled once here, used by the experiments, the store and the API.

The dashboard, which talks to the API only, keeps its own copy (``dashboard.tables.ACTIVE``/``FINISHED``);
``tests/test_shared_facts.py`` holds the two equal.
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
