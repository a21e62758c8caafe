"""The compare and demo specs: defaults valid, bad values rejected with messages that name the field and the fix,
no torch needed to validate them."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from pydantic import ValidationError

from anode_lab.specs.common import MAX_STEPS, SOLVERS, GradientSpec, SolverName
from anode_lab.specs.compare import MAX_CELLS, CompareSpec, method_label
from anode_lab.specs.demo import DEMOS, DemoName, DemoSpec


def test_specs_import_without_torch() -> None:
    code = (
        "import sys; import anode_lab.specs.compare, anode_lab.specs.demo; "
        "from anode_lab.experiments.slopes import fit_slope; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_compare_defaults_round_trip_through_json() -> None:
    spec = CompareSpec()
    assert CompareSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.cells == len(spec.grid()) == 2 * 6 * 5


@pytest.mark.parametrize(("solvers", "labels"), [
    (("bosh3",), ["direct", "anode", "anode(c=2)", "adjoint"]),
    (("reversible_heun",), ["direct", "anode", "reversible"]),
    (("euler", "alf", "dopri5"), ["direct", "anode", "anode(c=2)", "adjoint", "adjoint(stored)", "reversible"]),
])
def test_left_out_methods_are_those_that_pair_and_the_stored_spec_validates_again(
    solvers: tuple[SolverName, ...], labels: list[str]
) -> None:
    """The worker validates the stored spec again: left-out methods must come back as a list that passes (the
    stored adjoint has no solver in a bosh3-only sweep, so it is not in the list), and the list says what ran."""
    spec = CompareSpec(solvers=solvers)
    assert spec.labels() == labels
    again = CompareSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec and {c.label for c in again.grid()} == set(labels)


def test_compare_grid_runs_methods_innermost() -> None:
    spec = CompareSpec(solvers=("euler",), steps=(1, 2), dtypes=("float32", "float64"))
    grid = spec.grid()
    assert [c.index for c in grid] == list(range(spec.cells))
    assert [(c.dtype, c.steps, c.label) for c in grid[:6]] == [
        ("float32", 1, "direct"), ("float32", 1, "anode"), ("float32", 1, "anode(c=2)"),
        ("float32", 1, "adjoint"), ("float32", 1, "adjoint(stored)"), ("float32", 2, "direct"),
    ]


@pytest.mark.parametrize(
    ("changes", "named", "fix"),
    [
        pytest.param({"steps": (0, 2)}, "steps", "between 1 and", id="steps-zero"),
        pytest.param({"steps": (2, MAX_STEPS + 1)}, "steps", "between 1 and", id="steps-too-many"),
        pytest.param({"steps": (2, 2)}, "steps", "list each value once", id="steps-repeated"),
        pytest.param({"solvers": ("euler", "euler")}, "solvers", "list each value once", id="solvers-repeated"),
        pytest.param({"solvers": ("dopri",)}, "solvers", "euler", id="solver-unknown"),
        pytest.param({"methods": ({"method": "anode"}, {"method": "anode"})}, "methods", "list each method once",
                     id="methods-repeated"),
        pytest.param({"methods": ()}, "methods", "at least 1", id="methods-empty"),
        pytest.param({"weight_scales": (0.0,)}, "weight_scales", "(0, 100]", id="scale-zero"),
        pytest.param({"weight_scales": (1e3,)}, "weight_scales", "(0, 100]", id="scale-huge"),
        pytest.param({"channels": 3}, "channels", "set `field` to 'conv'", id="conv-knob-on-mlp"),
        pytest.param({"field": "conv", "hidden": 3}, "hidden", "set `field` to 'mlp'", id="mlp-knob-on-conv"),
        pytest.param({"batch": 0}, "batch", "greater than or equal to 1", id="batch-zero"),
        pytest.param({"fd_check": 17}, "fd_check", "less than or equal to 16", id="fd-too-many"),
        pytest.param({"field": "conv", "batch": 1024, "channels": 32, "size": 32}, "batch", "lower `batch`",
                     id="state-too-large"),
        pytest.param({"steps": tuple(range(1, 101)), "solvers": ("euler", "heun", "rk4")}, "steps",
                     f"at most {MAX_CELLS}: shorten", id="too-many-cells"),
        pytest.param({"batch": 1024, "dim": 256, "steps": (256,), "solvers": ("rk4",)}, "steps",
                     "lower the largest `steps`", id="too-much-work"),
        pytest.param({"methods": ({"method": "direct", "checkpoints": 2},)}, "checkpoints", "'anode' only",
                     id="checkpoints-on-direct"),
        pytest.param({"colour": "red"}, "colour", "Extra inputs are not permitted", id="unknown-key"),
        pytest.param({"solvers": ("dopri5",), "tolerances": (1e-10,), "atol_ratio": 1e-6}, "atol_ratio",
                     "raise `atol_ratio` to at least 0.01 or the smallest of `tolerances`", id="atol-too-small"),
        pytest.param({"solvers": ("dopri5",), "tolerances": (1.0,)}, "tolerances", "must be in [1e-10, 0.1]",
                     id="rtol-too-loose"),
        pytest.param({"solvers": ("bosh3",), "tolerances": (1e-7,), "dtypes": ("float32",)}, "tolerances",
                     "keep `tolerances` ≥ 1e-06 or remove float32", id="float32-too-tight"),
        pytest.param({"solvers": ("dopri5",), "methods": ({"method": "reversible"}, {"method": "anode"})}, "methods",
                     "a solver of kind reversible (reversible_heun, alf)", id="reversible-without-its-solver"),
    ],
)
def test_compare_rejects_with_field_and_fix(changes: dict[str, object], named: str, fix: str) -> None:
    with pytest.raises(ValidationError) as info:
        CompareSpec.model_validate(changes)
    text = str(info.value)
    assert named in text
    assert fix in text


def test_adaptive_solvers_run_along_tolerances_with_the_methods_they_pair_with() -> None:
    methods = tuple(GradientSpec(method=m) for m in ("direct", "adjoint", "reversible"))
    spec = CompareSpec(solvers=("dopri5", "reversible_heun"), steps=(2, 4), tolerances=(1e-3, 1e-6), methods=methods,
                       atol_ratio=0.1)
    grid = spec.grid()
    assert [(c.solver, c.steps, c.rtol, c.atol, c.label) for c in grid] == [
        ("dopri5", None, 1e-3, 1e-4, "direct"), ("dopri5", None, 1e-3, 1e-4, "adjoint"),
        ("dopri5", None, 1e-6, 1e-7, "direct"), ("dopri5", None, 1e-6, 1e-7, "adjoint"),
        ("reversible_heun", 2, None, None, "direct"), ("reversible_heun", 2, None, None, "reversible"),
        ("reversible_heun", 4, None, None, "direct"), ("reversible_heun", 4, None, None, "reversible"),
    ]
    assert spec.cells == len(grid) and [c.where for c in grid[::2]] == ["rtol=0.001", "rtol=1e-06", "N_t=2", "N_t=4"]


def test_the_torch_free_solver_table_matches_the_library() -> None:
    """Names, orders, stages and kinds of ``anode_lab.specs.common.SOLVERS`` are those of
    ``anode_core.ALL_SOLVERS``, and the ``SolverName`` literal of the specs lists exactly its keys. The kinds
    are what the one pairing rule reads; they agree with what each solver can do (only an adaptive solver has a
    controller, only a reversible one a reverse step, only carrying ones refuse an isolated step)."""
    import anode_core as ac

    def kind(solver: ac.Solver) -> str:
        if isinstance(solver, ac.AdaptiveSolver):
            return "adaptive"
        if isinstance(solver, ac.ReversibleSolver):
            return "reversible"
        if solver.carries:
            return "multistep"
        return "implicit" if isinstance(solver, ac.ImplicitSolver) else "fixed"

    library = {name: (cls.order, cls().stages, kind(cls())) for name, cls in ac.ALL_SOLVERS.items()}
    assert all(cls.kind == kind(cls()) for cls in ac.ALL_SOLVERS.values())
    assert {name: (s.order, s.stages, s.kind) for name, s in SOLVERS.items()} == library
    assert typing.get_args(SolverName) == tuple(SOLVERS)


def test_method_labels_are_distinct() -> None:
    methods = [GradientSpec(method="direct"), GradientSpec(method="anode"), GradientSpec(method="anode", checkpoints=0),
               GradientSpec(method="adjoint"), GradientSpec(method="adjoint", reconstruct=False)]
    assert len({method_label(m) for m in methods}) == len(methods)


def test_demo_catalog_covers_every_name() -> None:
    assert set(typing.get_args(DemoName)) == set(DEMOS)
    for info in DEMOS.values():
        assert info.title and len(info.explanation) > 200
        assert info.knobs[:3] == ("seed", "device", "threads")


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_defaults_are_filled_and_round_trip(name: str) -> None:
    spec = DemoSpec(name=name)
    for knob, default in DEMOS[name].defaults.items():
        assert getattr(spec, knob) == default
    assert DemoSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.threads == 1


@pytest.mark.parametrize(
    ("data", "named", "fix"),
    [
        pytest.param({"name": "wrong-sign", "image": "digit"}, "image", "remove `image`", id="image-on-wrong-sign"),
        pytest.param({"name": "memory", "iterations": 3}, "iterations", "remove `iterations`",
                     id="iterations-on-memory"),
        pytest.param({"name": "non-invertible", "solvers": ["rk4"]}, "solvers", "remove `solvers`",
                     id="solvers-on-non-invertible"),
        pytest.param({"name": "memory", "steps": [4, 2]}, "steps", "strictly increasing", id="steps-decreasing"),
        pytest.param({"name": "memory", "steps": [1, MAX_STEPS + 1]}, "steps", "between 1 and", id="steps-too-many"),
        pytest.param({"name": "training", "steps": [1, 2]}, "steps", "e.g. [2]", id="training-two-steps"),
        pytest.param(
            {"name": "reconstruction-blowup", "steps": [8, 64]}, "steps", "themselves unstable (|1 − 8κ·dt| = 3",
            id="blowup-unstable",
        ),
        pytest.param({"name": "reconstruction-blowup", "steps": [16, 64]}, "steps", "1 − (8κ·dt)² = -3, larger than 1",
                     id="blowup-round-trip"),
        pytest.param({"name": "reconstruction-blowup", "steps": [24, 64]}, "steps", "= -0.778: no blow-up",
                     id="blowup-sign-flip"),
        pytest.param({"name": "adjoint-order", "solvers": ["euler", "euler"]}, "solvers", "list each once",
                     id="solvers-repeated"),
        pytest.param({"name": "training", "iterations": 0}, "iterations", "greater than or equal to 1",
                     id="iterations-zero"),
        pytest.param({"name": "bogus"}, "name", "adjoint-order", id="unknown-demo"),
    ],
)
def test_demo_rejects_with_field_and_fix(data: dict[str, object], named: str, fix: str) -> None:
    with pytest.raises(ValidationError) as info:
        DemoSpec.model_validate(data)
    text = str(info.value)
    assert named in text
    assert fix in text
