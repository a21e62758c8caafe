"""Gradients reach every tensor the field touches, as backprop does (issue 21, item 1).

A field that closes over a tensor, holds one that is not a registered parameter, or reads a buffer gets from every
exact method the gradient ``Direct`` gives, on fixed and adaptive solvers: the recomputing methods rebuild what the
forward's own graph saved (saved-tensor hooks), so they need no list of parameters. Float64, ``rtol = 1e-12`` (on
CPU the recomputing methods are in fact bit-identical: the same ops, summed by autograd in the same order).
Methods that integrate ``aᵀ∂f/∂θ`` for listed tensors only (the continuous adjoint, ``Reversible``) raise, naming
``adjoint_params``, rather than leave a ``.grad`` silently empty.
"""

from __future__ import annotations

import pytest
import torch
from helpers import seeded_randn
from torch import Tensor, nn

import anode_core as ac

RTOL = 1e-12
EXACT = [
    pytest.param(ac.Anode(), id="anode"),
    pytest.param(ac.Anode(checkpoints="auto"), id="anode-auto"),
    pytest.param(ac.Anode(checkpoints=1), id="anode-c1"),
    pytest.param(ac.Anode(checkpoints=0), id="anode-c0"),
]
SOLVES = [
    pytest.param({"solver": ac.RK4(), "steps": 9}, id="rk4"),
    pytest.param({"solver": ac.Midpoint(), "steps": 5}, id="midpoint"),
    pytest.param({"solver": ac.Dopri5(rtol=1e-6, atol=1e-8)}, id="dopri5"),
    pytest.param({"solver": ac.Bosh3(rtol=1e-5, atol=1e-7)}, id="bosh3"),
]


class Unregistered(nn.Module):
    """A module whose weight is a plain tensor attribute (not an ``nn.Parameter``) and whose shift is a buffer."""

    def __init__(self, weight: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.register_buffer("shift", shift)

    def forward(self, t: float, z: Tensor) -> Tensor:
        return torch.tanh(z @ self.weight + self.shift)


def tensors() -> tuple[Tensor, Tensor, Tensor]:
    weight = (0.6 * seeded_randn(3, 3, seed=1)).requires_grad_(True)
    shift = (0.1 * seeded_randn(3, seed=2)).requires_grad_(True)
    z0 = seeded_randn(4, 3, seed=3).requires_grad_(True)
    return weight, shift, z0


def closure_grads(method: ac.GradientMethod, solve: dict[str, object]) -> list[Tensor]:
    weight, shift, z0 = tensors()
    scale = 2.0 * shift  # a non-leaf computed outside the field: its gradient flows back through its own history
    out = ac.odesolve(lambda t, z: torch.tanh(z @ weight) * scale, z0, gradient=method, **solve)  # type: ignore[arg-type]
    return list(torch.autograd.grad(out.square().sum(), (weight, shift, z0)))


def module_grads(method: ac.GradientMethod, solve: dict[str, object]) -> list[Tensor]:
    weight, shift, z0 = tensors()
    field = Unregistered(weight, shift.detach().clone().requires_grad_(True))
    out = ac.odesolve(field, z0, gradient=method, **solve)  # type: ignore[arg-type]
    return list(torch.autograd.grad(out.square().sum(), (weight, field.shift, z0)))


def assert_close(got: list[Tensor], expected: list[Tensor]) -> None:
    assert all(g.abs().sum() > 0 for g in expected), "a zero reference gradient proves nothing"
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("solve", SOLVES)
@pytest.mark.parametrize("method", EXACT)
def test_closed_over_tensors_get_directs_gradient(method: ac.GradientMethod, solve: dict[str, object]) -> None:
    assert_close(closure_grads(method, solve), closure_grads(ac.Direct(), solve))


@pytest.mark.parametrize("solve", SOLVES)
@pytest.mark.parametrize("method", EXACT)
def test_unregistered_tensors_and_buffers_get_directs_gradient(
    method: ac.GradientMethod, solve: dict[str, object]
) -> None:
    assert_close(module_grads(method, solve), module_grads(ac.Direct(), solve))


@pytest.mark.parametrize("method", EXACT)
def test_recomputation_is_bit_identical_to_direct_on_cpu(method: ac.GradientMethod) -> None:
    solve = {"solver": ac.RK4(), "steps": 16}
    for got, expected in zip(closure_grads(method, solve), closure_grads(ac.Direct(), solve), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("solve", SOLVES)
@pytest.mark.parametrize("method", EXACT)
def test_double_backward_equals_directs(method: ac.GradientMethod, solve: dict[str, object]) -> None:
    """A gradient penalty: d/dW of ‖dL/dz0‖², through a closure, as Direct computes it."""

    def penalty_grad(m: ac.GradientMethod) -> Tensor:
        weight, _, z0 = tensors()
        out = ac.odesolve(lambda t, z: torch.tanh(z @ weight), z0, gradient=m, **solve)  # type: ignore[arg-type]
        (g,) = torch.autograd.grad(out.square().sum(), z0, create_graph=True)
        (gw,) = torch.autograd.grad(g.square().sum(), weight)
        return gw

    expected = penalty_grad(ac.Direct())
    assert expected.abs().sum() > 0
    torch.testing.assert_close(penalty_grad(method), expected, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("solve", SOLVES[:1] + SOLVES[2:3])
@pytest.mark.parametrize("method", EXACT)
def test_gradcheck_through_a_closure(method: ac.GradientMethod, solve: dict[str, object]) -> None:
    z0 = seeded_randn(2, 2, seed=4).requires_grad_(True)

    def run(weight: Tensor, z: Tensor) -> Tensor:
        return ac.odesolve(lambda t, y: torch.sin(y @ weight), z, gradient=method, **solve)  # type: ignore[arg-type]

    weight = (0.5 * seeded_randn(2, 2, seed=5)).requires_grad_(True)
    if "steps" in solve:  # fixed steps: second derivatives too
        assert torch.autograd.gradgradcheck(run, (weight, z0), atol=1e-6, rtol=1e-5)
    # adaptive: the accepted steps are held fixed only near the point; a central difference of 1e-6 keeps them
    assert torch.autograd.gradcheck(run, (weight, z0), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_a_field_that_saves_other_tensors_when_called_again_is_named() -> None:
    """A field whose ops depend on a call count recomputes other ops: the error says so instead of a wrong gradient."""
    weight, _, z0 = tensors()
    calls = [0]

    def field(t: float, z: Tensor) -> Tensor:
        calls[0] += 1
        return torch.tanh(z @ weight) if calls[0] <= 4 else z @ weight

    out = ac.odesolve(field, z0, steps=4, solver=ac.Euler(), gradient=ac.Anode(checkpoints="auto"))
    with pytest.raises(RuntimeError, match=r"recomputing steps 0\.\.2 saved 4 tensors .* the forward pass saved 6"):
        out.sum().backward()


@pytest.mark.parametrize(
    "method,solve",
    [
        pytest.param(ac.Adjoint(), {"solver": ac.RK4(), "steps": 4}, id="adjoint-rk4"),
        pytest.param(ac.Adjoint(reconstruct=False), {"solver": ac.RK4(), "steps": 4}, id="adjoint-stored"),
        pytest.param(ac.Adjoint(), {"solver": ac.Dopri5(rtol=1e-5, atol=1e-7)}, id="adjoint-dopri5"),
        pytest.param(ac.Reversible(), {"solver": ac.ReversibleHeun(), "steps": 4}, id="reversible"),
    ],
)
def test_listed_tensor_methods_name_adjoint_params(method: ac.GradientMethod, solve: dict[str, object]) -> None:
    weight, _, z0 = tensors()
    out = ac.odesolve(lambda t, z: torch.tanh(z @ weight), z0, gradient=method, **solve)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"not in `adjoint_params` \(a tensor of shape \(3, 3\)\).*adjoint_params="):
        out.sum().backward()
    listed = ac.odesolve(lambda t, z: torch.tanh(z @ weight), z0, gradient=method, params=(weight,), **solve)  # type: ignore[arg-type]
    (g,) = torch.autograd.grad(listed.sum(), weight)
    assert g.abs().sum() > 0


def test_the_adjoint_of_a_field_of_time_alone() -> None:
    """dz/dt = cos(t) holds nothing to differentiate but z0: dL/dz0 = 1 exactly (it raised before)."""
    z0 = seeded_randn(3, seed=6).requires_grad_(True)
    out = ac.odesolve(lambda t, z: torch.full_like(z, torch.cos(torch.tensor(t)).item()), z0,
                      solver=ac.Dopri5(rtol=1e-6, atol=1e-8), gradient=ac.Adjoint())
    (g,) = torch.autograd.grad(out.sum(), z0)
    torch.testing.assert_close(g, torch.ones_like(z0), rtol=0.0, atol=1e-12)
