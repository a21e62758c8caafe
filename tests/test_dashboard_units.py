"""The dashboard's pure parts: metric series, table shaping, spec forms' schema helpers, chart builders, the API
client's error handling; and the rule that the dashboard never imports torch or anode_core."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import plotly.graph_objects as go
import pytest

from dashboard import charts, demo_charts, schema, series, side_by_side, tables
from dashboard.api_client import ApiClient, ApiError, ApiUnreachable, ClientSettings

ROOT = Path(__file__).resolve().parent.parent
SWEEP_ROWS = [
    {"solver": s, "order": o, "steps": float(n), "method": m, "exact": int(m == "anode"),
     "rel_error": 0.0 if m == "anode" else 0.5 * n ** -o, "cosine": 1.0 if m == "anode" else 1 - 0.1 / n,
     "peak_bytes": 100.0 * n, "model_bytes": 110.0 * n, "forward_seconds": 0.01 * n, "backward_seconds": 0.02 * n}
    for s, o in (("euler", 1), ("midpoint", 2)) for n in (1, 2, 4, 8) for m in ("anode", "adjoint")
]


# --------------------------------------------------------------------------------------------- no torch
def test_dashboard_never_imports_torch_or_anode_core() -> None:
    """Every dashboard module, and every page run once against an API that is not there (the banner path),
    in a fresh interpreter: neither torch nor anode_core ends up imported."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        sys.path.insert(0, {str(ROOT)!r})
        import dashboard
        for info in pkgutil.walk_packages(dashboard.__path__, "dashboard."):
            if info.name.startswith("dashboard.app_pages") or info.name == "dashboard.app":
                continue
            importlib.import_module(info.name)
        import os
        os.environ["ANODE_API_URL"] = "http://127.0.0.1:9"
        from streamlit.testing.v1 import AppTest
        for page in ("launch", "runs", "run_detail", "compare", "gradient_lab", "demos"):
            at = AppTest.from_file({str(ROOT / "dashboard" / "app.py")!r}, default_timeout=30).run()
            at.switch_page(f"app_pages/{{page}}.py").run()
            assert not at.exception, (page, [e.value for e in at.exception])
            assert any("unreachable" in e.value for e in at.error), (page, [e.value for e in at.error])
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "anode_core", "backend"))
        assert not leaked, leaked
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


# ----------------------------------------------------------------------------------------------- client
@pytest.mark.parametrize(("url", "base"), [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/v1"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/api/v1"),
    ("http://h:1/api/v1", "http://h:1/api/v1"),
])
def test_client_base_url_takes_either_form(url: str, base: str) -> None:
    assert ClientSettings(api_url=url).base_url == base


def test_the_dashboard_holds_no_key_and_sends_a_persons_key_for_their_view_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setenv("ANODE_API_KEYS", "server-key")
    monkeypatch.setenv("ANODE_API_KEY", "server-key")
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"status": "ok"})

    shared = ApiClient(ClientSettings(), transport=httpx.MockTransport(answer))
    shared.health()
    shared.with_key("ada-key").cancel_run(1)
    shared.health()
    assert [h.get("x-api-key") for h in seen] == [None, "ada-key", None]  # the environment's keys are never sent
    assert all(h["x-requested-with"] == "anode-lab-dashboard" for h in seen)  # what the API asks of a POST


def test_unreachable_api_raises_unreachable() -> None:
    client = ApiClient(ClientSettings(api_url="http://127.0.0.1:9", api_timeout=2))
    with pytest.raises(ApiUnreachable, match="did not answer"):
        client.health()


def test_field_errors_strip_spec_and_body_prefixes() -> None:
    error = ApiError(422, "invalid_spec", "…", [
        {"loc": ["spec", "ode", "steps"], "msg": "Input should be greater than or equal to 1"},
        {"loc": ["spec", "lr"], "msg": "Value error, too large"},
        {"loc": ["spec"], "msg": "whole spec"},
        {"loc": ["body", "name"], "msg": "too long"},
    ])
    assert error.field_errors() == {"ode.steps": "Input should be greater than or equal to 1", "lr": "too large",
                                    "": "whole spec", "name": "too long"}


# ----------------------------------------------------------------------------------------------- series
def test_merge_appends_only_newer_points() -> None:
    old = {"series": {"loss": {"steps": [1, 2], "values": [1.0, 0.5]}}, "last_step": 2, "decimated": False}
    new = {"series": {"loss": {"steps": [2, 3], "values": [9.0, 0.25]}, "acc": {"steps": [3], "values": [0.9]}},
           "last_step": 3, "decimated": False}
    merged = series.merge(old, new)
    assert merged["series"]["loss"] == {"steps": [1, 2, 3], "values": [1.0, 0.5, 0.25]}
    assert merged["series"]["acc"] == {"steps": [3], "values": [0.9]}
    assert merged["last_step"] == 3
    assert old["series"]["loss"]["steps"] == [1, 2]


def test_ema_is_debiased_and_keeps_gaps() -> None:
    smoothed = series.ema([1.0, None, 1.0, 3.0], 0.5)
    assert smoothed[0] == pytest.approx(1.0, rel=1e-12)
    assert smoothed[1] is None
    assert smoothed[2] == pytest.approx(1.0, rel=1e-12)
    assert 1.0 < smoothed[3] < 3.0  # type: ignore[operator]
    assert series.ema([1.0, 2.0], 0.0) == [1.0, 2.0]


def test_epoch_axis_interpolates_between_epoch_ends() -> None:
    epochs = ([10, 20], [1.0, 2.0])
    assert series.epoch_of_steps([5, 10, 15, 25], epochs) == pytest.approx([0.5, 1.0, 1.5, 2.5], rel=1e-12)
    assert all(math.isnan(x) for x in series.epoch_of_steps([1], ([], [])))


def test_time_axis_sums_step_times() -> None:
    assert series.time_of_steps([1, 2, 3], ([1, 2, 3], [0.5, 0.25, 0.25])) == pytest.approx([0.5, 0.75, 1.0],
                                                                                            rel=1e-12)


# ----------------------------------------------------------------------------------------------- tables
def test_run_row_reads_method_solver_and_steps_from_the_spec() -> None:
    run = {"id": 3, "kind": "train", "name": "", "status": "succeeded",
           "spec": {"model": "mlp_ode", "dataset": "moons",
                    "ode": {"solver": "rk4", "steps": 8, "activation": "tanh",
                            "gradient": {"method": "anode", "checkpoints": 2, "reconstruct": True}}},
           "summary": {"best_test_acc": 0.9}, "created_at": "2026-01-01T00:00:00Z",
           "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:30Z"}
    row = tables.run_row(run)
    assert (row["method"], row["solver"], row["N_t"], row["activation"]) == ("anode(c=2)", "rk4", "8", "tanh")
    assert row["name"] == "mlp_ode on moons"
    assert row["best accuracy"] == 0.9 and row["duration"] == 90.0
    assert tables.format_duration(90.0) == "1 min 30 s"


def test_sort_puts_empty_cells_last_both_ways() -> None:
    rows = [{"a": 2}, {"a": None}, {"a": 1}]
    assert [r["a"] for r in tables.sort_rows(rows, "a", False)] == [1, 2, None]
    assert [r["a"] for r in tables.sort_rows(rows, "a", True)] == [2, 1, None]


@pytest.mark.parametrize("label", ["direct", "anode", "anode(c=3)", "adjoint", "adjoint(stored)"])
def test_method_labels_round_trip(label: str) -> None:
    assert tables.method_label(tables.method_from_label(label)) == label


def test_a_run_has_its_methods_colour_and_other_runs_a_colour_no_method_has() -> None:
    """A training run is drawn in its gradient method's colour on every page; a sweep or a demo keeps a colour by
    its id, stable and distinct for neighbours, that no method has."""
    def train(run_id: int, **gradient: object) -> dict[str, object]:
        return {"id": run_id, "kind": "train", "spec": {"ode": {"gradient": gradient}}}

    assert tables.run_colour(train(3, method="anode")) == tables.run_colour(train(8, method="anode")) == (
        tables.METHOD_COLOURS["anode"])
    assert tables.run_colour(train(4, method="adjoint", reconstruct=False)) == tables.METHOD_COLOURS["adjoint(stored)"]
    assert tables.run_colour(train(5, method="anode", checkpoints=2)) == tables.method_colour("anode(c=2)")
    sweeps = [tables.run_colour({"id": i, "kind": "compare", "spec": {}}) for i in range(1, 17)]
    assert sweeps == [tables.run_colour({"id": i, "kind": "demo", "spec": {}}) for i in range(1, 17)]
    assert len(set(sweeps)) == 16
    assert not set(sweeps) & {*tables.METHOD_COLOURS.values(), *tables.CHECKPOINT_COLOURS, tables.OTHER_METHOD_COLOUR}


def test_differing_lists_only_fields_that_change() -> None:
    a = {"ode": {"steps": 2, "solver": "euler"}, "lr": 0.1}
    b = {"ode": {"steps": 4, "solver": "euler"}, "lr": 0.1}
    assert tables.differing([a, b]) == ["ode.steps"]


def test_parse_csv_reads_numbers_empties_and_non_finite() -> None:
    rows = tables.parse_csv(b"a,b,c\n1,,x\ninf,2.5,nan\n")
    assert rows[0] == {"a": 1.0, "b": None, "c": "x"}
    assert math.isinf(rows[1]["a"]) and math.isnan(rows[1]["c"])


# ------------------------------------------------------------------------------------------------ forms
SCHEMA = {
    "$defs": {"Ode": {"properties": {"steps": {"type": "integer", "description": "N_t"}}}},
    "properties": {"ode": {"$ref": "#/$defs/Ode"},
                   "lr": {"type": "number"},
                   "hidden": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "units"}},
}


def test_schema_field_follows_refs_and_any_of() -> None:
    assert schema.schema_field(SCHEMA, "ode.steps")["description"] == "N_t"
    assert schema.schema_field(SCHEMA, "hidden")["type"] == "integer"


def test_number_limits_turn_exclusive_integer_bounds_inclusive() -> None:
    bounds = {"ode.steps": {"exclusiveMinimum": 0, "maximum": 256}, "lr": {"exclusiveMinimum": 0.0, "maximum": 10}}
    assert schema.number_limits(SCHEMA, bounds, "ode.steps") == (True, 1, 256)
    assert schema.number_limits(SCHEMA, bounds, "lr") == (False, None, 10)
    assert "> 0.0" in (schema.field_help(SCHEMA, bounds, "lr") or "")


def test_set_and_get_path() -> None:
    spec: dict[str, object] = {}
    schema.set_path(spec, "ode.gradient.method", "anode")
    assert schema.get_path(spec, "ode.gradient.method") == "anode"
    assert schema.get_path(spec, "ode.missing", 5) == 5


@pytest.mark.parametrize(("value", "path", "said"), [
    (0, "ode.steps", "must be ≥ 1; got 0"), (300, "ode.steps", "must be ≤ 256; got 300"),
    (0.0, "lr", "must be > 0; got 0"), (1, "ode.steps", None), (None, "ode.steps", None), (0.5, "lr", None),
])
def test_bound_error_says_the_bound_a_number_breaks(value: float | None, path: str, said: str | None) -> None:
    bounds = {"ode.steps": {"minimum": 1, "maximum": 256}, "lr": {"exclusiveMinimum": 0.0, "maximum": 10}}
    assert schema.bound_error(value, bounds, path) == said


def test_only_page_and_component_modules_import_streamlit() -> None:
    """The pure modules (client, schema helpers, series, tables, chart builders) load without Streamlit."""
    pure = ("api_client", "schema", "series", "tables", "charts", "demo_charts", "side_by_side")
    code = (f"import sys\nfor m in {pure!r}: __import__('dashboard.' + m)\n"
            "assert 'streamlit' not in sys.modules, sorted(m for m in sys.modules if m.startswith('streamlit'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------------------- side by side
def test_group_rows_lead_with_accuracy_error_and_multiples_of_direct() -> None:
    runs = [{"id": i, "status": "succeeded", "spec": {"ode": {"gradient": g}}, "summary": {"final_test_acc": acc}}
            for i, g, acc in ((1, {"method": "direct"}, 0.9), (2, {"method": "anode"}, 0.91),
                              (3, {"method": "adjoint", "reconstruct": False}, 0.5))]

    def payload(error: float, memory: float, times: list[float]) -> dict[str, object]:
        return {"series": {"probe_rel_error": {"steps": [1, 11], "values": [error * 2, error]},
                           "peak_memory_bytes": {"steps": [1, 11], "values": [memory, memory / 2]},
                           "step_time": {"steps": [1, 2, 3], "values": times}}}

    payloads = {1: payload(0.0, 400.0, [1.0, 2.0, 100.0]), 2: payload(0.0, 100.0, [3.0, 3.0, 3.0]),
                3: payload(0.25, 50.0, [1.0, 1.0, 1.0])}
    rows = side_by_side.group_rows(runs, payloads)
    assert [r["method"] for r in rows] == ["direct", "anode", "adjoint(stored)"]
    assert [r["final test accuracy"] for r in rows] == [0.9, 0.91, 0.5]
    assert [r["gradient error at the end"] for r in rows] == [0.0, 0.0, 0.25]
    assert [r["peak memory ×Direct"] for r in rows] == pytest.approx([1.0, 0.25, 0.125], rel=1e-12)
    assert [r["time ×Direct"] for r in rows] == pytest.approx([1.0, 1.5, 0.5], rel=1e-12)  # medians, not means
    without_direct = side_by_side.group_rows(runs[1:], payloads)
    assert [r["time ×Direct"] for r in without_direct] == [None, None]


def test_series_have_titles_and_units_instead_of_keys() -> None:
    assert side_by_side.series_info("step_time") == side_by_side.SeriesInfo("Step time", "seconds")
    assert side_by_side.series_info("train_loss").y_title == "cross-entropy"
    assert side_by_side.series_info("my_new_metric").title == "My new metric"


def test_method_options_offer_every_catalog_method_and_the_sweeps_variants() -> None:
    catalog = {"gradient_methods": [{"name": "direct"}, {"name": "anode"}, {"name": "adjoint"}, {"name": "reversible"}],
               "kinds": {"compare": {"default": {"methods": [{"method": "anode"},
                                                             {"method": "adjoint", "reconstruct": False}]}}}}
    assert tables.method_options(catalog) == ["direct", "anode", "adjoint", "reversible", "adjoint(stored)",
                                              "anode(c=4)"]
    assert [tables.method_from_label(m) for m in ("adjoint(stored)", "anode(c=4)")] == [
        {"method": "adjoint", "reconstruct": False}, {"method": "anode", "checkpoints": 4}]


# ----------------------------------------------------------------------------------------------- charts
@pytest.mark.parametrize("font_size", [charts.FONT_SIZE, charts.WALL_FONT_SIZE])
def test_projector_type_scales_ticks_titles_legends_and_keeps_the_plot_tall(font_size: int) -> None:
    for fig in (charts.sweep_memory_figure(SWEEP_ROWS, font_size=font_size),
                charts.sweep_error_figure(SWEEP_ROWS, font_size=font_size)):
        layout = fig.layout
        assert layout.xaxis.tickfont.size == layout.yaxis.tickfont.size == font_size
        assert layout.xaxis.title.font.size == layout.yaxis.title.font.size == font_size
        assert layout.legend.font.size == font_size - 1
        names = [t.name for t in fig.data if t.showlegend is not False]
        taken = layout.margin.t + 5 * font_size + charts.legend_lines(names, font_size) * font_size * 1.9
        assert layout.height - taken >= charts.PLOT_MIN_HEIGHT  # the data keeps its height


@pytest.mark.parametrize("font_size", [charts.FONT_SIZE, charts.WALL_FONT_SIZE])
def test_a_long_title_wraps_to_a_half_width_chart_and_the_plot_keeps_its_height(font_size: int) -> None:
    title = "Continuous adjoint's error against N_t, next to the solver's order <b>"
    fig = charts.sweep_error_figure(SWEEP_ROWS, font_size=font_size, title=title)
    lines = fig.layout.title.text.split("<br>")
    glyph = 0.6 * 1.2 * font_size  # the title's type, at an average glyph width
    assert len(lines) >= 2 and all(len(line) * glyph <= charts.CHART_WIDTH_PX for line in lines)
    assert " ".join(lines) == title.replace("<", "&lt;").replace(">", "&gt;")  # every word, as text, not markup
    short = charts.sweep_error_figure(SWEEP_ROWS, font_size=font_size, title="Short")
    assert fig.layout.margin.t > short.layout.margin.t and fig.layout.height > short.layout.height
    assert fig.layout.height - fig.layout.margin.t == short.layout.height - short.layout.margin.t


def test_gradient_lab_gives_each_method_its_colour_and_dash_and_groups_the_legend() -> None:
    rows = [{**r, "method": m} for r in SWEEP_ROWS if r["method"] == "adjoint" for m in ("adjoint", "adjoint(stored)")]
    fig = charts.sweep_error_figure(rows + [r for r in SWEEP_ROWS if r["method"] == "anode"])
    looks = {t.legendgroup: (t.line.color, t.line.dash) for t in fig.data if t.legendgroup != "reference"}
    assert set(looks) == {"adjoint", "adjoint(stored)", "anode"} and len(set(looks.values())) == 3
    titled = [t.legendgrouptitle.text for t in fig.data if t.legendgrouptitle and t.legendgrouptitle.text]
    assert sorted(set(titled)) == ["adjoint", "adjoint(stored)", "anode", "expected"]
    assert all(titled.count(t) == 1 for t in titled if t != "expected")  # one title per method's group
    references = [t for t in fig.data if t.legendgroup == "reference"]
    assert [t.text[-1] for t in references] == ["slope −1", "slope −2"]  # labelled where they end


def test_a_constant_series_gets_one_tick() -> None:
    flat_fig = charts.curves_figure([charts.Curve("memory", [1, 2, 3], [4096.0, 4096.0, 4096.0])], title="Memory",
                                    x_title="step", y_title="bytes")
    assert list(flat_fig.layout.yaxis.tickvals) == [4096.0]
    moving = charts.curves_figure([charts.Curve("memory", [1, 2], [1.0, 2.0])], title="m", x_title="s", y_title="b")
    assert moving.layout.yaxis.tickvals is None


def test_a_constant_series_with_rounding_is_flat_with_a_readable_value() -> None:
    """A learning rate stored through float32 (0.01 and 0.010000000223517418) is one value: drawn flat in the
    middle of its axis with "0.01" as its one tick, not a zigzag zoomed into the rounding."""
    lr = [0.01, 0.010000000223517418, 0.01, 0.010000000223517418]
    fig = charts.curves_figure([charts.Curve("lr", [1, 2, 3, 4], lr)], title="lr", x_title="step", y_title="lr")
    (tick,) = fig.layout.yaxis.tickvals
    assert tick == pytest.approx(0.01, rel=1e-6) and list(fig.layout.yaxis.ticktext) == ["0.01"]
    low, high = fig.layout.yaxis.range
    assert low < min(lr) and max(lr) < high and (high - low) > 0.5 * 0.01  # the rounding is a hair, not the axis
    logged = charts.curves_figure([charts.Curve("lr", [1, 2, 3, 4], lr)], title="lr", x_title="step",
                                  y_title="lr", log_y=True)
    assert logged.layout.yaxis.range == pytest.approx((-2.5, -1.5), abs=1e-6)


def test_a_zero_error_is_labelled_exact_on_the_axis() -> None:
    """Exact methods sit at the rounding floor, and the axis calls that line "exact (0)", not 10^-17."""
    fig = charts.sweep_error_figure(SWEEP_ROWS)
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext, strict=True))
    assert ticks[charts.ROUNDING_FLOOR] == "exact (0)"
    assert all(text.startswith("10<sup>") for value, text in ticks.items() if value != charts.ROUNDING_FLOOR)


def test_a_method_drawn_first_is_drawn_wider_so_a_covering_line_leaves_it_visible() -> None:
    """The adjoint and adjoint(stored) nearly agree: the one underneath is wider, with larger markers."""
    rows = [{"solver": "euler", "steps": float(n), "method": m, "rel_error": 0.1 / n}
            for m in ("adjoint", "adjoint(stored)") for n in (2, 4, 8)]
    fig = charts.sweep_error_figure(rows)
    under, over = (next(t for t in fig.data if t.name == f"{m} · euler") for m in ("adjoint", "adjoint(stored)"))
    assert under.line.width > over.line.width and under.marker.size > over.marker.size
    assert under.line.color == tables.METHOD_COLOURS["adjoint"] != over.line.color


def test_legend_lines_grow_with_the_type_and_the_names() -> None:
    names = ["direct measured", "direct model", "anode measured", "anode model", "adjoint measured"]
    assert charts.legend_lines(names[:1], 14) == 1
    assert charts.legend_lines(names, 14) < charts.legend_lines(names, 20) <= len(names)
def test_sweep_error_figure_is_log_log_with_a_reference_slope_per_solver() -> None:
    fig = charts.sweep_error_figure(SWEEP_ROWS)
    assert isinstance(fig, go.Figure)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    references = [t for t in fig.data if t.name.startswith("slope")]
    assert [t.name for t in references] == ["slope −1 (euler)", "slope −2 (midpoint)"]
    euler = next(t for t in references if "euler" in t.name)
    assert euler.y[-1] / euler.y[0] == pytest.approx(1 / 8, rel=1e-12)
    exact = next(t for t in fig.data if t.name == "anode · euler")
    assert min(exact.y) == charts.ROUNDING_FLOOR  # zero error drawn at the floor, not dropped


def test_reference_slope_goes_through_the_largest_inexact_error() -> None:
    (euler, _) = charts.reference_slopes(SWEEP_ROWS)
    assert euler.y[0] == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("build", [charts.sweep_cosine_figure, charts.sweep_memory_figure, charts.sweep_time_figure])
def test_other_sweep_figures_have_one_line_per_method(build) -> None:  # type: ignore[no-untyped-def]
    fig = build([r for r in SWEEP_ROWS if r["solver"] == "euler"])
    names = {t.name for t in fig.data}
    assert any("anode" in n for n in names) and any("adjoint" in n for n in names)


def test_the_cosine_axis_does_not_magnify_rounding() -> None:
    """Exact methods' cosines differ from 1 by rounding: the axis spans at least [0.99, 1] so they draw as flat
    lines at 1, and reaches down to an inexact method's cosine when it is lower."""
    exact = [{**r, "cosine": 1.0 - 2e-16 * i} for i, r in enumerate(SWEEP_ROWS) if r["method"] != "adjoint"]
    low, high = charts.sweep_cosine_figure(exact).layout.yaxis.range
    assert low <= 0.99 and high >= 1.0
    inexact = [{**exact[0], "cosine": 0.5, "method": "adjoint"}, *exact]
    low, _ = charts.sweep_cosine_figure(inexact).layout.yaxis.range
    assert low < 0.5


def test_smoothing_keeps_the_raw_curve_visible() -> None:
    curve = charts.Curve("loss", [1, 2, 3, 4], [1.0, 0.5, 0.7, 0.2])
    plain = charts.curves_figure([curve], title="t", x_title="x", y_title="y")
    smooth = charts.curves_figure([curve], title="t", x_title="x", y_title="y", smoothing=0.6, log_y=True)
    assert len(plain.data) == 1 and len(smooth.data) == 2
    raw, line = smooth.data
    assert raw.opacity < 1 and list(raw.y) == [1.0, 0.5, 0.7, 0.2] and list(line.y) != list(raw.y)
    assert smooth.layout.yaxis.type == "log"


def test_font_size_reaches_the_layout() -> None:
    fig = charts.sweep_error_figure(SWEEP_ROWS, font_size=charts.WALL_FONT_SIZE)
    assert fig.layout.font.size == charts.WALL_FONT_SIZE


def test_demo_figures_from_artifacts() -> None:
    gradients = [{"steps": 1.0, "finite_difference": 1.0, "direct": 1.0, "anode": 1.0, "adjoint": -1.5,
                  "adjoint(stored)": -1.5}]
    data = {"gradients.csv": gradients, "loss_curve.csv": [{"theta": 0.0, "loss": -1.0}, {"theta": 1.0, "loss": 0.0}],
            "tangents.json": {"steps": 1, "theta": 0.5, "loss": -0.5, "slopes": {"anode": 1.0, "adjoint": -1.5}}}
    figures = demo_charts.demo_figures("wrong-sign", data)
    assert len(figures) == 2  # trajectories.csv missing: that picture is left out
    bars = {t.name: list(t.y) for t in figures[0].data}
    assert bars["adjoint"] == [-1.5] and bars["anode"] == [1.0]
    assert demo_charts.demo_figures("no-such-demo", data) == []


def test_reconstruction_images_in_reading_order() -> None:
    names = ["reconstructed_float64_N32.png", "blurred.png", "reconstructed_float32_N64.png",
             "reconstructed_float32_N32.png", "original.png", "errors.csv"]
    order = [n for n, _ in demo_charts.reconstruction_images(names)]
    assert order == ["original.png", "blurred.png", "reconstructed_float32_N32.png", "reconstructed_float32_N64.png",
                     "reconstructed_float64_N32.png"]


def test_the_fold_labels_its_points_and_keeps_coinciding_ones_apart() -> None:
    grid = [{"x": 0.0, "y": 0.0, "step_x": 0.0, "step_y": 0.0}]
    pair = {"input_a": [1.0, 1.0], "input_b": [2.0, 2.0], "output_a": [0.5, 0.5], "reverse_of_output": [1.0, 1.0],
            "gain": 4, "steps": 1}
    fig = demo_charts.fold_figure(grid, pair)
    marked = {t.text[0]: t for t in fig.data if t.text}
    assert set(marked) == {"a", "b", "shared output", "reverse solve"}
    a, back = marked["a"], marked["reverse solve"]
    assert (a.x, a.y) == (back.x, back.y)  # the reverse solve lands on a …
    assert back.marker.size < a.marker.size and back.textposition != a.textposition  # … and both stay visible


# ------------------------------------------------------------------------------------ adaptive solvers
ADAPTIVE_ROWS = [
    {"solver": "dopri5", "order": 5.0, "steps": float(s), "rtol": t, "atol": t / 100, "method": m,
     "exact": int(m == "anode"), "rel_error": 0.0 if m == "anode" else 3.0 * t, "cosine": 1.0,
     "peak_bytes": 100.0 * s, "model_bytes": None, "forward_seconds": 0.01, "backward_seconds": 0.02,
     "nfe_forward": 7.0 * s, "nfe_backward": (0.0 if m == "anode" else 14.0 * s)}
    for t, s in ((1e-3, 4), (1e-5, 9), (1e-7, 20)) for m in ("anode", "adjoint")
]


def test_error_against_rtol_is_log_log_falling_to_the_right_with_slope_one() -> None:
    fig = charts.tolerance_error_figure([*SWEEP_ROWS, *ADAPTIVE_ROWS])  # fixed-step cells are left out
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.autorange == "reversed" and list(fig.layout.xaxis.tickvals) == [1e-7, 1e-5, 1e-3]
    (reference,) = [t for t in fig.data if t.name.startswith("slope")]
    assert reference.name == "slope 1 (dopri5)" and reference.y[0] == pytest.approx(3e-3, rel=1e-12)
    assert reference.y[-1] / reference.y[0] == pytest.approx(1e-4, rel=1e-12)  # ∝ rtol over four decades
    adjoint = next(t for t in fig.data if t.name == "adjoint · dopri5")
    assert list(adjoint.x) == [1e-7, 1e-5, 1e-3] and adjoint.y[-1] == pytest.approx(3e-3, rel=1e-12)
    anode = next(t for t in fig.data if t.name == "anode · dopri5")
    assert set(anode.y) == {charts.ROUNDING_FLOOR}
    assert {t.name for t in fig.data} & {"adjoint · euler", "adjoint · midpoint"} == set()


def test_field_evaluations_against_rtol_add_forward_and_backward() -> None:
    fig = charts.tolerance_nfe_figure(ADAPTIVE_ROWS)
    adjoint = next(t for t in fig.data if t.name == "adjoint · dopri5")
    anode = next(t for t in fig.data if t.name == "anode · dopri5")
    assert list(adjoint.y) == [21.0 * 20, 21.0 * 9, 21.0 * 4] and list(anode.y) == [7.0 * 20, 7.0 * 9, 7.0 * 4]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.autorange == "reversed"


def test_rows_split_by_their_axis_and_empty_cells_break_no_figure() -> None:
    empty = {**ADAPTIVE_ROWS[1], "steps": None, "rtol": None, "rel_error": None}  # a cell with nothing measured
    rows = [*SWEEP_ROWS, *ADAPTIVE_ROWS, empty]
    assert charts.adaptive_rows(rows) == ADAPTIVE_ROWS
    assert charts.fixed_rows(rows) == SWEEP_ROWS
    for build in (charts.sweep_error_figure, charts.sweep_cosine_figure, charts.sweep_memory_figure,
                  charts.sweep_time_figure, charts.tolerance_error_figure, charts.tolerance_nfe_figure):
        fig = build(rows)
        assert all(None not in t.x for t in fig.data), build.__name__
    memory = charts.sweep_memory_figure([*ADAPTIVE_ROWS, empty])  # an adaptive solver: N_t = accepted steps
    assert list(next(t for t in memory.data if t.name == "adjoint measured").x) == [4.0, 9.0, 20.0]
    assert len(charts.tolerance_error_figure(SWEEP_ROWS).data) == 0


def test_run_rows_say_the_tolerance_of_an_adaptive_solver() -> None:
    ode = {"solver": "dopri5", "steps": None, "rtol": 1e-4, "atol": 1e-6, "step_limit": 100, "activation": "relu",
           "gradient": {"method": "adjoint"}}
    train = tables.run_row({"id": 1, "kind": "train", "spec": {"ode": ode}})
    assert (train["solver"], train["N_t"]) == ("dopri5", "rtol 0.0001")
    sweep = {"solvers": ["euler", "bosh3"], "steps": [1, 8], "tolerances": [1e-3, 1e-6], "methods": []}
    assert tables.run_row({"id": 2, "kind": "compare", "spec": sweep})["N_t"] == "1–8, rtol 0.001–1e-06"
    fixed_only = {**sweep, "solvers": ["euler"]}
    assert tables.run_row({"id": 3, "kind": "compare", "spec": fixed_only})["N_t"] == "1–8"


def test_log_grid_steps_by_factors_within_the_bounds() -> None:
    grid = schema.log_grid(1e-10, 0.1)
    assert grid[0] == 1e-10 and grid[-1] == 0.1 and len(grid) == 28
    assert all(1.9 < b / a < 2.6 for a, b in zip(grid, grid[1:], strict=False))
    assert schema.log_grid(3e-4, 0.1, (1,)) == [1e-3, 1e-2, 1e-1]


def test_the_catalogs_pairs_are_the_specs_pairing_rule() -> None:
    """``schema.pairs`` over the catalog's solver entries accepts exactly what ``pairing_error`` accepts, for
    every solver and every method label the forms offer."""
    from anode_lab.specs.common import GradientSpec, pairing_error
    from backend.catalog.service import catalog

    entries = catalog()["solvers"]
    for label in tables.method_options(catalog()):
        gradient = tables.method_from_label(label)
        for entry in entries:
            expected = pairing_error(entry["name"], GradientSpec(**gradient)) is None
            assert schema.pairs(entry, gradient) is expected, (entry["name"], label)
    by_name = {e["name"]: e for e in entries}
    assert not schema.pairs(by_name["reversible_heun"], {"method": "adjoint"})
    assert not schema.pairs(by_name["dopri5"], {"method": "adjoint", "reconstruct": False})
