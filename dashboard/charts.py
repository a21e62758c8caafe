"""Chart builders: pure functions from plain data to a ``plotly.graph_objects.Figure``. No Streamlit here.

Every builder takes a ``font_size`` so the same figure reads on a laptop and projected on a wall. Methods keep
one colour everywhere (Direct black, ANODE blue, the adjoint red) and runs keep theirs (:func:`run_colour`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.series import ema
from dashboard.tables import METHOD_COLOURS, distinct, finite, method_colour, method_dash
from dashboard.text import plotly_text

FONT_SIZE = 14
WALL_FONT_SIZE = 20
SOLVER_DASHES = {"euler": "solid", "midpoint": "dash", "heun": "dot", "heun3": "longdash", "rk4": "dashdot",
                 "dopri5": "longdash", "bosh3": "longdashdot", "reversible_heun": "solid", "alf": "dash",
                 "explicit_adams": "dot", "implicit_adams": "dashdot", "implicit_euler": "solid",
                 "implicit_midpoint": "dash", "trapezoid": "dot", "radauIIA3": "dashdot", "radauIIA5": "longdash",
                 "gl4": "longdashdot", "gl6": "solid", "sdirk2": "dash", "trbdf2": "dot", "adaptive_heun": "dash",
                 "fehlberg2": "dot", "tsit5": "dashdot", "dopri8": "solid"}
SOLVER_MARKERS = {"euler": "circle", "midpoint": "square", "heun": "diamond", "heun3": "hexagon",
                  "rk4": "triangle-up", "dopri5": "star", "bosh3": "pentagon", "reversible_heun": "x", "alf": "cross",
                  "explicit_adams": "triangle-down", "implicit_adams": "triangle-left", "implicit_euler": "circle-open",
                  "implicit_midpoint": "square-open", "trapezoid": "diamond-open", "radauIIA3": "triangle-up-open",
                  "radauIIA5": "star-open", "gl4": "hexagon-open", "gl6": "pentagon-open", "sdirk2": "x-open",
                  "trbdf2": "cross-open", "adaptive_heun": "diamond-wide", "fehlberg2": "hourglass",
                  "tsit5": "star-triangle-up", "dopri8": "star-square"}
SOLVER_ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "heun3": 3, "rk4": 4, "dopri5": 5, "bosh3": 3,
                 "reversible_heun": 2, "alf": 2, "explicit_adams": 4, "implicit_adams": 4, "implicit_euler": 1,
                 "implicit_midpoint": 2, "trapezoid": 2, "radauIIA3": 3, "radauIIA5": 5, "gl4": 4, "gl6": 6,
                 "sdirk2": 2, "trbdf2": 2, "adaptive_heun": 2, "fehlberg2": 2, "tsit5": 5, "dopri8": 8}
ROUNDING_FLOOR = 1e-17
"""Exact methods agree with Direct to 0 or rounding; a log axis cannot show 0, so they are drawn here."""
EXACT_BELOW = 1e-10
"""A relative error below this is rounding: the method is exact."""
BYTES_FORMAT = ".4~s"
PLOT_MIN_HEIGHT = 300
"""Pixels kept for the plotting area itself, whatever the title, legend and type size take around it."""


LEGEND_WIDTH_PX = 500
"""The legend's line width assumed for a half-width chart (two to a row on a laptop screen)."""
CHART_WIDTH_PX = 420
"""A half-width chart's width on a 1280-pixel screen with the sidebar open: titles are wrapped to it."""


def legend_lines(names: Sequence[str], font_size: int) -> int:
    """Lines a horizontal legend of ``names`` takes, packed greedily at an average glyph width."""
    lines, used = 0, float(LEGEND_WIDTH_PX)
    for name in names:
        width = 0.65 * (font_size - 1) * len(name) + 50  # text and the line sample before it
        if used + width > LEGEND_WIDTH_PX:
            lines, used = lines + 1, 0.0
        used += width
    return lines


def title_lines(title: str, font_size: int) -> list[str]:
    """``title`` broken into lines that fit a half-width chart (:data:`CHART_WIDTH_PX`) at the title's type size
    (1.2 × ``font_size``), at an average glyph width: Plotly never wraps a title, it cuts it at the chart's edge."""
    per_line = max(12, int(CHART_WIDTH_PX / (0.6 * 1.2 * font_size)))
    return textwrap.wrap(title, per_line, break_long_words=False) or [""]


def title_px(title: str, font_size: int) -> int:
    """Pixels above the plot kept for the title's lines."""
    return round(40 + 2 * font_size + (len(title_lines(title, font_size)) - 1) * 1.25 * 1.2 * font_size)


def figure_height(fig: go.Figure, font_size: int, legend: bool = True, title: str = "") -> int:
    """A height that keeps :data:`PLOT_MIN_HEIGHT` for the data: the title's lines, the axes' ticks and titles
    and the legend's lines (more of them, and taller, in projector type) are added to it, never taken from it."""
    names = [str(t.name or "") for t in fig.data if t.showlegend is not False] if legend else []
    legend_px = legend_lines(names, font_size) * font_size * 1.9
    return round(PLOT_MIN_HEIGHT + title_px(title, font_size) + 5 * font_size + legend_px + 20)


@dataclass(frozen=True)
class Curve:
    """One line: its name in the legend, its points and its look."""

    name: str
    x: Sequence[float]
    y: Sequence[float | None]
    colour: str | None = None
    dash: str = "solid"
    markers: bool = False
    group: str | None = None


def style(fig: go.Figure, *, title: str, x_title: str, y_title: str, font_size: int, log_x: bool = False,
          log_y: bool = False, legend: bool = True) -> go.Figure:
    """The common look: white template, title on top, legend under the plot (long legends never cover the
    title or the data), log axes with powers of ten. The title and axis titles are text, never Plotly markup."""
    fig.update_layout(
        template="plotly_white",
        title={"text": "<br>".join(plotly_text(line) for line in title_lines(title, font_size)),
               "font": {"size": round(font_size * 1.2)}, "x": 0.0, "xanchor": "left"},
        font={"size": font_size},
        margin={"l": 10, "r": 10, "t": title_px(title, font_size), "b": 10},
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0, "xanchor": "left", "x": 0.0,
                "font": {"size": font_size - 1}},
        showlegend=legend,
        hovermode="closest",
        height=figure_height(fig, font_size, legend, title),
    )
    axis = {"showline": True, "linecolor": "#888", "automargin": True, "tickfont": {"size": font_size},
            "title_font": {"size": font_size}}
    log = {"type": "log", "exponentformat": "power"}
    fig.update_xaxes(title_text=plotly_text(x_title), **axis, **(log if log_x else {}))
    fig.update_yaxes(title_text=plotly_text(y_title), **axis, **(log if log_y else {}))
    return fig


def positive(values: Sequence[float | None], floor: float | None = None) -> list[float | None]:
    """For log axes: non-positive or missing values become gaps, or ``floor`` when one is given."""
    out: list[float | None] = []
    for v in values:
        if v is not None and math.isfinite(v) and v > 0:
            out.append(v)
        elif floor is not None and v is not None and math.isfinite(v):
            out.append(floor)
        else:
            out.append(None)
    return out


# ------------------------------------------------------------------------------------------ run curves
def curves_figure(curves: Sequence[Curve], *, title: str, x_title: str, y_title: str, log_y: bool = False,
                  smoothing: float = 0.0, font_size: int = FONT_SIZE, y_format: str | None = None) -> go.Figure:
    """Lines over steps (or epochs, or seconds). With ``smoothing`` > 0 each curve is drawn twice: the raw
    values faint, their exponential moving average on top, so smoothing never hides what happened. Curve names
    (run names, stored by clients) are drawn as text, never as Plotly markup."""
    fig = go.Figure()
    marked = [index for index, curve in enumerate(curves) if curve.markers]
    for index, curve in enumerate(curves):
        # Curves with markers compare methods; drawn first, drawn widest, so one that another covers still
        # shows around it (the adjoint under adjoint(stored)).
        below = min(len(marked) - 1 - marked.index(index), 3) if curve.markers else 0
        y = positive(curve.y) if log_y else list(curve.y)
        name = plotly_text(curve.name)
        group = curve.group or curve.name
        line = {"color": curve.colour, "dash": curve.dash}
        mode = "lines+markers" if curve.markers else "lines"
        if smoothing > 0 and len(y) > 2 and not curve.markers:
            fig.add_trace(go.Scatter(x=list(curve.x), y=y, name=f"{name} (raw)", mode="lines", opacity=0.3,
                                     line={**line, "width": 1}, legendgroup=group, showlegend=False,
                                     hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=list(curve.x), y=ema(y, smoothing), name=name, mode="lines",
                                     line={**line, "width": 2.5}, legendgroup=group))
        else:
            fig.add_trace(go.Scatter(x=list(curve.x), y=y, name=name, mode=mode,
                                     line={**line, "width": 2 + 1.5 * below},
                                     marker={"size": 7 + 3 * below} if curve.markers else None, legendgroup=group))
    style(fig, title=title, x_title=x_title, y_title=y_title, font_size=font_size, log_y=log_y)
    if y_format:
        fig.update_yaxes(tickformat=y_format)
    return constant_axis(fig, [float(v) for curve in curves for v in curve.y if finite(v)], log_y=log_y,
                         labelled=y_format is None)


CONSTANT_SPREAD = 1e-6
"""Values whose spread is at most this fraction of their size are one value (float32 rounding, not a change)."""


def constant_axis(fig: go.Figure, values: Sequence[float], *, log_y: bool = False, labelled: bool = True) -> go.Figure:
    """A series that does not change is drawn flat in the middle of the chart with its value as the one tick
    (``0.01``, or in the axis' own ``tickformat`` when not ``labelled``), instead of rounding differences zoomed
    into a zigzag."""
    if not values:
        return fig
    low, high = min(values), max(values)
    level = (low + high) / 2
    if high - low > CONSTANT_SPREAD * max(abs(low), abs(high)):
        return fig
    if log_y and level > 0:
        span = [math.log10(level) - 0.5, math.log10(level) + 0.5]
    elif log_y:
        return fig
    else:
        pad = abs(level) * 0.5 or 1.0
        span = [level - pad, level + pad]
    fig.update_yaxes(range=span, tickmode="array", tickvals=[level])
    if labelled:
        fig.update_yaxes(ticktext=[f"{level:.6g}"])
    return fig


def gradient_error_figure(x: Sequence[float], rel_error: Sequence[float | None], cosine: Sequence[float | None],
                          *, x_title: str, method: str, font_size: int = FONT_SIZE) -> go.Figure:
    """The run's gradient against the exact Direct gradient of the same network: relative error (log scale,
    left) and cosine similarity (right). ANODE and Direct sit at rounding; the adjoint does not."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colour = method_colour(method)
    fig.add_trace(go.Scatter(x=list(x), y=positive(rel_error, ROUNDING_FLOOR),
                             name="relative error ‖g − g_DTO‖/‖g_DTO‖",
                             mode="lines+markers", line={"color": colour, "width": 2}), secondary_y=False)
    fig.add_trace(go.Scatter(x=list(x), y=list(cosine), name="cosine(g, g_DTO)", mode="lines+markers",
                             line={"color": "#7f7f7f", "dash": "dot", "width": 2}), secondary_y=True)
    style(fig, title=f"Gradient error vs exact DTO ({method})", x_title=x_title, y_title="relative error",
          font_size=font_size)
    fig.update_yaxes(type="log", exponentformat="power", secondary_y=False)
    finite_cosines = [c for c in cosine if finite(c)]
    low = min([*finite_cosines, 0.99])
    fig.update_yaxes(title_text="cosine", secondary_y=True, type="linear", showgrid=False, tickformat=".4~f",
                     tickmode="auto", nticks=6,
                     range=[low - 0.1 * (1.0 - low), 1.0 + 0.1 * (1.0 - low)])
    errors = [e for e in rel_error if finite(e)]
    if errors and max(errors) < EXACT_BELOW:
        fig.add_annotation(text="equal to the exact gradient up to rounding", xref="paper", yref="paper", x=0.5,
                           y=0.9, showarrow=False, font={"size": font_size, "color": colour})
    return fig


# ----------------------------------------------------------------------------------- gradient sweeps
def _sweep_traces(fig: go.Figure, rows: Sequence[Mapping[str, Any]], y_key: str, *, floor: float | None = None,
                  log_y: bool = True, dash_by_solver: bool = True, suffix: str = "", x_key: str = "steps") -> None:
    """One line per method and solver: the method gives the colour and the dash, the solver the marker; the
    legend groups each method's lines under its name. (``dash_by_solver`` False: one line per method.) Rows
    without a number at ``x_key`` (an adaptive cell has no N_t, a fixed one no rtol) are left out."""
    rows = [r for r in rows if finite(r.get(x_key))]
    methods = distinct(rows, "method")
    for rank, method in enumerate(methods):
        # Drawn first, drawn widest: a line that another one covers (the adjoint under adjoint(stored), which
        # nearly agree) still shows around it, as a halo of its colour.
        below = min(len(methods) - 1 - rank, 3)
        width, size = 2 + 1.5 * below, 8 + 3 * below
        solvers = distinct(rows, "solver") if dash_by_solver else [None]
        for index, solver in enumerate(solvers):
            mine = sorted((r for r in rows if r.get("method") == method and solver in (None, r.get("solver"))),
                          key=lambda r: r[x_key])
            if not mine:
                continue
            y = [r.get(y_key) if finite(r.get(y_key)) else None for r in mine]
            fig.add_trace(go.Scatter(
                x=[r[x_key] for r in mine], y=positive(y, floor) if log_y else y,
                name=f"{method} · {solver}{suffix}" if solver is not None else f"{method}{suffix}",
                mode="lines+markers", legendgroup=str(method),
                legendgrouptitle={"text": str(method)} if solver is not None and index == 0 else None,
                line={"color": method_colour(str(method)), "dash": method_dash(str(method)), "width": width},
                marker={"size": size, "symbol": SOLVER_MARKERS.get(str(solver), "circle")},
            ))


def exact_floor_ticks(fig: go.Figure) -> go.Figure:
    """On a log error axis where zero errors are drawn at :data:`ROUNDING_FLOOR`, label that line "exact (0)"
    instead of 10⁻¹⁷, and the decades of the errors above it as powers of ten."""
    values = [float(v) for trace in fig.data for v in (trace.y or ()) if finite(v) and float(v) > 0]
    above = [v for v in values if v > ROUNDING_FLOOR]
    if not values or min(values) > ROUNDING_FLOOR:
        return fig
    low = math.floor(math.log10(min(above))) if above else 0
    high = max(math.ceil(math.log10(max(above))), low + 1) if above else 1
    decades = list(range(low, high + 1))
    fig.update_yaxes(tickmode="array", tickvals=[ROUNDING_FLOOR, *(10.0**k for k in decades)],
                     ticktext=["exact (0)", *(f"10<sup>{k}</sup>" for k in decades)])
    return fig


def steps_ticks(fig: go.Figure, rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Label a log N_t axis at the N_t values of the data instead of every digit of each decade."""
    steps = sorted({float(r["steps"]) for r in rows if finite(r.get("steps"))})
    if steps:
        fig.update_xaxes(tickmode="array", tickvals=steps, ticktext=[f"{n:g}" for n in steps])
    return fig


def reference_slopes(rows: Sequence[Mapping[str, Any]], y_key: str = "rel_error") -> list[Curve]:
    """For each solver, the line C·N_t^(−p) of its order p through the largest inexact error at its
    smallest N_t: what the adjoint's error should follow if it falls at the solver's order."""
    curves = []
    for solver in distinct(rows, "solver"):
        mine = [r for r in rows if r.get("solver") == solver and finite(r.get(y_key)) and r[y_key] > 0
                and not r.get("exact") and finite(r.get("steps"))]
        if not mine:
            continue
        order = int(mine[0].get("order") or SOLVER_ORDERS.get(str(solver), 1))
        steps = sorted({float(r["steps"]) for r in mine})
        first = steps[0]
        anchor = max(r[y_key] for r in mine if float(r["steps"]) == first)
        curves.append(Curve(f"slope −{order} ({solver})", steps, [anchor * (n / first) ** -order for n in steps],
                            colour="#555555", dash="dot"))
    return curves


def sweep_error_figure(rows: Sequence[Mapping[str, Any]], *, font_size: int = FONT_SIZE,
                       y_key: str = "rel_error", title: str = "Gradient error vs N_t (against exact DTO)") -> go.Figure:
    """Relative error of each method's gradient against Direct's vs N_t, log-log, with reference slopes of
    the solvers' orders. Exact methods (ANODE, Direct) are drawn at the rounding floor."""
    fig = go.Figure()
    for ref in reference_slopes(rows, y_key):  # labelled at their end, where they are told apart
        fig.add_trace(go.Scatter(x=list(ref.x), y=list(ref.y), name=ref.name, mode="lines+text",
                                 text=[""] * (len(ref.x) - 1) + [ref.name.split(" (")[0]], textposition="bottom left",
                                 textfont={"size": font_size, "color": ref.colour}, legendgroup="reference",
                                 legendgrouptitle={"text": "expected"},
                                 line={"color": ref.colour, "dash": ref.dash, "width": 1.5}))
    _sweep_traces(fig, rows, y_key, floor=ROUNDING_FLOOR)
    style(fig, title=title, x_title="N_t (steps per block)",
          y_title="relative error", font_size=font_size, log_x=True, log_y=True)
    return exact_floor_ticks(steps_ticks(fig, rows))


def sweep_cosine_figure(rows: Sequence[Mapping[str, Any]], *, font_size: int = FONT_SIZE) -> go.Figure:
    """Cosine between each method's gradient and Direct's vs N_t: 1 means the same direction."""
    fig = go.Figure()
    _sweep_traces(fig, rows, "cosine", log_y=False)
    fig.add_hline(y=1.0, line={"color": "#aaaaaa", "dash": "dot"})
    style(fig, title="Cosine with the exact gradient", x_title="N_t (steps per block)", y_title="cosine",
          font_size=font_size, log_x=True)
    # at least [0.99, 1]: exact methods' cosines differ from 1 by rounding, which a fitted axis would blow up
    low = min([*(r["cosine"] for r in rows if finite(r.get("cosine"))), 0.99])
    fig.update_yaxes(range=[low - 0.05 * (1 - low), 1 + 0.05 * (1 - low)], tickformat=".4~f")
    return steps_ticks(fig, rows)


def sweep_memory_figure(rows: Sequence[Mapping[str, Any]], *, font_size: int = FONT_SIZE,
                        title: str = "Memory for backward vs N_t") -> go.Figure:
    """Bytes held for backward vs N_t: measured (solid, markers) and the analytic model (dashed)."""
    fig = go.Figure()
    rows = [r for r in rows if finite(r.get("steps"))]
    for method in distinct(rows, "method"):
        mine = sorted((r for r in rows if r.get("method") == method), key=lambda r: r["steps"])
        colour = method_colour(str(method))
        x = [r["steps"] for r in mine]
        fig.add_trace(go.Scatter(x=x, y=positive([r.get("peak_bytes") for r in mine]), name=f"{method} measured",
                                 mode="lines+markers", legendgroup=str(method), line={"color": colour, "width": 2}))
        model_key = "model_bytes"
        if any(finite(r.get(model_key)) for r in mine):
            fig.add_trace(go.Scatter(x=x, y=positive([r.get(model_key) for r in mine]), name=f"{method} model",
                                     mode="lines", legendgroup=str(method),
                                     line={"color": colour, "dash": "dash", "width": 1.5}))
    style(fig, title=title, x_title="N_t (steps per block)", y_title="bytes",
          font_size=font_size, log_x=True, log_y=True)
    fig.update_yaxes(tickformat=BYTES_FORMAT, dtick="D2")  # 1, 2, 5 of each decade: labels that do not collide
    return steps_ticks(fig, rows)


def sweep_time_figure(rows: Sequence[Mapping[str, Any]], *, font_size: int = FONT_SIZE) -> go.Figure:
    """Forward plus backward wall time vs N_t per method."""
    timed = [{**r, "seconds": (r.get("forward_seconds") or 0.0) + (r.get("backward_seconds") or 0.0)} for r in rows]
    fig = go.Figure()
    _sweep_traces(fig, timed, "seconds", dash_by_solver=False)
    style(fig, title="Forward + backward time vs N_t", x_title="N_t (steps per block)",
          y_title="seconds", font_size=font_size, log_x=True, log_y=True)
    return steps_ticks(fig, rows)


# ------------------------------------------------------------------------------- adaptive solvers (rtol)
TOLERANCE_AXIS = "rtol (tighter to the right)"


def adaptive_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The cells of adaptive solvers: those with an ``rtol`` (fixed-step cells leave it empty)."""
    return [r for r in rows if finite(r.get("rtol"))]


def fixed_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The cells that ran N_t fixed steps (no ``rtol``): those the N_t figures draw."""
    return [r for r in rows if not finite(r.get("rtol")) and finite(r.get("steps"))]


def _tolerance_axis(fig: go.Figure, rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """rtol on a log axis that falls to the right (more work to the right, as N_t grows on the N_t figures),
    ticked at the tolerances of the data."""
    tolerances = sorted({float(r["rtol"]) for r in rows if finite(r.get("rtol"))})
    fig.update_xaxes(autorange="reversed")
    if tolerances:
        fig.update_xaxes(tickmode="array", tickvals=tolerances, ticktext=[f"{t:g}" for t in tolerances])
    return fig


def tolerance_error_figure(rows: Sequence[Mapping[str, Any]], *, font_size: int = FONT_SIZE) -> go.Figure:
    """Relative error of each method's gradient against Direct's (the exact gradient of the computed adaptive
    solve, accepted steps held fixed) vs rtol, log-log, for the adaptive cells of a sweep, with the slope 1 the
    adjoint's error should follow (its error ∝ the tolerance) through its error at the loosest rtol."""
    rows = adaptive_rows(rows)
    fig = go.Figure()
    for solver in distinct(rows, "solver"):
        mine = [r for r in rows if r.get("solver") == solver and finite(r.get("rel_error")) and r["rel_error"] > 0
                and not r.get("exact")]
        if not mine:
            continue
        tolerances = sorted({float(r["rtol"]) for r in mine}, reverse=True)
        anchor = max(r["rel_error"] for r in mine if float(r["rtol"]) == tolerances[0])
        fig.add_trace(go.Scatter(x=tolerances, y=[anchor * t / tolerances[0] for t in tolerances],
                                 name=f"slope 1 ({solver})", mode="lines", legendgroup="reference",
                                 legendgrouptitle={"text": "expected"},
                                 line={"color": "#555555", "dash": "dot", "width": 1.5}))
    _sweep_traces(fig, rows, "rel_error", floor=ROUNDING_FLOOR, x_key="rtol")
    style(fig, title="Gradient error vs rtol (adaptive solvers, against exact DTO)", x_title=TOLERANCE_AXIS,
          y_title="relative error", font_size=font_size, log_x=True, log_y=True)
    return exact_floor_ticks(_tolerance_axis(fig, rows))


def tolerance_nfe_figure(rows: Sequence[Mapping[str, Any]], *, font_size: int = FONT_SIZE) -> go.Figure:
    """Field evaluations of forward plus backward vs rtol for each method of the adaptive cells: what a tighter
    tolerance costs each way of differentiating the solve."""
    counted = [{**r, "nfe": (r.get("nfe_forward") or 0.0) + (r.get("nfe_backward") or 0.0)}
               for r in adaptive_rows(rows) if finite(r.get("nfe_forward")) or finite(r.get("nfe_backward"))]
    fig = go.Figure()
    _sweep_traces(fig, counted, "nfe", x_key="rtol")
    style(fig, title="Field evaluations vs rtol (forward + backward)", x_title=TOLERANCE_AXIS,
          y_title="evaluations", font_size=font_size, log_x=True, log_y=True)
    return _tolerance_axis(fig, counted)


def slope_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``slopes.csv`` rows, rounded for reading, with how far each fit is from the solver's order."""
    out = []
    for r in rows:
        slope, expected = r.get("slope"), r.get("expected_slope")
        out.append({
            "solver": r.get("solver"), "method": r.get("method"), "dtype": r.get("dtype"),
            "activation": r.get("activation"), "weight scale": r.get("weight_scale"),
            "fitted slope": round(slope, 3) if finite(slope) else None,
            "expected slope": expected,
            "difference": round(slope - expected, 3) if finite(slope) and finite(expected) else None,
        })
    return out


# ------------------------------------------------------------------------------------------ checkpoint cost
CHECKPOINT_BUDGETS = (0, 1, 2, 3, 4, 8)
AUTO_LINE = "no checkpoints, or \"auto\" (√N_t segments): each step once"


def revolve_evaluations(steps: int, checkpoints: int) -> int:
    """Field evaluations per solver stage in the backward pass of one block of ``steps`` steps under
    ``Anode(checkpoints=c)``: the steps advanced without a graph by the optimal binomial schedule, then every step
    once with its graph. With ``h = c + 1`` states held and ``r`` the least integer with ``C(h + r, h) ≥ N_t``,
    the advances are ``r·N_t − C(h + r, h + 1)`` (Griewank & Walther, ACM TOMS 26(1), 2000, Prop. 1); with no
    slot, ``N_t(N_t − 1)/2``. The same count as ``anode_core``'s schedule, which the dashboard cannot import."""
    if steps <= 1 or checkpoints == 0:
        return steps * (steps - 1) // 2 + steps
    held, sweeps = checkpoints + 1, 0
    while math.comb(held + sweeps, held) < steps:
        sweeps += 1
    return sweeps * steps - math.comb(held + sweeps, held + 1) + steps


def checkpoint_cost_figure(max_steps: int = 256, budgets: Sequence[int] = CHECKPOINT_BUDGETS, *,
                           font_size: int = FONT_SIZE) -> go.Figure:
    """ANODE's backward field evaluations per block (per solver stage) vs N_t, one line per checkpoint budget
    ``c``, next to rebuilding every step once: ``checkpoints=None`` (the whole block at a time, memory O(N_t)) and
    ``checkpoints="auto"`` (segments of ⌈√N_t⌉ steps from kept starts, memory O(√N_t)) both cost N_t."""
    steps = list(range(1, max_steps + 1))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=steps, name=AUTO_LINE, mode="lines",
                             line={"color": METHOD_COLOURS["anode"], "dash": "dot", "width": 2}))
    for c in budgets:
        fig.add_trace(go.Scatter(x=steps, y=[revolve_evaluations(n, c) for n in steps], name=f"c = {c}",
                                 mode="lines", line={"color": method_colour(f"anode(c={c})"), "width": 2}))
    style(fig, title="Backward cost of checkpoints (optimal binomial schedule)", x_title="N_t (steps per block)",
          y_title="field evaluations per stage", font_size=font_size, log_x=True, log_y=True)
    return fig
