"""The lab's series as TensorBoard scalars, for labs that keep TensorBoard (``anode-lab export RUN --tensorboard
DIR``, ``anode_lab.track(..., tensorboard=DIR)``). Written with tensorboardX (the ``tensorboard`` extra): event
files that ``tensorboard --logdir DIR`` reads, without TensorFlow or TensorBoard itself installed here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from anode_lab.tracking import TrackerSettings, api_base

MISSING = "TensorBoard files need tensorboardX: pip install 'anode-lab[tensorboard]'"


def writer(folder: Path) -> Any:
    """A ``tensorboardX.SummaryWriter`` writing into ``folder``."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise RuntimeError(MISSING) from error
    return SummaryWriter(logdir=str(folder))


def write_points(out: Any, points: Iterable[tuple[int, Mapping[str, float | None]]]) -> int:
    """Write each finite value as a scalar named by its series; returns how many were written."""
    written = 0
    for step, values in points:
        for name, value in values.items():
            if value is not None:
                out.add_scalar(name, value, global_step=step)
                written += 1
    return written


def export_run(run_id: int, folder: Path, *, url: str | None = None, api_key: str | None = None) -> int:
    """Every series of run ``run_id`` from the API into TensorBoard event files under ``folder/run-<id>``."""
    settings = TrackerSettings()
    key = api_key or settings.api_key
    with httpx.Client(base_url=api_base(url or settings.url or "http://127.0.0.1:8000"), timeout=60,
                      headers={"X-API-Key": key} if key else {}) as client:
        response = client.get(f"/runs/{run_id}/metrics")
        if response.status_code != 200:
            raise RuntimeError(f"GET /runs/{run_id}/metrics answered HTTP {response.status_code}: "
                               f"{response.text[:300]}")
        series: dict[str, dict[str, list[Any]]] = response.json()["series"]
    out = writer(folder / f"run-{run_id}")
    try:
        return write_points(out, ((step, {name: value}) for name, points in series.items()
                                  for step, value in zip(points["steps"], points["values"], strict=True)))
    finally:
        out.close()
