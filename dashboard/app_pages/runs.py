"""Runs: every run in a table (name, kind, status, method, solver, N_t, activation, best accuracy, duration,
created), filtered and sorted; select some to open, cancel, rerun or delete them. Each run keeps its colour
on every page. The table refreshes itself while runs are queued or running."""

from __future__ import annotations

import math
from functools import partial
from numbers import Real
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.api_client import ApiUnreachable, Run
from dashboard.components import call, connect, open_run, unreachable_banner
from dashboard.tables import (
    ACTIVE,
    FINISHED,
    MISSING,
    TABLE_COLUMNS,
    filter_rows,
    format_duration,
    run_colour,
    run_label,
    run_row,
    sort_rows,
)

FETCH_LIMIT = 500
REFRESH = "3s"

api = connect()
st.title("Runs")

filters = st.columns([2, 2, 2, 2, 1])
statuses = filters[0].multiselect("Status", [*ACTIVE, *FINISHED], key="runs.status")
kinds = filters[1].multiselect("Kind", ["train", "compare", "demo", "external"], key="runs.kind")
tag = filters[2].text_input("Tag", key="runs.tag", placeholder="exact tag").strip() or None
text = filters[3].text_input("Search", key="runs.search", placeholder="name or method")
order = st.columns([2, 1, 5])
sort_by = order[0].selectbox("Sort by", TABLE_COLUMNS, index=0, key="runs.sort")
descending = order[1].toggle("Descending", value=True, key="runs.descending")


def known(v: object) -> float | None:
    """A table cell's number, or None where the run has none (NaN)."""
    return float(v) if isinstance(v, Real) and not math.isnan(v) else None


def styled(frame: pd.DataFrame, colours: dict[int, str]) -> Any:
    """Each run's id cell in its colour (its gradient method's), the one its curves have on the other pages."""
    def colour(column: pd.Series) -> list[str]:
        return [f"background-color: {colours[int(i)]}; color: white; font-weight: 600" for i in column]

    def percent(v: object) -> str:
        return MISSING if (x := known(v)) is None else f"{x:.2%}"

    def duration(v: object) -> str:
        return format_duration(known(v)) or MISSING

    return frame.style.apply(colour, subset=["id"]).format({"best accuracy": percent, "duration": duration})


def act_on(action: str, run_id: int) -> str | None:
    """Cancel, rerun or delete one run: the note to show, or None when the call failed (its error is shown)."""
    what = f"{action} run {run_id}"
    if action == "cancel":
        cancelled = call(partial(api.cancel_run, run_id), what=what)
        return None if cancelled is None else f"Run {run_id}: cancel requested"
    if action == "rerun":
        again = call(partial(api.rerun, run_id), what=what)
        return None if again is None else f"Run {run_id} queued again as run {again['id']}"
    deleted = call(partial(delete, run_id), what=what)
    return None if deleted is None else f"Run {run_id} deleted"


def delete(run_id: int) -> bool:
    api.delete_run(run_id)
    return True


def act(action: str, run_ids: list[int]) -> None:
    """Button callback: cancel, rerun or delete the chosen runs before the table is drawn again."""
    notes = [("success", note) for run_id in run_ids if (note := act_on(action, run_id)) is not None]
    st.session_state["runs.notes"] = notes
    if action == "delete":
        st.session_state["runs.selected"] = []
        st.session_state["runs.confirm_delete"] = False


def runs_table() -> None:
    for _, note in st.session_state.pop("runs.notes", []):
        st.toast(note, icon=":material/check:")
    try:
        page = api.recent_runs(tag=tag, most=FETCH_LIMIT)
    except ApiUnreachable as exc:
        unreachable_banner(exc)
        return
    runs: list[Run] = page["data"]
    active = any(r["status"] in ACTIVE for r in runs)
    if active != st.session_state.get("runs.active", False):  # start or stop the refresh: a full rerun
        st.session_state["runs.active"] = active
        st.rerun()
    if not runs:
        st.info("No runs yet. Launch one from the **Launch** page, or try a teaching demo.", icon=":material/inbox:")
        st.page_link("app_pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
        return
    rows = sort_rows(filter_rows((run_row(r) for r in runs), statuses=statuses, kinds=kinds, text=text),
                     sort_by, descending)
    running = sum(1 for r in runs if r["status"] in ACTIVE)
    st.caption(f"{len(rows)} shown of {page['count']} runs"
               + (f" · {running} queued or running; refreshing every {REFRESH}" if running else ""))
    if not rows:
        st.info("No run matches these filters.")
        return
    colours = {r["id"]: run_colour(r) for r in runs}
    st.dataframe(styled(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)), colours), hide_index=True, key="runs.table",
                 width="stretch")

    by_id = {r["id"]: r for r in runs}
    st.session_state["runs.selected"] = [i for i in st.session_state.get("runs.selected", []) if i in by_id]
    chosen = st.multiselect("Act on runs", [row["id"] for row in rows], key="runs.selected",
                            format_func=lambda i: run_label(by_id[i]))
    actions = st.columns([1, 1, 1, 1, 3])
    if actions[0].button("Open", key="runs.open", disabled=len(chosen) != 1, icon=":material/open_in_new:",
                         help="select exactly one run"):
        open_run(chosen[0])
    actions[1].button("Cancel", key="runs.cancel", disabled=not chosen, icon=":material/stop_circle:",
                      on_click=act, args=("cancel", chosen))
    actions[2].button("Rerun", key="runs.rerun", disabled=not chosen, icon=":material/replay:",
                      on_click=act, args=("rerun", chosen))
    sure = actions[4].checkbox("Yes, delete their metrics and files", key="runs.confirm_delete")
    actions[3].button("Delete", key="runs.delete", disabled=not chosen or not sure, icon=":material/delete:",
                      help="a running run must be cancelled first", on_click=act, args=("delete", chosen))


st.fragment(runs_table, run_every=REFRESH if st.session_state.get("runs.active") else None)()
