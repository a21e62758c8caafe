"""Bad arguments fail at the entry point with a message that names the argument and says what to pass."""

from __future__ import annotations

import importlib.util
import re
import types

import pytest
import torch
from helpers import mlp_field, seeded_randn
from torch import Tensor

import anode_core as ac
from anode_core.solvers import Tableau

METHODS = [
    pytest.param(ac.Direct(), id="direct"),
    pytest.param(ac.Anode(), id="anode"),
    pytest.param(ac.Anode(checkpoints=1), id="anode-c1"),
    pytest.param(ac.Adjoint(), id="adjoint"),
    pytest.param(ac.Adjoint(reconstruct=False), id="adjoint-stored"),
]

BAD_STEPS = [pytest.param(v, id=repr(v)) for v in (0, -3, 2.5, 2.0, "4", True)]


def solve(**kwargs: object) -> Tensor:
    args: dict[str, object] = {"steps": 2, "solver": ac.Euler(), "gradient": ac.Anode()}
    args.update(kwargs)
    return ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), **args)


@pytest.mark.parametrize("steps", BAD_STEPS)
def test_steps_must_be_a_positive_integer(steps: object) -> None:
    message = r"`steps` must be an integer ≥ 1 .*; got " + re.escape(repr(steps))
    with pytest.raises(ValueError, match=message):
        solve(steps=steps)


def test_fixed_step_solver_needs_steps() -> None:
    message = r"`steps` is required with the fixed-step solver 'euler': pass steps=N .* such as Dopri5"
    with pytest.raises(ValueError, match=message):
        solve(steps=None)


@pytest.mark.parametrize("steps", BAD_STEPS)
def test_ode_block_checks_steps_when_built(steps: object) -> None:
    with pytest.raises(ValueError, match=r"`steps` must be an integer ≥ 1"):
        ac.ODEBlock(mlp_field(), steps=steps)


@pytest.mark.parametrize(
    "t0,t1", [(1.0, 1.0), (1.0, 0.0), (0.0, float("inf")), (float("nan"), 1.0)], ids=["equal", "reversed", "inf", "nan"]
)
def test_t1_must_exceed_t0(t0: float, t1: float) -> None:
    with pytest.raises(ValueError, match=r"`t1` must be greater than `t0` and both finite; got t0="):
        solve(t0=t0, t1=t1)
    with pytest.raises(ValueError, match=r"`t1` must be greater than `t0`"):
        ac.ODEBlock(mlp_field(), t0=t0, t1=t1)


@pytest.mark.parametrize("name", ["rk5", "RK4", "dopri9", ""])
def test_unknown_solver_name_lists_the_known_ones(name: str) -> None:
    known = ", ".join(ac.ALL_SOLVERS)
    assert known.startswith("euler, midpoint, heun, heun3, rk4") and "implicit_adams, implicit_euler" in known
    with pytest.raises(ValueError, match=rf"`solver` must be one of {known}; got '{name}'"):
        solve(solver=name)


def test_solver_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match=r"`solver` must be a Solver such as anode_core.RK4\(\) or its name"):
        solve(solver=ac.RK4)  # the class, not an instance


@pytest.mark.parametrize("name", ["backprop", "ANODE", ""])
def test_unknown_gradient_name_lists_the_known_ones(name: str) -> None:
    known = "direct, anode, adjoint, reversible"
    with pytest.raises(ValueError, match=rf"`gradient` must be one of {known}; got '{name}'"):
        solve(gradient=name)
    with pytest.raises(ValueError, match=rf"`gradient` must be one of {known}"):
        ac.ODEBlock(mlp_field(), gradient=name)


def test_gradient_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match=r"`gradient` must be a GradientMethod such as anode_core.Anode\(\)"):
        solve(gradient=ac.Anode)


@pytest.mark.parametrize("checkpoints", [-1, 2.5, True, "4"], ids=repr)
def test_bad_checkpoints(checkpoints: object) -> None:
    message = (
        r"`checkpoints` must be None \(recompute the whole block\), \"auto\" \(about sqrt\(N_t\) segments\) or an "
        r"integer ≥ 0 \(revolve slots\); got "
    )
    with pytest.raises(ValueError, match=message + re.escape(repr(checkpoints))):
        ac.Anode(checkpoints=checkpoints)
    with pytest.raises(ValueError, match=r"`checkpoints` must be None"):
        ac.gradient_named("anode", checkpoints=checkpoints)


def test_unknown_gradient_option_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"gradient 'anode' takes the options checkpoints; got \['slots'\]"):
        ac.gradient_named("anode", slots=3)
    with pytest.raises(ValueError, match=r"gradient 'direct' takes the options none"):
        ac.gradient_named("direct", checkpoints=3)


@pytest.mark.parametrize("reconstruct", [1, "yes", None], ids=repr)
def test_bad_reconstruct(reconstruct: object) -> None:
    with pytest.raises(ValueError, match=r"`reconstruct` must be True or False"):
        ac.Adjoint(reconstruct=reconstruct)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "field",
    [
        pytest.param(lambda t, z: z[:, :2], id="fewer-features"),
        pytest.param(lambda t, z: z.unsqueeze(0), id="extra-dim"),
        pytest.param(lambda t, z: (z,), id="tuple"),
    ],
)
def test_field_must_preserve_the_shape(field, method: ac.GradientMethod) -> None:
    z0 = seeded_randn(2, 3, seed=0).requires_grad_(True)
    message = r"`field` must return dz/dt shaped like z \(2, 3\); got .*put such layers between blocks"
    with pytest.raises(ValueError, match=message):
        ac.odesolve(field, z0, steps=2, gradient=method)


def test_field_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"`field` must be callable as field\(t, z\) -> dz/dt; got int"):
        ac.odesolve(3, seeded_randn(2, 3, seed=0), steps=2)


@pytest.mark.parametrize("z0", [torch.ones(2, 3, dtype=torch.int64), [[1.0, 2.0, 3.0]]], ids=["int-tensor", "list"])
def test_z0_must_be_a_floating_tensor(z0: object) -> None:
    with pytest.raises(TypeError, match=r"`z0` must be a floating-point tensor; got"):
        ac.odesolve(mlp_field(), z0, steps=2)


@pytest.mark.parametrize(
    "c,a,b,message",
    [
        pytest.param((0.0,), ((),), (0.5,), r"weights b must sum to 1", id="inconsistent"),
        pytest.param((0.0, 1.0), ((), ()), (0.5, 0.5), r"needs 2 nodes and a strictly lower A", id="not-explicit"),
        pytest.param((0.0,), ((),), (0.5, 0.5), r"needs 2 nodes", id="sizes"),
        pytest.param(
            (0.0, 0.5, 0.5),
            ((), (0.5,), (0.5, 0.5)),
            (1 / 6, 2 / 3, 1 / 6),
            r"tableau row 2: node c\[2\] = 0.5 but the row a\[2\] sums to 1.0; .* set c\[2\] = 1.0 or correct a\[2\]",
            id="node-not-row-sum",
        ),
        pytest.param(
            (0.5,), ((),), (1.0,), r"tableau row 0: node c\[0\] = 0.5 but the row a\[0\] sums", id="first-node"
        ),
    ],
)
def test_bad_tableau(c, a, b, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tableau(c=c, a=a, b=b)


@pytest.mark.parametrize("name", ac.__all__)
def test_no_submodule_shadows_an_export(name: str) -> None:
    """Regression: ``anode_core/odesolve.py`` was bound on the package once ``block`` imported it, so
    ``anode_core.odesolve`` became that module instead of the function. No export may share a submodule's name."""
    assert importlib.util.find_spec(f"anode_core.{name}") is None
    assert not isinstance(getattr(ac, name), types.ModuleType)


def test_the_package_lists_only_the_librarys_names() -> None:
    """``dir(anode_core)``: the exports, its submodules and dunders; no typing or import helpers."""
    public = {n for n in dir(ac) if not n.startswith("_")}
    modules = {n for n in public if isinstance(getattr(ac, n), types.ModuleType)}
    assert public - modules == set(ac.__all__)
    assert all(m.__name__.startswith("anode_core.") for m in (getattr(ac, n) for n in modules))
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(dir(ac))
