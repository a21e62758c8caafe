"""Run detail: one run's status (and error), then, live while it runs, its curves: loss and accuracy, the
gradient's error against exact DTO with the cosine, memory, step time and NFE; a sweep's figures or a demo's
pictures once they are written; its spec, a CSV of every metric and its artifacts."""

from __future__ import annotations

import streamlit as st

from dashboard import views
from dashboard.api_client import ApiError, ApiUnreachable
from dashboard.components import call, connect, is_active, pick_run, unreachable_banner
from dashboard.tables import ACTIVE, run_colour, run_label
from dashboard.text import md

REFRESH = "2s"

api = connect()


def chosen_run_id() -> int | None:
    """The run in the URL (``?run=ID``), else the one picked below."""
    raw = st.query_params.get("run")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


run_id = chosen_run_id()
recent = api.recent_runs(most=100)["data"]
if not recent and run_id is None:
    st.title("Run detail")
    st.info("No runs yet: launch one and it will show up here live.", icon=":material/inbox:")
    st.page_link("app_pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()
if run_id is not None and run_id not in {r["id"] for r in recent}:
    try:
        recent = [api.get_run(run_id), *recent]
    except ApiError:
        st.warning(f"Run {run_id} does not exist (it may have been deleted).")
        run_id = None
if run_id is not None:  # the URL wins (a link, the Open button, a reload); picking below changes the URL
    st.session_state["run_detail.run"] = run_id
elif st.session_state.get("run_detail.run") not in {r["id"] for r in recent}:
    st.session_state.pop("run_detail.run", None)


def url_follows_picker() -> None:
    st.query_params["run"] = str(st.session_state["run_detail.run"])


with st.sidebar:
    picked = pick_run(recent, label="Run", key="run_detail.run", default_id=run_id, on_change=url_follows_picker)
if picked is None:
    st.stop()
picked_id: int = picked["id"]  # the functions below read it after this page's run has been narrowed
if picked["id"] != run_id:
    st.query_params["run"] = str(picked["id"])

dot = f':color[●]{{foreground="{run_colour(picked)}"}}'  # the colour its curves have on every page
st.title(f"{dot} {md(run_label(picked))}")
if picked.get("tags"):
    st.caption("tags: " + md(", ".join(picked["tags"])))


def live() -> None:
    """Status and results, polled every few seconds while the run is queued or running."""
    try:
        run = api.get_run(picked_id)
    except ApiUnreachable as exc:
        unreachable_banner(exc)
        return
    except ApiError as exc:
        st.warning(f"Run {picked_id}: {md(exc.detail)}")
        return
    if is_active(run) != st.session_state.get("run_detail.live", False):  # start or stop polling
        st.session_state["run_detail.live"] = is_active(run)
        st.rerun()
    status, action = st.columns([6, 1], vertical_alignment="center")
    with status:
        views.status_panel(run)
    if run["status"] in ACTIVE:
        if action.button("Cancel", key="run_detail.cancel", icon=":material/stop_circle:",
                         help="a running run stops at its next step"):
            call(lambda: api.cancel_run(run["id"]), what="cancel the run")
            st.rerun()
    elif run["kind"] != "external" and action.button("Rerun", key="run_detail.rerun", icon=":material/replay:",
                                                     help="queue the same spec again"):
        new = call(lambda: api.rerun(run["id"]), what="rerun the run")
        if new is not None:
            st.query_params["run"] = str(new["id"])
            st.rerun()
    views.summary_metrics(run)
    if run["kind"] in ("train", "external"):
        views.train_curves(api, run, key="run_detail.train")
    elif run["kind"] == "compare":
        views.sweep_results(api, run, key="run_detail.sweep")
    elif run["status"] == "succeeded":
        views.demo_results(api, run, key="run_detail.demo")


with st.spinner("Loading the run…"):
    st.fragment(live, run_every=REFRESH if st.session_state.get("run_detail.live") else None)()

st.divider()
spec_column, files_column = st.columns([1, 2], gap="large")
with spec_column:
    st.subheader("Spec")
    st.json(picked["spec"], expanded=2)
    st.download_button("Download every metric (CSV)", data=lambda: api.metrics_csv(picked_id),
                       file_name=f"run-{picked['id']}-metrics.csv", mime="text/csv", key="run_detail.csv",
                       icon=":material/download:", on_click="ignore")
with files_column:
    st.subheader("Artifacts")
    views.artifact_list(api, picked, key="run_detail.files", show_images=picked["kind"] != "demo")
