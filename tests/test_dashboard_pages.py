"""Every dashboard page, run by ``streamlit.testing.v1.AppTest`` against a real API and a real worker
(``anode-lab api`` and ``anode-lab worker`` processes, temporary ``ANODE_DATA_DIR``): no exception, the
expected widgets and figures, launched runs in the runs table, the API's 422 under its field, live polling
and the run actions."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from service_helpers import (
    EAGER,
    ENDED,
    NOT_A_FORM,
    TRAIN_SMALL,
    Service,
    submit,
    wait_for,
    wait_status,
)
from streamlit.testing.v1 import AppTest

from anode_lab.specs.common import SOLVERS
from anode_lab.specs.compare import CompareSpec
from dashboard.live import MAX_AGE
from dashboard.tables import METHOD_COLOURS, run_colour

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
ENV = EAGER
SMALL_SWEEP = {"solvers": ["euler", "midpoint"], "steps": [1, 2, 4], "device": "cpu"}


def start(tmp: Path, *, worker: bool) -> Service:
    return Service(tmp, ENV).start(workers=1 if worker else 0)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start(tmp_path_factory.mktemp("dashboard-data"), worker=True)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def api_url(service: Service, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the dashboard at the test API; the cached client and catalog of an earlier API are dropped."""
    monkeypatch.setenv("ANODE_API_URL", service.url)
    st.cache_resource.clear()
    st.cache_data.clear()
    return service.url


@pytest.fixture(scope="module")
def seeded(service: Service) -> dict[str, int]:
    """Runs of every kind, ended: two training runs (ANODE and the adjoint, probed), a sweep and two demos."""
    with httpx.Client(base_url=service.url, timeout=10) as client:
        ids = {
            "anode": submit(client, "train", {**TRAIN_SMALL, "probe_every": 2, "threads": 1}, name="moons-anode"),
            "adjoint": submit(client, "train", {**TRAIN_SMALL, "probe_every": 2, "threads": 1,
                                                "ode": {"gradient": {"method": "adjoint"}}}, name="moons-adjoint"),
            "sweep": submit(client, "compare", SMALL_SWEEP, name="small sweep"),
            "blowup": submit(client, "demo", {"name": "reconstruction-blowup"}, name="reconstruction-blowup"),
            "wrong_sign": submit(client, "demo", {"name": "wrong-sign"}, name="wrong-sign"),
        }
        for run_id in ids.values():
            assert wait_status(client, run_id, ENDED, timeout=120)["status"] == "succeeded"
    return ids


def page(name: str, **query: str) -> AppTest:
    """The app opened on ``app_pages/<name>.py`` with ``query`` in the URL, run once, without an exception."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(f"app_pages/{name}.py").run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def titles(at: AppTest) -> list[str]:
    return [f["layout"]["title"]["text"].replace("<br>", " ") for f in figures(at)]  # a long title wraps


def shown(markdown: object) -> str:
    """What a reader sees of markdown that ``dashboard.text.md`` escaped: the text without its backslashes."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(markdown))


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(shown(e.value) for e in getattr(at, kind))


def flat(node: Any) -> list[Any]:
    """The elements of a tree in screen order."""
    children = getattr(node, "children", None)
    if not children:
        return [node]
    return [leaf for child in children.values() for leaf in flat(child)]


# --------------------------------------------------------------------------------------------- empty
def test_every_page_has_an_empty_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = start(tmp_path, worker=False)
    try:
        monkeypatch.setenv("ANODE_API_URL", svc.url)
        st.cache_resource.clear()
        st.cache_data.clear()
        expected = {"runs": "No runs yet", "run_detail": "No runs yet", "compare": "No training runs",
                    "gradient_lab": "No sweep yet", "demos": "Not run yet"}
        for name, message in expected.items():
            at = page(name)
            assert message in texts(at, "info"), name
            assert "no live worker" in texts(at.sidebar, "caption"), name
        assert page("launch").button(key="launch.train.submit")
        lab = page("gradient_lab")  # the checkpoint cost needs no sweep: it is computed, not measured
        assert [e.label for e in lab.expander] == ["Cost of checkpoints inside a block"]
        assert len(lab.get("plotly_chart")) == 1
    finally:
        svc.stop()


# -------------------------------------------------------------------------------------------- launch
def test_launch_builds_its_forms_from_the_catalog(api_url: str, client: httpx.Client) -> None:
    at = page("launch")
    labels = [s.label for s in at.selectbox]
    for label in ("Model", "Data set", "Solver", "Activation of the field", "Gradient method", "Device"):
        assert label in labels
    steps = at.number_input(key="launch.train.spec.ode.steps")
    assert steps.value == 2 and "Allowed: ≥ 1, ≤ 256." in steps.help  # default and bounds from the catalog
    assert "Checkpoints inside a block (empty: none)" in [n.label for n in at.number_input]
    at.selectbox(key="launch.train.spec.ode.gradient.method").set_value("adjoint").run()
    assert_ok(at)
    assert at.toggle(key="launch.train.spec.ode.gradient.reconstruct").value is True
    assert "Checkpoints inside a block (empty: none)" not in [n.label for n in at.number_input]
    at.selectbox(key="launch.train.spec.model").set_value("conv_ode").run()
    assert at.selectbox(key="launch.train.spec.dataset").options == ["digits", "mnist", "cifar10", "cifar100"]

    at.radio(key="launch.kind").set_value("compare").run()
    assert_ok(at)
    labels = {m.label for m in at.multiselect}
    assert {"Solvers", "N_t values (fixed-step and reversible solvers)",
            "Gradient methods (each compared with Direct)"} <= labels
    assert "adjoint(stored)" in at.multiselect(key="launch.compare.spec.methods").value
    at.radio(key="launch.kind").set_value("demo").run()
    assert_ok(at)
    demos = client.get("/catalog").json()["demos"]
    assert at.selectbox(key="launch.demo.name").options == [d["title"] for d in demos]
    assert "N_t values" in [m.label for m in at.multiselect]
    at.selectbox(key="launch.demo.name").set_value("adaptive-adjoint").run()  # offers adaptive solvers only
    adaptive = [name for name, solver in SOLVERS.items() if solver.kind == "adaptive"]
    assert at.multiselect(key="launch.demo.adaptive-adjoint.solvers").options == adaptive
    assert {"dopri5", "bosh3", "tsit5", "dopri8"} <= set(adaptive)
    assert at.multiselect(key="launch.demo.adaptive-adjoint.tolerances").value == [1e-2, 1e-3, 1e-4, 1e-5, 1e-6,
                                                                                         1e-7, 1e-8]


def test_start_from_says_when_the_fields_left_the_preset_and_one_block_saves_nothing(api_url: str) -> None:
    """"Start from" names a preset only while the fields hold it; weight decay 0 reads 0; the form says before the
    run that ANODE saves no memory on one block, and stops saying it on the spirals preset's three."""
    at = page("launch")
    one_block = "One ODE block: ANODE keeps that block's graph"
    assert one_block in texts(at, "info")  # the defaults: an MLP-ODE of one block, ANODE checked side by side
    at.selectbox(key="launch.train.preset").set_value("spirals-anode").run()
    assert_ok(at)
    start = at.selectbox(key="launch.train.preset")
    assert start.format_func("spirals-anode").startswith("spirals-anode: MLP-ODE of three blocks")
    assert one_block not in texts(at, "info")
    decay = at.number_input(key="launch.train.spirals-anode.spec.weight_decay")
    assert decay.value == 0 and decay.proto.format == "%g"
    at.selectbox(key="launch.train.spirals-anode.spec.ode.solver").set_value("dopri5").run()
    assert_ok(at)
    assert at.selectbox(key="launch.train.preset").format_func("spirals-anode").startswith(
        "your changes to spirals-anode (ode.solver")
    at.number_input(key="launch.train.spirals-anode.spec.blocks").set_value(1).run()
    assert_ok(at)
    assert one_block in texts(at, "info")


def test_a_side_by_side_preset_runs_from_the_launch_page(api_url: str, client: httpx.Client) -> None:
    """The catalog's group presets (the spirals trio first, then the paper's CIFAR-10 trios) are offered on Launch;
    "Run it" makes the group and opens its compare page."""
    at = page("launch")
    presets = at.selectbox(key="launch.group.preset")
    assert presets.options[0].startswith("spirals-side-by-side") and any("cifar10-resnet-paper" in o
                                                                          for o in presets.options)
    at.button(key="launch.group.submit").click().run()
    assert_ok(at)
    group = client.get(f"/groups/{int(at.query_params['group'])}").json()
    assert [r["spec"]["ode"]["gradient"]["method"] for r in group["runs"]] == ["direct", "anode", "adjoint"]
    assert {r["spec"]["blocks"] for r in group["runs"]} == {3}
    for run in group["runs"]:
        assert client.post(f"/runs/{run['id']}/cancel").status_code == 200


def test_the_solver_decides_the_knobs_and_the_methods_offered(api_url: str, client: httpx.Client) -> None:
    key = "launch.train.spec"
    at = page("launch")
    at.selectbox(key=f"{key}.ode.gradient.method").set_value("adjoint").run()
    at.selectbox(key=f"{key}.ode.solver").set_value("dopri5").run()  # no form to submit: the page follows at once
    assert_ok(at)
    numbers = [n.label for n in at.number_input]
    assert "N_t (steps per block)" not in numbers and "Step limit per block (accepted and rejected)" in numbers
    knobs = next(s["knobs"] for s in client.get("/catalog").json()["solvers"] if s["name"] == "dopri5")
    assert at.number_input(key=f"{key}.ode.step_limit").value == knobs["step_limit"]  # the catalog's default
    assert (at.select_slider(key=f"{key}.ode.rtol").value, at.select_slider(key=f"{key}.ode.atol").value) == (
        1e-3, 1e-5)
    assert at.selectbox(key=f"{key}.ode.gradient.method").options == ["direct", "anode", "adjoint"]
    assert not at.toggle  # the adjoint on stored states does not pair with an adaptive solver: not offered
    at.selectbox(key=f"{key}.ode.solver").set_value("reversible_heun").run()
    assert_ok(at)
    method = at.selectbox(key=f"{key}.ode.gradient.method")
    assert method.options == ["direct", "anode", "reversible"] and method.value in method.options
    assert at.number_input(key=f"{key}.ode.steps").value == 2 and not at.select_slider
    assert [c.label for c in at.checkbox] == ["direct", "anode", "reversible"]  # side by side: what pairs
    method.set_value("anode").run()
    assert "Checkpoints inside a block (empty: none)" not in [n.label for n in at.number_input]

    at.selectbox(key=f"{key}.ode.solver").set_value("bosh3").run()
    at.select_slider(key=f"{key}.ode.rtol").set_value(1e-7).run()
    at.button(key="launch.train.submit").click().run()  # tighter than float32 can meet: the API says so, here
    assert "float32 carries about 7 digits" in (error_under(at, f"{key}.dtype") or "")
    at.select_slider(key=f"{key}.ode.rtol").set_value(1e-4)
    at.number_input(key=f"{key}.ode.step_limit").set_value(50)
    for name, value in (("n_samples", 256), ("epochs", 1), ("batch_size", 64), ("threads", 1)):
        at.number_input(key=f"{key}.{name}").set_value(value)
    at.button(key="launch.train.submit").click().run()
    assert_ok(at)
    run = client.get(f"/runs/{int(at.query_params['run'])}").json()
    ode = run["spec"]["ode"]
    assert (ode["solver"], ode["steps"], ode["rtol"], ode["atol"], ode["step_limit"]) == ("bosh3", None, 1e-4, 1e-5, 50)
    assert ode["gradient"]["method"] == "anode" and run["spec"]["n_samples"] == 256
    client.post(f"/runs/{run['id']}/cancel", headers=NOT_A_FORM)


def test_the_sweep_form_runs_adaptive_solvers_along_tolerances(api_url: str) -> None:
    at = page("launch")
    at.radio(key="launch.kind").set_value("compare").run()
    key = "launch.compare.spec"
    assert "rtol values (adaptive solvers)" not in [m.label for m in at.multiselect]
    at.multiselect(key=f"{key}.solvers").set_value(["euler", "dopri5"]).run()
    assert_ok(at)
    assert at.multiselect(key=f"{key}.tolerances").value == [1e-3, 1e-5, 1e-7]
    assert at.select_slider(key=f"{key}.atol_ratio").value == 0.01
    default = CompareSpec.model_validate({"solvers": ["euler", "dopri5"], "device": "cpu"})
    assert default.cells == 42  # euler: 6 N_t × 5 methods; dopri5: 3 rtol × 4 (no adjoint on stored states)
    assert "42 cells in the grid." in texts(at, "caption")
    at.multiselect(key=f"{key}.solvers").set_value(["dopri5", "reversible_heun"]).run()
    assert_ok(at)
    methods = at.multiselect(key=f"{key}.methods")
    assert "reversible" in methods.options and "adjoint(stored)" not in methods.options
    assert "adjoint(stored)" not in methods.value
    at.multiselect(key=f"{key}.solvers").set_value(["dopri5"]).run()
    assert "N_t values (fixed-step and reversible solvers)" not in [m.label for m in at.multiselect]
    # An rtol sweep starts smooth, as the gradient lab explains it (slope 1); ReLU is still there, with its caveat.
    activations = at.multiselect(key=f"{key}.activations.adaptive")
    assert activations.value == ["tanh"] and "relu" in activations.options
    relu = "With ReLU the field has kinks"
    assert relu not in texts(at, "caption")
    activations.set_value(["relu"]).run()
    assert relu in texts(at, "caption")
    at.multiselect(key=f"{key}.solvers").set_value(["euler"]).run()
    assert at.multiselect(key=f"{key}.activations").value == ["relu"]  # fixed steps: ReLU's wrong-sign story


def error_under(at: AppTest, key: str) -> str | None:
    """The error shown right under the widget ``key``, if any."""
    order = flat(at.main)
    index = next(i for i, e in enumerate(order) if getattr(e, "key", None) == key)
    return shown(order[index + 1].value) if index + 1 < len(order) and order[index + 1].type == "error" else None


def test_launch_shows_the_apis_422_under_the_field(api_url: str) -> None:
    at = page("launch")
    at.selectbox(key="launch.train.spec.model").set_value("conv_ode").run()
    at.selectbox(key="launch.train.spec.dataset").set_value("mnist").run()
    at.button(key="launch.train.submit").click().run()
    assert_ok(at)
    under = error_under(at, "launch.train.spec.root") or ""
    assert under.startswith("Local folder with the torchvision files: dataset 'mnist' is read from a local folder")


def test_launch_says_where_the_service_reads_data_and_what_files(api_url: str, service: Service) -> None:
    """The form showed `./data` and nothing else; the API then refused the run, or the worker failed."""
    at = page("launch")
    at.selectbox(key="launch.train.spec.model").set_value("conv_ode").run()
    at.selectbox(key="launch.train.spec.dataset").set_value("mnist").run()
    assert_ok(at)
    root = at.text_input(key="launch.train.spec.root")
    folder = str((service.data_dir / "datasets").resolve())
    assert root.placeholder == folder
    assert f"`{folder}`" in (root.help or "") and "`MNIST/raw/train-images-idx3-ubyte.gz`" in (root.help or "")


def test_an_out_of_range_number_launches_nothing_and_says_why_under_it(api_url: str,
                                                                       client: httpx.Client) -> None:
    before = client.get("/runs").json()["count"]
    at = page("launch")
    for key, value, said in (("ode.steps", 0, "N_t (steps per block): must be ≥ 1; got 0"),
                             ("epochs", 100000, "Epochs: must be ≤ 1000; got 100000"),
                             ("lr", 0.0, "Learning rate: must be > 0; got 0")):
        at.number_input(key=f"launch.train.spec.{key}").set_value(value).run()
        assert error_under(at, f"launch.train.spec.{key}") == said
    at.button(key="launch.train.submit").click().run()
    assert_ok(at)
    assert "Nothing was launched: fix N_t (steps per block), Epochs, Learning rate above." in texts(at, "error")
    at.button(key="launch.train.side_by_side").click().run()
    assert client.get("/runs").json()["count"] == before and "run" not in at.query_params


def test_a_preset_fills_the_form_and_launch_runs_exactly_the_preset(api_url: str, client: httpx.Client) -> None:
    preset = next(p for p in client.get("/catalog").json()["presets"]["train"] if p["name"] == "moons-adjoint")
    at = page("launch")
    at.selectbox(key="launch.train.preset").set_value("moons-adjoint").run()
    assert_ok(at)
    key = "launch.train.moons-adjoint.spec"
    assert at.selectbox(key=f"{key}.ode.gradient.method").value == "adjoint"
    assert at.number_input(key=f"{key}.probe_every").value == preset["spec"]["probe_every"]
    at.button(key="launch.train.submit").click().run()
    assert_ok(at)
    run = client.get(f"/runs/{int(at.query_params['run'])}").json()
    assert run["spec"] == preset["spec"]
    client.post(f"/runs/{run['id']}/cancel", headers=NOT_A_FORM)


def test_run_side_by_side_makes_a_group_and_the_compare_page_overlays_it(api_url: str,
                                                                         client: httpx.Client) -> None:
    at = page("launch")
    assert [c.label for c in at.checkbox if c.value] == ["direct", "anode", "adjoint"]
    assert "adjoint(stored)" in [c.label for c in at.checkbox]  # any other method can be added
    for key, value in (("n_samples", 256), ("epochs", 1), ("batch_size", 64), ("threads", 1)):
        at.number_input(key=f"launch.train.spec.{key}").set_value(value)
    at.selectbox(key="launch.train.spec.device").set_value("cpu")
    at.text_input(key="launch.train.run_name").input("side")
    at.button(key="launch.train.side_by_side").click().run()
    assert_ok(at)
    group = client.get(f"/groups/{int(at.query_params['group'])}").json()
    assert [r["spec"]["ode"]["gradient"]["method"] for r in group["runs"]] == ["direct", "anode", "adjoint"]
    for run in group["runs"]:
        assert wait_status(client, run["id"], ENDED, timeout=120)["status"] == "succeeded"
    compare = page("compare", group=str(group["id"]))
    table = compare.dataframe[0].value
    assert list(table["method"]) == ["direct", "anode", "adjoint"]
    assert table["peak memory ×Direct"][0] == pytest.approx(1.0, abs=1e-12)
    assert table["gradient error at the end"][1] < 1e-6 < table["gradient error at the end"][2]  # ANODE exact
    loss = figures(compare)[titles(compare).index("Training loss (batch)")]
    shown = [t for t in loss["data"] if t.get("showlegend", True) is not False]
    assert [t["name"] for t in shown] == [f"{m} (#{r['id']})" for m, r in zip(("direct", "anode", "adjoint"),
                                                                           group["runs"], strict=True)]
    assert len({t["line"]["color"] for t in shown}) == 3
    assert loss["layout"]["yaxis"]["title"]["text"] == "cross-entropy"


def test_launch_queues_a_run_opens_its_page_and_the_runs_table_lists_it(api_url: str, client: httpx.Client) -> None:
    at = page("launch")
    for key, value in (("n_samples", 256), ("epochs", 1), ("batch_size", 32), ("seed", 7), ("probe_every", 2),
                       ("threads", 1)):
        at.number_input(key=f"launch.train.spec.{key}").set_value(value)
    at.selectbox(key="launch.train.spec.device").set_value("cpu")
    at.text_input(key="launch.train.run_name").input("from-the-launch-form")
    at.text_input(key="launch.train.run_tags").input("apptest, moons")
    at.button(key="launch.train.submit").click().run()
    assert_ok(at)
    run_id = int(at.query_params["run"])
    run = client.get(f"/runs/{run_id}").json()
    assert run["name"] == "from-the-launch-form" and run["tags"] == ["apptest", "moons"]
    assert run["spec"]["seed"] == 7 and run["spec"]["ode"]["gradient"]["method"] == "anode"
    assert f"#{run_id} from-the-launch-form" in texts(at, "title")  # landed on the run's page
    assert run_colour(run) in at.title[0].value  # its dot in the colour its curves have

    runs = page("runs")
    table = runs.dataframe[0].value
    assert list(table.columns) == ["id", "name", "kind", "status", "method", "solver", "N_t", "activation",
                                   "best accuracy", "duration", "created"]
    assert "from-the-launch-form" in set(table["name"])
    assert wait_status(client, run_id, ENDED, timeout=120)["status"] == "succeeded"


# ---------------------------------------------------------------------------------------- run detail
def test_run_detail_draws_every_curve_of_a_training_run(api_url: str, seeded: dict[str, int]) -> None:
    at = page("run_detail", run=str(seeded["adjoint"]))
    shown = titles(at)
    for title in ("Loss", "Accuracy", "Gradient error vs exact DTO (adjoint)", "Memory (first step of each epoch)",
                  "Step time", "Field evaluations per step (NFE)"):
        assert title in shown
    loss = figures(at)[shown.index("Loss")]
    assert loss["layout"]["yaxis"]["type"] == "log"
    assert [d["name"] for d in loss["data"]] == ["train (batch) (raw)", "train (batch)", "test"]
    assert at.download_button(key="run_detail.csv")
    assert ":green-badge[succeeded]" in texts(at, "markdown")
    assert "**Exact (DTO)**: discretize-then-optimize" in texts(at, "caption")  # said where DTO first shows
    assert "Backward NFE 0 for ANODE" not in texts(at, "caption")


def test_run_detail_says_why_anodes_backward_nfe_is_zero(api_url: str, client: httpx.Client,
                                                         seeded: dict[str, int]) -> None:
    backward = client.get(f"/runs/{seeded['anode']}/metrics", params={"series": "nfe_backward"}).json()
    values = backward["series"]["nfe_backward"]["values"]
    assert values and not any(values)  # one block (mlp_ode): its graph is kept, nothing is recomputed
    at = page("run_detail", run=str(seeded["anode"]))
    assert "Backward NFE 0 for ANODE" in texts(at, "caption")
    at.slider(key="run_detail.train.smoothing").set_value(0.0).run()
    at.toggle(key="run_detail.train.log_loss").set_value(False).run()
    assert_ok(at)
    loss = figures(at)[titles(at).index("Loss")]
    assert [d["name"] for d in loss["data"]] == ["train (batch)", "test"]
    assert loss["layout"]["yaxis"].get("type") != "log"
    for axis in ("epoch", "time"):
        at.radio(key="run_detail.train.x_axis").set_value(axis).run()
        assert_ok(at)
        assert figures(at)[0]["layout"]["xaxis"]["title"]["text"].startswith(("epoch", "compute time"))


def test_run_detail_shows_a_sweep_and_a_demo_and_follows_the_url(api_url: str, seeded: dict[str, int]) -> None:
    at = page("run_detail", run=str(seeded["sweep"]))
    assert len(at.get("plotly_chart")) == 4
    at.query_params["run"] = str(seeded["blowup"])  # a link to another run: the URL wins over the picker
    at.run()
    assert_ok(at)
    assert at.sidebar.selectbox(key="run_detail.run").value == seeded["blowup"]
    assert len(at.image) >= 5 and "explanation.md" in texts(at, "markdown")
    at.sidebar.selectbox(key="run_detail.run").set_value(seeded["wrong_sign"]).run()  # picking changes the URL
    assert_ok(at)
    assert at.query_params["run"] == str(seeded["wrong_sign"]) and len(at.get("plotly_chart")) == 3


def test_run_detail_is_live_while_a_run_trains_and_can_cancel_it(api_url: str, client: httpx.Client) -> None:
    slow = {**TRAIN_SMALL, "n_samples": 20_000, "batch_size": 16, "epochs": 50, "threads": 1, "optimizer": "adam",
            "lr": 0.005}  # minutes of steps, none of them large enough to diverge
    run_id = submit(client, "train", slow)
    wait_for(lambda: (client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"] or 0)
             >= 3, 60, "a few steps")
    at = page("run_detail", run=str(run_id))
    assert at.session_state["run_detail.live"] is True  # the fragment polls while the run is active
    assert at.get("progress") and "Loss" in titles(at)
    first = at.session_state["run_detail.train.last_step"]
    at.button(key="run_detail.cancel").click().run()
    assert_ok(at)
    assert wait_status(client, run_id, ENDED, timeout=60)["status"] == "cancelled"
    time.sleep(MAX_AGE)  # the run as every viewer sees it: one shared read, at most MAX_AGE old
    at.run()
    assert_ok(at)
    assert at.session_state["run_detail.train.last_step"] >= first  # polled after_step
    assert at.session_state["run_detail.live"] is False


# ---------------------------------------------------------------------------------------------- runs
def test_runs_page_filters_and_cancels_reruns_deletes(api_url: str, client: httpx.Client,
                                                     seeded: dict[str, int]) -> None:
    waiting = submit(client, "train", {**TRAIN_SMALL, "device": "cuda"}, name="waits-for-a-gpu")  # no gpu worker
    at = page("runs")
    at.multiselect(key="runs.kind").set_value(["demo"]).run()
    assert set(at.dataframe[0].value["kind"]) == {"demo"}
    at.multiselect(key="runs.kind").set_value([]).run()
    at.selectbox(key="runs.sort").set_value("name").run()
    at.toggle(key="runs.descending").set_value(False).run()
    names = list(at.dataframe[0].value["name"])
    assert names == sorted(names, key=str.lower)

    at.multiselect(key="runs.selected").set_value([waiting]).run()
    at.button(key="runs.cancel").click().run()
    assert_ok(at)
    assert client.get(f"/runs/{waiting}").json()["status"] == "cancelled"
    at.button(key="runs.rerun").click().run()
    assert_ok(at)
    again = client.get("/runs", params={"limit": 1}).json()["data"][0]
    assert again["name"] == "waits-for-a-gpu" and again["id"] > waiting
    client.post(f"/runs/{again['id']}/cancel", headers=NOT_A_FORM)
    at.checkbox(key="runs.confirm_delete").check().run()
    at.button(key="runs.delete").click().run()
    assert_ok(at)
    assert client.get(f"/runs/{waiting}").status_code == 404
    assert at.multiselect(key="runs.selected").value == []
    at.multiselect(key="runs.selected").set_value([seeded["sweep"]]).run()
    at.button(key="runs.open").click().run()
    assert_ok(at)
    assert at.query_params["run"] == str(seeded["sweep"]) and len(at.get("plotly_chart")) == 4  # the sweep's page


# -------------------------------------------------------------------------------------------- compare
def test_compare_overlays_runs_in_their_colours(api_url: str, seeded: dict[str, int]) -> None:
    at = page("compare")
    at.multiselect(key="compare.runs").set_value([seeded["anode"], seeded["adjoint"]]).run()
    assert_ok(at)
    shown = titles(at)
    wanted = {"Training loss (batch)", "Test accuracy", "Gradient error against the exact gradient (Direct)"}
    assert wanted <= set(shown)
    loss = figures(at)[shown.index("Training loss (batch)")]
    assert (loss["layout"]["xaxis"]["title"]["text"], loss["layout"]["yaxis"]["title"]["text"]) == (
        "optimizer step", "cross-entropy")  # names and units, not raw keys
    assert at.slider(key="compare.smoothing").value == 0.6  # Run detail's default
    colours = {d["name"]: d["line"]["color"] for d in loss["data"] if d.get("showlegend") is not False}
    # each run in its method's colour, the one the group compare, the gradient lab and the demos give the method
    assert colours == {f"#{seeded['anode']} moons-anode": METHOD_COLOURS["anode"],
                       f"#{seeded['adjoint']} moons-adjoint": METHOD_COLOURS["adjoint"]}
    table = at.dataframe[0].value
    assert len(table) == 2 and "ode.gradient.method" in table.columns and "best_test_acc" in table.columns


# --------------------------------------------------------------------------------------- gradient lab
def test_gradient_lab_shows_a_sweep_and_launches_the_default(api_url: str, client: httpx.Client,
                                                            seeded: dict[str, int]) -> None:
    at = page("gradient_lab")
    at.selectbox(key="gradient_lab.run").set_value(seeded["sweep"]).run()
    assert_ok(at)
    cost, error, cosine, memory, time = figures(at)
    assert cost["layout"]["title"]["text"].startswith("Backward cost of checkpoints")
    assert error["layout"]["xaxis"]["type"] == "log" and error["layout"]["yaxis"]["type"] == "log"
    assert {"slope −1 (euler)", "slope −2 (midpoint)"} <= {d["name"] for d in error["data"]}
    assert any(d["name"].endswith("model") for d in memory["data"])
    slopes = at.dataframe[0].value
    assert set(slopes["expected slope"]) == {-1, -2}
    assert "No adaptive cells in this sweep" in texts(at, "info")  # no error against rtol to draw
    before = client.get("/runs", params={"kind": "compare"}).json()["count"]
    at.button(key="gradient_lab.launch").click().run()
    assert_ok(at)
    assert client.get("/runs", params={"kind": "compare"}).json()["count"] == before + 1


# --------------------------------------------------------------------------------------------- demos
def test_demos_show_pictures_side_by_side_and_run_on_click(api_url: str, client: httpx.Client,
                                                          seeded: dict[str, int]) -> None:
    blowup = page("demos", demo="Reconstruction blowup")
    assert len(blowup.image) >= 5
    assert blowup.image[0].captions[0].startswith("left to right")
    assert "Error of the image rebuilt backwards" in titles(blowup)
    wrong = page("demos", demo="Wrong sign")
    assert len(wrong.get("plotly_chart")) == 3
    assert all(f["layout"]["font"]["size"] == 14 for f in figures(wrong))  # projector mode starts off
    wrong.toggle(key="demos.wall").set_value(True).run()
    assert all(f["layout"]["font"]["size"] == 20 for f in figures(wrong))  # projector mode
    fresh = page("demos", demo="Non invertible")
    assert "Not run yet" in texts(fresh, "info")
    fresh.button(key="demos.run.non-invertible").click().run()
    assert_ok(fresh)
    runs = client.get("/runs", params={"kind": "demo", "limit": 5}).json()["data"]
    assert runs[0]["spec"]["name"] == "non-invertible" and runs[0]["tags"] == ["demo"]
    wait_status(client, runs[0]["id"], ENDED, timeout=60)
