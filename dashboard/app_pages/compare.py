"""Compare runs: overlay the curves of several training runs for the series chosen, then a table of their final
metrics next to the spec fields on which they differ. ``/compare?group=ID`` opens a side-by-side group (one run
per gradient method): a one-glance table first, then every curve in the method's own colour, live while the
runs train."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts
from dashboard.api_client import ApiClient, ApiError, Metrics, Run
from dashboard.charts import Curve
from dashboard.components import connect
from dashboard.series import X_AXES, points_of, x_values
from dashboard.side_by_side import GROUP_SERIES, group_rows, run_method, series_info
from dashboard.tables import (
    ACTIVE,
    MISSING,
    method_colour,
    method_dash,
    run_colour,
    run_label,
    steps_label,
    summary_rows,
)
from dashboard.text import md

POINTS = 1000
REFRESH = 2.0
SMOOTHING = 0.6  # the same default as Run detail; the raw curves stay visible, faint
DEFAULT_SERIES = ("train_loss", "test_acc", "probe_rel_error", "step_time")
EXACT_AT_ZERO = ("probe_rel_error",)


@st.cache_data(ttl=3600, max_entries=256, show_spinner=False)
def run_metrics(_api: ApiClient, base_url: str, run_id: int, version: tuple[str, str | None]) -> Metrics:
    """Metrics of a run as of ``version`` (its last update and heartbeat): a finished run's are read once."""
    return _api.metrics(run_id, points=POINTS)


def read_metrics(runs: Sequence[Run]) -> dict[int, Metrics]:
    with st.spinner("Reading metrics…"):
        return {r["id"]: run_metrics(api, api.base_url, r["id"], (r["updated_at"], r.get("heartbeat"))) for r in runs}


def overlay(runs: Sequence[Run], payloads: Mapping[int, Metrics], series: Sequence[str], *, key: str,
            labels: Mapping[int, str], colours: Mapping[int, str], dashes: Mapping[int, str] | None = None) -> None:
    """One chart per series, two to a row, each run a curve; controls for the x axis, log scale and smoothing."""
    controls = st.columns([2, 1, 2])
    axis = controls[0].radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key=f"{key}.x_axis")
    log_y = controls[1].toggle("log y", value=True, key=f"{key}.log_y", help="for losses and errors")
    smoothing = controls[2].slider("smoothing", 0.0, 0.99, SMOOTHING, 0.01, key=f"{key}.smoothing",
                                   help="exponential moving average; the raw curves stay visible, faint")
    for index, name in enumerate(series):
        if index % 2 == 0:
            columns = st.columns(2)
        info = series_info(name)
        curves = []
        for run in runs:
            payload = payloads[run["id"]]
            steps, values = points_of(payload, name)
            if steps:
                if name in EXACT_AT_ZERO and log_y:  # an exact method's zero error is drawn at the rounding floor
                    values = charts.positive(values, charts.ROUNDING_FLOOR)
                curves.append(Curve(labels[run["id"]], x_values(axis, steps, payload), values,
                                    colour=colours[run["id"]], dash=(dashes or {}).get(run["id"], "solid"),
                                    markers=len(steps) < 40))
        with columns[index % 2]:
            st.plotly_chart(charts.curves_figure(curves, title=info.title, x_title=X_AXES[axis], y_title=info.y_title,
                                                 log_y=log_y and info.log_y, smoothing=smoothing,
                                                 y_format=charts.BYTES_FORMAT if info.bytes else None),
                            key=f"{key}.figure.{name}")


def group_page(group_id: int) -> None:
    try:
        group = api.get_group(group_id)
    except ApiError as exc:
        st.error(f"Group {group_id}: {md(exc.detail)}", icon=":material/error:")
        st.stop()
    st.title(f"Side by side: {md(group['name'] or f'group {group_id}')}")
    runs = group["runs"]
    methods = {r["id"]: run_method(r) for r in runs}
    first = runs[0]["spec"] if runs else {}
    ode = first.get("ode") or {}
    steps = f"N_t={ode['steps']}" if ode.get("steps") is not None else steps_label(ode)
    st.caption(md(f"{len(runs)} runs of {first.get('model')} on {first.get('dataset')}, {ode.get('solver')} "
                  f"{steps}, seed {first.get('seed')}: identical but for the gradient method."))

    def body() -> None:
        fresh = api.get_group(group_id)["runs"]
        live = any(r["status"] in ACTIVE for r in fresh)
        if live != st.session_state.get("compare.group.live", True):  # start or stop refreshing
            st.session_state["compare.group.live"] = live
            st.rerun()
        payloads = read_metrics(fresh)
        st.dataframe(pd.DataFrame(group_rows(fresh, payloads)).style.format(
                         {"final test accuracy": "{:.3f}", "gradient error at the end": "{:.2e}",
                          "peak memory ×Direct": "{:.2f}×", "time ×Direct": "{:.2f}×"}, na_rep=MISSING),
                     hide_index=True, key="compare.group.table")
        available = {name for p in payloads.values() for name in p["series"]}
        overlay(fresh, payloads, [s for s in GROUP_SERIES if s in available], key="compare.group",
                labels={r["id"]: f"{methods[r['id']]} (#{r['id']})" for r in fresh},
                colours={r["id"]: method_colour(methods[r["id"]]) for r in fresh},
                dashes={r["id"]: method_dash(methods[r["id"]]) for r in fresh})

    st.fragment(body, run_every=REFRESH if st.session_state.get("compare.group.live", True) else None)()


def runs_page() -> None:
    st.title("Compare runs")
    runs = list(api.recent_runs(kind="train", most=200)["data"])
    if not runs:
        st.info("No training runs to compare yet. Launch two with different gradient methods (or **Run side by "
                "side** on the Launch page), then come back.", icon=":material/inbox:")
        st.page_link("app_pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
        st.stop()
    by_id = {r["id"]: r for r in runs}
    default = [r["id"] for r in runs if r["status"] == "succeeded"][:3] or [runs[0]["id"]]
    chosen_ids = st.multiselect("Runs", list(by_id), default=default, key="compare.runs",
                                format_func=lambda i: run_label(by_id[i]))
    chosen: list[Run] = [by_id[i] for i in chosen_ids]
    if not chosen:
        st.info("Pick at least one run above.")
        st.stop()
    payloads = read_metrics(chosen)
    available = sorted({name for p in payloads.values() for name in p["series"]})
    series = st.multiselect("Series", available, default=[s for s in DEFAULT_SERIES if s in available],
                            key="compare.series", format_func=lambda s: series_info(s).title)
    overlay(chosen, payloads, series, key="compare", labels={r["id"]: run_label(r) for r in chosen},
            colours={r["id"]: run_colour(r) for r in chosen},
            dashes={r["id"]: method_dash(run_method(r)) for r in chosen if (r.get("spec") or {}).get("ode")})
    st.subheader("Final metrics and how the specs differ")
    st.dataframe(pd.DataFrame(summary_rows(chosen)).style.format(na_rep=MISSING), hide_index=True,
                 key="compare.table")


api = connect()
group: Any = st.query_params.get("group")
if group is not None and str(group).isdigit():
    group_page(int(group))
else:
    runs_page()
