"""The solvers beyond the explicit tableaux: Heun's third-order scheme, the Adams methods (a carried history) and
the implicit Runge–Kutta schemes (Broyden iterations), and the one pairing rule the library and the specs read.

Each is checked the same ways: its order of convergence against an analytic solution, Anode equal to Direct bit
for bit (the recomputation repeats the forward's arithmetic, iterations included), and ``gradcheck`` in float64.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import loglog_slope, mlp_field, seeded_randn
from torch import Tensor

import anode_core as ac
from anode_core import pairing
from anode_lab.specs import common

ORDER_BAND = 0.3
STEPS = (4, 8, 16, 32)
TIGHT = 1e-13
"""A Broyden tolerance far below the discretisation error, so the measured slope is the scheme's."""

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


def forced(t: float, z: Tensor) -> Tensor:
    """dz/dt = A z + sin(t): a damped rotation driven in time, so every stage's node matters."""
    return z @ A.T + math.sin(t)


def forced_solution(z0: Tensor, t: float) -> Tensor:
    """z(t) = e^{tA} (z0 − b) + a sin t + b cos t, with (A² + I) b = −1 and a = A b (the periodic solution)."""
    b = -torch.linalg.solve(A @ A + torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    a = A @ b
    return (z0 - b) @ torch.linalg.matrix_exp(t * A).T + a * math.sin(t) + b * math.cos(t)


EXPLICIT = [
    pytest.param(ac.Heun3(), 3, id="heun3"),
    pytest.param(ac.AdamsBashforth(max_order=5), 4, id="explicit_adams-max_order5"),
    pytest.param(ac.AdamsBashforthMoulton(), 4, id="implicit_adams"),
]
IMPLICIT = [pytest.param(cls(tol=TIGHT), cls.order, id=name) for name, cls in ac.solvers.IMPLICIT_SOLVERS.items()]
NEW_SOLVERS = [
    pytest.param(ac.Heun3(), id="heun3"),
    pytest.param(ac.AdamsBashforth(), id="explicit_adams"),
    pytest.param(ac.AdamsBashforthMoulton(), id="implicit_adams"),
    *(pytest.param(cls(), id=name) for name, cls in ac.solvers.IMPLICIT_SOLVERS.items()),
]


@pytest.mark.parametrize("solver,order", [*EXPLICIT, *IMPLICIT])
def test_order_of_convergence(solver: ac.Solver, order: int) -> None:
    """Global error at t = 1 against the analytic solution for N_t = 4 … 32: log-log slope within ±0.3 of the
    order (Adams: the order of its start-up and its lowest predictor, 4; explicit Adams capped at order 5 since
    torchdiffeq's default order-11 predictor is unstable on this problem, as torchdiffeq's own is)."""
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    exact = forced_solution(z0, 1.0)
    errors = []
    for steps in STEPS:
        with torch.no_grad():
            errors.append((ac.odesolve(forced, z0, steps=steps, solver=solver, gradient=ac.Direct()) - exact).norm())
    slope = loglog_slope([1.0 / n for n in STEPS], [e.item() for e in errors])
    assert slope == pytest.approx(order, abs=ORDER_BAND), f"errors {errors}"


def test_the_analytic_solution_is_right() -> None:
    """The reference itself, against RK4 on 256 steps (error ~5e-11): agreement to 1e-9."""
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    with torch.no_grad():
        rk4 = ac.odesolve(forced, z0, steps=256, solver=ac.RK4(), gradient=ac.Direct())
    torch.testing.assert_close(forced_solution(z0, 1.0), rk4, rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("solver", NEW_SOLVERS)
def test_anode_equals_direct_bit_for_bit(solver: ac.Solver) -> None:
    """Anode recomputes the block from its input: the same steps, history and iterations, so the same bits."""
    field = mlp_field(seed=4)
    z0 = seeded_randn(3, 3, seed=4).requires_grad_(True)
    grads = {}
    for method in (ac.Direct(), ac.Anode()):
        out = ac.odesolve(field, z0, steps=6, solver=solver, gradient=method)
        grads[method.name] = (out, *torch.autograd.grad(out.square().sum(), (z0, *field.parameters())))
    for direct, anode in zip(grads["direct"], grads["anode"], strict=True):
        torch.testing.assert_close(anode, direct, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("method", [ac.Direct(), ac.Anode()], ids=["direct", "anode"])
@pytest.mark.parametrize("solver", NEW_SOLVERS)
def test_gradcheck(solver: ac.Solver, method: ac.GradientMethod) -> None:
    """float64 ``gradcheck`` of z(1) with respect to z0 and a weight the field closes over (named in
    ``params``). Implicit schemes iterate to 1e-13 here, so finite differences see the converged map."""
    if isinstance(solver, ac.ImplicitSolver):
        solver = type(solver)(tol=TIGHT)
    weight = (0.5 * seeded_randn(2, 2, seed=5)).requires_grad_(True)
    z0 = seeded_randn(2, 2, seed=6).requires_grad_(True)

    def solve(z: Tensor, w: Tensor) -> Tensor:
        return ac.odesolve(lambda t, y: torch.tanh(y @ w) + t, z, steps=3, solver=solver, gradient=method,
                           params=(w,))

    assert torch.autograd.gradcheck(solve, (z0, weight), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_adams_starts_with_two_steps_of_the_three_eighths_rule() -> None:
    """While its history holds fewer than 3 slopes (its first 2 steps) an Adams step is Kutta's 3/8 rule, bit for
    bit; from the 3rd step on it is the predictor, and differs."""
    field = mlp_field(seed=7)
    z0 = seeded_randn(2, 3, seed=7)
    with torch.no_grad():
        for steps in (1, 2):
            adams = ac.odesolve(field, z0, steps=steps, solver=ac.AdamsBashforth(), gradient=ac.Direct(), t1=steps)
            rk38 = ac.odesolve(field, z0, steps=steps, solver=ac.solvers.RK38(), gradient=ac.Direct(), t1=steps)
            torch.testing.assert_close(adams, rk38, rtol=0.0, atol=0.0)
        adams = ac.odesolve(field, z0, steps=3, solver=ac.AdamsBashforth(), gradient=ac.Direct(), t1=3.0)
        rk38 = ac.odesolve(field, z0, steps=3, solver=ac.solvers.RK38(), gradient=ac.Direct(), t1=3.0)
    assert (adams - rk38).abs().max() > 1e-6


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adams_is_torchdiffeqs(method: str) -> None:
    """Against torchdiffeq 0.2.5 on the same 8-step grid and corrector tolerances: equal to 1e-14."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    solver = ac.solver_named(method, rtol=1e-7, atol=1e-9)
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    ours = ac.odesolve(forced, z0, steps=8, solver=solver, gradient=ac.Direct())
    theirs = torchdiffeq.odeint(lambda t, z: forced(t.item(), z), z0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                                method=method, options={"step_size": 0.125}, rtol=1e-7, atol=1e-9)[-1]
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-14)


def test_an_unconverged_implicit_step_warns() -> None:
    """One Broyden iteration cannot solve a stiff step: the solve says so (and still returns its iterate)."""
    stiff = lambda t, z: -50.0 * z**3  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"did not converge to tol=1e-08 .* raise `max_iters`"):
        ac.odesolve(stiff, torch.ones(1, 2, dtype=torch.float64), steps=1, solver=ac.ImplicitEuler(max_iters=1))


def test_a_converged_implicit_step_is_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ac.odesolve(forced, torch.ones(1, 2, dtype=torch.float64), steps=4, solver=ac.GaussLegendre6())


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: ac.ImplicitEuler(max_iters=-1), r"`max_iters` must be an integer ≥ 0 .*; got -1"),
        (lambda: ac.Trapezoid(tol=0.0), r"`tol` must be None .* or in \(0, 1\); got 0.0"),
        (lambda: ac.AdamsBashforth(max_order=13), r"`max_order` must be an integer in \[1, 12\]; got 13: use 12"),
        (lambda: ac.AdamsBashforthMoulton(max_iters=0), r"`max_iters` must be an integer ≥ 1 .*; got 0"),
        (lambda: ac.AdamsBashforthMoulton(rtol=2.0), r"`rtol` must be a number in \[0, 1\)"),
    ],
    ids=["implicit-iters", "implicit-tol", "adams-order", "adams-iters", "adams-rtol"],
)
def test_knobs_are_validated(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_a_solver_that_carries_state_refuses_an_isolated_step() -> None:
    z = (torch.ones(2, dtype=torch.float64),)
    with pytest.raises(TypeError, match=r"carries state from step to step and cannot take an isolated step"):
        ac.AdamsBashforth().step(lambda t, y: y, 0.0, z, 0.1)


GRADIENT_SPECS = [
    ({"method": "direct"}, ac.Direct()),
    ({"method": "anode"}, ac.Anode()),
    ({"method": "anode", "checkpoints": 1}, ac.Anode(checkpoints=1)),
    ({"method": "adjoint"}, ac.Adjoint()),
    ({"method": "adjoint", "reconstruct": False}, ac.Adjoint(reconstruct=False)),
    ({"method": "reversible"}, ac.Reversible()),
]


@pytest.mark.parametrize("name", list(ac.ALL_SOLVERS))
def test_the_library_and_the_specs_read_one_pairing_rule(name: str) -> None:
    """For every solver and every way of differentiating: the library refuses exactly what the specs refuse,
    which is exactly what :data:`anode_core.pairing.PAIRS` leaves out, and a pairing it accepts runs."""
    field, z0 = mlp_field(seed=8), seeded_randn(2, 3, seed=8)
    solver = ac.solver_named(name)
    steps = None if isinstance(solver, ac.AdaptiveSolver) else 2
    assert common.SOLVERS[name].kind == solver.kind
    for spec, method in GRADIENT_SPECS:
        use = pairing.use_of(method.name, getattr(method, "checkpoints", None), getattr(method, "reconstruct", True))
        refused_by_specs = common.pairing_error(name, common.GradientSpec(**spec)) is not None
        assert refused_by_specs == (use not in pairing.PAIRS[solver.kind])
        try:
            ac.odesolve(field, z0, steps=steps, solver=solver, gradient=method).sum().backward()
        except ValueError as error:
            assert refused_by_specs, f"{name} with {method!r}: {error}"
        else:
            assert not refused_by_specs, f"{name} with {method!r} ran but the specs refuse it"


def test_the_specs_hold_the_librarys_rule_not_a_copy() -> None:
    """The specs call the library's rule itself (torch-free: ``test_specs_train`` imports the specs in a fresh
    interpreter and finds no torch)."""
    assert common.refusal is pairing.refusal and common.use_of is pairing.use_of


@pytest.mark.parametrize("method", ["RK45", "DOP853", "Radau", "LSODA"])
def test_scipy_solves_to_its_tolerance(method: str) -> None:
    """One ``solve_ivp`` call a step, to rtol 1e-10: the analytic solution to 1e-8."""
    solver = ac.solvers.ScipySolver(solver=method, rtol=1e-10, atol=1e-12)
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    z1 = ac.odesolve(forced, z0, steps=2, solver=solver)
    torch.testing.assert_close(z1, forced_solution(z0, 1.0), rtol=0.0, atol=1e-8)


def test_scipy_is_differentiated_by_the_adjoint_alone() -> None:
    """No graph crosses NumPy: the default gradient of a scipy solve is the continuous adjoint (solved backwards
    by solve_ivp), which on a linear field at rtol 1e-10 matches RK4's Direct gradient on 512 steps to 1e-6; Anode
    is refused, naming the adjoint."""
    solver = ac.solvers.ScipySolver(solver="DOP853", rtol=1e-10, atol=1e-12)
    weight = (0.5 * seeded_randn(2, 2, seed=9)).requires_grad_(True)
    z0 = seeded_randn(3, 2, seed=9).requires_grad_(True)
    grads = []
    for kind, steps in ((solver, 1), (ac.RK4(), 512)):
        gradient = None if kind is solver else ac.Direct()
        out = ac.odesolve(lambda t, y: y @ weight, z0, steps=steps, solver=kind, gradient=gradient, params=(weight,))
        grads.append(torch.autograd.grad(out.square().sum(), (z0, weight)))
    for scipy_grad, direct in zip(*grads, strict=True):
        torch.testing.assert_close(scipy_grad, direct, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"gradient=Anode\(\) .* use gradient=Adjoint\(\) or "):
        ac.odesolve(lambda t, y: y @ weight, z0, steps=1, solver=solver, gradient=ac.Anode(), params=(weight,))


def test_scipy_names_its_methods() -> None:
    with pytest.raises(ValueError, match=r"`solver` must be one of RK45, RK23, DOP853, Radau, BDF, LSODA; got 'rk4'"):
        ac.solvers.ScipySolver(solver="rk4")
