"""One ODE block's forward problem: a field, its parameters, a solver and a time grid.

Every gradient method receives a :class:`Problem` and differentiates the same discrete map
``z0 -> z_{N_t}``; they differ only in what they keep and what they recompute. The grid is ``steps`` equal
steps, or an explicit :class:`~anode_core.adaptive.Grid`: the accepted steps of an adaptive solve (found by
:meth:`Problem.settle`) or the grid of :func:`anode_core.odeint`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from anode_core.adaptive import AdaptiveSolver, Grid
from anode_core.controller import Perturb
from anode_core.solvers import Solver, State

Field = Callable[[float, Tensor], Tensor]


@dataclass(frozen=True)
class Problem:
    """``dz/dt = field(t, z)`` on ``[t0, t1]`` with ``steps`` equal steps of ``solver``, or on ``grid``.

    An adaptive solver's problem has no grid (and ``steps == 0``) until :meth:`settle` finds one. ``sides``: the
    field takes torchdiffeq's ``perturb`` side as a third argument (``odeint``'s ``options['perturb']``), and a
    fixed-grid step evaluates its start just after ``t_n`` and its end just before ``t_{n+1}``, as the forward did.
    """

    field: Field
    params: tuple[Tensor, ...]
    solver: Solver
    t0: float
    t1: float
    steps: int
    grid: Grid | None = None
    sides: bool = False

    @property
    def dt(self) -> float:
        return (self.t1 - self.t0) / self.steps

    @property
    def adaptive(self) -> bool:
        return isinstance(self.solver, AdaptiveSolver)

    def time(self, n: int) -> float:
        """Time of grid point ``n`` (0 ≤ n ≤ steps)."""
        return self.t0 + n * self.dt if self.grid is None else self.grid.time(n)

    def size(self, n: int) -> float:
        """Size of step ``n`` (from grid point ``n`` to ``n + 1``)."""
        return self.dt if self.grid is None else self.grid.sizes[n]

    def on_grid(self, grid: Grid) -> Problem:
        return replace(self, grid=grid, steps=len(grid), t0=grid.time(0), t1=grid.end)

    def settle(self, z0: Tensor) -> tuple[Tensor, Problem]:
        """Run the adaptive controller (without a graph): ``z(t1)`` and the problem on its accepted grid."""
        if not isinstance(self.solver, AdaptiveSolver):
            raise TypeError(f"settle() needs an adaptive solver such as Dopri5(); got {self.solver!r}")
        y, grid = self.solver.integrate(self.tuple_field, (z0,), self.t0, self.t1)
        return y[0], self.on_grid(grid)

    def tuple_field(self, t: float, y: State) -> State:
        return self._checked(self.field(t, y[0]), y[0])

    def _stage_field(self, t: float, t_next: float) -> Callable[[float, State], State]:
        """The field a step from ``t`` to ``t_next`` evaluates: with ``sides``, its start and end one ulp inside."""
        if not self.sides:
            return self.tuple_field
        field: Any = self.field
        near = 1e-3 * abs(t_next - t)  # a stage at c·h, c < 1, is farther; t + (t_next − t) may round off t_next

        def sided(s: float, y: State) -> State:
            side = Perturb.NEXT if s == t else Perturb.PREV if abs(s - t_next) <= near else Perturb.NONE
            return self._checked(field(s, y[0], side), y[0])

        return sided

    @staticmethod
    def _checked(out: Any, z: Tensor) -> State:
        if not isinstance(out, Tensor) or out.shape != z.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"`field` must return dz/dt shaped like z {tuple(z.shape)}; got {got}. An ODE block cannot "
                "change channels or size: put such layers between blocks."
            )
        return (out,)

    def step(self, z: Tensor, n: int) -> Tensor:
        """Advance from grid point ``n`` to ``n + 1``."""
        if self.grid is None:
            return self.solver.step(self._stage_field(self.time(n), self.time(n + 1)), self.time(n), (z,), self.dt)[0]
        t, h = self.grid.starts[n], self.grid.sizes[n]
        if isinstance(self.solver, AdaptiveSolver):
            return self.solver.replay(self.tuple_field, t, (z,), h, self.time(n + 1))[0]
        return self.solver.step(self._stage_field(t, self.time(n + 1)), t, (z,), h)[0]

    def advance(self, z: Tensor, start: int, stop: int) -> Tensor:
        """Advance from grid point ``start`` to ``stop``."""
        if self.solver.carries:
            if start != 0:
                raise ValueError(f"{self.solver!r} carries state between steps: it can only be advanced from grid "
                                 "point 0")
            y: State = (z,)
            state = self.solver.init(self.tuple_field, self.time(0), y)
            for n in range(stop):
                field = self._stage_field(self.time(n), self.time(n + 1))
                y, state = self.solver.advance(field, self.time(n), self.time(n + 1), y, state)
            return y[0]
        for n in range(start, stop):
            z = self.step(z, n)
        return z
