"""Figures of the teaching demos, from the CSV and JSON artifacts each demo writes. Pure: no Streamlit.

One builder per picture; :data:`DEMO_FIGURES` says which pictures each demo has and which artifacts they need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.charts import (
    BYTES_FORMAT,
    FONT_SIZE,
    ROUNDING_FLOOR,
    SOLVER_DASHES,
    SOLVER_ORDERS,
    Curve,
    curves_figure,
    exact_floor_ticks,
    positive,
    steps_ticks,
    style,
    sweep_error_figure,
    sweep_memory_figure,
)
from dashboard.tables import METHOD_COLOURS, distinct, finite, method_colour, method_dash

Rows = Sequence[Mapping[str, Any]]
DTYPE_COLOURS = {"float32": "#d62728", "float64": "#1f77b4"}


# ------------------------------------------------------------------------------------------ adjoint-order
def adjoint_order_rows(errors: Rows) -> list[dict[str, Any]]:
    """``errors.csv`` of adjoint-order in the long shape of a sweep's ``results.csv`` (one row per method)."""
    out = []
    for row in errors:
        for label in ("anode", "adjoint", "adjoint(stored)"):
            if f"{label}_rel_error" in row:
                out.append({"solver": row["solver"], "steps": row["steps"], "method": label,
                            "order": SOLVER_ORDERS.get(str(row["solver"]), 1), "exact": int(label == "anode"),
                            "rel_error": row[f"{label}_rel_error"], "cosine": row.get(f"{label}_cosine")})
    return out


def adjoint_order_figure(errors: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    return sweep_error_figure(adjoint_order_rows(errors), font_size=font_size,
                              title="Continuous adjoint's error against N_t, next to the solver's order")


# ---------------------------------------------------------------------------------------------- wrong-sign
WRONG_SIGN_METHODS = ("finite_difference", "direct", "anode", "adjoint", "adjoint(stored)")


def wrong_sign_figure(gradients: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """dL/dθ by each method at each N_t, as bars: the adjoint's bars point the other way while dt·K > 1."""
    fig = go.Figure()
    labels = [f"N_t = {int(r['steps'])}" for r in gradients]
    for method in WRONG_SIGN_METHODS:
        if gradients and method in gradients[0]:
            fig.add_trace(go.Bar(x=labels, y=[r[method] for r in gradients], name=method.replace("_", " "),
                                 marker_color=METHOD_COLOURS.get(method, "#9467bd")))
    fig.add_hline(y=0.0, line={"color": "#444", "width": 1})
    fig.update_layout(barmode="group")
    return style(fig, title="dL/dθ by method: the adjoint's sign flips", x_title="", y_title="dL/dθ",
                 font_size=font_size)


def tangent_figure(curve: Rows, tangents: Mapping[str, Any], *, font_size: int = FONT_SIZE) -> go.Figure:
    """The loss L(θ) of the computed network and, through the demo's θ, a line with each method's slope: the
    true tangent climbs with the curve, the adjoint's descends."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["theta"] for r in curve], y=[r["loss"] for r in curve], name="L(θ)",
                             mode="lines", line={"color": "#222", "width": 3}))
    theta, loss = float(tangents.get("theta", 0.0)), float(tangents.get("loss", 0.0))
    span = 0.35
    for method, slope in (tangents.get("slopes") or {}).items():
        if finite(slope):
            fig.add_trace(go.Scatter(x=[theta - span, theta + span], y=[loss - span * slope, loss + span * slope],
                                     name=f"slope {method.replace('_', ' ')} ({slope:+.3g})", mode="lines",
                                     line={"color": method_colour(method), "width": 2,
                                           "dash": "dot" if method == "finite_difference" else "solid"}))
    fig.add_trace(go.Scatter(x=[theta], y=[loss], name=f"θ = {theta:g}", mode="markers",
                             marker={"size": 12, "color": "#222"}, showlegend=False))
    return style(fig, title=f"L(θ) and each method's slope (N_t = {tangents.get('steps', '?')})", x_title="θ",
                 y_title="L = z_N", font_size=font_size)


def trajectory_figure(paths: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """z(t) of the Euler solve for each N_t, with the ReLU's kink at z = 0: a coarse step jumps over it."""
    curves = []
    for steps in distinct(paths, "steps"):
        mine = [r for r in paths if r["steps"] == steps]
        curves.append(Curve(f"N_t = {int(steps)}", [r["t"] for r in mine], [r["z"] for r in mine], markers=True))
    fig = curves_figure(curves, title="Euler states: big steps cross the kink", x_title="t", y_title="z",
                        font_size=font_size)
    fig.add_hline(y=0.0, line={"color": "#d62728", "dash": "dash"}, annotation_text="ReLU kink (z = 0)")
    return fig


# ------------------------------------------------------------------------------------- reconstruction-blowup
def reconstruction_figure(errors: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """Relative error of the input rebuilt by the adjoint's reverse solve, vs N_t, per precision."""
    fig = go.Figure()
    for dtype in distinct(errors, "dtype"):
        mine = sorted((r for r in errors if r["dtype"] == dtype), key=lambda r: r["steps"])
        fig.add_trace(go.Scatter(x=[r["steps"] for r in mine], y=positive([r["reconstruction_error"] for r in mine]),
                                 name=f"rebuilt input, {dtype}", mode="lines+markers",
                                 line={"color": DTYPE_COLOURS.get(str(dtype)), "width": 3}, marker={"size": 9}))
    fig.add_hline(y=1.0, line={"color": "#888", "dash": "dot"}, annotation_text="error = the image itself")
    style(fig, title="Error of the image rebuilt backwards", x_title="N_t",
          y_title="‖rebuilt − original‖ / ‖original‖", font_size=font_size, log_x=True, log_y=True)
    return steps_ticks(fig, errors)


def reconstruction_images(names: Sequence[str]) -> list[tuple[str, str]]:
    """``(artifact, caption)`` of the demo's images in reading order: original, blurred, then each rebuild."""
    order: list[tuple[str, str]] = []
    for name, caption in (("original.png", "original"), ("blurred.png", "blurred (forward solve)")):
        if name in names:
            order.append((name, caption))
    rebuilt = [n for n in names if n.startswith("reconstructed_") and n.endswith(".png")]

    def key(name: str) -> tuple[str, int]:
        _, dtype, steps = name.removesuffix(".png").split("_", 2)
        return dtype, int(steps.lstrip("N") or 0)

    for name in sorted(rebuilt, key=key):
        dtype, steps = key(name)
        order.append((name, f"rebuilt, {dtype}, N_t = {steps}"))
    return order


# -------------------------------------------------------------------------------------------- non-invertible
def fold_figure(grid: Rows, pair: Mapping[str, Any], *, font_size: int = FONT_SIZE) -> go.Figure:
    """A grid of inputs (grey) and where one Euler step sends them (blue): the positive quadrant folds over.
    Inputs a and b land on the same output; the reverse solve from it can only return one of them."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["x"] for r in grid], y=[r["y"] for r in grid], name="inputs", mode="markers",
                             marker={"color": "#bbbbbb", "size": 6}))
    fig.add_trace(go.Scatter(x=[r["step_x"] for r in grid], y=[r["step_y"] for r in grid], name="after one step",
                             mode="markers", marker={"color": "#1f77b4", "size": 6, "opacity": 0.6}))
    # Each point is labelled on the chart; points that coincide (the reverse solve lands on a) stay apart: the
    # later ones are drawn smaller, on top, and labelled on another side.
    points = {"a": ("input_a", "#2ca02c", "circle", 24, "top left"),
              "b": ("input_b", "#9467bd", "circle", 20, "top right"),
              "shared output": ("output_a", "#d62728", "star", 18, "bottom right"),
              "reverse solve": ("reverse_of_output", "#ff7f0e", "x", 11, "bottom left")}
    for label, (key, colour, symbol, size, where) in points.items():
        if key in pair:
            x, y = pair[key]
            fig.add_trace(go.Scatter(x=[x], y=[y], name=f"{label} ({x:.3g}, {y:.3g})", mode="markers+text",
                                     text=[label], textposition=where,
                                     textfont={"size": font_size, "color": colour},
                                     marker={"color": colour, "size": size, "symbol": symbol,
                                             "line": {"width": 1, "color": "#222"}}))
    for key in ("input_a", "input_b"):
        if key in pair and "output_a" in pair:
            (x0, y0), (x1, y1) = pair[key], pair["output_a"]
            fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                               arrowhead=3, arrowwidth=2, arrowcolor="#555")
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    dt_gain = float(pair.get("gain", 4)) / float(pair.get("steps", 1))
    return style(fig, title=f"One Euler step, dt·K = {dt_gain:g}: the plane folds", x_title="z₁", y_title="z₂",
                 font_size=font_size)


def fold_gap_figure(pairs: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """How far apart the outputs of a and b are, and how far the reverse solve lands from a, vs N_t."""
    x = [r["steps"] for r in pairs]
    curves = [
        Curve("outputs of a and b, apart by", x, positive([r["output_gap"] for r in pairs], ROUNDING_FLOOR),
              colour="#d62728", markers=True),
        Curve("reverse solve misses a by", x, positive([r["reverse_error_to_a"] for r in pairs], ROUNDING_FLOOR),
              colour="#ff7f0e", markers=True),
    ]
    fig = curves_figure(curves, title="a and b share an output until dt·K < 1", x_title="N_t",
                        y_title="distance", log_y=True, font_size=font_size)
    fig.update_xaxes(type="log", exponentformat="power")
    return steps_ticks(fig, pairs)


# ----------------------------------------------------------------------------------------------- memory
def memory_figure(rows: Rows, solver: str, *, font_size: int = FONT_SIZE) -> go.Figure:
    return sweep_memory_figure([r for r in rows if r.get("solver") == solver], font_size=font_size,
                               title=f"Memory vs N_t ({solver}): measured and model")


# --------------------------------------------------------------------------------------------- training
def training_loss_figure(curve: Rows, *, font_size: int = FONT_SIZE, smoothing: float = 0.6) -> go.Figure:
    columns = [k for k in (curve[0] if curve else {}) if k.endswith("_loss")]
    curves = [Curve(c.removesuffix("_loss"), [r["step"] for r in curve], [r[c] for r in curve],
                    colour=method_colour(c.removesuffix("_loss"))) for c in columns]
    return curves_figure(curves, title="Training loss, same seed", x_title="step",
                         y_title="loss", log_y=True, smoothing=smoothing, font_size=font_size)


def training_probe_figure(probes: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    columns = [k for k in (probes[0] if probes else {}) if k.endswith("/grad_rel_error")]
    curves = [Curve(c.split("/")[0], [r["step"] for r in probes], positive([r[c] for r in probes], ROUNDING_FLOOR),
                    colour=method_colour(c.split("/")[0]), markers=True) for c in columns]
    return curves_figure(curves, title="Gradient error vs exact, per run",
                         x_title="step", y_title="relative error", log_y=True, font_size=font_size)


# ------------------------------------------------------------------------------------------ adaptive-adjoint
ADAPTIVE_ERRORS = {"anode": "anode_rel_error", "adjoint": "adjoint_rel_error"}
ADAPTIVE_EVALUATIONS = {"forward solve": ("adjoint_nfe_forward", "#222222"),
                        "ANODE backward": ("anode_nfe_backward", METHOD_COLOURS["anode"]),
                        "adjoint backward": ("adjoint_nfe_backward", METHOD_COLOURS["adjoint"])}


def _tighter_to_the_right(fig: go.Figure, rows: Rows) -> go.Figure:
    """A log rtol axis that reads left to right as the tolerance tightens, ticked at the run's tolerances."""
    rtols = sorted({float(r["rtol"]) for r in rows if finite(r.get("rtol"))})
    fig.update_xaxes(autorange="reversed", tickmode="array", tickvals=rtols, ticktext=[f"{t:g}" for t in rtols])
    return fig


def adaptive_error_figure(errors: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """Each method's relative error against Direct vs rtol, per solver (ANODE's zero drawn at the rounding floor),
    with a line ∝ rtol through the adjoint's first point: what "the error follows the tolerance" looks like."""
    curves = []
    for solver in distinct(errors, "solver"):
        mine = [r for r in errors if r["solver"] == solver]
        x = [r["rtol"] for r in mine]
        for method, column in ADAPTIVE_ERRORS.items():
            curves.append(Curve(f"{method} · {solver}", x, positive([r.get(column) for r in mine], ROUNDING_FLOOR),
                                colour=method_colour(method), dash=method_dash(method), markers=True))
        first = next((r for r in mine if finite(r.get("adjoint_rel_error"))), None)
        if first is not None:
            anchor, rtol0 = float(first["adjoint_rel_error"]), float(first["rtol"])
            curves.append(Curve(f"∝ rtol ({solver})", x, [anchor * float(t) / rtol0 for t in x], colour="#555555",
                                dash="dot"))
    fig = curves_figure(curves, title="Gradient error against Direct: the adjoint's gap follows the tolerance",
                        x_title="rtol (tighter →)", y_title="‖g − g_Direct‖ / ‖g_Direct‖", log_y=True,
                        font_size=font_size)
    fig.update_xaxes(type="log", exponentformat="power")
    return exact_floor_ticks(_tighter_to_the_right(fig, errors))


def adaptive_evaluations_figure(errors: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """Field evaluations of the forward solve and of each method's backward pass vs rtol, per solver."""
    curves = []
    for solver in distinct(errors, "solver"):
        mine = [r for r in errors if r["solver"] == solver]
        for label, (column, colour) in ADAPTIVE_EVALUATIONS.items():
            curves.append(Curve(f"{label} · {solver}", [r["rtol"] for r in mine], [r.get(column) for r in mine],
                                colour=colour, dash=SOLVER_DASHES.get(str(solver), "solid"), markers=True))
    fig = curves_figure(curves, title="Field evaluations: each digit of tolerance costs steps",
                        x_title="rtol (tighter →)", y_title="field evaluations", log_y=True, font_size=font_size)
    fig.update_xaxes(type="log", exponentformat="power")
    return _tighter_to_the_right(fig, errors)


# ------------------------------------------------------------------------------------------ reversible-exact
REVERSIBLE_ERRORS = {"reversible (reversible_heun)": ("reversible_rel_error", "reversible"),
                     "adjoint (midpoint)": ("adjoint_rel_error", "adjoint")}
REVERSIBLE_MEMORY = {"reversible": "reversible", "adjoint": "adjoint", "direct (reversible_heun)": "direct"}


def reversible_error_figure(errors: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """Relative error against Direct on the same solver vs N_t: Reversible at rounding, the adjoint falling as
    dt² (a slope −2 line through its first point)."""
    x = [r["steps"] for r in errors]
    curves = [Curve(label, x, positive([r.get(column) for r in errors], ROUNDING_FLOOR), colour=method_colour(method),
                    dash=method_dash(method), markers=True)
              for label, (column, method) in REVERSIBLE_ERRORS.items()]
    first = next((r for r in errors if finite(r.get("adjoint_rel_error"))), None)
    if first is not None:
        n0, e0 = float(first["steps"]), float(first["adjoint_rel_error"])
        curves.append(Curve("slope −2", x, [e0 * (float(n) / n0) ** -2 for n in x], colour="#555555", dash="dot"))
    fig = curves_figure(curves, title="Two O(L) methods: the reversible one is exact", x_title="N_t",
                        y_title="‖g − g_Direct‖ / ‖g_Direct‖", log_y=True, font_size=font_size)
    fig.update_xaxes(type="log", exponentformat="power")
    return exact_floor_ticks(steps_ticks(fig, errors))


def reversible_memory_figure(errors: Rows, *, font_size: int = FONT_SIZE) -> go.Figure:
    """Bytes held after the forward pass vs N_t: flat for Reversible and the adjoint, linear for Direct."""
    x = [r["steps"] for r in errors]
    curves = [Curve(label, x, [r.get(f"{method}_held_bytes") for r in errors], colour=method_colour(method),
                    dash=method_dash(method), markers=True) for label, method in REVERSIBLE_MEMORY.items()]
    fig = curves_figure(curves, title="Memory held after the forward pass", x_title="N_t", y_title="bytes held",
                        log_y=True, font_size=font_size)
    fig.update_xaxes(type="log", exponentformat="power")
    fig.update_yaxes(tickformat=BYTES_FORMAT)
    return steps_ticks(fig, errors)


Builder = Callable[[Mapping[str, Any], int], go.Figure]
"""Takes the demo's parsed artifacts by file name and a font size."""


def _needs(*names: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda data: all(name in data for name in names)


DEMO_FIGURES: dict[str, list[tuple[Callable[[Mapping[str, Any]], bool], Builder]]] = {
    "adjoint-order": [(_needs("errors.csv"), lambda d, f: adjoint_order_figure(d["errors.csv"], font_size=f))],
    "wrong-sign": [
        (_needs("gradients.csv"), lambda d, f: wrong_sign_figure(d["gradients.csv"], font_size=f)),
        (_needs("loss_curve.csv", "tangents.json"),
         lambda d, f: tangent_figure(d["loss_curve.csv"], d["tangents.json"], font_size=f)),
        (_needs("trajectories.csv"), lambda d, f: trajectory_figure(d["trajectories.csv"], font_size=f)),
    ],
    "reconstruction-blowup": [(_needs("errors.csv"), lambda d, f: reconstruction_figure(d["errors.csv"], font_size=f))],
    "non-invertible": [
        (_needs("fold_grid.csv", "pair.json"),
         lambda d, f: fold_figure(d["fold_grid.csv"], d["pair.json"], font_size=f)),
        (_needs("pairs.csv"), lambda d, f: fold_gap_figure(d["pairs.csv"], font_size=f)),
    ],
    "memory": [],  # one figure per solver: see demo_figures
    "training": [
        (_needs("loss_curve.csv"), lambda d, f: training_loss_figure(d["loss_curve.csv"], font_size=f)),
        (_needs("probes.csv"), lambda d, f: training_probe_figure(d["probes.csv"], font_size=f)),
    ],
    "adaptive-adjoint": [
        (_needs("errors.csv"), lambda d, f: adaptive_error_figure(d["errors.csv"], font_size=f)),
        (_needs("errors.csv"), lambda d, f: adaptive_evaluations_figure(d["errors.csv"], font_size=f)),
    ],
    "reversible-exact": [
        (_needs("errors.csv"), lambda d, f: reversible_error_figure(d["errors.csv"], font_size=f)),
        (_needs("errors.csv"), lambda d, f: reversible_memory_figure(d["errors.csv"], font_size=f)),
    ],
}


def demo_figures(name: str, data: Mapping[str, Any], *, font_size: int = FONT_SIZE) -> list[go.Figure]:
    """Every figure demo ``name`` has, from its artifacts (parsed CSV rows or JSON, by file name)."""
    if name == "memory" and "memory.csv" in data:
        rows = data["memory.csv"]
        return [memory_figure(rows, solver, font_size=font_size) for solver in distinct(rows, "solver")]
    return [build(data, font_size) for ready, build in DEMO_FIGURES.get(name, []) if ready(data)]
