"""Adaptive solvers (Dopri5, Bosh3): torchdiffeq's numbers and steps, and every gradient method on them (float64).

"Exact" on an adaptive solve means the gradient of the computed solve with the accepted step sizes held fixed;
torchdiffeq's own backprop also differentiates its first step size, so it differs from ours by a term that
shrinks with the tolerance (measured here and in ``bench/gradients.py``).
"""

from __future__ import annotations

import pytest
import torch
import torchdiffeq
from helpers import assert_rel_close, conv_field, gradients, loss_of, mlp_field, ode_chain, rel_error, seeded_randn
from torch import Tensor, nn

import anode_core as ac

ADAPTIVE = [pytest.param(ac.Dopri5, "dopri5", id="dopri5"), pytest.param(ac.Bosh3, "bosh3", id="bosh3")]
TOLERANCES = [pytest.param(10.0**-k, id=f"rtol1e-{k}") for k in (3, 6, 9)]
SPAN = torch.tensor([0.0, 1.0], dtype=torch.float64)


class Counted(nn.Module):
    """Counts the evaluations of ``field``: torchdiffeq takes 2 + (s − 1)·trials of them."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: float | Tensor, z: Tensor) -> Tensor:
        self.calls += 1
        return self.field(t, z)


def stiff_chain(solver: ac.Solver, blocks: int = 2) -> tuple[nn.Sequential, Tensor]:
    fields = [mlp_field(seed=i, scale=2.0) for i in range(blocks)]
    return nn.Sequential(*(ac.ODEBlock(f, solver=solver) for f in fields)), seeded_randn(4, 3, seed=7)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("rtol", TOLERANCES)
@pytest.mark.parametrize("cls,name", ADAPTIVE)
def test_same_output_and_same_steps_as_torchdiffeq(
    cls: type[ac.AdaptiveSolver], name: str, rtol: float, kind: str
) -> None:
    """Output within 1e-6 relative (measured: bit-identical), and exactly torchdiffeq's number of trial steps: a trial's
    arithmetic is torchdiffeq's, so the error estimate (which amplifies rounding) picks the same steps."""
    if kind == "mlp":
        field, z0 = Counted(mlp_field(scale=2.0)), seeded_randn(4, 3, seed=1)
    else:
        field, z0 = Counted(conv_field()), seeded_randn(2, 4, 5, 5, seed=1)
    expected = torchdiffeq.odeint(field, z0, SPAN, rtol=rtol, atol=rtol * 1e-2, method=name)[-1]
    torchdiffeq_calls, field.calls = field.calls, 0
    solver = cls(rtol=rtol, atol=rtol * 1e-2)
    out, grid = solver.integrate(lambda t, y: (field(t, y[0]),), (z0,), 0.0, 1.0)
    assert rel_error(out[0], expected) <= 1e-6
    assert field.calls == grid.evaluations == torchdiffeq_calls == 2 + (solver.stages - 1) * grid.trials
    assert len(grid) >= 2


@pytest.mark.parametrize("cls,name", ADAPTIVE)
@pytest.mark.parametrize(
    "method",
    [
        pytest.param(ac.Anode(), id="anode"),
        pytest.param(ac.Anode(checkpoints=0), id="anode-c0"),
        pytest.param(ac.Anode(checkpoints=2), id="anode-c2"),
    ],
)
def test_anode_equals_direct(cls: type[ac.AdaptiveSolver], name: str, method: ac.GradientMethod) -> None:
    """Replaying the accepted grid in backward gives Direct's gradient to ≤ 1e-12 (measured ≤ 4e-16)."""
    model, x = stiff_chain(cls(rtol=1e-6, atol=1e-8))
    expected = gradients(model, x, ac.Direct())
    actual = gradients(model, x, method)
    for key in expected:
        assert rel_error(actual[key], expected[key]) <= 1e-12, key


def test_odesolve_takes_no_steps_and_matches_the_block() -> None:
    field, z0 = mlp_field(scale=2.0), seeded_randn(4, 3, seed=1)
    solver = ac.Dopri5(rtol=1e-6, atol=1e-8)
    block = ac.ODEBlock(field, solver=solver, gradient=ac.Direct())
    # every method returns the controller's value itself, not its replay (equal up to rounding)
    torch.testing.assert_close(ac.odesolve(field, z0, solver=solver), block(z0), rtol=0.0, atol=0.0)


def test_adjoint_error_shrinks_as_rtol_tightens() -> None:
    """The continuous adjoint solved adaptively against the exact gradient: ≥ 1000× smaller from rtol 1e-3 to 1e-8
    (measured 1.4e-2 → 2.0e-7), and never worse than 5e-2."""
    model, x = stiff_chain(ac.Dopri5(), blocks=1)
    errors = []
    for k in range(3, 9):
        solver = ac.Dopri5(rtol=10.0**-k, atol=10.0 ** -(k + 2))
        model[0].solver = solver
        exact = gradients(model, x, ac.Direct())
        adjoint = gradients(model, x, ac.Adjoint())
        errors.append(max(rel_error(adjoint[key], exact[key]) for key in exact))
    assert max(errors) <= 5e-2
    assert errors[-1] <= errors[0] / 1000
    assert errors[-1] < errors[2] < errors[0]


def test_adjoint_backward_tolerances_are_its_own() -> None:
    """The backward solve runs at the adjoint's tolerances, by default the forward ones."""
    model, x = stiff_chain(ac.Dopri5(rtol=1e-4, atol=1e-6), blocks=1)
    runs = {}
    for key, method in (
        ("default", ac.Adjoint()),
        ("same", ac.Adjoint(rtol=1e-4, atol=1e-6)),
        ("tight", ac.Adjoint(rtol=1e-9, atol=1e-11)),
    ):
        runs[key] = ac.measure_gradient(model, lambda m: loss_of(m(x)), method)
    assert runs["default"].nfe_backward == runs["same"].nfe_backward < runs["tight"].nfe_backward / 3
    for name, grad in runs["same"].grads.items():
        torch.testing.assert_close(runs["default"].grads[name], grad, rtol=0.0, atol=0.0)


def test_distance_to_torchdiffeq_backprop_shrinks_with_rtol() -> None:
    """torchdiffeq differentiates its first step size too; we hold every step size fixed. The two gradients differ
    by ≤ 1e-3 at rtol 1e-3 and ≤ 1e-7 at rtol 1e-8 (measured 3.2e-4 and 1.4e-9)."""
    field, y0 = mlp_field(scale=2.0), seeded_randn(4, 3, seed=1)

    def grad(solve) -> Tensor:
        x = y0.clone().requires_grad_(True)
        field.zero_grad()
        loss_of(solve(x)).backward()
        return torch.cat([x.grad.flatten(), *(p.grad.flatten() for p in field.parameters())])

    for rtol, bound in ((1e-3, 1e-3), (1e-8, 1e-7)):
        ours = grad(lambda x, r=rtol: ac.odeint(field, x, SPAN, rtol=r, atol=r * 1e-2, gradient=ac.Direct())[-1])
        theirs = grad(lambda x, r=rtol: torchdiffeq.odeint(field, x, SPAN, rtol=r, atol=r * 1e-2)[-1])
        assert 0.0 < rel_error(ours, theirs) <= bound


def test_anode_holds_a_fifth_of_direct_after_forward() -> None:
    """A dopri5 solve with ≥ 16 accepted steps: Anode keeps the block input, Direct every accepted stage."""
    field, z0 = mlp_field(hidden=32, scale=3.0), seeded_randn(64, 3, seed=1)
    solver = ac.Dopri5(rtol=1e-8, atol=1e-10)
    _, grid = solver.integrate(lambda t, y: (field(t, y[0]),), (z0,), 0.0, 1.0)
    assert len(grid) >= 16
    held = {}
    for method in (ac.Direct(), ac.Anode()):
        x = z0.clone().requires_grad_(True)
        with ac.MemoryMeter() as meter:
            out = ac.odesolve(field, x * 1.0, solver=solver, gradient=method)  # a non-leaf input, as inside a net
            held[method.name] = meter.current_bytes
            out.square().sum().backward()
    assert held["anode"] <= held["direct"] / 5
    assert held["anode"] == z0.numel() * z0.element_size()  # the block input alone


def test_max_steps_is_named_when_exceeded() -> None:
    with pytest.raises(RuntimeError, match=r"dopri5 reached max_steps=3 trial steps .*raise `max_steps`"):
        ac.odesolve(mlp_field(scale=3.0), seeded_randn(4, 3, seed=1), solver=ac.Dopri5(rtol=1e-10, max_steps=3))


def test_the_adjoints_backward_solve_says_its_times_run_backwards_when_it_passes_the_limit() -> None:
    z0 = seeded_randn(4, 3, seed=1).requires_grad_()
    out = ac.odesolve(mlp_field(scale=3.0), z0, solver=ac.Dopri5(rtol=1e-3, max_steps=12),
                      gradient=ac.Adjoint(rtol=1e-10, atol=1e-12))
    with pytest.raises(RuntimeError, match=r"^the adjoint's backward solve \(time reversed, s = −t\): dopri5 reached "
                       r"max_steps=12"):
        out.sum().backward()


@pytest.mark.parametrize(
    "knobs,message",
    [
        pytest.param({"rtol": -1e-3}, r"`rtol` must be a number in \[0, 1\)", id="rtol"),
        pytest.param({"atol": "1e-3"}, r"`atol` must be a number in \[0, 1\)", id="atol"),
        pytest.param({"rtol": 0.0, "atol": 0.0}, r"cannot both be 0", id="zero"),
        pytest.param({"max_steps": 0}, r"`max_steps` must be an integer ≥ 1", id="max-steps"),
    ],
)
def test_bad_tolerances(knobs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ac.Dopri5(**knobs)


def test_steps_are_refused_with_an_adaptive_solver() -> None:
    with pytest.raises(ValueError, match=r"`steps` must be None with the adaptive solver Dopri5\(.*max_steps="):
        ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), steps=4, solver=ac.Dopri5())
    with pytest.raises(ValueError, match=r"`steps` must be None with the adaptive solver"):
        ac.ODEBlock(mlp_field(), steps=4, solver="dopri5")


def test_stored_state_adjoint_needs_a_fixed_grid() -> None:
    with pytest.raises(ValueError, match=r"Adjoint\(reconstruct=False\) .* use .*Adjoint\(\)"):
        ac.odesolve(mlp_field(), seeded_randn(2, 3, seed=0), solver=ac.Dopri5(), gradient=ac.Adjoint(reconstruct=False))


def test_solver_named_builds_adaptive_solvers_with_knobs() -> None:
    assert ac.solver_named("dopri5", rtol=1e-5) == ac.Dopri5(rtol=1e-5)
    with pytest.raises(ValueError, match=r"solver 'bosh3' takes the options rtol, atol, max_steps; got \['tol'\]"):
        ac.solver_named("bosh3", tol=1e-3)


def test_blocks_in_a_chain_take_the_same_steps_under_every_method() -> None:
    """Regression: Direct once returned its replay (equal to the controller's value only up to rounding), and the
    next block's controller turned that rounding into other steps: Anode and Direct then differed by 1e-3 on a
    conv chain at rtol 1e-7. Every method returns the controller's value; equal to ≤ 1e-12 (measured ≤ 1e-15)."""
    model, x = ode_chain("conv", 4, solver=ac.Dopri5(rtol=1e-7, atol=1e-9), steps=None)
    assert_rel_close(gradients(model, x, ac.Anode()), gradients(model, x, ac.Direct()), rtol=1e-12, atol=1e-15)
