"""Log-log fits of an error against N_t. Plain Python (no torch, no numpy): the dashboard may reuse them."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fit_loglog(ns: Sequence[float], errors: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``log e = slope · log n + intercept`` through the points with ``n > 0`` and a finite
    error ``> 0`` (an exact zero has no logarithm and is left out); ``(nan, nan)`` with fewer than two such
    points or a single distinct ``n``.

    For a method whose error is ``C · dt^p = C · N_t^-p`` the slope is ``-p``: ``-1`` for Euler, ``-2`` for the
    midpoint rule (the test used for orders of convergence, Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1).
    """
    if len(ns) != len(errors):
        raise ValueError(f"`ns` and `errors` must have the same length; got {len(ns)} and {len(errors)}")
    points = [
        (math.log(n), math.log(e)) for n, e in zip(ns, errors, strict=True) if n > 0 and math.isfinite(e) and e > 0
    ]
    if len({x for x, _ in points}) < 2:
        return math.nan, math.nan
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


def fit_slope(ns: Sequence[float], errors: Sequence[float]) -> float:
    """The slope of :func:`fit_loglog`: the observed order of convergence, negated."""
    return fit_loglog(ns, errors)[0]
