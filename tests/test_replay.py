"""Recomputation replays the forward pass's autocast settings, and no block's graph outlives its output.

Autocast: ``torch.utils.checkpoint`` re-enters the forward's autocast state around its recomputation; without
it ANODE recomputes a bfloat16 forward in float32 and its gradient differs from Direct's by ~5e-3 (measured:
3e-3 for the MLP, 1.0 on a GroupNorm conv parameter). The loss is built inside the autocast region and
``backward()`` is called outside it, as torch's AMP recipe does.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import torch
from helpers import CUDA_MISSING, FIELD_KINDS, assert_bit_identical, assert_rel_close, loss_of, ode_chain
from torch import Tensor, nn

import anode_core as ac
from anode_core.held import listening

FLOAT32_RTOL = 1e-5  # revolve sums per-step parameter gradients in float32 in another order than Direct
AUTOCAST = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
    pytest.param(
        "cuda",
        torch.float16,
        id="cuda-float16",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_MISSING)],
    ),
]
CUDA_RTOL = 1e-6  # GEMMs in float16 are deterministic; allowance for float32 reductions in another order


def autocast_gradients(
    model: nn.Module, x: Tensor, method: ac.GradientMethod, device: str, dtype: torch.dtype, cache: bool = True
) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with ac.use_gradient(model, method):
        with torch.autocast(device, dtype, cache_enabled=cache):
            loss = loss_of(model(x))
        loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    grads["input"] = x.grad.detach().clone()
    return grads


def float32_chain(kind: str, device: str) -> tuple[nn.Module, Tensor]:
    model, x = ode_chain(kind, 3, solver=ac.RK4(), steps=4, dtype=torch.float32)
    return model.to(device), x.to(device)


@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("device,dtype", AUTOCAST)
def test_anode_equals_direct_under_autocast(device: str, dtype: torch.dtype, kind: str) -> None:
    """Bit-identical on CPU: the recomputed block runs the same low-precision ops as Direct's forward."""
    if device == "cuda" and kind == "conv":
        pytest.skip("cuDNN convolution backward may sum in a nondeterministic order; the MLP case runs")
    model, x = float32_chain(kind, device)
    expected = autocast_gradients(model, x, ac.Direct(), device, dtype)
    got = autocast_gradients(model, x, ac.Anode(), device, dtype)
    if device == "cpu":
        assert_bit_identical(got, expected)
    else:
        assert_rel_close(got, expected, rtol=CUDA_RTOL)


@pytest.mark.parametrize("checkpoints", [0, 2], ids=lambda c: f"c{c}")
@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("device,dtype", AUTOCAST)
def test_anode_with_checkpoints_equals_direct_under_autocast(
    device: str, dtype: torch.dtype, kind: str, checkpoints: int
) -> None:
    """Autocast's weight-cast cache makes Direct sum a parameter's gradient over all steps in low precision,
    while revolve sums per-step gradients in float32, so the comparison turns the cache off: equal to float32
    rounding (1e-5). The input gradient has no such sum and is bit-identical on CPU with the cache on."""
    if device == "cuda" and kind == "conv":
        pytest.skip("cuDNN convolution backward may sum in a nondeterministic order; the MLP case runs")
    model, x = float32_chain(kind, device)
    method = ac.Anode(checkpoints=checkpoints)
    expected = autocast_gradients(model, x, ac.Direct(), device, dtype, cache=False)
    assert_rel_close(autocast_gradients(model, x, method, device, dtype, cache=False), expected, rtol=FLOAT32_RTOL)
    cached_direct = autocast_gradients(model, x, ac.Direct(), device, dtype)["input"]
    cached = autocast_gradients(model, x, method, device, dtype)["input"]
    if device == "cpu":
        assert torch.equal(cached, cached_direct)
    else:
        torch.testing.assert_close(cached, cached_direct, rtol=CUDA_RTOL, atol=0.0)


class PrecisionProbe(nn.Module):
    """A linear field that records, at every evaluation, whether CPU autocast was on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.seen: list[bool] = []

    def forward(self, t: float, z: Tensor) -> Tensor:
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return torch.tanh(self.linear(z))


REPLAYING_METHODS = [
    pytest.param(ac.Anode(), id="anode"),
    pytest.param(ac.Anode(checkpoints=1), id="anode-c1"),
    pytest.param(ac.Adjoint(), id="adjoint"),
    pytest.param(ac.Adjoint(reconstruct=False), id="adjoint-stored"),
]


@pytest.mark.parametrize("forward_autocast", [True, False], ids=["autocast-forward", "plain-forward"])
@pytest.mark.parametrize("method", REPLAYING_METHODS)
def test_every_backward_evaluation_runs_under_the_forwards_autocast(
    method: ac.GradientMethod, forward_autocast: bool
) -> None:
    """Each backward evaluation (recomputation or adjoint step) sees the forward's setting, even when backward
    is called inside the opposite one."""
    field = PrecisionProbe()
    model = nn.Sequential(ac.ODEBlock(field, steps=3, solver=ac.Midpoint(), gradient=method), nn.Tanh())
    model = nn.Sequential(model, ac.ODEBlock(PrecisionProbe(), steps=1, gradient=method))  # field's graph not kept
    x = torch.randn(2, 3)
    with torch.autocast("cpu", torch.bfloat16, enabled=forward_autocast):
        loss = model(x).float().square().sum()
    forward_calls = len(field.seen)
    assert field.seen == [forward_autocast] * forward_calls
    with torch.autocast("cpu", torch.bfloat16, enabled=not forward_autocast):
        loss.backward()
    assert len(field.seen) > forward_calls, "backward evaluated nothing: the probe proves nothing"
    assert field.seen[forward_calls:] == [forward_autocast] * (len(field.seen) - forward_calls)


# --- no graph left behind -----------------------------------------------------------------------------------

ALL_METHODS = [
    pytest.param(ac.Direct(), id="direct"),
    *REPLAYING_METHODS,
]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_dropped_output_leaves_nothing_saved_alive(method: ac.GradientMethod) -> None:
    """An output dropped without backward (an evaluation with grad on, an exception, a probe) frees every byte
    its forward saved: what autograd saved, the kept graph of the last ANODE block, and stored states."""
    model, x = ode_chain("mlp", 3, solver=ac.RK4(), steps=4)
    with ac.use_gradient(model, method), ac.MemoryMeter() as meter:
        out = model(x)
        assert meter.current_bytes > 0 or method.name == "adjoint", "the forward saved nothing to free"
        del out, x  # Adjoint(reconstruct=False) counts its stored first state, the input, while the caller holds it
        gc.collect()
        assert meter.current_bytes == 0


class Saved:
    """What autograd stores for one saved tensor while the test's hooks are on; weakly referenceable."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor.detach()  # the tensor itself would tie a saved output to its own grad_fn


class Kept:
    """A listener of :mod:`anode_core.held` keeping weak references to what gradient methods announce they keep."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Tensor]] = []

    def hold(self, tensor: Tensor) -> None:
        self.refs.append(weakref.ref(tensor))


def test_the_kept_graph_dies_with_the_output() -> None:
    """Weak references to everything the forward saved (the last block's kept saved tensors and the kept block
    inputs included) die with the output; no thread-local or module global keeps them."""
    saved: list[weakref.ref[Saved]] = []

    def pack(tensor: Tensor) -> Saved:
        box = Saved(tensor)
        saved.append(weakref.ref(box))
        return box

    kept = Kept()
    model, x = ode_chain("mlp", 2, solver=ac.Euler(), steps=2)
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor)
    with ac.use_gradient(ac.Anode()), hooks, listening(kept):
        out = model(x.requires_grad_(True))
    alive = [r for r in saved if r() is not None] + [r for r in kept.refs if r() is not None]
    assert len(alive) > len(model), "only the block inputs are alive: the test proves nothing about the kept graph"
    del out, alive
    gc.collect()
    assert [r for r in saved if r() is not None] + [r for r in kept.refs if r() is not None] == []


@pytest.fixture
def whole_block_anode() -> Iterator[None]:
    """``Anode()`` as the default: the kept graph of the latest block is its behaviour (the default, ``checkpoints=
    "auto"``, keeps nothing)."""
    with ac.use_gradient(ac.Anode()):
        yield


def backward_evaluations(model: nn.Module, out: Tensor) -> int:
    with ac.EvaluationCounter(model) as nfe:
        loss_of(out).backward()
    return nfe.calls


@pytest.mark.usefixtures("whole_block_anode")
@pytest.mark.parametrize("solver", [pytest.param(ac.Euler(), id="euler"), pytest.param(ac.RK4(), id="rk4")])
def test_another_models_forward_does_not_raise_the_backward_cost(solver: ac.Solver) -> None:
    """Backward recomputes L − 1 blocks of L (the last one's graph is kept), with or without another model's
    forward in between."""
    blocks, steps = 3, 4
    first, x = ode_chain("mlp", blocks, solver=solver, steps=steps)
    other, y = ode_chain("mlp", 2, solver=solver, steps=steps, seed=10)
    expected = (blocks - 1) * steps * solver.stages
    assert backward_evaluations(first, first(x)) == expected
    out = first(x)
    other_out = other(y)
    assert backward_evaluations(first, out) == expected
    assert backward_evaluations(other, other_out) == 1 * steps * solver.stages


@pytest.mark.usefixtures("whole_block_anode")
def test_a_later_block_drops_the_graph_across_layers_in_between() -> None:
    """With ops between the blocks, each block still drops its predecessor's graph: one graph per chain, so
    backward recomputes every block but the last."""
    blocks, steps = 3, 2
    chain, x = ode_chain("mlp", blocks, solver=ac.Heun(), steps=steps)
    model = nn.Sequential(chain[0], nn.Tanh(), nn.Linear(3, 3).double(), chain[1], nn.Tanh(), chain[2])
    assert backward_evaluations(model, model(x)) == (blocks - 1) * steps * ac.Heun().stages
