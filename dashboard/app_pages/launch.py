"""Launch: pick what to run (a training run, a gradient sweep or a teaching demo), set its knobs, launch it and
land on its page. Choices, bounds, help and defaults all come from the API's catalog; the API's validation
errors appear under the field they are about."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from dashboard.api_client import ApiError, ApiUnreachable
from dashboard.components import call, connect, load_catalog, open_group, open_run, unreachable_banner
from dashboard.forms import SpecForm
from dashboard.schema import log_grid, names, pairs, solver_entry
from dashboard.side_by_side import one_block
from dashboard.tables import differing, method_from_label, method_label, method_options
from dashboard.text import md

KINDS = {"train": "Train a classifier", "compare": "Gradient sweep", "demo": "Teaching demo"}
POINT_SETS = ("moons", "circles", "spirals")
LOCAL_SETS = ("mnist", "cifar10", "cifar100")
CIFAR_SETS = ("cifar10", "cifar100")
ADAPTIVE_KNOBS = ("ode.rtol", "ode.atol", "ode.step_limit")
STEP_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
SMOOTH_ACTIVATION = "tanh"
"""An rtol sweep's default activation: smooth, so the adjoint's error follows the tolerance (slope 1)."""
TOLERANCE_CHOICES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)

api = connect()
catalog = load_catalog(api)

st.title("Launch a run")
kind = st.radio("What to run", list(KINDS), format_func=KINDS.get, horizontal=True, key="launch.kind")
st.caption(catalog["kinds"][kind]["description"])
errors: dict[str, str] = st.session_state.get(f"launch.errors.{kind}", {})


def adaptive(solver: Mapping[str, Any]) -> bool:
    """Whether the catalog's ``solver`` chooses its own steps (takes rtol/atol, not N_t)."""
    return solver.get("kind") == "adaptive"


def train_form() -> SpecForm:
    presets = {p["name"]: p for p in catalog["presets"].get("train", [])}
    # The box is drawn above the fields once they are built, so that it can say when they differ from the preset.
    start = st.container()
    preset = st.session_state.get("launch.train.preset", "")
    preset = preset if preset in presets else ""
    base = presets[preset]["spec"] if preset else catalog["kinds"]["train"]["default"]
    # Each preset has widgets of its own: a widget that keeps its key keeps the value the browser holds, so
    # a preset that only reset the widgets' state would show, and launch, the old values.
    form = SpecForm(catalog, "train", base, key=f"launch.train.{preset}.spec" if preset else "launch.train.spec",
                    errors=errors)
    data, ode, training = st.columns(3, gap="large")
    with data:
        st.subheader("Model and data")
        model = form.select("model", "Model", choices=catalog["models"])
        takes = next((m["datasets"] for m in catalog["models"] if m["name"] == model), []) or names(catalog["datasets"])
        dataset = form.select("dataset", "Data set", takes,
                              choices=[d for d in catalog["datasets"] if d["name"] in takes])
        if dataset in POINT_SETS:
            form.number("noise", "Noise of the points", optional=True, step=0.05, fmt="%.3f")
            form.number("n_samples", "Points (a quarter held out)", optional=True, step=100)
        else:
            form.omit("noise")
            form.omit("n_samples")
        if dataset in LOCAL_SETS:
            roots = catalog.get("data_roots", [])
            files: list[str] = next((d.get("files", []) for d in catalog["datasets"] if d["name"] == dataset), [])
            form.text("root", "Local folder with the torchvision files", placeholder=roots[0] if roots else None,
                      note=(f"This service reads data only under {', '.join(f'`{r}`' for r in roots)} (a relative "
                            f"folder is taken under the first); the folder must hold "
                            f"{', '.join(f'`{f}`' for f in files)}. Nothing is downloaded."))
        else:
            form.omit("root")
        form.number("width", "Width (MLP state / first conv channels)")
        if model == "mlp_ode":
            form.number("hidden", "Hidden units of the field", optional=True)
            form.number("blocks", "ODE blocks in a row", optional=True)
            form.omit("norm")
        else:
            form.omit("hidden")
            form.omit("blocks")
            form.select("norm", "Normalisation in the fields", [None, "batch", "group", "none"],
                        format_func=lambda v: "model default (batch)" if v is None else v)
    with ode:
        st.subheader("ODE blocks and gradient")
        # Outside any st.form: choosing a solver reruns the page at once, and the knobs below follow it.
        solver = solver_entry(catalog["solvers"], form.select("ode.solver", "Solver", choices=catalog["solvers"]))
        knobs = solver["knobs"]  # a spec naming this solver alone runs these: the defaults when switching to it
        if adaptive(solver):
            form.drop("ode.steps")
            form.log_slider("ode.rtol", "rtol (relative tolerance per step)", default=knobs["rtol"])
            form.log_slider("ode.atol", "atol (absolute tolerance per step)", default=knobs["atol"])
            form.number("ode.step_limit", "Step limit per block (accepted and rejected)", default=knobs["step_limit"])
        else:
            form.number("ode.steps", "N_t (steps per block)", default=knobs["steps"])
            for path in ADAPTIVE_KNOBS:
                form.omit(path)
        form.select("ode.activation", "Activation of the field", choices=catalog["activations"])
        offered = [m for m in catalog["gradient_methods"] if m["name"] in solver.get("methods", names(
            catalog["gradient_methods"]))]
        method = form.select("ode.gradient.method", "Gradient method", choices=offered)
        if method == "anode" and solver.get("checkpoints", True):
            form.number("ode.gradient.checkpoints", "Checkpoints inside a block (empty: none)", optional=True)
        else:
            form.omit("ode.gradient.checkpoints")
        if method == "adjoint" and solver.get("stored_states", True):
            form.toggle("ode.gradient.reconstruct", "Rebuild states by a reverse solve")
        else:
            form.omit("ode.gradient.reconstruct", True)
        form.select("dtype", "Precision", catalog["dtypes"])
        form.number("probe_every", "Probe interval (compare with the exact gradient every k steps; 0 = off)")
        st.caption("The exact gradient is Direct's (DTO, discretize-then-optimize: backprop through every step).")
    with training:
        st.subheader("Training")
        form.number("epochs", "Epochs")
        form.number("batch_size", "Batch size")
        optimizer = form.select("optimizer", "Optimizer")
        form.number("lr", "Learning rate", step=0.001, fmt="%.4g")
        if optimizer == "sgd":
            form.number("momentum", "Momentum", optional=True, step=0.05, fmt="%.3f")
        else:
            form.omit("momentum")
        form.number("weight_decay", "Weight decay", step=1e-4, fmt="%g")  # 0 reads 0, 5e-4 reads 0.0005
        form.select("schedule", "Learning-rate schedule")
        if dataset in CIFAR_SETS:
            form.toggle("augment", "Random crop and flip")
        else:
            form.omit("augment", False)
        form.number("seed", "Seed")
        form.select("device", "Device", catalog["devices"])
        form.number("threads", "CPU threads", optional=True)
        form.number("max_steps", "Stop after this many steps (empty: all epochs)", optional=True)
        form.number("checkpoint_every", "Save a resumable checkpoint every k steps (0 = off)")
    changed = differing([base, form.spec]) if preset else []

    def start_label(name: str) -> str:
        if not name:
            return "the defaults"
        if name == preset and changed:  # no longer the preset: say what was changed rather than its description
            return f"your changes to {name} ({', '.join(changed[:3])}{', …' if len(changed) > 3 else ''})"
        return f"{name}: {presets[name]['description']}"

    start.selectbox("Start from", ["", *presets], key="launch.train.preset", format_func=start_label,
                    help="a preset fills every field below; change any of them afterwards")
    return form


def compare_form() -> SpecForm:
    default = catalog["kinds"]["compare"]["default"]
    form = SpecForm(catalog, "compare", default, key="launch.compare.spec", errors=errors)
    labels = method_options(catalog)
    problem, grid = st.columns([1, 2], gap="large")
    with problem:
        st.subheader("The problem")
        field = form.select("field", "Vector field", format_func=lambda v: {"mlp": "MLP on vectors",
                                                                            "conv": "conv on feature maps"}.get(v, v))
        if field == "mlp":
            form.number("dim", "State dimension", optional=True)
            form.number("hidden", "Hidden units", optional=True)
            form.omit("channels")
            form.omit("size")
        else:
            form.number("channels", "Channels", optional=True)
            form.number("size", "Height and width", optional=True)
            form.omit("dim")
            form.omit("hidden")
        form.number("blocks", "ODE blocks in a row")
        form.number("batch", "Batch")
        form.number("seed", "Seed")
        form.number("fd_check", "Check Direct by finite differences on k entries")
        form.select("device", "Device", catalog["devices"])
    with grid:
        st.subheader("The grid")
        solvers = [solver_entry(catalog["solvers"], name)
                   for name in form.multiselect("solvers", "Solvers", choices=catalog["solvers"])]
        if not solvers or not all(adaptive(s) for s in solvers):
            form.multiselect("steps", "N_t values (fixed-step and reversible solvers)",
                             sorted(set(STEP_CHOICES) | set(default["steps"])))
        if any(adaptive(s) for s in solvers):
            rtol = catalog["bounds"]["train"].get("ode.rtol", {})  # a sweep's tolerances obey a run's rtol bounds
            grid_of = log_grid(rtol.get("minimum", 1e-10), rtol.get("maximum", 0.1), (1,))
            form.multiselect("tolerances", "rtol values (adaptive solvers)",
                             sorted(set(grid_of) | set(default["tolerances"]), reverse=True),
                             format_func=lambda v: f"{v:g}")
            form.log_slider("atol_ratio", "atol / rtol (adaptive solvers)", default=default["atol_ratio"])
            form.number("step_limit", "Step limit per block (adaptive solvers)")
        offered = [label for label in labels if any(pairs(s, method_from_label(label)) for s in solvers)]
        form.multiselect("methods", "Gradient methods (each compared with Direct)", offered or labels,
                         to_spec=method_from_label, from_spec=method_label)
        smooth = bool(solvers) and all(adaptive(s) for s in solvers)
        if smooth and form.spec["activations"] == default["activations"]:
            form.spec["activations"] = [SMOOTH_ACTIVATION]  # what the gradient lab explains for rtol sweeps
        chosen = form.multiselect("activations", "Activations", choices=catalog["activations"],
                                  variant=".adaptive" if smooth else "")
        if smooth and "relu" in chosen:
            st.caption("With ReLU the field has kinks: the adaptive adjoint's error falls much more slowly than the "
                       "tolerance (not slope 1), and tight rtol costs thousands of backward evaluations.")
        scales = st.text_input("Weight scales (comma-separated; larger is stiffer)",
                               value=", ".join(f"{s:g}" for s in default["weight_scales"]), key="launch.compare.scales")
        try:
            form.spec["weight_scales"] = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            st.error("Weight scales must be numbers separated by commas, e.g. `1, 4`.")
        form.field_error("weight_scales")
        form.multiselect("dtypes", "Precisions", catalog["dtypes"])
        st.caption(f"{grid_cells(form.spec, solvers)} cells in the grid.")
    return form


def grid_cells(spec: Mapping[str, Any], solvers: Sequence[Mapping[str, Any]]) -> int:
    """The cells of the sweep on screen: per solver its N_t (or rtol) values × the methods that pair with it,
    times the other lists (as :meth:`anode_lab.specs.compare.CompareSpec.cells` counts them)."""
    per_setting = math.prod(len(spec.get(name) or []) for name in ("activations", "weight_scales", "dtypes"))
    per_solver = sum(len(spec.get("tolerances" if adaptive(s) else "steps") or [])
                     * sum(pairs(s, m) for m in spec.get("methods") or []) for s in solvers)
    return per_solver * per_setting


def demo_form() -> SpecForm:
    demos = {d["name"]: d for d in catalog["demos"]}
    name = st.selectbox("Demo", list(demos), key="launch.demo.name", format_func=lambda n: demos[n]["title"])
    demo = demos[name]
    st.markdown(demo["explanation"])
    form = SpecForm(catalog, "demo", demo["spec"], key=f"launch.demo.{name}", errors=errors)
    columns = st.columns(3)
    for index, knob in enumerate(demo["knobs"]):
        with columns[index % 3]:
            if knob == "steps":
                form.multiselect("steps", "N_t values", sorted(set(STEP_CHOICES) | set(demo["spec"]["steps"] or [])))
            elif knob == "solvers":  # those of the kind the demo takes (fixed-step or adaptive), as its defaults
                kinds = {s["kind"] for s in catalog["solvers"] if s["name"] in demo["spec"]["solvers"]}
                form.multiselect("solvers", "Solvers", choices=[s for s in catalog["solvers"] if s["kind"] in kinds])
            elif knob == "tolerances":
                chosen = form.multiselect("tolerances", "rtol values", TOLERANCE_CHOICES,
                                          format_func=lambda t: f"{t:g}")
                form.spec["tolerances"] = sorted(chosen, reverse=True)  # the spec takes them tightening
            elif knob in ("dtype", "image"):
                form.select(knob, {"dtype": "Precision", "image": "Image"}[knob])
            elif knob == "device":
                form.select("device", "Device", catalog["devices"])
            else:
                form.number(knob, knob.capitalize())
    return form


SIDE_BY_SIDE = ("direct", "anode", "adjoint")  # checked at first: the comparison the paper makes


def side_by_side_methods(solver: Mapping[str, Any]) -> list[str]:
    """Checkboxes, one per gradient method the catalog offers (with the variants its sweeps use) that pairs
    with the solver chosen above."""
    options = [label for label in method_options(catalog) if pairs(solver, method_from_label(label))]
    st.markdown("**Side by side**: one run per method checked, identical but for the gradient method "
                "(same seed, same data order), overlaid on one page.")
    columns = st.columns(min(len(options), 6))
    return [label for index, label in enumerate(options)
            if columns[index % len(columns)].checkbox(label, value=label in SIDE_BY_SIDE, key=f"launch.side.{label}")]


def refused(exc: ApiError) -> None:
    """Keep a 422's messages for the fields (shown under each after the rerun); say any other refusal here."""
    if exc.status == 422:
        st.session_state[f"launch.errors.{kind}"] = exc.field_errors() or {"": exc.detail}
        st.rerun()
    st.error(f"The API refused the run: {md(exc.detail)}", icon=":material/error:")


def group_presets() -> None:
    """The catalog's side-by-side presets (``POST /groups`` bodies), each run with one click."""
    groups = {g["name"]: g["body"] for g in catalog.get("group_presets", [])}
    if not groups:
        return
    with st.expander("Side-by-side presets: one run per method, then the compare page",
                     icon=":material/compare_arrows:"):
        chosen = st.selectbox("Preset", list(groups), key="launch.group.preset",
                              format_func=lambda n: f"{n}: {groups[n]['name']}")
        if st.button("Run it", icon=":material/compare_arrows:", key="launch.group.submit"):
            body = groups[chosen]
            made = call(lambda: api.create_group(body["spec"], body["methods"], name=body["name"]),
                        what="launch the side-by-side preset")
            if made is not None:
                open_group(made["id"])


if kind == "train":
    group_presets()
form = {"train": train_form, "compare": compare_form, "demo": demo_form}[kind]()

st.divider()
left, right = st.columns(2)
name = left.text_input("Run name", key=f"launch.{kind}.run_name", placeholder="shown in the runs table")
tags_text = right.text_input("Tags (comma-separated)", key=f"launch.{kind}.run_tags",
                             placeholder="e.g. lecture-3, relu")
tags = [t.strip() for t in tags_text.split(",") if t.strip()]
for path, message in form.other_errors().items():
    st.error(md(f"{path or 'spec'}: {message}"), icon=":material/error:")
methods = side_by_side_methods(solver_entry(catalog["solvers"], form.spec["ode"]["solver"])) if kind == "train" else []
gradient = form.spec["ode"]["gradient"] if kind == "train" else {}
if kind == "train" and one_block(form.spec) and ("anode" in methods or (gradient.get("method") == "anode"
                                                                        and gradient.get("checkpoints") is None)):
    st.info("One ODE block: ANODE keeps that block's graph, as Direct does, so it holds as much memory. Add blocks "
            "(ODE blocks in a row) or checkpoints inside the block (anode(c=4)) to see what it saves.",
            icon=":material/info:")
buttons = st.columns([1, 3])
launched = buttons[0].button("Launch", type="primary", icon=":material/rocket_launch:", key=f"launch.{kind}.submit")
grouped = kind == "train" and buttons[1].button("Run side by side", icon=":material/compare_arrows:",
                                          key="launch.train.side_by_side", disabled=not methods,
                                          help="one run per method checked above, then the compare page")
if (launched or grouped) and form.invalid:
    st.error("Nothing was launched: fix " + ", ".join(form.labels.get(p, p) for p in form.invalid) + " above.",
             icon=":material/error:")
elif launched or grouped:
    try:
        with st.spinner("Queueing…"):
            made = (api.create_run(kind, form.spec, name=name.strip(), tags=tags) if launched else
                    api.create_group(form.spec, [method_from_label(m) for m in methods], name=name.strip(), tags=tags))
    except ApiUnreachable as exc:
        unreachable_banner(exc)
    except ApiError as exc:
        refused(exc)
    else:
        st.session_state.pop(f"launch.errors.{kind}", None)
        (open_run if launched else open_group)(made["id"])
if errors:
    st.caption("The fields marked above were refused by the API; fix them and launch again.")
