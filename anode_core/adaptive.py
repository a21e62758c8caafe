"""Adaptive embedded Runge–Kutta pairs (torchdiffeq's six: adaptive Heun, Fehlberg 2(1), Bogacki–Shampine 3(2),
Tsitouras 5(4), Dormand–Prince 5(4) and 8(7)) as tableau data, and their controller.

The controller reproduces torchdiffeq 0.2 (``_impl/rk_common.py``, ``misc.py``) so that the same problem takes
the same accepted steps to rounding: Hairer–Nørsett–Wanner's initial step selection (*Solving ODEs I*, §II.4),
the error ratio ``‖err / (atol + rtol·max(|y0|, |y1|))‖_rms``, the step factor
``min(10, max(0.9·ratio^(−1/order), 0.2 if rejected else 1))``, first-same-as-last stages, and steps that run
past the end time and are cut back by Shampine's quartic dense output, as torchdiffeq's are. A trial step's
arithmetic is torchdiffeq's op for op, since the error estimate amplifies rounding into step sizes. The
controller runs without a graph and its step sizes are Python floats: every gradient method differentiates the
replay of the accepted steps with their sizes held fixed (the controller itself is not differentiated).

References: Dormand & Prince, J. Comp. Appl. Math. 6(1), 1980; Bogacki & Shampine, Appl. Math. Lett. 2(4), 1989;
Shampine, Math. Comp. 46(173), 1986 (dense output).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from anode_core.solvers import RungeKutta, State, Tableau, TupleField, _combine

Norm = Callable[[State], float]

SAFETY, IFACTOR, DFACTOR = 0.9, 10.0, 0.2  # torchdiffeq's defaults


@dataclass(frozen=True)
class EmbeddedTableau(Tableau):
    """An embedded pair: error weights ``b − b̂`` and dense-output weights ``mid`` giving ``y(t + h/2)``.

    When the last row of ``a`` is ``b`` (and ``b``'s last weight is 0) the last stage is ``f(t + h, y1)``
    (first same as last, :attr:`fsal`); otherwise ``y1`` takes the ``b`` weights over every stage and, as in
    torchdiffeq, the last stage still stands for the slope at the step's end (next step's first stage).
    """

    error: tuple[float, ...]
    mid: tuple[float, ...]

    @property
    def fsal(self) -> bool:
        return self.b[-1] == 0 and tuple(self.b[:-1]) == tuple(self.a[-1])


def rms_norm(y: State) -> float:
    """The largest root-mean-square over the components of ``y`` (torchdiffeq's ``_mixed_norm``)."""
    return max(c.detach().abs().pow(2).mean().sqrt().item() for c in y)


@dataclass(frozen=True)
class Grid:
    """The accepted steps of an adaptive solve: step ``n`` starts at ``starts[n]`` with size ``sizes[n]``;
    the last one is evaluated at ``end`` by dense output when ``end`` falls inside it."""

    starts: tuple[float, ...]
    sizes: tuple[float, ...]
    end: float
    trials: int = 0
    evaluations: int = 0

    def __len__(self) -> int:
        return len(self.sizes)

    def time(self, n: int) -> float:
        return self.end if n == len(self.sizes) else self.starts[n]

    def segment(self, start: int, stop: int, end: float) -> Grid:
        """Steps ``start … stop − 1`` alone, the last evaluated at ``end``."""
        return Grid(self.starts[start:stop], self.sizes[start:stop], end)


@dataclass(frozen=True)
class AdaptiveSolver(RungeKutta):
    """An embedded Runge–Kutta pair with torchdiffeq's step-size controller.

    ``max_steps`` bounds the number of trial steps (accepted and rejected) of one solve.
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 100_000

    tableau: ClassVar[EmbeddedTableau]
    kind = "adaptive"

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1):
                raise ValueError(f"`{name}` must be a number in [0, 1), such as 1e-6; got {value!r}")
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("`rtol` and `atol` cannot both be 0: no step would ever be accepted")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"`max_steps` must be an integer ≥ 1 (trial steps per solve); got {self.max_steps!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rtol={self.rtol:g}, atol={self.atol:g}, max_steps={self.max_steps})"

    def replay(self, f: TupleField, t: float, y: State, h: float, end: float) -> State:
        """One accepted step of size ``h`` from ``t``, evaluated at ``end`` (≤ ``t + h``): the FSAL stage is
        computed only when ``end`` needs dense output, so a step costs ``s − 1`` evaluations."""
        tab = self.tableau
        ks: list[State] = []
        if not tab.fsal:  # every stage, then the b weights; the last stage is the end slope of the dense output
            for i in range(self.stages):
                ks.append(f(t + tab.c[i] * h, _combine(y, ks, tab.a[i], h)))
            y1 = _combine(y, ks, tab.b, h)
            return y1 if end == t + h else self._dense(y, y1, ks, t, h, end)
        for i in range(self.stages - 1):
            ks.append(f(t + tab.c[i] * h, _combine(y, ks, tab.a[i], h)))
        y1 = _combine(y, ks, tab.a[-1], h)
        if end == t + h:
            return y1
        ks.append(f(t + h, y1))
        return self._dense(y, y1, ks, t, h, end)

    def _trial(self, f: TupleField, t: float, y: State, f0: State, h: float) -> tuple[State, list[State], State]:
        """A trial step reusing ``f0 = f(t, y)``: ``(y1, stages, error estimate)``; the last stage is ``f(t+h, y1)``.

        The arithmetic is torchdiffeq's op for op (stages stacked along a last axis, combined by ``torch.sum``,
        the last node one ulp before ``t + h``): the error estimate cancels to a few digits, so any other rounding
        would be amplified into different step sizes.
        """
        tab, s = self.tableau, self.stages
        stacked = [torch.empty(*c.shape, s, dtype=c.dtype, device=c.device) for c in y]
        for buf, k in zip(stacked, f0, strict=True):
            buf[..., 0] = k
        dt = torch.tensor(h, dtype=y[0].dtype, device=y[0].device)
        y1 = y
        for i in range(1, s):
            beta = torch.tensor(tab.a[i], dtype=y[0].dtype, device=y[0].device)
            y1 = tuple(
                c + torch.sum(buf[..., :i] * (beta * dt), dim=-1).view_as(c) for c, buf in zip(y, stacked, strict=True)
            )
            ti = math.nextafter(t + h, -math.inf) if tab.c[i] == 1.0 else t + tab.c[i] * h
            for buf, k in zip(stacked, f(ti, y1), strict=True):
                buf[..., i] = k
        if not tab.fsal:
            b = torch.tensor(tab.b, dtype=y[0].dtype, device=y[0].device)
            y1 = tuple(c + torch.sum(buf * (dt * b), dim=-1).view_as(c) for c, buf in zip(y, stacked, strict=True))
        error = torch.tensor(tab.error, dtype=y[0].dtype, device=y[0].device)
        err = tuple(torch.sum(buf * (dt * error), dim=-1) for buf in stacked)
        return y1, [tuple(buf[..., j] for buf in stacked) for j in range(s)], err

    def _dense(self, y0: State, y1: State, ks: list[State], t: float, h: float, end: float) -> State:
        """Shampine's quartic through ``y0``, ``y(t + h/2)``, ``y1`` and the end slopes, at ``end``."""
        y_mid = _combine(y0, ks, self.tableau.mid, h)
        x = (end - t) / ((t + h) - t)
        out = []
        for a0, a1, am, f0, f1 in zip(y0, y1, y_mid, ks[0], ks[-1], strict=True):
            c4 = 2 * h * (f1 - f0) - 8 * (a1 + a0) + 16 * am
            c3 = h * (5 * f0 - 3 * f1) + 18 * a0 + 14 * a1 - 32 * am
            c2 = h * (f1 - 4 * f0) - 11 * a0 - 5 * a1 + 16 * am
            out.append(a0 + x * (h * f0) + x**2 * c2 + x**3 * c3 + x**4 * c4)
        return tuple(out)

    @torch.no_grad()
    def integrate(self, f: TupleField, y0: State, t0: float, t1: float, norm: Norm = rms_norm) -> tuple[State, Grid]:
        """Solve from ``t0`` to ``t1 > t0`` without a graph: the state at ``t1`` and the accepted grid.

        Gradient methods then differentiate the accepted grid (:meth:`replay`), whose steps give the same values
        up to rounding: the step sizes are constants for them, and rejected trials never hold a graph.
        """
        fy = f(t0, y0)
        evaluations = 2
        h = self._initial_step(f, t0, y0, fy, norm)
        t, y = t0, y0
        starts: list[float] = []
        sizes: list[float] = []
        last: tuple[State, list[State]] | None = None
        trials = 0
        while t < t1:
            if trials >= self.max_steps:
                raise RuntimeError(
                    f"{self.name} reached max_steps={self.max_steps} trial steps at t={t:.6g} of t1={t1:.6g}: "
                    f"raise `max_steps` ({type(self).__name__}(max_steps=...)) or loosen rtol/atol"
                )
            if not math.isfinite(h) or t + h <= t:
                raise RuntimeError(
                    f"{self.name}: step size underflow (h={h!r}) at t={t:.6g}; the field may be stiff "
                    "or blow up: loosen rtol/atol or shorten the time span"
                )
            trials += 1
            y1, ks, err = self._trial(f, t, y, fy, h)
            evaluations += self.stages - 1
            scale = tuple(self.atol + self.rtol * torch.max(a.abs(), b.abs()) for a, b in zip(y, y1, strict=True))
            ratio = norm(tuple(e / s for e, s in zip(err, scale, strict=True)))
            if not math.isfinite(ratio):
                raise RuntimeError(f"{self.name}: non-finite state or error estimate at t={t:.6g}")
            if ratio <= 1:
                starts.append(t)
                sizes.append(h)
                last = (y, ks)
                t, y, fy = t + h, y1, ks[-1]
            h = _next_step(h, ratio, self.order)
        if last is not None:  # torchdiffeq evaluates its dense output even at the step's end
            y = self._interpolate(last[0], y, last[1], starts[-1], sizes[-1], t1)
        return y, Grid(tuple(starts), tuple(sizes), t1, trials, evaluations)

    def _interpolate(self, y0: State, y1: State, ks: list[State], t: float, h: float, end: float) -> State:
        """:meth:`_dense` in torchdiffeq's arithmetic (``_interp_fit``, ``_interp_evaluate``), for the result
        every method returns; the replay's :meth:`_dense` equals it up to rounding."""
        like = y0[0]
        dt = torch.tensor(h, dtype=like.dtype, device=like.device)
        mid = torch.tensor(self.tableau.mid, dtype=like.dtype, device=like.device)
        x = torch.tensor((end - t) / ((t + h) - t), dtype=torch.float64).to(like.dtype)
        out = []
        for m, (a0, a1) in enumerate(zip(y0, y1, strict=True)):
            stacked = torch.stack([k[m] for k in ks], dim=-1)
            am = a0 + torch.sum(stacked * (dt * mid), dim=-1).view_as(a0)
            f0, f1 = ks[0][m], ks[-1][m]
            coefficients = (
                a0,
                dt * f0,
                dt * (f1 - 4 * f0) - 11 * a0 - 5 * a1 + 16 * am,
                dt * (5 * f0 - 3 * f1) + 18 * a0 + 14 * a1 - 32 * am,
                2 * dt * (f1 - f0) - 8 * (a1 + a0) + 16 * am,
            )
            total, power = coefficients[0] + x * coefficients[1], x
            for c in coefficients[2:]:
                power = power * x
                total = total + power * c
            out.append(total)
        return tuple(out)

    def _initial_step(self, f: TupleField, t0: float, y0: State, f0: State, norm: Norm) -> float:
        """Hairer, Nørsett & Wanner's starting step, as torchdiffeq's ``_select_initial_step`` computes it."""
        like = torch.zeros((), dtype=torch.float64)
        scale = tuple(self.atol + c.abs() * self.rtol for c in y0)
        d0 = like + norm(tuple(c / s for c, s in zip(y0, scale, strict=True)))
        d1 = like + norm(tuple(c / s for c, s in zip(f0, scale, strict=True)))
        h0 = like + 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = f(t0 + h0.item(), tuple(a + h0.item() * b for a, b in zip(y0, f0, strict=True)))
        d2 = (like + norm(tuple((b - a) / s for a, b, s in zip(f0, f1, scale, strict=True)))) / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = torch.max(like + 1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / torch.max(d1, d2)) ** (1.0 / float(self.order))  # torchdiffeq: order − 1, then + 1
        return torch.min(100 * h0, h1).item()


def _next_step(h: float, ratio: float, order: int) -> float:
    """torchdiffeq's ``_optimal_step_size``, in its float64 tensor arithmetic."""
    last = torch.tensor(h, dtype=torch.float64)
    if ratio == 0:
        return (last * IFACTOR).item()
    floor = torch.tensor(1.0 if ratio < 1 else DFACTOR, dtype=torch.float64)
    exponent = torch.tensor(order, dtype=torch.float64).reciprocal()
    power = torch.tensor(ratio, dtype=torch.float64) ** exponent
    safety = torch.tensor(SAFETY, dtype=torch.float64)  # tensor / tensor: a Python number / tensor rounds apart
    factor = torch.min(torch.tensor(IFACTOR, dtype=torch.float64), torch.max(safety / power, floor))
    return (last * factor).item()


class Dopri5(AdaptiveSolver):
    """Dormand–Prince 5(4) with Shampine's dense output: torchdiffeq's ``dopri5``."""

    name = "dopri5"
    order = 5
    tableau = EmbeddedTableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        error=(
            35 / 384 - 1951 / 21600,
            0.0,
            500 / 1113 - 22642 / 50085,
            125 / 192 - 451 / 720,
            -2187 / 6784 - -12231 / 42400,
            11 / 84 - 649 / 6300,
            -1.0 / 60.0,
        ),
        mid=(
            6025192743 / 30085553152 / 2,
            0.0,
            51252292925 / 65400821598 / 2,
            -2691868925 / 45128329728 / 2,
            187940372067 / 1594534317056 / 2,
            -1776094331 / 19743644256 / 2,
            11237099 / 235043384 / 2,
        ),
    )


class Bosh3(AdaptiveSolver):
    """Bogacki–Shampine 3(2): torchdiffeq's ``bosh3``."""

    name = "bosh3"
    order = 3
    tableau = EmbeddedTableau(
        c=(0.0, 1 / 2, 3 / 4, 1.0),
        a=((), (1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
        mid=(0.0, 0.5, 0.0, 0.0),
    )
