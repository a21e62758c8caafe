"""Streamlit pieces every page shares: the API client, the unreachable-API banner, the cached catalog, run
pickers and the jump to a run's page. Pages call these; these call :mod:`dashboard.api_client` for HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import streamlit as st

from dashboard import access
from dashboard.api_client import ApiClient, ApiError, ApiUnreachable, Run
from dashboard.tables import ACTIVE, STATUS_COLOURS, run_label
from dashboard.text import md

RUN_DETAIL_PAGE = "app_pages/run_detail.py"
COMPARE_PAGE = "app_pages/compare.py"
T = TypeVar("T")


@st.cache_resource
def shared_client() -> ApiClient:
    """One HTTP client per dashboard process (it pools connections); settings from ``ANODE_*``; no key."""
    return ApiClient()


def client() -> ApiClient:
    """The shared client sending this session's key, if its person signed in."""
    return shared_client().with_key(access.session_key())


def unreachable_banner(exc: ApiUnreachable) -> None:
    st.error(
        f"**The anode-lab API is unreachable** at `{exc.url}` ({exc.reason}).\n\n"
        "Start everything with `anode-lab up`, or the API alone with `anode-lab api`; point the dashboard "
        "elsewhere with `ANODE_API_URL`. This page retries when you reload it.",
        icon=":material/cloud_off:",
    )


def connect() -> ApiClient:
    """The client, once the API has answered ``/health``; otherwise a banner and the page stops here. An API
    that wants a key this session does not hold gets the sign-in form instead of the page; an API without keys
    is shown only to this machine.

    The sidebar shows the live workers, so a run that waits for lack of one is not a mystery."""
    api = client()
    try:
        health = api.health()
    except ApiUnreachable as exc:
        unreachable_banner(exc)
        st.stop()
    except ApiError as exc:
        if exc.status == 401:
            access.sign_in(shared_client())
        st.error(f"**The API answered with an error**: {md(exc)}", icon=":material/error:")
        st.stop()
    if access.session_key() is None:
        access.refuse_remote_viewer()
    workers = health.get("workers") or []
    with st.sidebar:
        access.sign_out_button()
        if health.get("status") != "ok":
            st.warning(f"API degraded: database {health.get('database')}, queue {health.get('queue')}")
        for problem in sorted({w["problem"] for w in workers if w.get("problem")}):
            st.text(problem)  # a worker's failed start-up check, as it wrote it
        if workers:
            devices = ", ".join(sorted({w["device"] for w in workers}))
            busy = sum(1 for w in workers if w.get("run_id") is not None)
            st.caption(f":green[●] API ok · {len(workers)} worker(s) ({devices}), {busy} busy")
        else:
            st.caption(":orange[●] API ok · no live worker: runs wait in the queue "
                       "(start one with `anode-lab worker`)")
    return api


def call(action: Callable[[], T], *, what: str) -> T | None:
    """Run one API call on behalf of a button; show why it failed instead of raising."""
    try:
        return action()
    except ApiUnreachable as exc:
        unreachable_banner(exc)
    except ApiError as exc:
        st.error(f"Could not {md(what)}: {md(exc.detail)}", icon=":material/error:")
    return None


@st.cache_data(ttl=300, show_spinner="Reading the catalog…")
def catalog(_api: ApiClient, base_url: str) -> dict[str, Any]:
    """``GET /catalog``, cached five minutes per API (``base_url`` is the cache key)."""
    return _api.catalog()


def load_catalog(api: ApiClient) -> dict[str, Any]:
    try:
        return catalog(api, api.base_url)
    except ApiUnreachable as exc:
        unreachable_banner(exc)
        st.stop()


@st.cache_data(ttl=3600, max_entries=512, show_spinner=False)
def artifact_bytes(_api: ApiClient, base_url: str, run_id: int, name: str, created_at: str) -> bytes:
    """An artifact's bytes; artifacts of a run do not change once written (``created_at`` keys a rewrite)."""
    return _api.artifact(run_id, name)


def status_badge(status: str) -> str:
    """Markdown for a coloured status badge."""
    return f":{STATUS_COLOURS.get(status, 'gray')}-badge[{status}]"


def open_run(run_id: int) -> NoReturn:
    """Go to the run's page (its id travels in the URL, so the page can be bookmarked and reloaded)."""
    st.switch_page(RUN_DETAIL_PAGE, query_params={"run": str(run_id)})


def open_group(group_id: int) -> NoReturn:
    """Go to the compare page of a side-by-side group (``/compare?group=ID``)."""
    st.switch_page(COMPARE_PAGE, query_params={"group": str(group_id)})


def pick_run(runs: Sequence[Run], *, label: str, key: str, default_id: int | None = None,
             help: str | None = None, on_change: Callable[[], None] | None = None) -> Run | None:
    """A select box over ``runs`` (labels ``#id name``: a keyed widget keeps its first labels, so nothing that
    changes, such as the status, goes into them); returns the chosen run."""
    if not runs:
        return None
    ids = [r["id"] for r in runs]
    by_id = {r["id"]: r for r in runs}
    # A set state must not meet a default too; Streamlit reads index 0 as "no default".
    index = ids.index(default_id) if default_id in ids and key not in st.session_state else 0
    chosen = st.selectbox(label, ids, key=key, help=help, on_change=on_change,
                          format_func=lambda i: run_label(by_id[i]), index=index)
    return by_id.get(chosen)


def progress(run: Run) -> None:
    """A progress bar with the worker's note for an active run, or where it waits."""
    info: Mapping[str, Any] = run.get("progress") or {}
    done, total = info.get("done", 0), info.get("total", 0)
    if run["status"] == "queued":
        st.info(md(run.get("status_detail") or "queued"), icon=":material/hourglass_top:")
    elif run["status"] == "running":
        fraction = min(1.0, done / total) if total else 0.0
        st.progress(fraction, text=md(f"{done}/{total} · {info.get('note', '')}") if total else "starting…")


def is_active(run: Run) -> bool:
    return run.get("status") in ACTIVE
