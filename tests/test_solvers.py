"""Fixed-step solvers: tableaux, order of convergence on analytic solutions, and one forward map for all methods."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ALL_METHODS, SOLVERS, loglog_slope, mlp_field, seeded_randn
from torch import Tensor

import anode_core as ac

STEPS = (8, 16, 32, 64)
ORDER_BAND = 0.3

# dz/dt = A z with a damped rotation: z(1) = expm(A) z0.
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


def linear_field(t: float, z: Tensor) -> Tensor:
    return z @ A.T


def forced_field(t: float, z: Tensor) -> Tensor:
    """dz/dt = −z + sin t: non-autonomous, so the tableau's nodes c_i matter."""
    return -z + math.sin(t)


def forced_solution(z0: Tensor, t: float) -> Tensor:
    return (z0 + 0.5) * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t))


PROBLEMS = [
    pytest.param(
        linear_field,
        lambda z0, t: z0 @ torch.linalg.matrix_exp(t * A).T,
        id="linear-expm",
    ),
    pytest.param(forced_field, forced_solution, id="forced-scalar"),
]


@pytest.mark.parametrize("solver", SOLVERS)
def test_tableau_is_consistent_and_explicit(solver: ac.Solver) -> None:
    tab = solver.tableau
    assert solver.stages == len(tab.b)
    assert math.isclose(sum(tab.b), 1.0, rel_tol=0.0, abs_tol=1e-15)
    for c_i, row in zip(tab.c, tab.a, strict=True):
        assert math.isclose(sum(row), c_i, rel_tol=0.0, abs_tol=1e-15)  # row-sum condition


@pytest.mark.parametrize("problem,solution", PROBLEMS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_order_of_convergence(solver: ac.Solver, problem, solution) -> None:
    """Global error at t1 = 1 against the analytic solution; fitted log-log slope in dt within ±0.3 of the order."""
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    exact = solution(z0, 1.0)
    errors = []
    for steps in STEPS:
        with torch.no_grad():
            z1 = ac.odesolve(problem, z0, steps=steps, solver=solver, gradient=ac.Direct())
        errors.append((z1 - exact).norm().item())
    slope = loglog_slope([1.0 / n for n in STEPS], errors)
    assert slope == pytest.approx(solver.order, abs=ORDER_BAND), f"errors {errors}"


@pytest.mark.parametrize("solver", SOLVERS)
def test_solution_on_shifted_interval(solver: ac.Solver) -> None:
    """t0 ≠ 0 is honoured: integrating the forced ODE on [1, 2] from its exact value at 1 gives its value at 2."""
    z0 = seeded_randn(3, 1, seed=0)
    start = forced_solution(z0, 1.0)
    z2 = ac.odesolve(forced_field, start, steps=64, solver=solver, gradient=ac.Direct(), t0=1.0, t1=2.0)
    exact = forced_solution(z0, 2.0)
    tol = {1: 5e-3, 2: 5e-5, 4: 1e-9}[solver.order]
    torch.testing.assert_close(z2, exact, rtol=0.0, atol=tol)


def test_one_euler_step_is_a_resnet_block() -> None:
    field = mlp_field(seed=1)
    z0 = seeded_randn(5, 3, seed=1)
    z1 = ac.odesolve(field, z0, steps=1, solver=ac.Euler(), gradient=ac.Direct())
    torch.testing.assert_close(z1, z0 + field(0.0, z0), rtol=0.0, atol=0.0)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_method_computes_the_same_forward_value(solver: ac.Solver, method: ac.GradientMethod) -> None:
    """The gradient method changes backward only: the output is bit-identical to Direct's."""
    field = mlp_field(seed=2)
    z0 = seeded_randn(4, 3, seed=2).requires_grad_(True)
    reference = ac.odesolve(field, z0, steps=5, solver=solver, gradient=ac.Direct())
    out = ac.odesolve(field, z0, steps=5, solver=solver, gradient=method)
    torch.testing.assert_close(out, reference, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("name,cls", [(name, cls) for name, cls in ac.SOLVERS.items()], ids=list(ac.SOLVERS))
def test_solvers_are_found_by_name(name: str, cls: type[ac.Solver]) -> None:
    field = mlp_field(seed=3)
    z0 = seeded_randn(2, 3, seed=3)
    by_name = ac.odesolve(field, z0, steps=3, solver=name, gradient="direct")
    by_object = ac.odesolve(field, z0, steps=3, solver=cls(), gradient=ac.Direct())
    torch.testing.assert_close(by_name, by_object, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_node_is_its_row_sum(solver: ac.Solver) -> None:
    """c_i = Σ_j a_ij for the shipped tableaux, to 1e-12 (the tolerance ``Tableau`` checks with)."""
    tab = solver.tableau
    assert all(abs(sum(row) - ci) <= 1e-12 for ci, row in zip(tab.c, tab.a, strict=True))


def test_a_row_sum_within_rounding_is_accepted() -> None:
    """Coefficients written as fractions round: 0.1 + 0.2 != 0.3 in binary, and the tableau is still valid."""
    tab = ac.Tableau(c=(0.0, 0.3), a=((), (0.1 + 0.2,)), b=(0.0, 1.0))
    assert tab.c[1] != sum(tab.a[1])
