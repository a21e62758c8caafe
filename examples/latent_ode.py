"""A model written for torchdiffeq, checked by anode-lab: `anode-lab check examples/latent_ode.py:build`.

The only change from the torchdiffeq version is the solve: ``torchdiffeq.odeint(self.func, y, t, method="euler",
options=dict(step_size=0.5))`` becomes ``anode_core.odesolve`` over each interval (``anode_core.odeint`` takes
torchdiffeq's signature as it is). The solve names no gradient method, so ``anode-lab check`` (and
``anode_core.use_gradient``) decide how it is differentiated.

The contract of ``anode-lab check FILE.py:FACTORY``: ``FACTORY()`` returns ``(model, batch, loss)`` and
``loss(model, batch)`` returns a scalar tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import anode_core as ac


class ODEFunc(nn.Module):
    """``dy/dt = W2 relu(W1 y)``."""

    def __init__(self, dim: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, t: float, y: Tensor) -> Tensor:
        return self.net(y)


class LatentODE(nn.Module):
    """Encode a point, follow its latent state through t = 0, 1, 2, 3, decode every time point."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.encode = nn.Linear(2, dim)
        self.func = ODEFunc(dim)
        self.decode = nn.Linear(dim, 2)

    def forward(self, x: Tensor) -> Tensor:
        ys = [self.encode(x)]
        for t in range(3):
            ys.append(ac.odesolve(self.func, ys[-1], steps=2, solver="euler", t0=float(t), t1=float(t + 1)))
        return self.decode(torch.stack(ys))


def loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, target = batch
    return (model(x) - target).square().mean()


def build() -> tuple[nn.Module, tuple[Tensor, Tensor], object]:
    torch.manual_seed(0)
    model = LatentODE().double()
    x = torch.randn(64, 2, dtype=torch.float64)
    return model, (x, torch.randn(4, 64, 2, dtype=torch.float64)), loss
