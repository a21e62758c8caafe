"""torchdiffeq's adaptive Runge–Kutta loop, op for op, on one flat state tensor: what ``odeint`` returns.

A port of torchdiffeq 0.2 (``_impl/rk_common.py``: ``RKAdaptiveStepsizeODESolver``, ``_runge_kutta_step``;
``misc.py``: ``_select_initial_step``, ``_optimal_step_size``; ``interp.py``; ``event_handling.py``; MIT licence,
Chen et al. 2018) written against :class:`~anode_core.adaptive.EmbeddedTableau` data. Times are float64 tensors
and every operation is torchdiffeq's, so a float64 solve returns torchdiffeq's bits with as many field
evaluations; the state may be float32 (the times stay float64, as there).

The controller runs without a graph and records the accepted steps (:class:`Accepted`). :func:`replay` runs
those steps again, with the same operations and the step sizes held fixed, where a graph is wanted: it returns
the same values, so every gradient method differentiates exactly the map whose values ``odeint`` returned.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

import torch
from torch import Tensor

from anode_core.adaptive import EmbeddedTableau

Norm = Callable[[Tensor], Tensor]


class Perturb(Enum):
    """Which side of a discontinuity at ``t`` the field is evaluated on (torchdiffeq's ``Perturb``)."""

    NONE = 0
    PREV = 1
    NEXT = 2


FlatField = Callable[[Tensor, Tensor, Perturb], Tensor]
"""``f(t, y, perturb)`` on the flat state: ``t`` a 0-d time tensor."""

StepScope = Callable[..., AbstractContextManager[object]]
"""``scope(n, start=None)``: the context the graph-building operations of accepted step ``n`` run in (a trial's
first entry passes its start ``(y, f)``); :class:`anode_core.gradients.stepwise.Stepwise` hooks in there."""


def no_scope(n: int, start: tuple[Tensor, ...] | None = None) -> AbstractContextManager[object]:
    return nullcontext()


def rms(tensor: Tensor) -> Tensor:
    return tensor.abs().pow(2).mean().sqrt()


@dataclass
class Options:
    """The adaptive options ``odeint`` takes, with torchdiffeq's meaning and defaults."""

    rtol: Tensor
    atol: Tensor
    norm: Norm = rms
    first_step: Tensor | None = None
    min_step: Tensor = field(default_factory=lambda: torch.tensor(0.0, dtype=torch.float64))
    max_step: Tensor = field(default_factory=lambda: torch.tensor(math.inf, dtype=torch.float64))
    step_t: Tensor | None = None
    jump_t: Tensor | None = None
    safety: Tensor = field(default_factory=lambda: torch.tensor(0.9, dtype=torch.float64))
    ifactor: Tensor = field(default_factory=lambda: torch.tensor(10.0, dtype=torch.float64))
    dfactor: Tensor = field(default_factory=lambda: torch.tensor(0.2, dtype=torch.float64))
    max_num_steps: int = 2**31 - 1


class Callbacks(NamedTuple):
    step: Callable[[Tensor, Tensor, Tensor], object]
    accept: Callable[[Tensor, Tensor, Tensor], object]
    reject: Callable[[Tensor, Tensor, Tensor], object]


def _none(t0: Tensor, y0: Tensor, dt: Tensor) -> None:
    return None


NO_CALLBACKS = Callbacks(_none, _none, _none)


class _State(NamedTuple):
    y1: Tensor
    f1: Tensor
    t0: Tensor
    t1: Tensor
    dt: Tensor
    coefficients: list[Tensor]


@dataclass(frozen=True)
class Accepted:
    """One accepted step: from ``t0`` by ``dt`` to ``t1`` (float64 tensors); ``jump``: ``f`` restarts after it."""

    t0: Tensor
    dt: Tensor
    t1: Tensor
    jump: bool


class Tables:
    """A tableau's coefficients as tensors of the state's dtype and device (torchdiffeq keeps them so)."""

    def __init__(self, tableau: EmbeddedTableau, like: Tensor) -> None:
        def as_tensor(values: tuple[float, ...]) -> Tensor:
            return torch.tensor(values, dtype=torch.float64).to(device=like.device, dtype=like.dtype)

        self.alpha = tableau.c[1:]
        self.beta = [as_tensor(row) for row in tableau.a[1:]]
        self.c_sol = as_tensor(tableau.b)
        self.c_error = as_tensor(tableau.error)
        self.mid = as_tensor(tableau.mid)
        self.fsal = tableau.b[-1] == 0 and tuple(tableau.b[:-1]) == tuple(tableau.a[-1])


def rk_step(
    f: FlatField, y0: Tensor, f0: Tensor, t0: Tensor, dt: Tensor, t1: Tensor, tab: Tables
) -> tuple[Tensor, ...]:
    """One trial step: ``(y1, f1, error estimate, stages k)`` (torchdiffeq's ``_runge_kutta_step``)."""
    t_dtype = y0.abs().dtype
    t0, dt, t1 = t0.to(t_dtype), dt.to(t_dtype), t1.to(t_dtype)
    k = torch.empty(*f0.shape, len(tab.alpha) + 1, dtype=y0.dtype, device=y0.device)
    k = _assign(k, f0, 0)
    yi = y0
    for i, (alpha_i, beta_i) in enumerate(zip(tab.alpha, tab.beta, strict=True)):
        if alpha_i == 1.0:
            ti, perturb = t1, Perturb.PREV
        else:
            ti, perturb = t0 + alpha_i * dt, Perturb.NONE
        yi = y0 + torch.sum(k[..., : i + 1] * (beta_i * dt), dim=-1).view_as(f0)
        k = _assign(k, f(ti, yi, perturb), i + 1)
    if not tab.fsal:
        yi = y0 + torch.sum(k * (dt * tab.c_sol), dim=-1).view_as(f0)
    return yi, k[..., -1], torch.sum(k * (dt * tab.c_error), dim=-1), k


def _assign(k: Tensor, value: Tensor, index: int) -> Tensor:
    """``k[..., index] = value`` that keeps a graph through ``k`` (torchdiffeq's ``_UncheckedAssign``)."""
    if not (k.requires_grad or value.requires_grad):
        k[..., index] = value
        return k
    out: Tensor = _UncheckedAssign.apply(k, value, index)
    return out


class _UncheckedAssign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, scratch: Tensor, value: Tensor, index: int) -> Tensor:
        ctx.index = index  # type: ignore[attr-defined]
        scratch.data[..., index] = value
        return scratch

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        return grad, grad[..., ctx.index], None  # type: ignore[attr-defined]


def interp_fit(y0: Tensor, y1: Tensor, k: Tensor, dt: Tensor, tab: Tables) -> list[Tensor]:
    """Shampine's quartic through ``y0``, ``y(t + dt/2)``, ``y1`` and the end slopes (``_interp_fit``)."""
    dt = dt.type_as(y0)
    y_mid = y0 + torch.sum(k * (dt * tab.mid), dim=-1).view_as(y0)
    f0, f1 = k[..., 0], k[..., -1]
    a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
    b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
    c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
    return [y0, dt * f0, c, b, a]


def interp_evaluate(coefficients: list[Tensor], t0: Tensor, t1: Tensor, t: Tensor) -> Tensor:
    x = ((t - t0) / (t1 - t0)).to(coefficients[0].dtype)
    total = coefficients[0] + x * coefficients[1]
    power = x
    for c in coefficients[2:]:
        power = power * x
        total = total + power * c
    return total


def initial_step(f: FlatField, t0: Tensor, y0: Tensor, f0: Tensor, order: int, opts: Options) -> Tensor:
    """Hairer, Nørsett & Wanner's starting step (*Solving ODEs I*, §II.4), as torchdiffeq computes it."""
    scale = opts.atol + torch.abs(y0) * opts.rtol
    d0 = opts.norm(y0 / scale).abs()
    d1 = opts.norm(f0 / scale).abs()
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = torch.tensor(1e-6, dtype=y0.dtype, device=y0.device)
    else:
        h0 = 0.01 * d0 / d1
    h0 = h0.abs()
    f1 = f(t0 + h0, y0 + h0 * f0, Perturb.NONE)
    d2 = torch.abs(opts.norm((f1 - f0) / scale) / h0)
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = torch.max(torch.tensor(1e-6, dtype=y0.dtype, device=y0.device), h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / float(order))
    return torch.min(100 * h0, h1.abs()).to(t0.dtype)


def optimal_step(last: Tensor, ratio: Tensor, order: int, opts: Options) -> Tensor:
    if ratio == 0:
        return last * opts.ifactor
    dfactor = torch.ones((), dtype=last.dtype, device=last.device) if ratio < 1 else opts.dfactor
    ratio = ratio.type_as(last)
    exponent = torch.tensor(order, dtype=last.dtype, device=last.device).reciprocal()
    return last * torch.min(opts.ifactor, torch.max(opts.safety / ratio**exponent, dfactor))


class Controller:
    """torchdiffeq's ``RKAdaptiveStepsizeODESolver`` on a flat state, recording its accepted steps.

    Run under grad mode it builds the graph of its accepted steps (a rejected trial's graph is dropped with it)
    with the step sizes constant: what ``Anode()`` keeps for one ``odeint`` call (see :mod:`anode_core.compat`).
    """

    def __init__(
        self,
        tableau: EmbeddedTableau,
        order: int,
        f: FlatField,
        y0: Tensor,
        opts: Options,
        callbacks: Callbacks = NO_CALLBACKS,
        method: str = "",
        scope: StepScope = no_scope,
    ) -> None:
        self.tab = Tables(tableau, y0)
        self.order, self.f, self.y0, self.opts, self.callbacks, self.method = order, f, y0, opts, callbacks, method
        self.scope = scope
        self.accepted: list[Accepted] = []
        self.step_t = torch.tensor([], dtype=torch.float64)
        self.jump_t = torch.tensor([], dtype=torch.float64)
        self.next_step = self.next_jump = 0

    def start(self, t0: Tensor, f0: Tensor | None = None) -> None:
        """torchdiffeq's ``_before_integrate``; ``f0``: ``f(t0, y0)`` when the caller evaluated it already."""
        f0 = self.f(t0, self.y0, Perturb.NONE) if f0 is None else f0
        opts = self.opts
        with torch.no_grad():  # step sizes are constants for every gradient (held fixed)
            first = (
                initial_step(self.f, t0, self.y0, f0, self.order, opts) if opts.first_step is None else opts.first_step
            )
        self.state = _State(self.y0, f0, t0, t0, first, [self.y0] * 5)
        self.step_t = _sorted_after(opts.step_t, t0)
        self.jump_t = _sorted_after(opts.jump_t, t0)
        if (torch.unique(torch.cat([self.step_t, self.jump_t]), return_counts=True)[1] > 1).any():
            raise ValueError("`step_t` and `jump_t` must not have any repeated elements between them.")
        self.next_step = min(bisect.bisect(self.step_t.tolist(), t0.item()), len(self.step_t) - 1)
        self.next_jump = min(bisect.bisect(self.jump_t.tolist(), t0.item()), len(self.jump_t) - 1)

    def advance(self, next_t: Tensor) -> Tensor:
        """The dense output at ``next_t``, stepping until a step reaches it."""
        n = 0
        while next_t > self.state.t1:
            self._check_count(n)
            self.state = self.step(self.state)
            n += 1
        return interp_evaluate(self.state.coefficients, self.state.t0, self.state.t1, next_t)

    def advance_until_event(self, event_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """``(t, y(t))`` with ``event_fn(t, y(t)) = 0``: steps until its sign changes, then bisects."""
        s = self.state
        if event_fn(s.t1, s.y1) == 0:
            return s.t1, s.y1
        n = 0
        sign0 = torch.sign(event_fn(s.t1, s.y1))
        while sign0 == torch.sign(event_fn(self.state.t1, self.state.y1)):
            self._check_count(n)
            self.state = self.step(self.state)
            n += 1
        s = self.state
        return find_event(
            lambda t: interp_evaluate(s.coefficients, s.t0, s.t1, t), sign0, s.t0, s.t1, event_fn, self.opts.atol
        )

    def _check_count(self, n: int) -> None:
        if n >= self.opts.max_num_steps:
            raise RuntimeError(
                f"{self.method}: max_num_steps exceeded ({n}>={self.opts.max_num_steps}) at "
                f"t={self.state.t1.item():.6g}: raise options['max_num_steps'] or loosen rtol/atol"
            )

    def step(self, s: _State) -> _State:
        """One trial step (``_adaptive_step``): accepted or rejected, then the next step size."""
        opts, y0, f0, t0, dt = self.opts, s.y1, s.f1, s.t1, s.dt
        if not torch.isfinite(dt):
            dt = opts.min_step
        dt = dt.clamp(opts.min_step, opts.max_step)
        self.callbacks.step(t0, y0, dt)
        t1 = t0 + dt
        if not t0 + dt > t0:
            raise RuntimeError(
                f"{self.method}: underflow in dt {dt.item()} at t={t0.item():.6g}; the field may be stiff or blow up:"
                " loosen rtol/atol, set options['min_step'], or shorten the time span"
            )
        if not torch.isfinite(y0).all():
            raise RuntimeError(f"{self.method}: non-finite values in state `y` at t={t0.item():.6g}")
        on_step = False
        if len(self.step_t):
            nxt = self.step_t[self.next_step]
            on_step = bool(t0 < nxt < t0 + dt)
            if on_step:
                t1, dt = nxt, nxt - t0
        on_jump = False
        if len(self.jump_t):
            nxt = self.jump_t[self.next_jump]
            on_jump = bool(t0 < nxt < t0 + dt)
            if on_jump:
                on_step = False
                t1, dt = nxt, nxt - t0
        with self.scope(len(self.accepted), (y0, f0)):
            y1, f1, error, k = rk_step(self.f, y0, f0, t0, dt, t1, self.tab)
        with torch.no_grad():
            ratio = opts.norm(error / (opts.atol + opts.rtol * torch.max(y0.abs(), y1.abs()))).abs()
        accept = bool(ratio <= 1)
        if dt > opts.max_step:
            accept = False
        if dt <= opts.min_step:
            accept = True
        coefficients = s.coefficients
        if accept:
            self.callbacks.accept(t0, y0, dt)
            t_next, y_next = t1, y1
            with self.scope(len(self.accepted)):
                coefficients = interp_fit(y0, y1, k, dt, self.tab)
                if on_jump:
                    f1 = self.f(t_next, y_next, Perturb.NEXT)
            if on_step and self.next_step != len(self.step_t) - 1:
                self.next_step += 1
            if on_jump and self.next_jump != len(self.jump_t) - 1:
                self.next_jump += 1
            self.accepted.append(Accepted(t0, dt, t1, on_jump))
            f_next = f1
        else:
            self.callbacks.reject(t0, y0, dt)
            t_next, y_next, f_next = t0, y0, f0
        dt_next = optimal_step(dt, ratio, self.order, opts).clamp(opts.min_step, opts.max_step)
        return _State(y_next, f_next, t0, t_next, dt_next, coefficients)


def _sorted_after(values: Tensor | None, t0: Tensor) -> Tensor:
    if values is None:
        return torch.tensor([], dtype=torch.float64, device=t0.device)
    values = values.to(t0.dtype)
    return torch.sort(values[values >= t0]).values


def find_event(
    interp: Callable[[Tensor], Tensor],
    sign0: Tensor,
    t0: Tensor,
    t1: Tensor,
    event_fn: Callable[[Tensor, Tensor], Tensor],
    tol: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """Bisection for the root of ``event_fn`` on the dense output over ``[t0, t1]`` (``find_event``)."""
    with torch.no_grad():
        iterations = torch.ceil(torch.log((t1 - t0) / tol) / math.log(2.0))
        for _ in range(int(iterations.long())):
            t_mid = (t1 + t0) / 2.0
            same = sign0 == torch.sign(event_fn(t_mid, interp(t_mid)))
            t0 = torch.where(same, t_mid, t0)
            t1 = torch.where(same, t1, t_mid)
        event_t = (t0 + t1) / 2.0
    return event_t, interp(event_t)


def integrate(ctl: Controller, t: Tensor) -> Tensor:
    """The controller's values at every time of ``t`` (increasing, float64): torchdiffeq's ``integrate``."""
    solution = torch.empty(len(t), *ctl.y0.shape, dtype=ctl.y0.dtype, device=ctl.y0.device)
    solution[0] = ctl.y0
    ctl.start(t[0])
    for i in range(1, len(t)):
        solution[i] = ctl.advance(t[i])
    return solution


def rebuild(tableau: EmbeddedTableau, f: FlatField, steps: list[Accepted]) -> Callable[..., None]:
    """What :class:`~anode_core.gradients.stepwise.Stepwise` replays: accepted steps ``a … b − 1`` from their
    start ``(y, f)``, each with the operations the controller ran on it (:meth:`Controller.step`)."""

    def run(a: int, b: int, start: tuple[Tensor, ...], scope: StepScope) -> None:
        tab = Tables(tableau, start[0])
        y, fy = start
        for n in range(a, b):
            step = steps[n]
            with scope(n, (y, fy)):
                y1, f1, _, k = rk_step(f, y, fy, step.t0, step.dt, step.t1, tab)
            with scope(n):
                interp_fit(y, y1, k, step.dt, tab)
                if step.jump:
                    f1 = f(step.t1, y1, Perturb.NEXT)
            y, fy = y1, f1

    return run


def replay(tableau: EmbeddedTableau, f: FlatField, y0: Tensor, t: Tensor, steps: list[Accepted]) -> list[Tensor]:
    """The accepted ``steps`` again, same operations, sizes held fixed: ``y`` at ``t[1:]`` with a graph.

    Costs ``1 + (s − 1)·len(steps)`` evaluations (plus one after each ``jump_t``), none for rejected trials.
    """
    tab = Tables(tableau, y0)
    y, fy = y0, f(t[0], y0, Perturb.NONE)
    outputs: list[Tensor] = []
    i = 1
    for step in steps:
        y1, f1, _, k = rk_step(f, y, fy, step.t0, step.dt, step.t1, tab)
        if i < len(t) and t[i] <= step.t1:
            coefficients = interp_fit(y, y1, k, step.dt, tab)
            while i < len(t) and t[i] <= step.t1:
                outputs.append(interp_evaluate(coefficients, step.t0, step.t1, t[i]))
                i += 1
        if step.jump:
            f1 = f(step.t1, y1, Perturb.NEXT)
        y, fy = y1, f1
    return outputs
