"""Exact methods return the exact gradient of the computed network (ANODE, arXiv:1902.10298, §3).

``Anode`` recomputes each block once and back-propagates through the same ops in the same order as ``Direct``,
so on CPU its gradient is bit-identical. ``Anode(checkpoints=c)`` (revolve) accumulates parameter gradients
step by step in another order, so it agrees to rounding: ``rtol = 1e-12`` in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    ADJOINT_METHODS,
    DEVICES,
    EXACT_METHODS,
    FIELD_KINDS,
    RECOMPUTING_METHODS,
    SOLVERS,
    DropoutField,
    assert_bit_identical,
    assert_rel_close,
    central_differences,
    conv_field,
    gradients,
    loss_of,
    ode_chain,
    rel_error,
    seeded_randn,
)
from torch import Tensor, nn

import anode_core as ac

REVOLVE_RTOL = 1e-12
FD_RTOL = 1e-6
FD_ATOL = 1e-7  # central-difference noise; a conv bias ahead of GroupNorm has an exactly zero gradient
FLOAT32_RTOL = 1e-5  # float32: rounding of ~1e-7 per op, accumulated over a few steps and blocks
BLOCKS = [pytest.param(n, id=f"L{n}") for n in (1, 2, 3, 4)]


@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_anode_is_bit_identical_to_direct(solver: ac.Solver, kind: str, blocks: int) -> None:
    model, x = ode_chain(kind, blocks, solver=solver, steps=3)
    expected = gradients(model, x, ac.Direct())
    assert_bit_identical(gradients(model, x, ac.Anode()), expected)


@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_anode_with_checkpoints_equals_direct(solver: ac.Solver, kind: str, blocks: int) -> None:
    """5 steps with 2 slots: the binomial schedule splits the block more than once."""
    model, x = ode_chain(kind, blocks, solver=solver, steps=5)
    expected = gradients(model, x, ac.Direct())
    assert_rel_close(gradients(model, x, ac.Anode(checkpoints=2)), expected, rtol=REVOLVE_RTOL)


@pytest.mark.parametrize("checkpoints", [0, 1, 3, 6, 50], ids=lambda c: f"c{c}")
@pytest.mark.parametrize("steps", [1, 7], ids=lambda n: f"N{n}")
def test_every_checkpoint_budget_equals_direct(steps: int, checkpoints: int) -> None:
    model, x = ode_chain("mlp", 2, solver=ac.Heun(), steps=steps)
    expected = gradients(model, x, ac.Direct())
    assert_rel_close(gradients(model, x, ac.Anode(checkpoints=checkpoints)), expected, rtol=REVOLVE_RTOL)


@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_direct_matches_central_differences(solver: ac.Solver, kind: str) -> None:
    """Direct differentiates the discrete loss: central differences (eps = 1e-6, float64) agree to 1e-6."""
    model, x = ode_chain(kind, 2, solver=solver, steps=2, activation="tanh")
    if kind == "conv":  # 2 channels, 3×3 maps keep the number of finite-difference evaluations small
        model = nn.Sequential(*(ac.ODEBlock(conv_field(2, "tanh", seed=i), steps=2, solver=solver) for i in range(2)))
        x = seeded_randn(1, 2, 3, 3, seed=7)
    grads = gradients(model, x, ac.Direct())
    x = x.clone()
    tensors = [x, *model.parameters()]
    fd = central_differences(lambda: loss_of(model(x)), tensors)
    names = ["input", *(name for name, _ in model.named_parameters())]
    assert_rel_close(grads, dict(zip(names, fd, strict=True)), rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("method", EXACT_METHODS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_gradcheck_through_odesolve(solver: ac.Solver, method: ac.GradientMethod) -> None:
    """``torch.autograd.gradcheck`` in float64 w.r.t. z0 and every parameter passed as ``params``."""
    z0 = seeded_randn(2, 3, seed=0).requires_grad_(True)
    w1 = (0.7 * seeded_randn(3, 4, seed=1)).requires_grad_(True)
    b1 = (0.3 * seeded_randn(4, seed=2)).requires_grad_(True)
    w2 = (0.7 * seeded_randn(4, 3, seed=3)).requires_grad_(True)

    def solve(z0: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
        def field(t: float, z: Tensor) -> Tensor:  # non-autonomous: the stage times matter too
            return torch.tanh(z @ w1 + b1 + t) @ w2

        return ac.odesolve(field, z0, steps=3, solver=solver, gradient=method, t0=0.2, t1=0.9, params=(w1, b1, w2))

    assert method.exact
    assert torch.autograd.gradcheck(solve, (z0, w1, b1, w2), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("method", EXACT_METHODS)
def test_gradient_only_where_required(method: ac.GradientMethod) -> None:
    """An input that does not require grad and a frozen parameter get none; the rest equal Direct's."""
    model, x = ode_chain("mlp", 2, solver=ac.Midpoint(), steps=4)
    model[0].field.net[0].weight.requires_grad_(False)

    def grads_of(m: ac.GradientMethod) -> dict[str, Tensor]:
        model.zero_grad(set_to_none=True)
        with ac.use_gradient(model, m):
            loss_of(model(x)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    expected = grads_of(ac.Direct())
    got = grads_of(method)
    assert model[0].field.net[0].weight.grad is None
    assert_rel_close(got, expected, rtol=REVOLVE_RTOL)


@pytest.mark.parametrize("method", RECOMPUTING_METHODS)
@pytest.mark.parametrize("kind", FIELD_KINDS)
def test_float32_equals_direct(kind: str, method: ac.GradientMethod) -> None:
    """In float32 the same claim, within 1e-5 relative (recomputation order may differ in the last bits)."""
    model, x = ode_chain(kind, 3, solver=ac.RK4(), steps=4, dtype=torch.float32)
    expected = gradients(model, x, ac.Direct())
    assert all(g.dtype == torch.float32 for g in expected.values())
    assert_rel_close(gradients(model, x, method), expected, rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("device", DEVICES)
def test_core_equality_on_device(device: str) -> None:
    """The core claim on CPU and its CUDA twin: bit-identical on CPU; 1e-12 on CUDA, where some kernels
    (cuDNN convolution backward) may sum in a nondeterministic order."""
    model, x = ode_chain("conv", 2, solver=ac.RK4(), steps=3)
    model, x = model.to(device), x.to(device)
    expected = gradients(model, x, ac.Direct())
    anode = gradients(model, x, ac.Anode())
    if device == "cpu":
        assert_bit_identical(anode, expected)
    else:
        assert_rel_close(anode, expected, rtol=REVOLVE_RTOL)
    assert_rel_close(gradients(model, x, ac.Anode(checkpoints=1)), expected, rtol=REVOLVE_RTOL)


# --- BatchNorm: recomputation must not update running statistics a second time ---------------------------


def batchnorm_chain() -> tuple[nn.Sequential, Tensor]:
    fields = [conv_field(4, "relu", norm="batch", seed=i) for i in range(2)]
    model = nn.Sequential(*(ac.ODEBlock(f, steps=3, solver=ac.Midpoint()) for f in fields)).train()
    return model, seeded_randn(4, 4, 5, 5, seed=11)


def train_step(model: nn.Module, x: Tensor, method: ac.GradientMethod) -> nn.Module:
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with ac.use_gradient(model, method):
        loss_of(model(x)).backward()
    optimizer.step()
    return model


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(ac.Anode(), id="anode"),
        pytest.param(ac.Anode(checkpoints=1), id="anode-c1"),
        pytest.param(ac.Adjoint(), id="adjoint"),
        pytest.param(ac.Adjoint(reconstruct=False), id="adjoint-stored"),
    ],
)
def test_batchnorm_statistics_after_one_step_equal_direct(method: ac.GradientMethod) -> None:
    model, x = batchnorm_chain()
    initial = {n: b.clone() for n, b in model.named_buffers()}
    reference = dict(train_step(model, x, ac.Direct()).named_buffers())
    got = dict(train_step(model, x, method).named_buffers())
    assert reference.keys() == got.keys()
    assert any(not torch.equal(reference[n], initial[n]) for n in initial if "running_mean" in n)
    assert reference["0.field.net.1.num_batches_tracked"].item() == 3 * 2  # N_t · s updates in forward only
    assert_bit_identical(got, reference)


@pytest.mark.parametrize("method", RECOMPUTING_METHODS)
def test_batchnorm_training_step_equals_direct(method: ac.GradientMethod) -> None:
    """With BatchNorm in training mode the recomputed block sees the same batch statistics: same update."""
    model, x = batchnorm_chain()
    reference = dict(train_step(model, x, ac.Direct()).named_parameters())
    assert_rel_close(dict(train_step(model, x, method).named_parameters()), reference, rtol=REVOLVE_RTOL)


# --- Dropout: recomputation must replay the random masks and leave the caller's stream alone -------------


def dropout_step(model: nn.Module, x: Tensor, method: ac.GradientMethod, seed: int) -> tuple[dict[str, Tensor], Tensor]:
    """Gradients after one forward/backward from ``seed``, and the RNG state the caller sees afterwards."""
    device = x.device
    torch.manual_seed(seed)
    grads = gradients(model, x, method)
    state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
    return grads, state


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "method", [pytest.param(ac.Anode(), id="anode"), pytest.param(ac.Anode(checkpoints=2), id="anode-c2")]
)
@pytest.mark.parametrize("solver", [pytest.param(ac.Euler(), id="euler"), pytest.param(ac.RK4(), id="rk4")])
def test_dropout_is_replayed(solver: ac.Solver, method: ac.GradientMethod, device: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(ac.ODEBlock(DropoutField(), steps=5, solver=solver) for _ in range(2)))
    model = model.double().train().to(device)
    x = seeded_randn(6, 3, seed=5).to(device)
    expected, expected_rng = dropout_step(model, x, ac.Direct(), seed=42)
    got, rng = dropout_step(model, x, method, seed=42)
    assert_rel_close(got, expected, rtol=REVOLVE_RTOL)
    if method.checkpoints is None and device == "cpu":
        assert_bit_identical(got, expected)
    assert torch.equal(rng, expected_rng), "backward changed the caller's RNG stream"
    other, _ = dropout_step(model, x, ac.Direct(), seed=43)  # the masks matter: another seed, another gradient
    assert rel_error(other["input"], expected["input"]) > 1e-3


@pytest.mark.parametrize("method", ADJOINT_METHODS)
def test_adjoint_leaves_the_callers_rng_stream_alone(method: ac.GradientMethod) -> None:
    """The adjoint cannot replay masks (its reverse pass evaluates other states) but must not consume the stream."""
    torch.manual_seed(0)
    model = nn.Sequential(ac.ODEBlock(DropoutField(), steps=4, solver=ac.Midpoint())).double().train()
    x = seeded_randn(6, 3, seed=5)
    _, expected_rng = dropout_step(model, x, ac.Direct(), seed=42)
    _, rng = dropout_step(model, x, method, seed=42)
    assert torch.equal(rng, expected_rng), "backward changed the caller's RNG stream"


def test_anode_recomputes_a_block_whose_kept_graph_was_dropped() -> None:
    """Only the latest block keeps its graph; an earlier one, whose graph the next block dropped, recomputes. With
    the same block applied twice (weight-tied), each parameter gets two contributions that autograd sums in
    another order than Direct's, so equality is to rounding: ≤ 1e-12 relative."""
    torch.manual_seed(0)
    block = ac.ODEBlock(_tanh_mlp(), steps=3)
    x = torch.randn(4, 3, dtype=torch.float64)

    def grads(method: ac.GradientMethod) -> list[torch.Tensor]:
        block.zero_grad(set_to_none=True)
        with ac.use_gradient(block, method):
            block(block(x)).square().sum().backward()
        return [p.grad.clone() for p in block.parameters()]

    for exact, anode in zip(grads(ac.Direct()), grads(ac.Anode()), strict=True):
        torch.testing.assert_close(anode, exact, rtol=1e-12, atol=0.0)


def _tanh_mlp() -> torch.nn.Module:
    from anode_lab.experiments.fields import MLPField

    return MLPField(3, 8, "tanh").double()
