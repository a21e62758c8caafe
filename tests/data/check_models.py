"""Models for `anode-lab check` tests, written the way torchdiffeq users write them (one import changed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import anode_core as ac


class ODEFunc(nn.Module):
    """``dy/dt = W2 relu(W1 y)``: a ReLU field, the adjoint's worst case at coarse steps."""

    def __init__(self, dim: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, t: float, y: Tensor) -> Tensor:
        return self.net(y)


class LatentODE(nn.Module):
    """Encode, follow the state through t = 0, 1, 2, 3 (Euler, step 0.5), decode every time point."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.encode = nn.Linear(2, dim)
        self.func = ODEFunc(dim)
        self.decode = nn.Linear(dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.encode(x)
        ys = [y]
        for t0 in range(3):
            y = ac.odesolve(self.func, y, steps=2, solver="euler", t0=float(t0), t1=float(t0 + 1))
            ys.append(y)
        return self.decode(torch.stack(ys))


class TorchdiffeqLatentODE(LatentODE):
    """The same model written as a torchdiffeq user does, with one import changed: ``anode_core.odeint``."""

    def forward(self, x: Tensor) -> Tensor:
        t = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=x.dtype)
        return self.decode(ac.odeint(self.func, self.encode(x), t, method="euler", options=dict(step_size=0.5)))


def mse(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return (model(x) - y).square().mean()


def build(cls: type[LatentODE] = LatentODE) -> tuple[nn.Module, tuple[Tensor, Tensor], object]:
    torch.manual_seed(0)
    model = cls().double()
    with torch.no_grad():
        for p in model.func.parameters():
            p.mul_(3.0)  # a stiff field: dt·Lip(f) near 1 at step 0.5
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    return model, (x, torch.randn(4, 16, 1, generator=gen, dtype=torch.float64)), mse


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


def build_odeint() -> tuple[nn.Module, tuple[Tensor, Tensor], object]:
    return build(TorchdiffeqLatentODE)


def no_solve() -> tuple[nn.Module, Tensor, object]:
    return Plain().double(), torch.ones(4, 2, dtype=torch.float64), lambda m, b: m(b).sum()


def not_scalar() -> tuple[nn.Module, tuple[Tensor, Tensor], object]:
    model, batch, _ = build()
    return model, batch, lambda m, b: (m(b[0]) - b[1]).square()


def not_a_triple() -> nn.Module:
    return Plain()


def raises() -> None:
    raise RuntimeError("no data here")
