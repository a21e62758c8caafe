"""Shared problems, parameter sets and assertions for the numerical-core tests.

Every builder is seeded, small (the suite runs on two shared CPU cores) and float64 unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pytest
import torch
from torch import Tensor, nn

import anode_core as ac
from anode_lab.experiments.fields import ConvField, MLPField

SOLVERS = [
    pytest.param(ac.Euler(), id="euler"),
    pytest.param(ac.Midpoint(), id="midpoint"),
    pytest.param(ac.Heun(), id="heun"),
    pytest.param(ac.RK4(), id="rk4"),
]

EXACT_METHODS = [
    pytest.param(ac.Direct(), id="direct"),
    pytest.param(ac.Anode(), id="anode"),
    pytest.param(ac.Anode(checkpoints=0), id="anode-c0"),
    pytest.param(ac.Anode(checkpoints=1), id="anode-c1"),
    pytest.param(ac.Anode(checkpoints="auto"), id="anode-auto"),
]

RECOMPUTING_METHODS = [
    pytest.param(ac.Anode(), id="anode"),
    pytest.param(ac.Anode(checkpoints=1), id="anode-c1"),
    pytest.param(ac.Anode(checkpoints="auto"), id="anode-auto"),
]

ADJOINT_METHODS = [
    pytest.param(ac.Adjoint(), id="adjoint"),
    pytest.param(ac.Adjoint(reconstruct=False), id="adjoint-stored"),
]

ALL_METHODS = [
    *EXACT_METHODS,
    *ADJOINT_METHODS,
]

FIELD_KINDS = [pytest.param("mlp", id="mlp"), pytest.param("conv", id="conv")]

CUDA_MISSING = "needs a CUDA device; its CPU twin runs everywhere"

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_MISSING)],
    ),
]


def seeded_randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """A standard normal tensor from its own generator: the global RNG stream is not touched."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def scaled(module: nn.Module, scale: float) -> nn.Module:
    """Multiply every parameter of ``module`` by ``scale`` (a stiffer field for ``scale > 1``)."""
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(scale)
    return module


def mlp_field(
    dim: int = 3,
    hidden: int = 8,
    activation: str = "tanh",
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> MLPField:
    torch.manual_seed(seed)
    return scaled(MLPField(dim, hidden, activation), scale).to(dtype)


def conv_field(
    channels: int = 4,
    activation: str = "relu",
    norm: str = "group",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> ConvField:
    torch.manual_seed(seed)
    return ConvField(channels, activation, norm).to(dtype)


class DropoutField(nn.Module):
    """``f(t, z) = W2 dropout(tanh(W1 z))``: a field whose every evaluation draws random numbers."""

    def __init__(self, dim: int = 3, hidden: int = 8, p: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(p), nn.Linear(hidden, dim))

    def forward(self, t: float, z: Tensor) -> Tensor:
        return self.net(z)


def ode_chain(
    kind: str,
    blocks: int,
    *,
    solver: ac.Solver,
    steps: int,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    activation: str | None = None,
) -> tuple[nn.Sequential, Tensor]:
    """``blocks`` ODE blocks in sequence and an input batch: ``mlp`` on vectors (3,), ``conv`` on (4, 5, 5) maps."""
    fields: list[nn.Module]
    if kind == "mlp":
        fields = [mlp_field(activation=activation or "tanh", seed=seed + i, dtype=dtype) for i in range(blocks)]
        x = seeded_randn(4, 3, seed=seed + 100, dtype=dtype)
    elif kind == "conv":
        fields = [conv_field(activation=activation or "relu", seed=seed + i, dtype=dtype) for i in range(blocks)]
        x = seeded_randn(2, 4, 5, 5, seed=seed + 100, dtype=dtype)
    else:
        raise ValueError(f"unknown field kind {kind!r}")
    model = nn.Sequential(*(ac.ODEBlock(f, steps=steps, solver=solver) for f in fields))
    return model, x


def loss_of(out: Tensor) -> Tensor:
    """A fixed scalar loss with a non-trivial gradient in every entry."""
    weights = torch.cos(torch.arange(out.numel(), dtype=out.dtype, device=out.device)).view_as(out)
    return 0.5 * out.square().sum() + (weights * out).sum()


def gradients(model: nn.Module, x: Tensor, method: ac.GradientMethod) -> dict[str, Tensor]:
    """Parameter gradients of ``loss_of(model(x))`` with every ODE block using ``method``, and ``"input"``."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with ac.use_gradient(model, method):
        loss_of(model(x)).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    grads["input"] = x.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    return grads


def rel_error(actual: Tensor, expected: Tensor) -> float:
    """``‖actual − expected‖ / ‖expected‖`` in float64."""
    expected = expected.detach().double()
    return ((actual.detach().double() - expected).norm() / expected.norm()).item()


def assert_bit_identical(actual: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    differ = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert not differ, f"not bit-identical: {differ}"


def assert_rel_close(
    actual: Mapping[str, Tensor], expected: Mapping[str, Tensor], *, rtol: float, atol: float = 0.0
) -> None:
    """Every tensor within ``‖a − e‖ ≤ rtol·‖e‖ + atol``.

    Norm-wise, because elementwise checks punish entries that cancel to nearly zero.
    """
    assert actual.keys() == expected.keys()
    excess = {}
    for name in expected:
        a, e = actual[name].detach().double(), expected[name].detach().double()
        excess[name] = ((a - e).norm() - rtol * e.norm()).item()
    worst = max(excess, key=excess.__getitem__)
    error = rel_error(actual[worst], expected[worst])
    assert excess[worst] <= atol, f"{worst}: relative error {error:.3e} beyond rtol {rtol:.0e}, atol {atol:.0e}"


def central_differences(loss: Callable[[], Tensor], tensors: Sequence[Tensor], eps: float = 1e-6) -> list[Tensor]:
    """``(loss(x + eps·e_i) − loss(x − eps·e_i)) / 2eps`` for every entry of every tensor, perturbed in place."""
    out = []
    with torch.no_grad():
        for tensor in tensors:
            flat = tensor.view(-1)
            grad = torch.empty_like(flat)
            for i in range(flat.numel()):
                original = flat[i].item()
                flat[i] = original + eps
                up = loss().item()
                flat[i] = original - eps
                down = loss().item()
                flat[i] = original
                grad[i] = (up - down) / (2 * eps)
            out.append(grad.view_as(tensor))
    return out


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx = torch.tensor([math.log(x) for x in xs], dtype=torch.float64)
    ly = torch.tensor([math.log(y) for y in ys], dtype=torch.float64)
    lx = lx - lx.mean()
    return ((lx * (ly - ly.mean())).sum() / lx.square().sum()).item()


class Laplacian(nn.Module):
    """``f(t, z) = D Δz`` with the 5-point stencil: heat diffusion, dissipative and ill-posed to reverse."""

    def __init__(self, diffusivity: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        stencil = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        with torch.no_grad():
            self.conv.weight.copy_(diffusivity * stencil.view(1, 1, 3, 3))

    def forward(self, t: float, z: Tensor) -> Tensor:
        return self.conv(z)
