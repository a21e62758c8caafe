"""The model: a lift, an ODE solved with anode_core.odesolve (no gradient named: the run's spec decides), a head."""

from torch import Tensor, nn

import anode_core as ac


class Func(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, width))

    def forward(self, t: float, y: Tensor) -> Tensor:
        return self.net(y)


class TinyODE(nn.Module):
    def __init__(self, features: int, classes: int, width: int, steps: int, solver: str) -> None:
        super().__init__()
        self.lift = nn.Linear(features, width)
        self.func = Func(width)
        self.head = nn.Linear(width, classes)
        self.steps, self.solver = steps, solver

    def forward(self, x: Tensor) -> Tensor:
        return self.head(ac.odesolve(self.func, self.lift(x), steps=self.steps, solver=self.solver))


def build(*, spec, shape, classes):
    return TinyODE(shape[0], classes, spec.width, spec.ode.steps, spec.ode.solver)
