"""The continuous adjoint's documented failures, reproduced (ANODE, arXiv:1902.10298, §2).

Flaw (b), the discretised continuous adjoint is not the gradient of the discrete network. On a ReLU MLP the
field is piecewise affine, and inside one linear region Euler's and midpoint's adjoint steps equal the transposed
step Jacobians exactly. The whole error comes from steps in which a trajectory crosses a kink:

* Euler takes the Jacobian at z_{n+1} instead of z_n, an O(1) difference on every crossing step, so the error is
  O(dt) for every crossing: slope −1 in N_t.
* Midpoint's two reverse stages sit on the same sides of the kink as the forward ones except when the kink lies
  within O(dt²) of the step's midpoint, an event of probability O(dt); otherwise the mismatch is O(dt²). Summed
  over a batch of 64 trajectories that gives slope −2, but a single trajectory has too few crossings for a clean
  rate, hence the batch.

The field is an MLP 2 → 16 → 2 with its default initialisation scaled by 2, so that at N_t = 2 a step moves
points across many kinks (error ≈ 30 %); slopes are fitted over N_t = 4 … 64, where the rate is established
(seeds 0–4 give −0.97 … −1.05 for Euler and −1.82 … −2.23 for midpoint, with or without reconstruction;
at N_t = 2 the Euler error is 18–45 %, 19–70 % on stored states). Three seeds are tested.

Flaw (a), the reverse reconstruction: a heat-equation field forgets high frequencies, and in float32 the reverse
solve blows the rounding noise up by e^{8·D·T}, so the parameter gradient is garbage while the same adjoint on
stored states (``reconstruct=False``) is accurate.
"""

from __future__ import annotations

import pytest
import torch
from helpers import ADJOINT_METHODS, Laplacian, loglog_slope, mlp_field, seeded_randn
from torch import Tensor, nn

import anode_core as ac

SEEDS = [pytest.param(seed, id=f"seed{seed}") for seed in (0, 1, 2)]
RELU_SCALE = 2.0
RELU_STEPS = (4, 8, 16, 32, 64)
SLOPE_BAND = 0.4


def relu_problem(seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    field = mlp_field(2, 16, "relu", seed=seed, scale=RELU_SCALE)
    return field, seeded_randn(64, 2, seed=seed + 100), seeded_randn(64, 2, seed=seed + 200)


def parameter_gradients(
    field: nn.Module, z0: Tensor, target: Tensor, solver: ac.Solver, steps: int, method: ac.GradientMethod
) -> dict[str, Tensor]:
    field.zero_grad(set_to_none=True)
    z1 = ac.odesolve(field, z0, steps=steps, solver=solver, gradient=method)
    (z1 - target).square().sum().backward()
    grads = {name: p.grad.clone() for name, p in field.named_parameters()}
    field.zero_grad(set_to_none=True)
    return grads


def adjoint_error(seed: int, solver: ac.Solver, steps: int, method: ac.GradientMethod = ac.Adjoint()) -> float:
    """Relative error of the adjoint's parameter gradient against Direct's, on the ReLU problem."""
    field, z0, target = relu_problem(seed)
    exact = parameter_gradients(field, z0, target, solver, steps, ac.Direct())
    return ac.compare_gradients(exact, parameter_gradients(field, z0, target, solver, steps, method)).rel_error


@pytest.mark.parametrize("method", ADJOINT_METHODS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("solver", [pytest.param(ac.Euler(), id="euler"), pytest.param(ac.Midpoint(), id="midpoint")])
def test_adjoint_error_falls_at_the_solver_order_on_relu(
    solver: ac.Solver, seed: int, method: ac.GradientMethod
) -> None:
    errors = [adjoint_error(seed, solver, n, method) for n in RELU_STEPS]
    assert all(e > 0 for e in errors)
    slope = loglog_slope(RELU_STEPS, errors)
    assert slope == pytest.approx(-solver.order, abs=SLOPE_BAND), f"errors {errors}"


@pytest.mark.parametrize("seed", SEEDS)
def test_euler_adjoint_is_far_off_at_two_steps(seed: int) -> None:
    """Two Euler steps of a stiff ReLU field: the adjoint gradient is more than 10 % off (measured 18–45 %)."""
    assert adjoint_error(seed, ac.Euler(), 2) > 0.10


@pytest.mark.parametrize("seed", SEEDS)
def test_adjoint_on_stored_states_is_still_inconsistent(seed: int) -> None:
    """Exact states do not help: flaw (b) alone is above 5 % at N_t = 2 (measured 19–70 %)."""
    assert adjoint_error(seed, ac.Euler(), 2, ac.Adjoint(reconstruct=False)) > 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_adjoint_converges_at_high_order_on_a_smooth_field(seed: int) -> None:
    """tanh field, RK4, N_t = 2 … 16: the adjoint error falls at slope 4 ± 0.5.

    Measured −3.91 … −4.02 over seeds 0–4.
    """
    field = mlp_field(2, 16, "tanh", seed=seed)
    z0, target = seeded_randn(64, 2, seed=seed + 100), seeded_randn(64, 2, seed=seed + 200)
    steps = (2, 4, 8, 16)
    errors = []
    for n in steps:
        exact = parameter_gradients(field, z0, target, ac.RK4(), n, ac.Direct())
        adjoint = parameter_gradients(field, z0, target, ac.RK4(), n, ac.Adjoint())
        errors.append(ac.compare_gradients(exact, adjoint).rel_error)
    slope = loglog_slope(steps, errors)
    assert -4.5 <= slope <= -3.5, f"errors {errors}"


def test_gradcheck_rejects_the_adjoint() -> None:
    """The adjoint does not claim exactness, and gradcheck (which compares with the discrete network) agrees."""
    z0 = seeded_randn(2, 3, seed=0).requires_grad_(True)
    w = seeded_randn(3, 3, seed=1).requires_grad_(True)

    def solve(z0: Tensor, w: Tensor) -> Tensor:
        def field(t: float, z: Tensor) -> Tensor:
            return torch.tanh(z @ w)

        return ac.odesolve(field, z0, steps=2, solver=ac.Euler(), gradient=ac.Adjoint(), params=(w,))

    assert not ac.Adjoint.exact
    assert not torch.autograd.gradcheck(solve, (z0, w), eps=1e-6, atol=1e-8, rtol=1e-6, raise_exception=False)


def heat_gradients(dtype: torch.dtype, method: ac.GradientMethod, seed: int) -> Tensor:
    """Gradient w.r.t. the stencil of D Δz: D = 5, T = 1, RK4 with 80 steps (stable forward, dt·8D = 0.5)."""
    field = Laplacian(5.0).to(dtype)
    z0 = seeded_randn(2, 1, 8, 8, seed=seed, dtype=dtype)
    z1 = ac.odesolve(field, z0, steps=80, solver=ac.RK4(), gradient=method)
    z1.square().sum().backward()
    return field.conv.weight.grad.double()


@pytest.mark.parametrize("seed", SEEDS)
def test_reconstruction_blow_up_ruins_the_adjoint_in_float32(seed: int) -> None:
    """Flaw (a) isolated: same field and scheme, only the reverse reconstruction or the precision differs.

    Measured (seeds 0–4): float32 with reconstruction 340–960 (relative), float32 on stored states ≤ 1.2e-6,
    float64 with reconstruction ≤ 3.6e-6.
    """

    def error(dtype: torch.dtype, method: ac.GradientMethod) -> float:
        exact = heat_gradients(dtype, ac.Direct(), seed)
        return ((heat_gradients(dtype, method, seed) - exact).norm() / exact.norm()).item()

    assert error(torch.float32, ac.Adjoint()) > 10.0
    assert error(torch.float32, ac.Adjoint(reconstruct=False)) < 1e-5
    assert error(torch.float64, ac.Adjoint()) < 1e-4
