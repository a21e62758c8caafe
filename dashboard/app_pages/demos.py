"""Teaching demos: one section per failure mode of the continuous adjoint (and one on memory, one on adaptive
tolerances, one on the reversible solver), each with a few sentences on what it shows, a button that runs it, and
its pictures side by side (drawn by ``dashboard.demo_charts``). Large type for a wall."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import charts, views
from dashboard.api_client import Run
from dashboard.components import call, connect, is_active, load_catalog, open_run, progress

REFRESH = "1s"

api = connect()
catalog = load_catalog(api)
st.title("Teaching demos")
wall = st.toggle("Projector mode (large type)", value=False, key="demos.wall")
font_size = charts.WALL_FONT_SIZE if wall else charts.FONT_SIZE
# Eight tabs fit across a 1280-pixel screen with the sidebar open: closer together than Streamlit sets them.
st.html("<style>.stMainBlockContainer [role=tablist] {gap: 0.5rem}</style>")
if wall:
    # Larger prose on a narrower margin; the tabs keep their size, so all of them still fit at 1280 pixels.
    st.html("<style>.stMainBlockContainer p, .stMainBlockContainer li {font-size: 1.3rem; line-height: 1.5} "
            ".stMainBlockContainer [role=tab] p {font-size: 1rem} "
            ".stMainBlockContainer {padding-left: 2rem; padding-right: 2rem}</style>")
st.caption("Each demo runs in seconds on a CPU and writes its data, pictures and an explanation; the newest run "
           "of each is shown.")

demos: list[dict[str, Any]] = catalog["demos"]
if not demos:
    st.info("The API's catalog lists no demos.")
    st.stop()


def latest_runs() -> dict[str, Run]:
    """The newest run of each demo, by the demo's name in its spec."""
    out: dict[str, Run] = {}
    for run in api.recent_runs(kind="demo", most=200)["data"]:
        out.setdefault((run.get("spec") or {}).get("name", ""), run)
    return out


def launch(name: str) -> None:
    """Button callback: run the demo with its defaults."""
    spec = next(d["spec"] for d in demos if d["name"] == name)
    call(lambda: api.create_run("demo", spec, name=name, tags=["demo"]), what=f"run the demo {name}")


def tab_label(demo: dict[str, Any]) -> str:
    name: str = demo["name"]
    return name.replace("-", " ").capitalize()


def section(demo: dict[str, Any], run: Run | None) -> None:
    name = demo["name"]
    st.header(demo["title"])
    text, actions = st.columns([4, 1])
    text.markdown(demo["explanation"])
    knobs = ", ".join(f"{k} = {v}" for k, v in demo["defaults"].items())
    text.caption(f"Defaults: {knobs}. Change them on the Launch page." if knobs else "")
    actions.button("Run this demo", key=f"demos.run.{name}", type="primary", icon=":material/play_arrow:",
                   on_click=launch, args=(name,), disabled=bool(run and is_active(run)))
    if run is None:
        st.info("Not run yet: press **Run this demo**.", icon=":material/play_circle:")
        return
    if actions.button("Open run page", key=f"demos.open.{name}", icon=":material/open_in_new:"):
        open_run(run["id"])
    if is_active(run):
        with st.status(f"Running (run {run['id']})…", expanded=True):
            progress(run)
        return
    if run["status"] != "succeeded":
        views.status_panel(run)
        return
    views.demo_results(api, run, key=f"demos.{name}", font_size=font_size)


def body() -> None:
    latest = latest_runs()
    active = any(is_active(r) for r in latest.values())
    if active != st.session_state.get("demos.live", False):
        st.session_state["demos.live"] = active
        st.rerun()
    tabs = st.tabs([tab_label(d) for d in demos], key="demo", on_change="rerun", bind="query-params")
    for tab, demo in zip(tabs, demos, strict=True):
        if tab.open is False:  # only the open tab fetches its pictures
            continue
        with tab:
            section(demo, latest.get(demo["name"]))


st.fragment(body, run_every=REFRESH if st.session_state.get("demos.live") else None)()
