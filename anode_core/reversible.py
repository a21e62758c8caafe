"""The reversible Heun scheme: an algebraically reversible solver whose states are rebuilt backwards exactly.

Kidger, Foster, Li & Lyons, "Efficient and Accurate Gradients for Neural SDEs", NeurIPS 2021, §3 (the
deterministic case). Besides ``y`` it carries ``ŷ`` and ``f̂ = f(t, ŷ)``:

    ŷ_{n+1} = 2 y_n − ŷ_n + Δt f̂_n,   f̂_{n+1} = f(t_{n+1}, ŷ_{n+1}),   y_{n+1} = y_n + ½ Δt (f̂_n + f̂_{n+1}),

one field evaluation per step, order 2; and backwards, with no division or solve,

    ŷ_n = 2 y_{n+1} − ŷ_{n+1} − Δt f̂_{n+1},   f̂_n = f(t_n, ŷ_n),   y_n = y_{n+1} − ½ Δt (f̂_n + f̂_{n+1}).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from anode_core.solvers import Solver, State, Tableau, TupleField

Pair = tuple[Tensor, Tensor, Tensor]


class ReversibleHeun(Solver):
    """Reversible Heun (module docstring). Differentiate it with ``Direct()``, ``Anode()`` or ``Reversible()``."""

    name = "reversible_heun"
    order = 2
    tableau = Tableau(c=(0.0,), a=((),), b=(1.0,))  # not used to step: it tells the memory model s = 1

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
        raise TypeError(
            "ReversibleHeun carries a second state and cannot take an isolated step (as Adjoint or "
            "Anode(checkpoints=c) need): use gradient=Reversible(), Direct() or Anode()"
        )

    def solve(self, f: TupleField, time: Callable[[int], float], z0: Tensor, steps: int) -> Pair:
        """``(y_N, ŷ_N, f̂_N)`` from ``y_0 = ŷ_0 = z0`` on the grid ``time(0) … time(steps)``."""
        y, y_hat, f_hat = z0, z0, f(time(0), (z0,))[0]
        for n in range(steps):
            y, y_hat, f_hat = self.forward(f, time(n), time(n + 1), y, y_hat, f_hat)
        return y, y_hat, f_hat

    @staticmethod
    def forward(f: TupleField, t: float, t_next: float, y: Tensor, y_hat: Tensor, f_hat: Tensor) -> Pair:
        dt = t_next - t
        y_hat_next = (2 * y - y_hat).add(f_hat, alpha=dt)
        f_next = f(t_next, (y_hat_next,))[0]
        return y.add(f_hat + f_next, alpha=0.5 * dt), y_hat_next, f_next

    @staticmethod
    def reverse_hat(t: float, t_next: float, y_next: Tensor, y_hat_next: Tensor, f_next: Tensor) -> Tensor:
        """``ŷ_n`` from the state at ``n + 1``; ``y_n`` follows from :meth:`reverse_y` once ``f̂_n`` is known."""
        return (2 * y_next - y_hat_next).add(f_next, alpha=-(t_next - t))

    @staticmethod
    def reverse_y(t: float, t_next: float, y_next: Tensor, f_hat: Tensor, f_next: Tensor) -> Tensor:
        return y_next.add(f_hat + f_next, alpha=-0.5 * (t_next - t))
