"""Metric series as the API sends them, and the pure transforms the charts need.

A payload is ``{"series": {name: {"steps": [...], "values": [...]}}, "last_step": n, "decimated": bool}``
(``GET /runs/{id}/metrics``). Nothing here calls Streamlit or the network.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Payload = Mapping[str, Any]
"""A metrics payload as the pages keep it (``dashboard.api_client.Metrics`` extended by polls)."""
XAxis = Literal["step", "epoch", "time"]
X_AXES: dict[XAxis, str] = {"step": "optimizer step", "epoch": "epoch", "time": "compute time (s)"}


def merge(old: Payload | None, new: Payload) -> Payload:
    """``old`` extended by the points of ``new`` (an ``after_step`` poll), each series kept in step order."""
    if old is None:
        series = {k: {"steps": list(v["steps"]), "values": list(v["values"])} for k, v in new["series"].items()}
        return {"series": series, "last_step": new.get("last_step"), "decimated": bool(new.get("decimated"))}
    series = {k: {"steps": list(v["steps"]), "values": list(v["values"])} for k, v in old["series"].items()}
    for name, points in new["series"].items():
        target = series.setdefault(name, {"steps": [], "values": []})
        last = target["steps"][-1] if target["steps"] else None
        for step, value in zip(points["steps"], points["values"], strict=True):
            if last is None or step > last:
                target["steps"].append(step)
                target["values"].append(value)
                last = step
    steps = [s for s in (old.get("last_step"), new.get("last_step")) if s is not None]
    return {"series": series, "last_step": max(steps) if steps else None,
            "decimated": bool(old.get("decimated") or new.get("decimated"))}


def longest(payload: Payload) -> int:
    return max((len(v["steps"]) for v in payload["series"].values()), default=0)


def points_of(payload: Mapping[str, Any], name: str) -> tuple[list[int], list[float | None]]:
    points = payload["series"].get(name)
    if not points:
        return [], []
    return list(points["steps"]), list(points["values"])


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Exponential moving average with bias correction (TensorBoard's smoothing); ``weight`` in [0, 1), 0 is
    the raw series. Missing values stay missing and do not reset the average."""
    if weight <= 0:
        return list(values)
    out: list[float | None] = []
    average, norm = 0.0, 0.0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(None)
            continue
        average = weight * average + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append(average / norm)
    return out


def _interpolate(knots_x: Sequence[float], knots_y: Sequence[float], x: float) -> float:
    """Piecewise linear through the knots, extended linearly past the last one."""
    i = bisect_right(knots_x, x)
    if i == 0:
        i = 1
    if i >= len(knots_x):
        i = len(knots_x) - 1
    x0, x1, y0, y1 = knots_x[i - 1], knots_x[i], knots_y[i - 1], knots_y[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def epoch_of_steps(steps: Sequence[int], epoch_points: tuple[Sequence[int], Sequence[float | None]]) -> list[float]:
    """Fractional epoch of each step, from the ``epoch`` series (value k at the last step of epoch k); before the
    first epoch ends, one epoch is assumed to take ``steps_per_epoch`` guessed from the latest step."""
    ends = [(s, v) for s, v in zip(*epoch_points, strict=True) if v is not None]
    knots_x, knots_y = [0.0], [0.0]
    for step, epoch in ends:
        if step > knots_x[-1]:
            knots_x.append(float(step))
            knots_y.append(float(epoch))
    if len(knots_x) == 1:
        return [float("nan")] * len(steps)
    return [_interpolate(knots_x, knots_y, float(s)) for s in steps]


def time_of_steps(steps: Sequence[int], step_time: tuple[Sequence[int], Sequence[float | None]]) -> list[float]:
    """Seconds of compute up to each step: the running sum of ``step_time``. A decimated ``step_time`` keeps
    only some steps; the gaps are filled with the mean of their neighbours."""
    known = [(s, v) for s, v in zip(*step_time, strict=True) if v is not None]
    if not known:
        return [float("nan")] * len(steps)
    knots_x, knots_y, total, previous = [0.0], [0.0], 0.0, 0
    for step, seconds in known:
        if step <= previous:
            continue
        total += seconds * (step - previous)
        knots_x.append(float(step))
        knots_y.append(total)
        previous = step
    if len(knots_x) == 1:
        return [float("nan")] * len(steps)
    return [_interpolate(knots_x, knots_y, float(s)) for s in steps]


def x_values(axis: XAxis, steps: Sequence[int], payload: Mapping[str, Any]) -> list[float]:
    """The x coordinates of ``steps`` on the chosen axis."""
    if axis == "epoch":
        return epoch_of_steps(steps, points_of(payload, "epoch"))
    if axis == "time":
        return time_of_steps(steps, points_of(payload, "step_time"))
    return [float(s) for s in steps]


def latest(payload: Payload, name: str) -> float | None:
    """The last finite value of a series."""
    for value in reversed(points_of(payload, name)[1]):
        if value is not None and math.isfinite(value):
            return value
    return None

