"""Reversible solvers (ReversibleHeun, MALI's DampedLeapfrog) and the Reversible gradient: exact, with memory flat
in N_t (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    assert_rel_close,
    gradients,
    loglog_slope,
    loss_of,
    mlp_field,
    ode_chain,
    rel_error,
    seeded_randn,
)
from torch import Tensor, nn

import anode_core as ac

BLOCKS = 2
REVERSIBLE = [
    pytest.param(ac.ReversibleHeun(), id="reversible_heun"),
    pytest.param(ac.DampedLeapfrog(), id="alf"),
]


@pytest.mark.parametrize("steps", [8, 32, 256])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("solver", REVERSIBLE)
def test_reversible_equals_direct(solver: ac.ReversibleSolver, kind: str, steps: int) -> None:
    """Rebuilding the states backwards gives Direct's gradient through the same scheme to ≤ 1e-10 (measured
    ≤ 3e-15); atol 1e-13 for the conv biases a GroupNorm makes irrelevant (their gradient is rounding)."""
    model, x = ode_chain(kind, BLOCKS, solver=solver, steps=steps, activation="tanh")
    assert_rel_close(gradients(model, x, ac.Reversible()), gradients(model, x, ac.Direct()), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("solver", [*REVERSIBLE, pytest.param(ac.DampedLeapfrog(damping=0.8), id="alf-0.8")])
def test_anode_equals_direct(solver: ac.ReversibleSolver) -> None:
    """Anode recomputes the block from its input through the same carry: Direct's gradient to 1e-12."""
    model, x = ode_chain("mlp", BLOCKS, solver=solver, steps=16)
    assert_rel_close(gradients(model, x, ac.Anode()), gradients(model, x, ac.Direct()), rtol=1e-12)


@pytest.mark.parametrize("steps", [8, 32])
def test_damped_leapfrog_equals_direct_over_few_steps(steps: int) -> None:
    """Damping 0.9 amplifies the reconstruction's rounding by 1.25 a step backwards: still ≤ 1e-10 (measured
    ≤ 3e-16) over 32 steps (see test_damping_amplifies_rounding_backwards for many)."""
    model, x = ode_chain("mlp", BLOCKS, solver=ac.DampedLeapfrog(damping=0.9), steps=steps)
    assert_rel_close(gradients(model, x, ac.Reversible()), gradients(model, x, ac.Direct()), rtol=1e-10)


@pytest.mark.parametrize("solver", [*REVERSIBLE, pytest.param(ac.DampedLeapfrog(damping=0.8), id="alf-0.8")])
def test_reversible_passes_gradcheck(solver: ac.ReversibleSolver) -> None:
    field = mlp_field(hidden=4)
    params = tuple(field.parameters())

    def solve(z0: Tensor, *ps: Tensor) -> Tensor:
        return ac.odesolve(field, z0, steps=5, solver=solver, gradient=ac.Reversible(), params=ps)

    z0 = seeded_randn(2, 3, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (z0, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


class Rotation(nn.Module):
    """``dz/dt = A z`` with ``A`` a rotation generator: ``z(1) = exp(A) z0``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[0.0, -2.0], [2.0, -0.5]], dtype=torch.float64))

    def forward(self, t: float, z: Tensor) -> Tensor:
        return z @ self.a.T


@pytest.mark.parametrize(
    "solver,order",
    [*(pytest.param(*p.values, 2, id=p.id) for p in REVERSIBLE), pytest.param(ac.DampedLeapfrog(0.9), 1, id="alf-0.9")],
)
def test_convergence_order(solver: ac.ReversibleSolver, order: int) -> None:
    """Log-log slope of the error against N_t within 0.15 of −order (measured −2.00, −2.00 and −1.02): ALF is
    second order, and damping below 1 makes it first order (module docstring of anode_core.reversible)."""
    field, z0 = Rotation(), seeded_randn(3, 2, seed=0)
    exact = z0 @ torch.linalg.matrix_exp(field.a).T
    steps = [16, 32, 64, 128]
    errors = [
        (ac.odesolve(field, z0, steps=n, solver=solver, gradient=ac.Direct()) - exact).norm().item() for n in steps
    ]
    assert abs(loglog_slope(steps, errors) + order) <= 0.15


def held_after_forward(solver: ac.ReversibleSolver, steps: int, method: ac.GradientMethod) -> int:
    model, x = ode_chain("conv", BLOCKS, solver=solver, steps=steps, activation="tanh")
    x = x.requires_grad_(True)
    with ac.use_gradient(method), ac.MemoryMeter() as meter:
        out = model(x * 1.0)
        held = meter.current_bytes
        out.sum().backward()
    return held


@pytest.mark.parametrize("solver", REVERSIBLE)
def test_reversible_holds_two_states_per_block_flat_in_steps(solver: ac.ReversibleSolver) -> None:
    """After forward each block holds two states ((y_N, ŷ_N) or (z_N, v_N)): 2·L·S bytes whatever N_t; Direct
    grows with N_t."""
    state_bytes = 2 * 4 * 5 * 5 * 8
    assert held_after_forward(solver, 8, ac.Reversible()) == held_after_forward(solver, 128, ac.Reversible())
    assert held_after_forward(solver, 128, ac.Reversible()) == 2 * BLOCKS * state_bytes
    assert held_after_forward(solver, 128, ac.Direct()) > 8 * held_after_forward(solver, 8, ac.Direct()) / 2


@pytest.mark.parametrize("solver", REVERSIBLE)
def test_one_field_evaluation_per_step(solver: ac.ReversibleSolver) -> None:
    """16 steps: one evaluation each plus the start (f̂_0 or v_0) forward; backward, one evaluation with its
    vector–Jacobian product each plus one (ŷ_N's for reversible Heun, v_0's for ALF)."""
    model, x = ode_chain("mlp", 1, solver=solver, steps=16)
    m = ac.measure_gradient(model, lambda net: net(x).sum(), ac.Reversible())
    assert (m.nfe_forward, m.nfe_backward) == (17, 17)


@pytest.mark.parametrize("solver", [ac.RK4(), ac.Dopri5()], ids=["rk4", "dopri5"])
def test_reversible_needs_a_reversible_solver(solver: ac.Solver) -> None:
    steps = None if isinstance(solver, ac.AdaptiveSolver) else 4
    message = (
        r"gradient=Reversible\(\) needs an algebraically reversible solver; .*"
        r"use gradient=Direct\(\) or gradient=Anode\(\) .* or a solver of kind reversible \(reversible_heun, alf\)$"
    )
    with pytest.raises(ValueError, match=message):
        ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), steps=steps, solver=solver, gradient=ac.Reversible())
    with pytest.raises(ValueError, match=message):
        ac.ODEBlock(mlp_field(), steps=steps, solver=solver, gradient="reversible")


@pytest.mark.parametrize("method", [ac.Adjoint(), ac.Anode(checkpoints=2)], ids=["adjoint", "anode-c2"])
@pytest.mark.parametrize(
    "solver,shown", [("reversible_heun", r"ReversibleHeun\(\)"), ("alf", r"DampedLeapfrog\(damping=1\.0\)")]
)
def test_reversible_solvers_refuse_methods_that_step_alone(solver: str, shown: str, method: ac.GradientMethod) -> None:
    message = rf"got solver {shown}, which carries a second state .*use .*gradient=Reversible\(\) with this solver"
    with pytest.raises(ValueError, match=message):
        ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), steps=4, solver=solver, gradient=method)


def rebuild_error(solver: ac.ReversibleSolver, steps: int) -> float:
    """Largest relative error over the carry at t = 0 rebuilt by ``reverse`` from the carry ``solve`` reached at
    t = 1, against the carry ``start`` gave."""
    field, z0 = mlp_field(), seeded_randn(4, 3, seed=2)
    f = lambda t, y: (field(t, y[0]),)  # noqa: E731
    time = lambda n: n / steps  # noqa: E731
    with torch.no_grad():
        carry = solver.solve(f, time, z0, steps)
        for n in range(steps - 1, -1, -1):
            carry = solver.reverse(f, time(n), time(n + 1), carry)
        start = solver.start(f, 0.0, z0)
    assert all(math.isfinite(c.norm().item()) for c in carry)
    return max(rel_error(c, s) for c, s in zip(carry, start, strict=True))


@pytest.mark.parametrize("solver", REVERSIBLE)
def test_states_are_rebuilt_to_rounding(solver: ac.ReversibleSolver) -> None:
    """The reverse recursion returns to the start: every state of the carry within 1e-12 after 256 steps
    (measured ≤ 2e-15)."""
    assert rebuild_error(solver, 256) <= 1e-12


def test_damping_amplifies_rounding_backwards() -> None:
    """The damped inverse divides by 1 − 2η: with η = 0.75 each reverse step doubles the rounding error, so
    ln(error) grows by ln 2 a step (fitted slope within 25 %; measured 0.72), while η = 1 stays at rounding."""
    steps = [16, 24, 32, 40]
    n = torch.tensor(steps, dtype=torch.float64)
    ln = torch.tensor([math.log(rebuild_error(ac.DampedLeapfrog(damping=0.75), k)) for k in steps])
    slope = (((n - n.mean()) * (ln - ln.mean())).sum() / (n - n.mean()).square().sum()).item()
    assert abs(slope - math.log(2.0)) <= 0.25 * math.log(2.0)
    assert max(rebuild_error(ac.DampedLeapfrog(), k) for k in steps) <= 1e-14


@pytest.mark.parametrize("damping", [0.0, 0.5, 1.5, -0.2, math.nan, True, "1"])
def test_damping_outside_its_range_is_refused(damping: object) -> None:
    with pytest.raises(ValueError, match=r"`damping` must .*; got .*: use 1\.0 \(undamped ALF, order 2\)"):
        ac.DampedLeapfrog(damping=damping)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`damping` must"):
        ac.solver_named("alf", damping=damping)


def test_alf_is_named_and_takes_its_damping() -> None:
    assert ac.solver_named("alf") == ac.DampedLeapfrog(damping=1.0)
    assert ac.solver_named("alf", damping=0.9).damping == 0.9
    with pytest.raises(ValueError, match=r"solver 'alf' takes the options damping; got \['rtol'\]"):
        ac.solver_named("alf", rtol=1e-3)


def test_alf_through_odeint_equals_direct() -> None:
    """Each piece between output times restarts v = f(t, z): Reversible equals Direct through odeint to 1e-10."""
    field, y0 = mlp_field(scale=2.0), seeded_randn(4, 3, seed=1)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)

    def grads(method: ac.GradientMethod) -> dict[str, Tensor]:
        y = y0.clone().requires_grad_(True)
        out = ac.odeint(field, y, t, method="alf", options={"step_size": 0.125}, gradient=method)
        loss_of(out).backward()
        found = {name: p.grad.detach().clone() for name, p in field.named_parameters()}
        field.zero_grad(set_to_none=True)
        return {**found, "input": y.grad.detach().clone()}

    assert_rel_close(grads(ac.Reversible()), grads(ac.Direct()), rtol=1e-10)
