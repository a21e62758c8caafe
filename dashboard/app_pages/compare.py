"""Compare runs: overlay the curves of several training runs (each in its own colour) for the series chosen,
then a table of their final metrics next to the spec fields on which they differ."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import charts
from dashboard.api_client import ApiClient
from dashboard.charts import Curve
from dashboard.components import connect
from dashboard.series import X_AXES, Payload, points_of, x_values
from dashboard.tables import run_colour, run_label, summary_rows

POINTS = 1000
DEFAULT_SERIES = ("train_loss", "test_acc", "probe_rel_error", "step_time")
LOG_SERIES = ("train_loss", "test_loss", "probe_rel_error", "probe_recon_error", "grad_norm")
EXACT_AT_ZERO = ("probe_rel_error",)


@st.cache_data(ttl=3600, max_entries=256, show_spinner=False)
def run_metrics(_api: ApiClient, base_url: str, run_id: int, version: tuple[str, str | None]) -> Payload:
    """Metrics of a run as of ``version`` (its last update and heartbeat): a finished run's are read once."""
    return _api.metrics(run_id, points=POINTS)


api = connect()
st.title("Compare runs")
runs = [r for r in api.recent_runs(kind="train", most=200)["data"]]
if not runs:
    st.info("No training runs to compare yet. Launch two with different gradient methods, then come back.",
            icon=":material/inbox:")
    st.page_link("app_pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

by_id = {r["id"]: r for r in runs}
default = [r["id"] for r in runs if r["status"] == "succeeded"][:3] or [runs[0]["id"]]
chosen_ids = st.multiselect("Runs", list(by_id), default=default, key="compare.runs",
                            format_func=lambda i: run_label(by_id[i]))
chosen: list[dict[str, Any]] = [by_id[i] for i in chosen_ids]
if not chosen:
    st.info("Pick at least one run above.")
    st.stop()

with st.spinner("Reading metrics…"):
    payloads = {r["id"]: run_metrics(api, api.base_url, r["id"], (r["updated_at"], r.get("heartbeat"))) for r in chosen}
available = sorted({name for p in payloads.values() for name in p["series"]})
controls = st.columns([3, 2, 1, 2])
series = controls[0].multiselect("Series", available, default=[s for s in DEFAULT_SERIES if s in available],
                                 key="compare.series")
axis = controls[1].radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key="compare.x_axis")
log_y = controls[2].toggle("log y", value=True, key="compare.log_y", help="for losses and errors")
smoothing = controls[3].slider("smoothing", 0.0, 0.99, 0.0, 0.01, key="compare.smoothing",
                               help="the raw curves stay visible, faint")

for index, name in enumerate(series):
    if index % 2 == 0:
        columns = st.columns(2)
    curves = []
    for run in chosen:
        payload = payloads[run["id"]]
        steps, values = points_of(payload, name)
        if steps:
            if name in EXACT_AT_ZERO and log_y:  # an exact method's zero error is drawn at the rounding floor
                values = charts.positive(values, charts.ROUNDING_FLOOR)
            curves.append(Curve(run_label(run), x_values(axis, steps, payload), values, colour=run_colour(run["id"]),
                                markers=len(steps) < 40))
    with columns[index % 2]:
        st.plotly_chart(charts.curves_figure(curves, title=name, x_title=X_AXES[axis], y_title=name,
                                             log_y=log_y and name in LOG_SERIES, smoothing=smoothing),
                        key=f"compare.figure.{name}")

st.subheader("Final metrics and how the specs differ")
st.dataframe(summary_rows(chosen), hide_index=True, key="compare.table")
