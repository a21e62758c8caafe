"""``anode_core.odeint``: torchdiffeq's signature and numbers, any gradient method, and ``use_gradient`` (float64)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchdiffeq
from helpers import assert_rel_close, gradients, loss_of, mlp_field, rel_error, seeded_randn
from torch import Tensor

import anode_core as ac

TIMES = [
    pytest.param(torch.tensor([0.0, 1.0], dtype=torch.float64), id="span"),
    pytest.param(torch.linspace(0.0, 2.0, 7, dtype=torch.float64), id="seven-times"),
    pytest.param(torch.tensor([1.0, 0.3, -0.5], dtype=torch.float64), id="decreasing"),
]
FIXED = [
    pytest.param("euler", None, id="euler"),
    pytest.param("midpoint", None, id="midpoint"),
    pytest.param("rk4", None, id="rk4-3/8"),
    pytest.param("euler", {"step_size": 0.07}, id="euler-h0.07"),
    pytest.param("midpoint", {"step_size": 0.13}, id="midpoint-h0.13"),
    pytest.param("rk4", {"step_size": 0.1}, id="rk4-h0.1"),
]


def field_and_state() -> tuple[torch.nn.Module, Tensor]:
    return mlp_field(scale=2.0), seeded_randn(4, 3, seed=1)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("method,options", FIXED)
def test_fixed_grid_methods_give_torchdiffeqs_numbers(method: str, options: dict | None, t: Tensor) -> None:
    """Same grid, same stages (rk4 is the 3/8 rule there), same linear interpolation: ≤ 1e-12 (measured
    2.5e-16 on these problems, 2e-15 on others: agreement to rounding, not bit-identity)."""
    field, y0 = field_and_state()
    expected = torchdiffeq.odeint(field, y0, t, method=method, options=options)
    actual = ac.odeint(field, y0, t, method=method, options=options, gradient=ac.Direct())
    assert actual.shape == expected.shape == (len(t), *y0.shape)
    assert rel_error(actual, expected) <= 1e-12


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_methods_give_torchdiffeqs_numbers(method: str, t: Tensor) -> None:
    """The same accepted steps and dense output at every t[i]: ≤ 1e-6 relative (measured ≤ 2e-15)."""
    field, y0 = field_and_state()
    expected = torchdiffeq.odeint(field, y0, t, rtol=1e-6, atol=1e-8, method=method)
    actual = ac.odeint(field, y0, t, rtol=1e-6, atol=1e-8, method=method)
    assert rel_error(actual, expected) <= 1e-6


def test_default_method_and_tolerances_are_torchdiffeqs() -> None:
    field, y0 = field_and_state()
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    assert rel_error(ac.odeint(field, y0, t), torchdiffeq.odeint(field, y0, t)) <= 1e-6


@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"step_size": 0.1})], ids=["dopri5", "rk4"])
@pytest.mark.parametrize(
    "gradient", [pytest.param(ac.Anode(), id="anode"), pytest.param(ac.Anode(checkpoints=1), id="anode-c1")]
)
def test_anode_through_odeint_equals_direct(method: str, options: dict | None, gradient: ac.GradientMethod) -> None:
    """A loss on every output time: ≤ 1e-12 (measured ≤ 1e-15)."""
    field, y0 = field_and_state()
    t = torch.linspace(0.0, 1.5, 5, dtype=torch.float64)

    def grads(method_: ac.GradientMethod) -> dict[str, Tensor]:
        x = y0.clone().requires_grad_(True)
        field.zero_grad()
        loss_of(ac.odeint(field, x, t, method=method, options=options, gradient=method_)).backward()
        return {"input": x.grad, **{n: p.grad for n, p in field.named_parameters()}}

    assert_rel_close(grads(gradient), grads(ac.Direct()), rtol=1e-12)


def test_adjoint_through_odeint_is_close_to_torchdiffeqs_adjoint() -> None:
    """Both solve the continuous adjoint adaptively at rtol 1e-7: they agree to 1e-5 (measured 1e-8), and both
    stay within 1e-5 of the exact gradient."""
    field, y0 = field_and_state()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def grad(solve) -> Tensor:
        x = y0.clone().requires_grad_(True)
        field.zero_grad()
        loss_of(solve(x)[-1]).backward()
        return torch.cat([x.grad.flatten(), *(p.grad.flatten() for p in field.parameters())])

    ours = grad(lambda x: ac.odeint(field, x, t, gradient=ac.Adjoint()))
    theirs = grad(lambda x: torchdiffeq.odeint_adjoint(field, x, t))
    exact = grad(lambda x: ac.odeint(field, x, t, gradient=ac.Direct()))
    assert rel_error(ours, theirs) <= 1e-5
    assert 0.0 < rel_error(ours, exact) <= 1e-5


def test_plain_function_with_adjoint_params() -> None:
    weight = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = seeded_randn(3, 2, seed=0)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    grads = []
    for method in (ac.Direct(), ac.Anode()):
        out = ac.odeint(lambda t, y: y @ weight.T, y0, t, gradient=method, adjoint_params=(weight,))
        grads.append(torch.autograd.grad(out[-1].sum(), weight)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=0.0)


def test_time_reaches_func_as_a_tensor_like_torchdiffeq() -> None:
    seen: list[object] = []

    def func(t: Tensor, y: Tensor) -> Tensor:
        seen.append(t)
        return -y

    ac.odeint(func, seeded_randn(2, seed=0), torch.tensor([0.0, 1.0], dtype=torch.float64), method="euler")
    assert all(isinstance(t, Tensor) and t.dim() == 0 and t.dtype == torch.float64 for t in seen)


def test_use_gradient_sets_the_default_of_every_solve_that_names_none() -> None:
    field, y0 = field_and_state()
    block = ac.ODEBlock(field, steps=4)
    named = ac.ODEBlock(field, steps=4, gradient=ac.Direct())
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with ac.use_gradient(ac.Adjoint()) as method:
        assert method == ac.Adjoint()
        ys = [
            block(y0.clone().requires_grad_(True)),
            ac.odesolve(field, y0.clone().requires_grad_(True), steps=4),
            ac.odeint(field, y0.clone().requires_grad_(True), t, method="euler")[-1],
            named(y0.clone().requires_grad_(True)),
        ]
    outside = ac.odesolve(field, y0.clone().requires_grad_(True), steps=4)
    assert [graph_functions(y) & {"_AdjointFunctionBackward"} for y in ys] == [{"_AdjointFunctionBackward"}] * 3 + [
        set()  # an explicit method wins
    ]
    assert "BlockEndBackward" in graph_functions(outside)  # the default (Anode) is restored on exit


def graph_functions(y: Tensor) -> set[str]:
    """Class names of every node of ``y``'s autograd graph."""
    visited, todo = set(), [y.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in visited:
            visited.add(node)
            todo.extend(fn for fn, _ in node.next_functions)
    return {type(node).__name__ for node in visited}


def test_use_gradient_on_a_model_still_overrides_its_blocks() -> None:
    model = torch.nn.Sequential(ac.ODEBlock(mlp_field(), steps=2, gradient=ac.Direct()))
    with ac.use_gradient(model, ac.Adjoint()):
        assert model[0].gradient == ac.Adjoint()
    assert model[0].gradient == ac.Direct()


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        pytest.param({"method": "rk45"}, ValueError, r"`method` must be one of .*dopri8.*; got 'rk45'", id="method"),
        pytest.param(
            {"method": "euler", "options": {"step_size": -0.1}}, ValueError, r"must be a positive number", id="step"
        ),
        pytest.param(
            {"options": {"max_num_steps": 2}, "rtol": 1e-10},
            RuntimeError,
            r"max_num_steps exceeded .* raise options\['max_num_steps'\]",
            id="max-steps",
        ),
        pytest.param(
            {"options": {"min_step": "small"}}, ValueError, r"`options\['min_step'\]` must be a number", id="min-step"
        ),
        pytest.param({"atol": -1.0}, ValueError, r"`atol` must be a number", id="atol"),
        pytest.param(
            {"gradient": ac.Reversible()}, ValueError, r"kind reversible \(reversible_heun, alf\)", id="reversible"
        ),
    ],
)
def test_bad_arguments_name_the_fix(kwargs: dict, error: type[Exception], message: str) -> None:
    field, y0 = field_and_state()
    with pytest.raises(error, match=message):
        ac.odeint(field, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), **kwargs)


@pytest.mark.parametrize(
    "method,options",
    [("rk4", {"max_num_steps": 3}), ("dopri5", {"step_size": 0.1}), ("tsit5", {"grid_constructor": None})],
)
def test_an_option_the_method_does_not_take_is_ignored_with_a_warning_naming_it(method: str, options: dict) -> None:
    field, y0 = field_and_state()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match=rf"`options` \['{next(iter(options))}'\] are not taken by method '{method}'"):
        ac.odeint(field, y0, t, method=method, options=options)


@pytest.mark.parametrize(
    "t", [torch.tensor([0.0, 1.0, 0.5]), torch.tensor([[0.0, 1.0]]), torch.tensor([0, 1])], ids=["order", "2d", "int"]
)
def test_bad_times(t: Tensor) -> None:
    field, y0 = field_and_state()
    with pytest.raises(ValueError, match=r"`t` must be"):
        ac.odeint(field, y0, t)


def test_reversible_heun_through_odeint_equals_direct() -> None:
    field, y0 = field_and_state()
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    model = torch.nn.Sequential(ac.ODEBlock(field, steps=8, solver=ac.ReversibleHeun()))
    assert_rel_close(gradients(model, y0, ac.Reversible()), gradients(model, y0, ac.Direct()), rtol=1e-10)
    out = ac.odeint(field, y0, t, method="reversible_heun", options={"step_size": 0.125}, gradient=ac.Reversible())
    assert out.shape == (3, *y0.shape)


def test_library_imports_nothing_of_the_application() -> None:
    """In a fresh interpreter, importing anode_core and using it loads no pydantic, FastAPI or Streamlit."""
    code = (
        "import sys, torch, anode_core as ac\n"
        "ac.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), gradient=ac.Anode())\n"
        "ac.ODEBlock(torch.nn.Linear(2, 2), steps=2); ac.GRADIENTS; ac.MemoryMeter\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'pydantic', 'fastapi', 'streamlit', 'anode_lab'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == ""
    assert "anode_core" in sys.modules  # the parent imports it too; the child is what is checked
