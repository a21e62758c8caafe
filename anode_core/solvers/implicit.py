"""Fixed-step implicit Runge–Kutta schemes: fully implicit (Gauss–Legendre, Radau IIA, implicit Euler and
midpoint, the trapezoid) and diagonally implicit (SDIRK2, TR-BDF2), as torchdiffeq solves them.

A step solves the stage equations ``k_i = f(t + c_i h, y + h Σ_j a_ij k_j)`` by Broyden's method from
``k_i = f(t, y)``, with the identity as the first Jacobian, until the residual's 2-norm is below ``tol``
(default ``1e-8`` in float64, ``1e-6`` in float32) or ``max_iters`` iterations have run (a warning then says the
iteration did not converge), exactly as torchdiffeq's ``FixedGridFIRKODESolver`` and ``FixedGridDIRKODESolver``
do (``_impl/rk_common.py``, MIT; tableaux from ``_impl/fixed_grid_implicit.py``). A fully implicit scheme
iterates on all stages at once, a diagonally implicit one stage by stage. The Jacobian is dense over the state
(``(s·n)²`` numbers for ``n`` state entries), so these suit small states.

Differentiating: the iterations are differentiated as computed. ``Direct`` back-propagates through each
Broyden iteration; ``Anode`` recomputes the same iterations (the same count, since the recomputation repeats
the forward's arithmetic) and so equals ``Direct``. The gradient is that of the computed iterate, which tends
to the implicit function's gradient as ``tol`` tightens.

References: Hairer & Wanner, *Solving ODEs II* (1996), §IV.5 (Gauss and Radau IIA), §IV.6 (SDIRK); Bank et al.,
"Transient simulation of silicon devices and circuits", IEEE TCAD 4(4), 1985 (TR-BDF2); Broyden, Math. Comp.
19(92), 1965.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import Tensor

from anode_core.solvers.base import Solver, State, TupleField, check_weights, flattener

S2, S3, S6, S15 = math.sqrt(2), math.sqrt(3), math.sqrt(6), math.sqrt(15)


@dataclass(frozen=True)
class ImplicitTableau:
    """Butcher tableau ``c | A / b`` of an implicit scheme (``A`` full, or lower triangular with ``diagonal``)."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    diagonal: bool = False
    """Diagonally implicit: stage ``i`` depends on stages ``≤ i`` only and is solved on its own."""

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s or any(len(row) != s for row in self.a):
            raise ValueError(f"an implicit tableau with {s} stages needs {s} nodes and an {s}×{s} matrix A")
        if self.diagonal and any(row[j] != 0.0 for i, row in enumerate(self.a) for j in range(i + 1, s)):
            raise ValueError("a diagonally implicit tableau needs a[i][j] = 0 for j > i")
        check_weights(self.c, self.a, self.b)

    def explicit(self, i: int) -> bool:
        """Stage ``i`` is ``f(t, y)`` itself (torchdiffeq skips its residual): a zero node and a zero row."""
        return self.c[i] == 0.0 and not any(self.a[i])


@dataclass(frozen=True)
class ImplicitSolver(Solver):
    """An implicit Runge–Kutta scheme solved by Broyden's method (module docstring).

    ``max_iters`` bounds the iterations of one step (torchdiffeq's option of that name, default 100); ``tol`` is
    the residual's 2-norm at which they stop (``None``: 1e-8 in float64, 1e-6 otherwise, as torchdiffeq).
    """

    max_iters: int = 100
    tol: float | None = None

    tableau: ClassVar[ImplicitTableau]
    kind = "implicit"

    def __post_init__(self) -> None:
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters < 0:
            raise ValueError(f"`max_iters` must be an integer ≥ 0 (Broyden iterations a step); got {self.max_iters!r}")
        tol = self.tol
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1):
            raise ValueError(f"`tol` must be None (1e-8 in float64, 1e-6 in float32) or in (0, 1); got {tol!r}")

    @property
    def stages(self) -> int:
        """Field evaluations of the first iteration; each further Broyden iteration costs as many again."""
        return len(self.tableau.b)

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
        tab = self.tableau
        flat, unflat = flattener(y)
        f0 = flat(f(t, y))
        tol = self.tol if self.tol is not None else (1e-8 if y[0].dtype == torch.float64 else 1e-6)
        a = torch.tensor(tab.a, dtype=f0.dtype, device=f0.device) * dt  # (s, s): stage i uses row i
        y0 = flat(y)
        ks = [f0] * self.stages

        def residual(k: Tensor, rows: range) -> Tensor:
            """``k_i − f(t_i, y + Σ_j h a_ij k_j)`` for the stages in ``rows``; ``k``: their slopes, ``(n, |rows|)``."""
            full = torch.stack([*ks[: rows.start], *k.unbind(-1), *ks[rows.stop :]], dim=-1)
            out = []
            for col, i in enumerate(rows):
                if tab.explicit(i):
                    out.append(torch.zeros_like(f0))
                    continue
                yi = y0 + full @ a[i]
                ti = t + dt if tab.c[i] == 1.0 else t + tab.c[i] * dt
                out.append(k[..., col] - flat(f(ti, unflat(yi))))
            return torch.stack(out, dim=-1).flatten()

        blocks = [range(i, i + 1) for i in range(self.stages)] if tab.diagonal else [range(self.stages)]
        for rows in blocks:
            if tab.diagonal and tab.explicit(rows.start):
                continue
            k = _broyden(partial(residual, rows=rows), torch.stack(ks[rows.start : rows.stop], dim=-1), tol,
                         self.max_iters)
            ks[rows.start : rows.stop] = k.unbind(-1)
        increment = torch.stack(ks, dim=-1) @ torch.tensor(tab.b, dtype=f0.dtype, device=f0.device)
        return unflat(y0 + increment * dt)


def _broyden(residual: Callable[[Tensor], Tensor], k: Tensor, tol: float, max_iters: int) -> Tensor:
    """Broyden's ("good") method on ``residual(k) = 0`` from ``k`` with the identity as Jacobian, torchdiffeq's
    arithmetic: stop when ``‖residual‖₂ < tol``, after ``max_iters`` iterations, or at a singular Jacobian."""
    r = residual(k)
    jac = torch.eye(r.numel(), dtype=r.dtype, device=r.device)
    for _ in range(max_iters):
        if torch.linalg.norm(r, 2) < tol:
            return k
        try:
            s = -torch.linalg.solve(jac, r)
        except RuntimeError:  # torch.linalg.LinAlgError (a RuntimeError, which the stubs do not export)
            break  # torchdiffeq keeps the last iterate when the Jacobian becomes singular
        k = k + s.reshape_as(k)
        new = residual(k)
        jac = jac + torch.outer(new - r - jac @ s, s) / torch.dot(s, s)
        r = new
    if not torch.linalg.norm(r, 2) < tol:
        warnings.warn(
            f"an implicit step's Broyden iteration did not converge to tol={tol:g} (residual "
            f"{torch.linalg.norm(r, 2).item():.3g}): raise `max_iters` or take smaller steps",
            RuntimeWarning,
            stacklevel=2,
        )
    return k


class ImplicitEuler(ImplicitSolver):
    """Backward Euler, order 1."""

    name = "implicit_euler"
    order = 1
    tableau = ImplicitTableau(c=(1.0,), a=((1.0,),), b=(1.0,))


class ImplicitMidpoint(ImplicitSolver):
    """The implicit midpoint rule (one-stage Gauss), order 2, symplectic."""

    name = "implicit_midpoint"
    order = 2
    tableau = ImplicitTableau(c=(0.5,), a=((0.5,),), b=(1.0,))


class Trapezoid(ImplicitSolver):
    """The implicit trapezoidal rule (Crank–Nicolson, Lobatto IIIA with two stages), order 2."""

    name = "trapezoid"
    order = 2
    tableau = ImplicitTableau(c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)), b=(0.5, 0.5))


class RadauIIA3(ImplicitSolver):
    """Radau IIA with two stages, order 3, L-stable."""

    name = "radauIIA3"
    order = 3
    tableau = ImplicitTableau(c=(1 / 3, 1.0), a=((5 / 12, -1 / 12), (3 / 4, 1 / 4)), b=(3 / 4, 1 / 4))


class RadauIIA5(ImplicitSolver):
    """Radau IIA with three stages, order 5, L-stable (Hairer & Wanner's RADAU5 tableau)."""

    name = "radauIIA5"
    order = 5
    tableau = ImplicitTableau(
        c=(2 / 5 - S6 / 10, 2 / 5 + S6 / 10, 1.0),
        a=(
            (11 / 45 - 7 * S6 / 360, 37 / 225 - 169 * S6 / 1800, -2 / 225 + S6 / 75),
            (37 / 225 + 169 * S6 / 1800, 11 / 45 + 7 * S6 / 360, -2 / 225 - S6 / 75),
            (4 / 9 - S6 / 36, 4 / 9 + S6 / 36, 1 / 9),
        ),
        b=(4 / 9 - S6 / 36, 4 / 9 + S6 / 36, 1 / 9),
    )


class GaussLegendre4(ImplicitSolver):
    """Gauss–Legendre with two stages, order 4, symplectic. torchdiffeq's ``gl4`` (657943a) gives both stages
    the node ``1/2 − √3/6``; the second is ``1/2 + √3/6`` (its row sum), which this tableau has, so on a field
    that depends on ``t`` the two differ (by 3e-3 at 64 steps on a forced rotation) and this one is order 4."""

    name = "gl4"
    order = 4
    tableau = ImplicitTableau(
        c=(1 / 2 - S3 / 6, 1 / 2 + S3 / 6),
        a=((1 / 4, 1 / 4 - S3 / 6), (1 / 4 + S3 / 6, 1 / 4)),
        b=(1 / 2, 1 / 2),
    )


class GaussLegendre6(ImplicitSolver):
    """Gauss–Legendre with three stages, order 6, symplectic."""

    name = "gl6"
    order = 6
    tableau = ImplicitTableau(
        c=(1 / 2 - S15 / 10, 1 / 2, 1 / 2 + S15 / 10),
        a=(
            (5 / 36, 2 / 9 - S15 / 15, 5 / 36 - S15 / 30),
            (5 / 36 + S15 / 24, 2 / 9, 5 / 36 - S15 / 24),
            (5 / 36 + S15 / 30, 2 / 9 + S15 / 15, 5 / 36),
        ),
        b=(5 / 18, 4 / 9, 5 / 18),
    )


_G2 = (2 - S2) / 2


class SDIRK2(ImplicitSolver):
    """Two-stage, L-stable singly diagonally implicit scheme with ``γ = 1 − 1/√2``, order 2."""

    name = "sdirk2"
    order = 2
    tableau = ImplicitTableau(c=(_G2, 1.0), a=((_G2, 0.0), (1 - _G2, _G2)), b=(1 - _G2, _G2), diagonal=True)


_GT, _BT = 1 - S2 / 2, S2 / 4


class TRBDF2(ImplicitSolver):
    """TR-BDF2 as a three-stage ESDIRK (trapezoid to ``2γh``, then BDF2), ``γ = 1 − 1/√2``, order 2."""

    name = "trbdf2"
    order = 2
    tableau = ImplicitTableau(
        c=(0.0, 2 * _GT, 1.0),
        a=((0.0, 0.0, 0.0), (_GT, _GT, 0.0), (_BT, _BT, _GT)),
        b=(_BT, _BT, _GT),
        diagonal=True,
    )


IMPLICIT_SOLVERS: dict[str, type[ImplicitSolver]] = {
    cls.name: cls
    for cls in (ImplicitEuler, ImplicitMidpoint, Trapezoid, RadauIIA3, RadauIIA5, GaussLegendre4, GaussLegendre6,
                SDIRK2, TRBDF2)
}
