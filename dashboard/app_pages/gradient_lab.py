"""Gradient lab: the results of a gradient sweep. How far each method's gradient is from the exact gradient
of the computed network as N_t grows (log-log, next to the slopes the solvers' orders predict) or, for adaptive
solvers, as rtol shrinks (with the field evaluations it costs), the cosine,
the memory each keeps for backward next to the analytic model, and the time. One click runs the default sweep."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, views
from dashboard.components import call, connect, is_active, load_catalog, pick_run, progress
from dashboard.text import md

REFRESH = "2s"

api = connect()
catalog = load_catalog(api)
st.title("Gradient lab")
st.markdown(
    "Every method's gradient is compared with **Direct**, the exact gradient of the network that was actually "
    "computed (discretize-then-optimize). ANODE (itself a discrete adjoint) matches it to rounding; the continuous "
    "adjoint (Chen et al.) is off by O(dt^p) for a smooth field, its error falling at the solver's order p, the "
    "dotted reference slopes. With ReLU's kinks the measured slope differs: the table gives each fitted slope. "
    "Adaptive solvers (dopri5, tsit5, …) run along rtol instead: Direct and ANODE differentiate the accepted steps "
    "exactly; the adjoint solved adaptively is off by 4 to 8,000 × rtol (measured slopes 0.7–1.1, not 1 exactly) for "
    "a smooth field (tanh, the sweep form's default for them); ReLU's kinks slow that fall and make tight rtol "
    "costly."
)

with st.expander("Cost of checkpoints inside a block", icon=":material/memory:"):
    st.markdown(
        "`Anode(checkpoints=c)` keeps at most *c* states inside a block and reverses it with the optimal binomial "
        "(revolve) schedule: memory stops growing with N_t and the backward pass pays extra field evaluations. "
        "Per block and per solver stage, Direct makes none in backward and whole-block ANODE N_t. The default, "
        "`Anode(checkpoints=\"auto\")`, runs the solver once and rebuilds the steps once more in backward, "
        "holding about √N_t states; through `odeint` it keeps the graph of the last steps (the trailing segments "
        "of √N_t steps within 3/10 of them) and rebuilds the rest: at N_t = 128, 0.29 of Direct's peak for 1.12× "
        "its time (`python bench/gradients.py --only odeint-memory`)."
    )
    st.plotly_chart(charts.checkpoint_cost_figure(), key="gradient_lab.checkpoint_cost")

head = st.columns([3, 2])
if head[1].button("Run the default sweep", type="primary", icon=":material/play_arrow:", key="gradient_lab.launch",
                  help="solvers × N_t × methods as the catalog's default compare spec; seconds on a CPU"):
    run = call(lambda: api.create_run("compare", catalog["kinds"]["compare"]["default"], name="default sweep",
                                      tags=["gradient-lab"]), what="launch the sweep")
    if run is not None:
        st.session_state["gradient_lab.run"] = run["id"]
sweeps = api.recent_runs(kind="compare", most=100)["data"]
if not sweeps:
    st.info("No sweep yet. Run the default one with the button above, or set one up on the **Launch** page.",
            icon=":material/science:")
    st.stop()
finished = [r["id"] for r in sweeps if r["status"] == "succeeded"]
default_id = st.session_state.get("gradient_lab.run") or (finished[0] if finished else sweeps[0]["id"])
with head[0]:
    chosen = pick_run(sweeps, label="Sweep", key="gradient_lab.run", default_id=default_id)
if chosen is None:
    st.stop()
chosen_id: int = chosen["id"]  # the functions below read it after this page's sweep has been narrowed


def results() -> None:
    run = api.get_run(chosen_id)
    if is_active(run) != st.session_state.get("gradient_lab.live", False):
        st.session_state["gradient_lab.live"] = is_active(run)
        st.rerun()
    progress(run)
    if error := run.get("error"):
        st.error(md(f"{error['type']}: {error['message']}"))
    views.sweep_results(api, run, key="gradient_lab.sweep")


st.fragment(results, run_every=REFRESH if st.session_state.get("gradient_lab.live") else None)()
