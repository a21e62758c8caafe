"""The demos' figures as files: PNG (to look at) and SVG (to put in slides), each with a title, axis labels with
units and a legend, drawn by matplotlib from the same rows the demo writes as CSV. The dashboard draws its own
interactive charts from the CSV; these are for ``anode-lab demo`` in a terminal and for the run's artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from anode_lab.experiments.context import RunContext

FORMATS = ("png", "svg")


def plot_columns(ctx: RunContext, name: str, rows: Sequence[Mapping[str, Any]], *, x: str,
                 columns: Mapping[str, str], title: str, x_label: str, y_label: str, split: str | None = None,
                 log_x: bool = False, log_y: bool = False, zero_line: bool = False) -> None:
    """Write ``<name>.png`` and ``<name>.svg``: one line per column of ``columns`` (column → legend label), and,
    with ``split``, one per value of that column too (``adjoint · euler``). Points that a log axis cannot show
    (missing, non-finite, ≤ 0) are left out."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure  # the figure alone: no pyplot, no global state, no display

    with rc_context({"svg.fonttype": "none"}):  # the SVG's words stay text: searchable, editable in slides
        _draw(Figure(figsize=(7.5, 4.6), layout="constrained"), ctx, name, rows, x=x, columns=columns, title=title,
              x_label=x_label, y_label=y_label, split=split, log_x=log_x, log_y=log_y, zero_line=zero_line)


def _draw(figure: Any, ctx: RunContext, name: str, rows: Sequence[Mapping[str, Any]], *, x: str,
          columns: Mapping[str, str], title: str, x_label: str, y_label: str, split: str | None, log_x: bool,
          log_y: bool, zero_line: bool) -> None:
    axes = figure.add_subplot()
    groups = list(dict.fromkeys(row.get(split) for row in rows)) if split else [None]
    for column, label in columns.items():
        for group in groups:
            points = [(float(row[x]), float(row[column])) for row in rows
                      if (group is None or (split is not None and row.get(split) == group))
                      and _shown(row.get(column), log_y)]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=4,
                          label=f"{label} · {group}" if group is not None else label)
    if zero_line:
        axes.axhline(0.0, color="#555", linewidth=0.8)
    axes.set(title=title, xlabel=x_label, ylabel=y_label, xscale="log" if log_x else "linear",
             yscale="log" if log_y else "linear")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    for fmt in FORMATS:
        figure.savefig(ctx.artifact_path(f"{name}.{fmt}"), dpi=120)


def _shown(value: Any, log: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > 0 or not log
