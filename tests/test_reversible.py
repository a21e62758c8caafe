"""ReversibleHeun and the Reversible gradient: exact, with memory flat in N_t (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_rel_close, gradients, loglog_slope, mlp_field, ode_chain, rel_error, seeded_randn
from torch import Tensor, nn

import anode_core as ac

BLOCKS = 2


@pytest.mark.parametrize("steps", [8, 32, 256])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_reversible_equals_direct(kind: str, steps: int) -> None:
    """Rebuilding the states backwards gives Direct's gradient through the same scheme to ≤ 1e-10 (measured
    ≤ 1e-14); atol 1e-13 for the conv biases a GroupNorm makes irrelevant (their gradient is rounding)."""
    model, x = ode_chain(kind, BLOCKS, solver=ac.ReversibleHeun(), steps=steps, activation="tanh")
    assert_rel_close(gradients(model, x, ac.Reversible()), gradients(model, x, ac.Direct()), rtol=1e-10, atol=1e-13)


def test_reversible_passes_gradcheck() -> None:
    field = mlp_field(hidden=4)
    params = tuple(field.parameters())

    def solve(z0: Tensor, *ps: Tensor) -> Tensor:
        return ac.odesolve(field, z0, steps=5, solver=ac.ReversibleHeun(), gradient=ac.Reversible(), params=ps)

    z0 = seeded_randn(2, 3, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (z0, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


class Rotation(nn.Module):
    """``dz/dt = A z`` with ``A`` a rotation generator: ``z(1) = exp(A) z0``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[0.0, -2.0], [2.0, -0.5]], dtype=torch.float64))

    def forward(self, t: float, z: Tensor) -> Tensor:
        return z @ self.a.T


def test_reversible_heun_converges_at_order_two() -> None:
    """Log-log slope of the error against N_t within 0.15 of −2."""
    field, z0 = Rotation(), seeded_randn(3, 2, seed=0)
    exact = z0 @ torch.linalg.matrix_exp(field.a).T
    steps = [16, 32, 64, 128]
    errors = [
        (ac.odesolve(field, z0, steps=n, solver=ac.ReversibleHeun(), gradient=ac.Direct()) - exact).norm().item()
        for n in steps
    ]
    assert abs(loglog_slope(steps, errors) + 2.0) <= 0.15


def held_after_forward(steps: int, method: ac.GradientMethod) -> int:
    model, x = ode_chain("conv", BLOCKS, solver=ac.ReversibleHeun(), steps=steps, activation="tanh")
    x = x.requires_grad_(True)
    with ac.use_gradient(method), ac.MemoryMeter() as meter:
        out = model(x * 1.0)
        held = meter.current_bytes
        out.sum().backward()
    return held


def test_reversible_holds_two_states_per_block_flat_in_steps() -> None:
    """After forward each block holds (y_N, ŷ_N): 2·L·S bytes whatever N_t; Direct grows with N_t."""
    state_bytes = 2 * 4 * 5 * 5 * 8
    assert held_after_forward(8, ac.Reversible()) == held_after_forward(128, ac.Reversible())
    assert held_after_forward(128, ac.Reversible()) == 2 * BLOCKS * state_bytes
    assert held_after_forward(128, ac.Direct()) > 8 * held_after_forward(8, ac.Direct()) / 2


def test_one_field_evaluation_per_step() -> None:
    model, x = ode_chain("mlp", 1, solver=ac.ReversibleHeun(), steps=16)
    m = ac.measure_gradient(model, lambda net: net(x).sum(), ac.Reversible())
    assert (m.nfe_forward, m.nfe_backward) == (17, 17)


@pytest.mark.parametrize("solver", [ac.RK4(), ac.Dopri5()], ids=["rk4", "dopri5"])
def test_reversible_needs_a_reversible_solver(solver: ac.Solver) -> None:
    steps = None if isinstance(solver, ac.AdaptiveSolver) else 4
    message = r"gradient=Reversible\(\) needs an algebraically reversible solver; .*use solver=ReversibleHeun\(\)"
    with pytest.raises(ValueError, match=message):
        ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), steps=steps, solver=solver, gradient=ac.Reversible())
    with pytest.raises(ValueError, match=message):
        ac.ODEBlock(mlp_field(), steps=steps, solver=solver, gradient="reversible")


@pytest.mark.parametrize("method", [ac.Adjoint(), ac.Anode(checkpoints=2)], ids=["adjoint", "anode-c2"])
def test_reversible_heun_refuses_methods_that_step_alone(method: ac.GradientMethod) -> None:
    with pytest.raises(ValueError, match=r"ReversibleHeun\(\) carries a second state .*use gradient=Reversible\(\)"):
        ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), steps=4, solver="reversible_heun", gradient=method)


def test_states_are_rebuilt_to_rounding() -> None:
    """The reverse recursion returns to the input: ‖ŷ_0 − z0‖ at rounding level after 256 steps."""
    field, z0 = mlp_field(), seeded_randn(4, 3, seed=2)
    solver = ac.ReversibleHeun()
    steps, time = 256, (lambda n: n / 256)
    f = lambda t, y: (field(t, y[0]),)  # noqa: E731
    with torch.no_grad():
        y, y_hat, f_hat = solver.solve(f, time, z0, steps)
        for n in range(steps - 1, -1, -1):
            y_hat_prev = solver.reverse_hat(time(n), time(n + 1), y, y_hat, f_hat)
            f_prev = field(time(n), y_hat_prev)
            y = solver.reverse_y(time(n), time(n + 1), y, f_prev, f_hat)
            y_hat, f_hat = y_hat_prev, f_prev
    assert math.isfinite(y.norm().item())
    assert rel_error(y, z0) <= 1e-12 and rel_error(y_hat, z0) <= 1e-12
