"""Each teaching demo's key claim, asserted on the numbers it writes; and `anode-lab demo` end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import anode_core as ac
from anode_lab.experiments import RunContext, RunResult, run_experiment
from anode_lab.experiments.demos.images import DISPLAY_SCALE, SIZE
from anode_lab.experiments.demos.non_invertible import folding_field
from anode_lab.experiments.demos.reconstruction_blowup import Diffusion, reverse_solve
from anode_lab.experiments.slopes import fit_slope
from anode_lab.specs.demo import DEMOS, DemoSpec

Ran = tuple[RunResult, Path]
Demo = Callable[..., Ran]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """Run a preset (with optional knobs) once per module; hand back its result and artifact folder."""
    cache: dict[str, Ran] = {}

    def run(name: str, **knobs: object) -> Ran:
        key = json.dumps([name, knobs], sort_keys=True)
        if key not in cache:
            workdir = tmp_path_factory.mktemp(name)
            result = run_experiment("demo", DemoSpec(name=name, **knobs), RunContext(workdir))
            cache[key] = (result, workdir / "artifacts")
        return cache[key]

    return run


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", list(DEMOS))
def test_every_demo_succeeds_and_explains_itself(demo: Demo, name: str) -> None:
    knobs = {"iterations": 40} if name == "training" else {}
    result, artifacts = demo(name, **knobs)
    assert result.status == "succeeded", result.message
    text = (artifacts / "explanation.md").read_text(encoding="utf-8")
    assert text.startswith(f"# {DEMOS[name].title}")
    assert "## What this run found" in text and "## Numbers" in text
    assert result.summary
    figures = sorted(p.stem for p in artifacts.glob("*.svg"))
    assert figures and figures == sorted(p.stem for p in artifacts.glob("*.png") if p.stem in figures)
    for stem in figures:  # a title, both axes named with their units, a legend; the PNG is a real picture
        texts, legend = svg_texts(artifacts / f"{stem}.svg")
        assert any("N_t" in t or "step" in t or "rtol" in t for t in texts), (stem, texts)  # the x axis
        assert any(t.endswith(")") and len(t) > 8 for t in texts), (stem, texts)  # a unit in brackets
        assert max(map(len, texts)) > 30 and legend, (stem, texts)  # a title
        with Image.open(artifacts / f"{stem}.png") as png:
            assert png.size[0] >= 600, stem


def svg_texts(path: Path) -> tuple[list[str], bool]:
    """The words of an SVG figure (``<text>`` elements), and whether it has a legend."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    texts = ["".join(t.itertext()).strip() for t in root.iter("{http://www.w3.org/2000/svg}text")]
    legend = any(g.get("id", "").startswith("legend") for g in root.iter("{http://www.w3.org/2000/svg}g"))
    return texts, legend


ADJOINT_ORDER_BAND = 0.25
"""Allowed distance of a fitted log-log slope from −order (ReLU kinks make the fit slightly noisy)."""


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("midpoint", 2)])
@pytest.mark.parametrize("method", ["adjoint", "adjoint(stored)"])
def test_adjoint_order_slopes(demo: Demo, solver: str, order: int, method: str) -> None:
    result, _ = demo("adjoint-order")
    assert result.summary[f"slope/{solver}/{method}"] == pytest.approx(-order, abs=ADJOINT_ORDER_BAND)


def test_adjoint_order_anode_is_exact(demo: Demo) -> None:
    result, artifacts = demo("adjoint-order")
    assert result.summary["max_rel_error/anode"] <= 1e-12
    assert min(float(r["adjoint_rel_error"]) for r in rows(artifacts / "errors.csv")) > 1e-6


FD_RTOL = 1e-6
"""Central differences (ε = 1e-6) of a polynomial-in-θ float64 loss: accurate to ~1e-9 relative."""


def test_wrong_sign_adjoint_opposes_finite_differences_and_anode_matches(demo: Demo) -> None:
    result, artifacts = demo("wrong-sign")
    table = {int(r["steps"]): r for r in rows(artifacts / "gradients.csv")}
    for n in (1, 2):  # the N_t whose Euler steps jump over the kink (dt·K = 3, 1.5 > 1)
        fd = float(table[n]["finite_difference"])
        assert fd > 0
        assert float(table[n]["adjoint"]) < 0
        assert float(table[n]["adjoint(stored)"]) < 0
        assert float(table[n]["crosses_kink"]) == 1
    for n, row in table.items():
        fd = float(row["finite_difference"])
        assert float(row["anode"]) == pytest.approx(fd, rel=FD_RTOL), n
        assert float(row["direct"]) == pytest.approx(fd, rel=FD_RTOL), n
    assert all(int(table[n]["adjoint_sign_agrees"]) for n in (4, 8, 16))  # no step crosses the kink
    assert result.summary["adjoint_wrong_sign_at"] == "1, 2"
    # at N_t = 1 the forward step is unstable on z > 0: |1 − dt·(K − θ)| = |1 − 2.5| = 1.5; stable from N_t = 2 on
    factors = {n: float(row["positive_step_factor"]) for n, row in table.items()}
    assert factors[1] == pytest.approx(1.5, rel=1e-12) and all(f < 1 for n, f in factors.items() if n > 1)
    text = (artifacts / "explanation.md").read_text(encoding="utf-8")
    unstable = "at N_t = 1 the forward Euler step is itself unstable on the z > 0 branch (|1 − dt·(K − θ)| = 1.5 > 1)"
    assert unstable in text


def test_reconstruction_blowup_large_in_float32_and_growing_with_steps(demo: Demo) -> None:
    result, artifacts = demo("reconstruction-blowup")
    table = rows(artifacts / "errors.csv")
    f32 = [float(r["reconstruction_error"]) for r in table if r["dtype"] == "float32"]
    f64 = [float(r["reconstruction_error"]) for r in table if r["dtype"] == "float64"]
    assert min(f32) > 1.0  # the rebuilt input is further from the image than the image is from zero
    assert all(b > 2 * a for a, b in pairwise(f32))  # and more so with every doubling of N_t
    assert max(f64) < 0.2 and f32[-1] > 1e4 * f64[-1]
    assert float(result.summary["reconstruction_error/float32/N_t=256"]) == f32[-1]
    # float64: the reverse-step mismatch falls with N_t, but far slower than dt: its measured order is reported
    order = -fit_slope([int(r["steps"]) for r in table if r["dtype"] == "float64"], f64)
    assert 0.3 < order < 0.9 and result.summary["reconstruction_order/float64"] == pytest.approx(order, rel=1e-12)
    text = (artifacts / "explanation.md").read_text(encoding="utf-8")
    assert f"measured order of {order:.2f} in dt" in text and "O(dt)" not in text


def test_reconstruction_blowup_is_the_adjoints_reverse_solve() -> None:
    image = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    problem = ac.ODEBlock(Diffusion(), steps=32).problem(image)
    with torch.no_grad():
        rebuilt = reverse_solve(problem, problem.advance(image, 0, 32))
    expected = ac.reconstruction_error(problem, image)
    assert ((rebuilt - image).norm() / image.norm()).item() == pytest.approx(expected, rel=1e-12)


def test_reconstruction_blowup_writes_images(demo: Demo) -> None:
    _, artifacts = demo("reconstruction-blowup")
    side = SIZE * DISPLAY_SCALE
    for name in ("original.png", "blurred.png", "reconstructed_float32_N256.png", "reconstructed_float64_N32.png"):
        with Image.open(artifacts / name) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (side, side))
    with Image.open(artifacts / "panel.png") as panel:
        assert panel.size[1] > side and panel.size[0] > 4 * side  # the images, and a line of labels under them
        labels = panel.crop((0, side, panel.size[0], panel.size[1]))
        assert labels.getextrema()[0] < 128  # dark text on the white strip under each image


def test_reconstruction_blowup_generated_pattern(demo: Demo) -> None:
    result, artifacts = demo("reconstruction-blowup", image="pattern", steps=[32, 128])
    f32 = [float(r["reconstruction_error"]) for r in rows(artifacts / "errors.csv") if r["dtype"] == "float32"]
    assert result.status == "succeeded" and 1.0 < f32[0] < f32[1]


FOLD_ATOL = 1e-12
"""The two outputs are computed by the same float64 operations on values exactly representable: equal."""


def test_non_invertible_step_maps_two_inputs_to_one_output(demo: Demo) -> None:
    result, artifacts = demo("non-invertible")
    table = {int(r["steps"]): r for r in rows(artifacts / "pairs.csv")}
    for n in (1, 2, 4):  # dt·K = 4, 2, 1 ≥ 1
        assert float(table[n]["output_gap"]) <= FOLD_ATOL
        assert float(table[n]["input_distance"]) >= 1.0
        assert float(table[n]["reverse_error_to_a"]) >= 1.0  # the reverse solve cannot find the input a ...
        assert float(table[n]["reverse_error_to_b"]) <= FOLD_ATOL  # ... it returns the other preimage b
    assert float(table[8]["output_gap"]) > 1e-3  # dt·K = 0.5 < 1: invertible again
    pair = json.loads((artifacts / "pair.json").read_text())
    field = folding_field().double()
    a, b = torch.tensor([pair["input_a"]], dtype=torch.float64), torch.tensor([pair["input_b"]], dtype=torch.float64)
    block = ac.ODEBlock(field, steps=1, solver=ac.Euler())
    with torch.no_grad():
        assert torch.allclose(block(a), block(b), rtol=0.0, atol=FOLD_ATOL)
    assert (a - b).norm().item() >= 1.0
    assert result.summary["folds_at"] == "1, 2, 4"


MEMORY_BAND = 1.25
"""Measured bytes within this factor of the paper's leading-order model."""


def test_memory_follows_the_model(demo: Demo) -> None:
    result, artifacts = demo("memory")
    table = rows(artifacts / "memory.csv")
    # the demo's count is exact: each storage once, the loss where it is alive at the peak
    assert [int(r["peak_bytes"]) for r in table] == [int(r["model_bytes"]) for r in table]
    for method in ("anode", "direct"):
        ratios = [float(r["paper_ratio"]) for r in table if r["method"] == method]
        assert 1 / MEMORY_BAND <= min(ratios) and max(ratios) <= MEMORY_BAND, method
    # whole-block ANODE meets the paper's model only because its two omissions cancel: S counted twice, loss left out
    state, loss = result.summary["state_bytes"], result.summary["loss_bytes"]
    assert state == loss and all(int(r["paper_model_bytes"]) - state + loss == int(r["model_bytes"])
                                 for r in table if r["method"] == "anode")
    text = (artifacts / "explanation.md").read_text(encoding="utf-8")
    assert f"its ratio to the model is {result.summary['paper_ratio_max/anode']:.2f} by coincidence" in text

    def peaks(solver: str, method: str) -> list[int]:
        return [int(r["peak_bytes"]) for r in table if r["solver"] == solver and r["method"] == method]

    for solver in ("euler", "rk4"):
        direct, adjoint = peaks(solver, "direct"), peaks(solver, "adjoint")
        assert all(b > a for a, b in pairwise(direct))  # Direct grows with N_t
        assert direct[-1] > 30 * direct[0]  # about linearly: N_t goes from 1 to 64
        assert max(adjoint) == min(adjoint)  # Adjoint is flat: nothing depends on N_t
        assert max(peaks(solver, "anode(c=2)")) < 2 * min(peaks(solver, "anode(c=2)"))


ANODE_PROBE_RTOL = 1e-10
"""ANODE recomputes the block with the same float64 operations as Direct: equal to rounding, stated loosely."""


def test_training_anode_probes_equal_direct(demo: Demo) -> None:
    result, artifacts = demo("training", iterations=40)
    probes = rows(artifacts / "probes.csv")
    assert len(probes) >= 10
    assert max(float(p["anode/grad_rel_error"]) for p in probes) <= ANODE_PROBE_RTOL
    assert min(float(p["adjoint/grad_rel_error"]) for p in probes) > 1e-3  # the adjoint is not at rounding level
    assert result.summary["anode/grad_rel_error_max"] <= ANODE_PROBE_RTOL
    curve = rows(artifacts / "loss_curve.csv")
    assert len(curve) == 40 and curve[0]["adjoint_loss"] == curve[0]["anode_loss"]  # same start, same batch


EXACT_RTOL = 1e-12
"""ANODE replays the accepted steps with the same float64 operations as Direct: equal to rounding."""
ADAPTIVE_SLOPE_BAND = 0.4
"""Allowed distance of the adjoint's log-log slope against rtol from 1 (the controller's steps are discrete, so
the error steps down unevenly)."""


def test_adaptive_adjoint_anode_exact_adjoint_error_falls_with_rtol(demo: Demo) -> None:
    result, artifacts = demo("adaptive-adjoint")
    table = rows(artifacts / "errors.csv")
    rtols = [float(r["rtol"]) for r in table]
    assert rtols == list(DEMOS["adaptive-adjoint"].defaults["tolerances"])
    assert all(float(r["atol"]) == pytest.approx(float(r["rtol"]) / 100, rel=1e-12) for r in table)
    assert max(float(r["anode_rel_error"]) for r in table) <= EXACT_RTOL
    assert result.summary["max_rel_error/anode"] <= EXACT_RTOL
    adjoint = [float(r["adjoint_rel_error"]) for r in table]
    assert adjoint[-1] < adjoint[0] / 100  # tighter tolerances buy a smaller gap, overall
    assert min(adjoint) > 1e-10  # but never the exact gradient: the gap is far above rounding
    assert result.summary["slope/dopri5/adjoint"] == pytest.approx(1.0, abs=ADAPTIVE_SLOPE_BAND)
    assert result.summary["slope/dopri5/adjoint"] == pytest.approx(fit_slope(rtols, adjoint), rel=1e-12)

    def column(name: str) -> list[int]:
        return [int(r[name]) for r in table]

    for name in ("adjoint_nfe_forward", "adjoint_nfe_backward", "steps"):  # each digit costs evaluations
        values = column(name)
        assert all(b >= a for a, b in pairwise(values)) and values[-1] > 2 * values[0], (name, values)
    # ANODE's forward is the controller's solve (the adjoint's forward) and one replay of the accepted steps with the
    # graph recorded; its backward recomputes each accepted step once more
    replays = [f - a for f, a in zip(column("anode_nfe_forward"), column("adjoint_nfe_forward"), strict=True)]
    assert replays == column("anode_nfe_backward")
    assert column("anode_nfe_forward") == column("direct_nfe_forward")  # Direct's forward is the same two passes
    assert len(set(column("adjoint_peak_bytes"))) == 1  # the adjoint holds the same bytes at every tolerance
    assert column("anode_peak_bytes")[-1] > 2 * column("anode_peak_bytes")[0]  # ANODE's grow with the steps
    text = (artifacts / "explanation.md").read_text(encoding="utf-8")
    assert f"a log-log slope of {result.summary['slope/dopri5/adjoint']:.2f} against rtol" in text


def test_adaptive_adjoint_runs_bosh3_and_float32(demo: Demo) -> None:
    result, artifacts = demo("adaptive-adjoint", solvers=["dopri5", "bosh3"], tolerances=[1e-2, 1e-4, 1e-6],
                             dtype="float32")
    table = rows(artifacts / "errors.csv")
    assert result.status == "succeeded" and [r["solver"] for r in table] == ["dopri5"] * 3 + ["bosh3"] * 3
    assert max(float(r["anode_rel_error"]) for r in table) <= 1e-6  # float32: ANODE still equals Direct
    for solver in ("dopri5", "bosh3"):
        errors = [float(r["adjoint_rel_error"]) for r in table if r["solver"] == solver]
        assert errors[-1] < errors[0] / 100, (solver, errors)


REVERSIBLE_RTOL = 1e-10
"""Reversible Heun's backward rebuild is exact in exact arithmetic; in float64 it differs from Direct by rounding."""
REVERSIBLE_SLOPE_BAND = 0.2
"""Allowed distance of the midpoint adjoint's slope against N_t from −2 (a smooth tanh field: a clean fit)."""


def test_reversible_exact_is_exact_and_the_adjoint_is_not(demo: Demo) -> None:
    result, artifacts = demo("reversible-exact")
    table = rows(artifacts / "errors.csv")
    steps = [int(r["steps"]) for r in table]
    assert steps == list(DEMOS["reversible-exact"].defaults["steps"])
    assert all(float(r["reversible_rel_error"]) <= REVERSIBLE_RTOL for r in table)
    adjoint = [float(r["adjoint_rel_error"]) for r in table]
    assert min(adjoint) > 1e-6 and all(b < a for a, b in pairwise(adjoint))  # O(dt²), never rounding-level
    assert result.summary["slope/adjoint"] == pytest.approx(-2.0, abs=REVERSIBLE_SLOPE_BAND)
    assert result.summary["slope/adjoint"] == pytest.approx(fit_slope(steps, adjoint), rel=1e-12)

    def held(label: str) -> list[int]:
        return [int(r[f"{label}_held_bytes"]) for r in table]

    assert len(set(held("reversible"))) == 1 and len(set(held("adjoint"))) == 1  # flat in N_t
    direct = held("direct")
    assert all(b > a for a, b in pairwise(direct)) and direct[-1] > 16 * direct[0]  # N_t × 32: about linear
    assert direct[0] > held("reversible")[0]
    assert [int(r["reversible_nfe_forward"]) for r in table] == [n + 1 for n in steps]  # one evaluation a step
    text = (artifacts / "explanation.md").read_text(encoding="utf-8")
    assert f"over every N_t {result.summary['max_rel_error/reversible']:.1e} (rounding)" in text
    for solver in ("reversible_heun", "alf"):  # float32 on the expanding field: measured 25× float32's own rounding
        off = result.summary[f"expanding_float32/{solver}/reversible_vs_direct"]
        float32 = result.summary[f"expanding_float32/{solver}/direct_vs_float64"]
        assert off > 5 * float32 > 0, solver
        assert f"amplified rounding {off / float32:.0f}× on this expanding field" in text


@pytest.mark.parametrize(
    ("data", "named", "fix"),
    [
        pytest.param({"name": "adaptive-adjoint", "solvers": ["euler"]}, "solvers",
                     "are adaptive solvers (dopri5, bosh3, adaptive_heun, fehlberg2, tsit5, dopri8); remove euler",
                     id="fixed-solver-on-adaptive"),
        pytest.param({"name": "adjoint-order", "solvers": ["euler", "dopri5"]}, "solvers",
                     "are fixed solvers (euler, midpoint, heun, heun3, rk4); remove dopri5",
                     id="adaptive-solver-on-fixed"),
        pytest.param({"name": "memory", "solvers": ["reversible_heun"]}, "solvers", "remove reversible_heun",
                     id="reversible-solver-on-memory"),
        pytest.param({"name": "reversible-exact", "tolerances": [1e-3]}, "tolerances", "remove `tolerances`",
                     id="tolerances-on-reversible"),
        pytest.param({"name": "reversible-exact", "solvers": ["midpoint"]}, "solvers", "remove `solvers`",
                     id="solvers-on-reversible"),
        pytest.param({"name": "adaptive-adjoint", "steps": [8]}, "steps", "remove `steps`", id="steps-on-adaptive"),
        pytest.param({"name": "adaptive-adjoint", "tolerances": [1e-4, 1e-3]}, "tolerances", "strictly decreasing",
                     id="tolerances-increasing"),
        pytest.param({"name": "adaptive-adjoint", "tolerances": [1e-3, 1e-11]}, "tolerances", "between 1e-10 and 0.1",
                     id="tolerance-too-tight"),
        pytest.param({"name": "adaptive-adjoint", "tolerances": list(range(13, 0, -1))}, "tolerances",
                     "at most 12 items", id="too-many-tolerances"),
        pytest.param({"name": "adaptive-adjoint", "dtype": "float32"}, "tolerances",
                     "remove 1e-07, 1e-08 or set `dtype` to float64", id="float32-tight-tolerance"),
        pytest.param({"name": "reversible-exact", "steps": [64, 8]}, "steps", "strictly increasing",
                     id="reversible-steps-decreasing"),
    ],
)
def test_new_demo_knobs_rejected_naming_the_knob(data: dict[str, object], named: str, fix: str) -> None:
    with pytest.raises(ValidationError) as info:
        DemoSpec.model_validate(data)
    text = str(info.value)
    where = text.splitlines()[1].strip()  # the field's name, or the message of a check across fields
    assert where == named or f"`{named}`" in where, text
    assert fix in text, text


@pytest.mark.parametrize(("name", "titles"), [
    ("adaptive-adjoint", ["the adjoint's gap follows the tolerance", "each digit of tolerance costs steps"]),
    ("reversible-exact", ["the reversible one is exact", "Memory held after the forward pass"]),
])
def test_dashboard_draws_the_new_demos_from_their_csv(demo: Demo, name: str, titles: list[str]) -> None:
    from dashboard import demo_charts
    from dashboard.charts import ROUNDING_FLOOR
    from dashboard.tables import parse_csv

    _, artifacts = demo(name)
    table = parse_csv((artifacts / "errors.csv").read_text(encoding="utf-8"))
    figures = demo_charts.demo_figures(name, {"errors.csv": table})
    shown = [fig.layout.title.text.replace("<br>", " ") for fig in figures]  # a long title wraps
    assert [t for fig, t in zip(shown, titles, strict=True) if t in fig] == titles
    traces = {trace.name: trace for trace in figures[0].data}
    adjoint = next(t for n, t in traces.items() if n.startswith("adjoint"))
    assert list(adjoint.y) == [r["adjoint_rel_error"] for r in table]  # drawn as measured, on a log axis
    exact = next(t for n, t in traces.items() if n.startswith(("anode", "reversible")))
    assert all(ROUNDING_FLOOR <= y <= 1e-10 for y in exact.y)  # the exact method's zeros sit on the floor
    assert figures[0].layout.yaxis.type == "log" and figures[0].layout.xaxis.type == "log"


def test_catalog_lists_the_new_demos_and_the_api_refuses_a_wrong_solver(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost/api/v1") as client:
        demos = {d["name"]: d for d in client.get("/catalog").json()["demos"]}
        assert demos["adaptive-adjoint"]["knobs"] == ["seed", "device", "threads", "solvers", "tolerances", "dtype"]
        assert demos["adaptive-adjoint"]["spec"]["tolerances"] == [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
        assert demos["reversible-exact"]["spec"]["steps"] == [8, 16, 32, 64, 128, 256]
        for name in ("adaptive-adjoint", "reversible-exact"):
            assert client.post("/runs", json={"kind": "demo", "spec": demos[name]["spec"]}).status_code == 201
        bad = client.post("/runs", json={"kind": "demo", "spec": {"name": "adaptive-adjoint", "solvers": ["rk4"]}})
        assert bad.status_code == 422 and "remove rk4" in bad.json()["detail"] and "solvers" in bad.json()["detail"]


def test_demo_stops_when_asked(tmp_path: Path) -> None:
    ctx = RunContext(tmp_path, should_stop=lambda: True)
    result = run_experiment("demo", DemoSpec(name="adjoint-order"), ctx)
    assert result.status == "cancelled" and "stopped after 0" in result.message


def test_cli_demo_writes_artifacts_and_prints_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "anode_lab.cli", "demo", "non-invertible", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "folds_at: 1, 2, 4" in done.stdout
    assert str((out / "artifacts").resolve()) in done.stdout
    written = {p.name for p in (out / "artifacts").iterdir()}
    assert {"explanation.md", "pairs.csv", "pair.json", "fold_grid.csv", "pairs.png", "pairs.svg"} <= written
    status = next(line for line in done.stdout.splitlines() if line.startswith("succeeded in "))
    assert not status.rstrip().endswith(":"), status  # a colon only when a message follows it


def test_readme_installs_the_cpu_torch_next_to_the_quick_start() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in quick_start


def test_cli_demo_rejects_unknown_name(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "anode_lab.cli", "demo", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "NAME must be one of adjoint-order" in done.stderr
