"""Instruments: gradient comparison, evaluation counts, reverse-reconstruction error, one measured step."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import SOLVERS, Laplacian, gradients, loss_of, mlp_field, ode_chain, seeded_randn
from torch import Tensor, nn

import anode_core as ac

# --- compare_gradients on hand-made tensors ---------------------------------------------------------------

REFERENCE = {"w": torch.tensor([3.0, 0.0, -4.0]), "b": torch.tensor([1.0])}


@pytest.mark.parametrize(
    "candidate,rel_error,cosine,sign",
    [
        pytest.param(REFERENCE, 0.0, 1.0, 1.0, id="identical"),
        pytest.param({"w": 2 * REFERENCE["w"], "b": 2 * REFERENCE["b"]}, 1.0, 1.0, 1.0, id="twice"),
        pytest.param({"w": -REFERENCE["w"], "b": -REFERENCE["b"]}, 2.0, -1.0, 0.25, id="negated"),
        # [3, 0, 4, -1] against [3, 0, -4, 1]: diff [0, 0, 8, -2], ‖ref‖² = 26, ref·cand = 9 − 16 − 1
        pytest.param(
            {"w": torch.tensor([3.0, 0.0, 4.0]), "b": torch.tensor([-1.0])},
            math.sqrt(68 / 26),
            -8 / 26,
            0.5,
            id="two-flipped",
        ),
    ],
)
def test_compare_gradients_over_all_parameters(
    candidate: dict[str, Tensor], rel_error: float, cosine: float, sign: float
) -> None:
    result = ac.compare_gradients(REFERENCE, candidate)
    assert result.rel_error == pytest.approx(rel_error, rel=1e-12, abs=1e-15)
    assert result.cosine == pytest.approx(cosine, rel=1e-12, abs=1e-15)
    assert result.sign_agreement == pytest.approx(sign, rel=0.0, abs=1e-15)


def test_compare_gradients_per_parameter() -> None:
    candidate = {"w": torch.tensor([3.0, 0.0, 4.0]), "b": torch.tensor([-1.0])}
    parts = {p.name: p for p in ac.compare_gradients(REFERENCE, candidate).per_parameter}
    assert set(parts) == {"w", "b"}
    assert (parts["w"].numel, parts["b"].numel) == (3, 1)
    assert parts["w"].rel_error == pytest.approx(8 / 5, rel=1e-12, abs=0.0)
    assert parts["w"].cosine == pytest.approx(-7 / 25, rel=1e-12, abs=0.0)
    assert parts["w"].sign_agreement == pytest.approx(2 / 3, rel=1e-12, abs=0.0)
    assert parts["b"].rel_error == pytest.approx(2.0, rel=1e-12, abs=0.0)
    assert parts["b"].cosine == pytest.approx(-1.0, rel=1e-12, abs=0.0)
    assert parts["b"].sign_agreement == pytest.approx(0.0, rel=0.0, abs=0.0)


def test_compare_gradients_with_a_zero_reference() -> None:
    zero = {"w": torch.zeros(2)}
    assert ac.compare_gradients(zero, zero).rel_error == 0.0
    assert math.isnan(ac.compare_gradients(zero, zero).cosine)
    assert math.isinf(ac.compare_gradients(zero, {"w": torch.ones(2)}).rel_error)


def test_compare_gradients_rejects_other_parameters() -> None:
    message = r"`candidate` must hold the same parameters as `reference`; differ in \['c'\]"
    with pytest.raises(ValueError, match=message):
        ac.compare_gradients(REFERENCE, {**REFERENCE, "c": torch.ones(1)})


def test_compare_gradients_of_a_non_finite_candidate_is_nan() -> None:
    result = ac.compare_gradients(REFERENCE, {"w": torch.tensor([math.nan, 0.0, 1.0]), "b": torch.ones(1)})
    assert math.isnan(result.rel_error)


# --- EvaluationCounter ------------------------------------------------------------------------------------

BLOCKS, STEPS = 3, 5


def counted(solver: ac.Solver, method: ac.GradientMethod) -> ac.Measurement:
    model, x = ode_chain("mlp", BLOCKS, solver=solver, steps=STEPS)
    return ac.measure_gradient(model, lambda m: loss_of(m(x)), method)


@pytest.mark.parametrize(
    "method,backward_per_forward",
    [
        pytest.param(ac.Direct(), 0, id="direct"),
        pytest.param(ac.Anode(), (BLOCKS - 1) / BLOCKS, id="anode"),  # the last block's graph is kept
        pytest.param(ac.Adjoint(), 1, id="adjoint"),
        pytest.param(ac.Adjoint(reconstruct=False), 1, id="adjoint-stored"),
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_field_evaluations(solver: ac.Solver, method: ac.GradientMethod, backward_per_forward: float) -> None:
    """Forward: L·N_t·s for every method. Backward: none for Direct, one more solve for Adjoint, and for Anode a
    recomputation of every block but the last, whose graph is still alive when backward starts."""
    m = counted(solver, method)
    assert m.nfe_forward == BLOCKS * STEPS * solver.stages
    assert m.nfe_backward == backward_per_forward * m.nfe_forward


@pytest.mark.parametrize(
    "checkpoints,steps_recomputed",
    [
        pytest.param(0, STEPS * (STEPS + 1) // 2, id="c0-quadratic"),  # every step replayed from the block input
        pytest.param(STEPS - 1, 2 * STEPS - 1, id="enough-slots"),  # one sweep without graph, one with
        pytest.param(50, 2 * STEPS - 1, id="more-than-enough"),
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_revolve_recomputation_count(solver: ac.Solver, checkpoints: int, steps_recomputed: int) -> None:
    m = counted(solver, ac.Anode(checkpoints=checkpoints))
    assert m.nfe_forward == BLOCKS * STEPS * solver.stages
    assert m.nfe_backward == BLOCKS * steps_recomputed * solver.stages


def test_evaluation_counter_counts_only_inside_its_block() -> None:
    model, x = ode_chain("mlp", 2, solver=ac.RK4(), steps=3)
    with ac.EvaluationCounter(model) as nfe:
        model(x)
    model(x)  # hooks are gone
    assert nfe.calls == 2 * 3 * 4


# --- reconstruction error ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_reconstruction_of_a_smooth_field_with_fine_steps_is_exact(seed: int) -> None:
    """tanh MLP, RK4, 32 steps, float64: measured 5e-14 … 2e-13."""
    block = ac.ODEBlock(mlp_field(3, 16, "tanh", seed=seed), steps=32, solver=ac.RK4())
    z0 = seeded_randn(8, 3, seed=seed)
    assert ac.reconstruction_error(block.problem(z0), z0) < 1e-10


@pytest.mark.parametrize("seed", [0, 1])
def test_reconstruction_of_diffusion_in_float32_blows_up(seed: int) -> None:
    """Heat equation D = 5 on 8×8, RK4, 80 steps: reversing amplifies float32 rounding by ~e^40 (measured > 2e7)."""
    block = ac.ODEBlock(Laplacian(5.0), steps=80, solver=ac.RK4())
    z0 = seeded_randn(2, 1, 8, 8, seed=seed, dtype=torch.float32)
    assert ac.reconstruction_error(block.problem(z0), z0) > 100.0


class BatchNormField(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, t: float, z: Tensor) -> Tensor:
        return torch.tanh(self.norm(z))


def test_reconstruction_error_leaves_model_and_rng_untouched() -> None:
    model = nn.Sequential(ac.ODEBlock(BatchNormField(3).double(), steps=2)).train()
    z0 = seeded_randn(8, 3, seed=0)
    before_rng = torch.get_rng_state()
    before = {n: b.clone() for n, b in model.named_buffers()}
    errors = ac.block_reconstruction_errors(model, z0)
    assert len(errors) == 1
    assert torch.equal(torch.get_rng_state(), before_rng)
    for name, buf in model.named_buffers():
        assert torch.equal(buf, before[name]), name


def test_block_reconstruction_errors_sees_each_block_input() -> None:
    """One value per block, each the error on the input that block received in the forward pass."""
    model, x = ode_chain("mlp", 3, solver=ac.Midpoint(), steps=4)
    errors = ac.block_reconstruction_errors(model, x)
    expected, z = [], x
    for block in model:
        expected.append(ac.reconstruction_error(block.problem(z), z))
        with torch.no_grad():
            z = block(z)
    assert errors == pytest.approx(expected, rel=0.0, abs=0.0)
    assert all(0.0 < e < 1e-2 for e in errors)


# --- measure_gradient -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", [pytest.param(ac.Direct(), id="direct"), pytest.param(ac.Anode(), id="anode")]
)
def test_measure_gradient_returns_the_gradient_and_clears_the_model(method: ac.GradientMethod) -> None:
    model, x = ode_chain("mlp", 2, solver=ac.Heun(), steps=3)
    m = ac.measure_gradient(model, lambda net: loss_of(net(x)), method)
    expected = gradients(model, x, ac.Direct())
    assert m.grads.keys() == {k for k in expected if k != "input"}
    for name, grad in m.grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-12, atol=0.0)
    assert m.loss == pytest.approx(loss_of(model(x)).item(), rel=1e-15, abs=0.0)
    assert all(p.grad is None for p in model.parameters())
    assert m.method == repr(method)
    assert m.seconds >= m.forward_seconds >= 0.0
    assert m.cuda_peak_bytes is None  # CPU
    assert all(b.gradient is None for b in model)  # the model's own (none: the default) is restored
