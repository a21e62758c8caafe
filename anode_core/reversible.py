"""Algebraically reversible solvers: each step is undone exactly, so ``Reversible()`` stores no trajectory.

A reversible solver advances a *carry* (the solution first, then auxiliary states) with one field evaluation
per step; :meth:`ReversibleSolver.reverse` undoes a step with one evaluation and no solve. Two are here.

Reversible Heun (Kidger, Foster, Li & Lyons, "Efficient and Accurate Gradients for Neural SDEs", NeurIPS 2021,
§3, the deterministic case) carries ``(y, ŷ, f̂)`` with ``f̂ = f(t, ŷ)``:

    ŷ_{n+1} = 2 y_n − ŷ_n + Δt f̂_n,   f̂_{n+1} = f(t_{n+1}, ŷ_{n+1}),   y_{n+1} = y_n + ½ Δt (f̂_n + f̂_{n+1}),

order 2; backwards ``ŷ_n = 2 y_{n+1} − ŷ_{n+1} − Δt f̂_{n+1}``, ``f̂_n = f(t_n, ŷ_n)``,
``y_n = y_{n+1} − ½ Δt (f̂_n + f̂_{n+1})``.

The damped asynchronous leapfrog (ALF) of MALI (Zhuang, Dvornek, Tatikonda & Duncan, "MALI: A memory efficient
and reverse accurate integrator for neural ODEs", ICLR 2021, Alg. 1 and its damped variant; ``sym12async`` in the
authors' TorchDiffEqPack) carries ``(z, v)`` with ``v_0 = f(t_0, z_0)`` and damping ``η``:

    k = z_n + ½Δt v_n,   u = f(t_n + ½Δt, k),   v_{n+1} = v_n + 2η (u − v_n),   z_{n+1} = k + ½Δt v_{n+1};

backwards ``k = z_{n+1} − ½Δt v_{n+1}``, ``u = f(t_n + ½Δt, k)``, ``v_n = (v_{n+1} − 2η u) / (1 − 2η)``,
``z_n = k − ½Δt v_n``. On ``dz/dt = λz`` one step multiplies ``(z, Δt v)`` by a matrix whose roots are
``1 + x + (1 − 1/(2η)) x² + …`` (``x = λΔt``) and, at ``x = 0``, ``1 − 2η``. So ``η = 1`` (the authors' default)
is ALF itself: order 2, its second root −1 neither grows nor decays. ``η < 1`` damps that root forwards but
makes the scheme first order, and the inverse multiplies rounding by ``1/|1 − 2η|`` a step: reconstruction error
grows like ``|1 − 2η|^{−N_t}`` (``η = ½`` is not invertible at all).

Both amplify rounding when reversed on a field that expands, undamped too: in float32 with weights ×3 over
``[0, 3]``, ``Reversible()`` was 1.9e-2 from ``Direct`` (reversible Heun, N_t = 10⁴) and 3.5e-2 (ALF, N_t = 100)
while float32 ``Direct`` is 1e-4 from float64; prefer float64, or ``Anode`` on such fields (the ``reversible-exact``
demo shows it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from anode_core.solvers import Solver, SolverState, State, TupleField

Carry = tuple[Tensor, ...]
"""The solution first, then the auxiliary states a reversible step needs."""


class ReversibleSolver(Solver):
    """A fixed-step scheme on a carry, with an exact inverse step. Differentiate it with ``Reversible()``,
    ``Direct()`` or ``Anode()``. Subclasses define :meth:`start`, :meth:`forward` and :meth:`reverse`, and may
    shrink what ``Reversible()`` keeps after forward with :meth:`kept` and :meth:`resume`. Through the solver
    protocol (:meth:`init`, :meth:`advance`) the carry's auxiliary states are the solver's own state.

    ``Reversible()`` differentiates any such solver with one field evaluation a step backwards provided
    :meth:`forward` evaluates the field at a time where :meth:`reverse` of the same or the next step did.
    """

    kind = "reversible"
    carries = True
    stages = 1  # one field evaluation a step (the memory model's s)

    def init(self, f: TupleField, t0: float, y0: State) -> SolverState:
        return self.start(f, t0, y0[0])[1:]

    def advance(
        self, f: TupleField, t: float, t_next: float, y: State, state: SolverState
    ) -> tuple[State, SolverState]:
        carry = self.forward(f, t, t_next, (y[0], *state))
        return carry[:1], carry[1:]

    def solve(self, f: TupleField, time: Callable[[int], float], z0: Tensor, steps: int) -> Carry:
        """The carry at ``time(steps)``, started from ``z0`` at ``time(0)``; its first entry is the solution."""
        carry = self.start(f, time(0), z0)
        for n in range(steps):
            carry = self.forward(f, time(n), time(n + 1), carry)
        return carry

    def start(self, f: TupleField, t: float, z0: Tensor) -> Carry:
        raise NotImplementedError

    def forward(self, f: TupleField, t: float, t_next: float, carry: Carry) -> Carry:
        """One step from ``t`` to ``t_next``."""
        raise NotImplementedError

    def reverse(self, f: TupleField, t: float, t_next: float, carry: Carry) -> Carry:
        """The carry at ``t`` from the carry at ``t_next``: the algebraic inverse of :meth:`forward`."""
        raise NotImplementedError

    def kept(self, carry: Carry) -> Carry:
        """What ``Reversible()`` keeps after forward; :meth:`resume` rebuilds the carry from it."""
        return carry

    def resume(self, f: TupleField, t: float, kept: Carry) -> Carry:
        return kept


class ReversibleHeun(ReversibleSolver):
    """Reversible Heun (module docstring)."""

    name = "reversible_heun"
    order = 2

    def start(self, f: TupleField, t: float, z0: Tensor) -> Carry:
        return z0, z0, f(t, (z0,))[0]

    def forward(self, f: TupleField, t: float, t_next: float, carry: Carry) -> Carry:
        y, y_hat, f_hat = carry
        dt = t_next - t
        y_hat_next = (2 * y - y_hat).add(f_hat, alpha=dt)
        f_next = f(t_next, (y_hat_next,))[0]
        return y.add(f_hat + f_next, alpha=0.5 * dt), y_hat_next, f_next

    def reverse(self, f: TupleField, t: float, t_next: float, carry: Carry) -> Carry:
        y_next, y_hat_next, f_next = carry
        dt = t_next - t
        y_hat = (2 * y_next - y_hat_next).add(f_next, alpha=-dt)
        f_hat = f(t, (y_hat,))[0]
        return y_next.add(f_hat + f_next, alpha=-0.5 * dt), y_hat, f_hat

    def kept(self, carry: Carry) -> Carry:
        return carry[:2]  # f̂_N = f(t_N, ŷ_N) costs one evaluation to rebuild, which backward needs anyway

    def resume(self, f: TupleField, t: float, kept: Carry) -> Carry:
        y, y_hat = kept
        return y, y_hat, f(t, (y_hat,))[0]


@dataclass(frozen=True)
class DampedLeapfrog(ReversibleSolver):
    """MALI's damped asynchronous leapfrog (module docstring). ``damping`` is ``η`` in ``(0, 1]``, not ``½``:
    ``1`` (the default, as in the authors' code) is ALF, order 2; below 1 it is first order and its inverse
    amplifies rounding by ``1/|1 − 2η|`` a step, so keep ``N_t`` small when rebuilding states backwards."""

    damping: float = 1.0
    name = "alf"
    order = 2  # at the default damping = 1

    def __post_init__(self) -> None:
        eta = self.damping
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or not 0 < eta <= 1:
            raise ValueError(f"`damping` must be a number in (0, 1]; got {eta!r}: use 1.0 (undamped ALF, order 2)")
        if eta == 0.5:
            raise ValueError(
                "`damping` must not be 0.5: the inverse step divides by 1 − 2·damping; got 0.5: use 1.0 (undamped "
                "ALF, order 2) or a value away from 0.5 such as 0.9"
            )

    def start(self, f: TupleField, t: float, z0: Tensor) -> Carry:
        return z0, f(t, (z0,))[0]

    def forward(self, f: TupleField, t: float, t_next: float, carry: Carry) -> Carry:
        z, v = carry
        half = 0.5 * (t_next - t)
        k = z.add(v, alpha=half)
        u = f(t + half, (k,))[0]
        v_next = v.add(u - v, alpha=2 * self.damping)
        return k.add(v_next, alpha=half), v_next

    def reverse(self, f: TupleField, t: float, t_next: float, carry: Carry) -> Carry:
        z_next, v_next = carry
        half = 0.5 * (t_next - t)
        k = z_next.add(v_next, alpha=-half)
        u = f(t + half, (k,))[0]  # the same time as forward's evaluation, so Reversible() reuses it
        v = v_next.add(u, alpha=-2 * self.damping) / (1 - 2 * self.damping)
        return k.add(v, alpha=-half), v
