"""One ODE block's forward problem: a field, its parameters, a solver and a fixed time grid.

Every gradient method receives a :class:`Problem` and differentiates the same discrete map
``z0 -> z_{N_t}``; they differ only in what they keep and what they recompute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from anode_core.solvers import Solver, State

Field = Callable[[float, Tensor], Tensor]


@dataclass(frozen=True)
class Problem:
    """``dz/dt = field(t, z)`` on ``[t0, t1]`` with ``steps`` equal steps of ``solver``."""

    field: Field
    params: tuple[Tensor, ...]
    solver: Solver
    t0: float
    t1: float
    steps: int

    @property
    def dt(self) -> float:
        return (self.t1 - self.t0) / self.steps

    def time(self, n: int) -> float:
        """Time of grid point ``n`` (0 ≤ n ≤ steps)."""
        return self.t0 + n * self.dt

    def tuple_field(self, t: float, y: State) -> State:
        out = self.field(t, y[0])
        if not isinstance(out, Tensor) or out.shape != y[0].shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"`field` must return dz/dt shaped like z {tuple(y[0].shape)}; got {got}. An ODE block cannot "
                "change channels or size: put such layers between blocks."
            )
        return (out,)

    def step(self, z: Tensor, n: int) -> Tensor:
        """Advance from grid point ``n`` to ``n + 1``."""
        return self.solver.step(self.tuple_field, self.time(n), (z,), self.dt)[0]

    def advance(self, z: Tensor, start: int, stop: int) -> Tensor:
        """Advance from grid point ``start`` to ``stop``."""
        for n in range(start, stop):
            z = self.step(z, n)
        return z
