"""Views of one run that several pages show: its status, its training curves, its sweep results, its demo
pictures and its artifacts. Each takes a widget-key prefix so two pages never share widget state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from typing import Any

import streamlit as st

from dashboard import charts, demo_charts
from dashboard.api_client import ApiClient, Run
from dashboard.charts import Curve
from dashboard.components import artifact_bytes, progress, status_badge
from dashboard.series import X_AXES, Payload, XAxis, longest, merge, points_of, x_values
from dashboard.tables import (
    ACTIVE,
    distinct,
    duration_seconds,
    finite,
    format_duration,
    method_colour,
    method_dash,
    method_label,
    parse_csv,
)
from dashboard.text import md

METRIC_POINTS = 1500
"""Points per series asked of the API: it decimates longer series (keeping each bucket's min and max)."""
DTO_NOTE = ("**Exact (DTO)**: discretize-then-optimize, the exact gradient of the network the solver actually "
            "computed, which Direct gets by backpropagating through every step. ANODE returns it too; the "
            "continuous adjoint (optimize-then-discretize) does not.")
ANODE_NFE_NOTE = ("**Backward NFE 0 for ANODE**: with a single ODE block the block's graph is still alive when "
                  "backward starts, so ANODE uses it instead of recomputing the block; with more blocks each earlier "
                  "block is recomputed from its stored input.")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml", "image/webp")


# ------------------------------------------------------------------------------------------------ status
def status_panel(run: Run) -> None:
    """Status, where it runs, how long it took, the progress of an active run and the error of a failed one."""
    seconds = duration_seconds(run)
    facts = [status_badge(run["status"]), f"**{md(run['kind'])}**", f"device {md(run.get('device', '?'))}"]
    if run.get("attempt"):
        facts.append(f"attempt {run['attempt']}")
    if seconds is not None:
        facts.append(f"took {format_duration(seconds)}" if run.get("finished_at") else
                     f"running for {format_duration(seconds)}")
    st.markdown(" · ".join(facts))
    progress(run)
    error = run.get("error")
    if error:
        st.error(f"**{md(error.get('type', 'Error'))}**: {md(error.get('message', ''))}", icon=":material/error:")
        if error.get("traceback"):
            with st.expander("Traceback (innermost last)"):
                st.code("\n".join(error["traceback"]), language="text")
    elif run["status"] in ("cancelled", "diverged", "failed"):
        st.warning(md(run.get("status_detail") or run.get("message") or run["status"]), icon=":material/warning:")
    elif run["status"] == "succeeded" and run.get("message"):
        st.success(md(run["message"]), icon=":material/check_circle:")


def summary_metrics(run: Run, limit: int = 6, per_row: int = 3) -> None:
    """The run summary's first numbers as big figures, three to a row so neither name nor number is cut off."""
    numbers = [(k, v) for k, v in (run.get("summary") or {}).items() if finite(v)][:limit]
    for start in range(0, len(numbers), per_row):
        for column, (name, value) in zip(st.columns(per_row), numbers[start:start + per_row], strict=False):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            column.metric(name.replace("_", " "), shown)


# ------------------------------------------------------------------------------------------------ metrics
def poll_metrics(api: ApiClient, run: Run, *, key: str) -> Payload:
    """The run's metrics, kept in the session and extended by ``after_step`` polls; decimated by the API.

    The run is read before its metrics, so once it has ended the points read after are complete and are not
    asked for again."""
    state_key = f"{key}.metrics"
    cached = st.session_state.get(state_key)
    if cached and cached["run_id"] == run["id"] and cached["final"]:
        final: Payload = cached["payload"]
        return final
    payload = cached["payload"] if cached and cached["run_id"] == run["id"] else None
    if payload is None or payload.get("last_step") is None:
        payload = api.metrics(run["id"], points=METRIC_POINTS)
    else:
        payload = merge(payload, api.metrics(run["id"], after_step=payload["last_step"], points=METRIC_POINTS))
        if longest(payload) > 2 * METRIC_POINTS:
            payload = api.metrics(run["id"], points=METRIC_POINTS)
    st.session_state[state_key] = {"run_id": run["id"], "payload": payload, "final": run["status"] not in ACTIVE}
    return payload


def _curve(payload: Payload, name: str, axis: XAxis, label: str, colour: str, *, markers: bool = False,
           dash: str = "solid") -> Curve | None:
    steps, values = points_of(payload, name)
    if not steps:
        return None
    return Curve(label, x_values(axis, steps, payload), values, colour=colour, markers=markers, dash=dash)


def _present(*curves: Curve | None) -> list[Curve]:
    return [c for c in curves if c is not None]


PROBED = "/probe_rel_error"
"""A tracked run's probes (``anode_lab.track``): ``<method>/probe_rel_error``, ``<method>/probe_cosine``, …"""


def probe_figures(payload: Payload, axis: XAxis, *, x_title: str, font_size: int) -> list[Any]:
    """Gradient error, memory held and field evaluations of every method a tracked run probed, one line each."""
    methods = sorted(name.removesuffix(PROBED) for name in payload["series"] if name.endswith(PROBED))
    if not methods:
        return []

    def lines(series: str) -> list[Curve]:
        shown = [m for m in methods if m != "direct" or series != "probe_rel_error"]  # Direct is the exact one
        return _present(*(_curve(payload, f"{m}/{series}", axis, m, method_colour(m), markers=True,
                                 dash=method_dash(m)) for m in shown))

    return [
        charts.curves_figure(lines("probe_rel_error"), title="Gradient error against exact (each probe)",
                             x_title=x_title, y_title="‖g − g_exact‖ / ‖g_exact‖", log_y=True, font_size=font_size),
        charts.curves_figure(lines("peak_memory_bytes"), title="Memory held for backward (each probe)",
                             x_title=x_title, y_title="bytes", font_size=font_size, y_format=charts.BYTES_FORMAT),
        charts.curves_figure(lines("nfe_backward"), title="Backward field evaluations (each probe)",
                             x_title=x_title, y_title="evaluations", font_size=font_size),
    ]


def train_curves(api: ApiClient, run: Run, *, key: str, font_size: int = charts.FONT_SIZE) -> None:
    """Loss, accuracy, gradient error against exact DTO, memory, step time and field evaluations of a training
    run, with the x axis, log scales and smoothing chosen above them."""
    payload = poll_metrics(api, run, key=key)
    if not payload["series"]:
        st.info("No metrics yet: the first points appear after the first optimizer step.", icon=":material/timeline:")
        return
    left, middle, right = st.columns([2, 2, 3])
    axis = left.radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key=f"{key}.x_axis",
                      help="compute time is the running sum of the measured step times")
    log_loss = middle.toggle("log-scale loss", value=True, key=f"{key}.log_loss")
    log_memory = middle.toggle("log-scale memory and time", value=False, key=f"{key}.log_other")
    smoothing = right.slider("smoothing", 0.0, 0.99, 0.6, 0.01, key=f"{key}.smoothing",
                             help="exponential moving average; the raw curve stays visible, faint")
    x_title = X_AXES[axis]
    method = method_label(((run.get("spec") or {}).get("ode") or {}).get("gradient") or {})
    figures = [
        charts.curves_figure(_present(_curve(payload, "train_loss", axis, "train (batch)", "#1f77b4"),
                                      _curve(payload, "test_loss", axis, "test", "#d62728", markers=True)),
                             title="Loss", x_title=x_title, y_title="cross-entropy", log_y=log_loss,
                             smoothing=smoothing, font_size=font_size),
        charts.curves_figure(_present(_curve(payload, "train_acc", axis, "train (batch)", "#1f77b4"),
                                      _curve(payload, "test_acc", axis, "test", "#d62728", markers=True)),
                             title="Accuracy", x_title=x_title, y_title="accuracy", smoothing=smoothing,
                             font_size=font_size),
    ]
    figures += probe_figures(payload, axis, x_title=x_title, font_size=font_size)
    error_steps, error_values = points_of(payload, "probe_rel_error")
    if error_steps:
        cosine_steps, cosine_values = points_of(payload, "probe_cosine")
        cosine = dict(zip(cosine_steps, cosine_values, strict=True))
        figures.append(charts.gradient_error_figure(x_values(axis, error_steps, payload), error_values,
                                                    [cosine.get(s) for s in error_steps], x_title=x_title,
                                                    method=method, font_size=font_size))
    figures.append(charts.curves_figure(
        _present(_curve(payload, "peak_memory_bytes", axis, "held for backward", "#9467bd", markers=True),
                 _curve(payload, "cuda_peak_bytes", axis, "CUDA peak", "#8c564b", markers=True)),
        title="Memory (first step of each epoch)", x_title=x_title, y_title="bytes", log_y=log_memory,
        font_size=font_size, y_format=charts.BYTES_FORMAT))
    figures.append(charts.curves_figure(_present(_curve(payload, "step_time", axis, "step time", "#2ca02c")),
                                        title="Step time", x_title=x_title, y_title="seconds", log_y=log_memory,
                                        smoothing=smoothing, font_size=font_size))
    figures.append(charts.curves_figure(
        _present(_curve(payload, "nfe_forward", axis, "forward", "#17becf", markers=True),
                 _curve(payload, "nfe_backward", axis, "backward", "#bcbd22", markers=True)),
        title="Field evaluations per step (NFE)", x_title=x_title, y_title="evaluations", font_size=font_size))
    for index, figure in enumerate(figures):
        if index % 2 == 0:
            columns = st.columns(2)
        with columns[index % 2]:
            st.plotly_chart(figure, key=f"{key}.figure.{index}")
    st.caption(DTO_NOTE)
    backward = [v for v in points_of(payload, "nfe_backward")[1] if finite(v)]
    if method == "anode" and backward and not any(backward):
        st.caption(ANODE_NFE_NOTE)
    if not error_steps and not any(name.endswith(PROBED) for name in payload["series"]):
        st.caption("The probe is off for this run (set a probe interval when launching to compare its gradient "
                   "with the exact one every k steps).")
    extra = [name for name in ("grad_norm", "lr", "probe_sign_agreement", "probe_recon_error")
             if name in payload["series"]]
    if extra:
        with st.expander("More series: " + ", ".join(extra)):
            colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
            for i, name in enumerate(extra):
                st.plotly_chart(charts.curves_figure(_present(_curve(payload, name, axis, name, colours[i])),
                                                     title=name, x_title=x_title, y_title=name, font_size=font_size,
                                                     log_y=name in ("grad_norm", "probe_recon_error")),
                                key=f"{key}.extra.{name}")
    if payload.get("decimated"):
        st.caption(f"Long series are decimated by the API to at most {METRIC_POINTS} points each (every bucket "
                   "keeps its minimum and maximum); the CSV download has every step.")


# ------------------------------------------------------------------------------------------------ sweeps
def _read_table(api: ApiClient, run: Mapping[str, Any], artifact: Mapping[str, Any]) -> list[dict[str, Any]]:
    return parse_csv(artifact_bytes(api, api.base_url, run["id"], artifact["name"], artifact["created_at"]))


def sweep_results(api: ApiClient, run: Run, *, key: str, font_size: int = charts.FONT_SIZE) -> None:
    """The sweep's ``results.csv``: error vs N_t (log-log, with the solvers' slopes) and cosine for fixed-step
    cells, error and field evaluations vs rtol for adaptive ones, memory next to the analytic model, and time;
    the fitted slopes; the table."""
    artifacts = {a["name"]: a for a in api.artifacts(run["id"])}
    if "results.csv" not in artifacts:
        if run["status"] in ACTIVE:
            st.info("The sweep is running; its figures appear when its results table is written.",
                    icon=":material/hourglass_top:")
        else:
            st.warning(f"This sweep ended {run['status']} without a results table.")
        return
    rows = _read_table(api, run, artifacts["results.csv"])
    dims = [(name, distinct(rows, name)) for name in ("dtype", "activation", "weight_scale")]
    varying = [(name, values) for name, values in dims if len(values) > 1]
    solvers = distinct(rows, "solver")
    columns = st.columns(max(1, len(varying) + (len(solvers) > 1)))
    chosen = {}
    for column, (name, values) in zip(columns, varying, strict=False):
        chosen[name] = column.selectbox(name.replace("_", " "), values, key=f"{key}.{name}")
    solver = solvers[0] if solvers else None
    if len(solvers) > 1:
        solver = columns[-1].selectbox("solver for memory and time", solvers, key=f"{key}.solver")
    shown = [r for r in rows if all(r.get(k) == v for k, v in chosen.items())]
    per_solver = [r for r in shown if r.get("solver") == solver]
    fixed, adaptive = charts.fixed_rows(shown), charts.adaptive_rows(shown)
    figures = {}
    if fixed or not adaptive:
        figures["error"] = charts.sweep_error_figure(fixed, font_size=font_size)
        figures["cosine"] = charts.sweep_cosine_figure(fixed, font_size=font_size)
    if adaptive:
        figures["rtol_error"] = charts.tolerance_error_figure(adaptive, font_size=font_size)
        figures["rtol_nfe"] = charts.tolerance_nfe_figure(adaptive, font_size=font_size)
    figures["memory"] = charts.sweep_memory_figure(per_solver, font_size=font_size)
    figures["time"] = charts.sweep_time_figure(per_solver, font_size=font_size)
    for index, (name, figure) in enumerate(figures.items()):
        if index % 2 == 0:
            row = st.columns(2)
        row[index % 2].plotly_chart(figure, key=f"{key}.{name}")
    if not adaptive:
        st.info("No adaptive cells in this sweep, so no error against rtol: add dopri5 or tsit5 to its solvers "
                "(they run along `tolerances` instead of N_t).", icon=":material/tune:")
    elif any(finite(r.get("rtol")) for r in per_solver):
        st.caption(f"Memory and time of {solver}: its N_t is the accepted steps per block, measured on Direct's "
                   "solve at each rtol.")
    if "slopes.csv" in artifacts:
        st.markdown("**Fitted log-log slopes** of the inexact methods' error against N_t (adaptive solvers: against "
                    "rtol, expected 1), next to the solver's order")
        st.dataframe(charts.slope_table(_read_table(api, run, artifacts["slopes.csv"])), hide_index=True,
                     key=f"{key}.slopes")
    with st.expander(f"All {len(rows)} cells (results.csv)"):
        st.dataframe(rows, hide_index=True, key=f"{key}.results")


# ------------------------------------------------------------------------------------------------- demos
def demo_results(api: ApiClient, run: Run, *, key: str, font_size: int = charts.FONT_SIZE,
                 findings: bool = True) -> None:
    """A demo's figures (from its CSV and JSON) and its images side by side, then what the run found."""
    artifacts = {a["name"]: a for a in api.artifacts(run["id"])}
    data: dict[str, Any] = {}
    for name, artifact in artifacts.items():
        if name.endswith(".csv"):
            data[name] = _read_table(api, run, artifact)
        elif name.endswith(".json"):
            data[name] = json.loads(artifact_bytes(api, api.base_url, run["id"], name, artifact["created_at"]))
    figures = demo_charts.demo_figures((run.get("spec") or {}).get("name", ""), data, font_size=font_size)
    images = demo_charts.reconstruction_images(list(artifacts))
    if "panel.png" in artifacts:
        st.image(artifact_bytes(api, api.base_url, run["id"], "panel.png", artifacts["panel.png"]["created_at"]),
                 caption="left to right: original · blurred · rebuilt in float32 · rebuilt in float64 (largest N_t)",
                 width="stretch")
        images = [(n, c) for n, c in images if n not in ("original.png", "blurred.png")]
    drawn = {n.rsplit(".", 1)[0] for n in artifacts if n.endswith(".svg")}  # figures, drawn here as charts
    images += [(n, n) for n, a in artifacts.items()
               if a["media_type"] in IMAGE_TYPES and n.rsplit(".", 1)[0] not in drawn
               and n not in {i for i, _ in images} | {"panel.png", "original.png", "blurred.png"}]
    if images:
        per_row = 4
        for start in range(0, len(images), per_row):
            for column, (name, caption) in zip(st.columns(per_row), images[start:start + per_row], strict=False):
                column.image(artifact_bytes(api, api.base_url, run["id"], name, artifacts[name]["created_at"]),
                             caption=caption, width="stretch")
    for index in range(0, len(figures), 2):
        pair = figures[index:index + 2]
        columns = st.columns(2) if len(pair) > 1 else [st.container()]
        for column, (offset, figure) in zip(columns, enumerate(pair), strict=True):
            with column:
                st.plotly_chart(figure, key=f"{key}.figure.{index + offset}")
    if not figures and not images:
        st.info("This demo wrote no pictures; its tables are below.")
    if findings and "explanation.md" in artifacts:
        text = artifact_bytes(api, api.base_url, run["id"], "explanation.md",
                              artifacts["explanation.md"]["created_at"]).decode("utf-8")
        found = text.split("## What this run found", 1)[-1].split("\n## ", 1)[0]
        with st.expander("What this run found", expanded=True):
            st.markdown(found)
    tables = [n for n in data if n.endswith(".csv")]
    if tables:
        with st.expander("Data: " + ", ".join(tables)):
            for name in tables:
                st.caption(name)
                st.dataframe(data[name], hide_index=True, key=f"{key}.table.{name}")


# --------------------------------------------------------------------------------------------- artifacts
def artifact_list(api: ApiClient, run: Run, *, key: str, show_images: bool = True) -> None:
    """Every file of the run: images shown (unless a view above shows them already), text and tables previewed,
    everything downloadable."""
    artifacts = api.artifacts(run["id"])
    if not artifacts:
        st.caption("No artifacts yet." if run["status"] in ACTIVE else "This run wrote no artifacts.")
        return
    images = [a for a in artifacts if a["media_type"] in IMAGE_TYPES] if show_images else []
    if images:
        for start in range(0, len(images), 4):
            for column, artifact in zip(st.columns(4), images[start:start + 4], strict=False):
                column.image(artifact_bytes(api, api.base_url, run["id"], artifact["name"], artifact["created_at"]),
                             caption=artifact["name"], width="stretch")
    for artifact in artifacts:
        name = artifact["name"]
        left, right = st.columns([4, 1])
        left.markdown(md(f"{name} · {artifact['media_type']} · {_size(artifact['size'])}"))
        right.download_button(
            "Download", key=f"{key}.download.{name}", file_name=name, mime=artifact["media_type"],
            data=partial(artifact_bytes, api, api.base_url, run["id"], name, artifact["created_at"]),
            on_click="ignore",
        )
        if name.endswith((".md", ".csv", ".json")) and artifact["size"] < 200_000:
            with st.expander(f"Preview {name}"):
                raw = artifact_bytes(api, api.base_url, run["id"], name, artifact["created_at"])
                if name.endswith(".md"):
                    st.markdown(raw.decode("utf-8"))
                elif name.endswith(".csv"):
                    st.dataframe(parse_csv(raw), hide_index=True, key=f"{key}.preview.{name}")
                else:
                    st.json(json.loads(raw), expanded=False)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
