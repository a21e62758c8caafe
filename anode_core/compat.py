"""``odeint`` and ``odeint_event`` with torchdiffeq's interface and numbers, differentiated by any gradient method.

Not named ``odeint.py``: a submodule of that name would shadow the exported function (see ``solve.py``).

A torchdiffeq user changes one import::

    from anode_core import odeint          # was: from torchdiffeq import odeint
    ys = odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5", options=dict(...), gradient=Anode())

``y0`` may be a tensor or a tuple of tensors; ``t`` increasing or decreasing; every option torchdiffeq takes has
its meaning (adaptive: ``norm``, ``first_step``, ``min_step``, ``max_step``, ``step_t``, ``jump_t``, ``safety``,
``ifactor``, ``dfactor``, ``max_num_steps``, ``dtype``; fixed grids: ``step_size``, ``grid_constructor``,
``interp``, ``perturb``), and ``func``'s ``callback_step``, ``callback_accept_step``, ``callback_reject_step``
are called as there. An option a method does not take is ignored with a warning, as torchdiffeq does.

What is returned is what the solver computed: the adaptive controller's own values (:mod:`anode_core.controller`,
torchdiffeq's bits in float64, its number of evaluations) with the dense output at each ``t[i]``. A graph is built
only where a gradient is wanted (``y0``, ``t``, or a tensor ``func`` reaches requires grad, found from the first
evaluation): ``Direct`` replays the accepted steps with their graph in forward; ``Anode()`` runs the controller
alone in forward, keeping its graph; the default ``Anode(checkpoints="auto")`` runs it alone too, its graph holding
nothing but about sqrt(N) step starts, and rebuilds one segment at a time in backward
(:mod:`anode_core.gradients.stepwise`; explicit tableaux and adaptive pairs); any other method receives the
accepted grid, cut at the output times, as :class:`~anode_core.Problem` pieces through its ``solve`` hook.
All of them differentiate the solve with the accepted steps held fixed; ``t`` gets ``∂y(t_i)/∂t_i = f(t_i, y_i)``
and ``∂y(t_i)/∂t_0 = −Φ(t_i, t_0) f(t_0, y_0)``, as torchdiffeq's adjoint gives it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from anode_core.adaptive import AdaptiveSolver, Grid
from anode_core.adaptive_pairs import ADAPTIVE_METHODS
from anode_core.compat_inputs import (
    ADAPTIVE_OPTIONS,
    CALLBACKS,
    FIXED_OPTIONS,
    Inputs,
    check_inputs,
    flat_to_shape,
    unexpected,
)
from anode_core.controller import (
    Accepted,
    Controller,
    Options,
    Perturb,
    StepScope,
    no_scope,
    rebuild as rebuild_accepted,
    replay,
)
from anode_core.fixed_grid import integrate, integrate_until_event, rebuild as rebuild_grid, time_grid
from anode_core.gradients import Anode, Direct, GradientMethod
from anode_core.gradients.adaptive import _Stitch
from anode_core.gradients.recompute import BlockEnd, drop_kept_upstream
from anode_core.gradients.stepwise import Stepwise, graft
from anode_core.problem import Problem
from anode_core.reversible import DampedLeapfrog, ReversibleHeun, ReversibleSolver
from anode_core.solve import check_pairing, resolve_gradient
from anode_core.solvers import (
    IMPLICIT_SOLVERS,
    RK38,
    AdamsBashforth,
    AdamsBashforthMoulton,
    Euler,
    Heun,
    Heun3,
    Midpoint,
    RungeKutta,
    ScipySolver,
    Solver,
)
from anode_core.watch import shown

METHODS: dict[str, type[Solver]] = {
    **ADAPTIVE_METHODS,
    "euler": Euler,
    "midpoint": Midpoint,
    "heun2": Heun,
    "heun3": Heun3,
    "rk4": RK38,
    "explicit_adams": AdamsBashforth,
    "implicit_adams": AdamsBashforthMoulton,
    "fixed_adams": AdamsBashforthMoulton,
    **IMPLICIT_SOLVERS,
    "reversible_heun": ReversibleHeun,
    "alf": DampedLeapfrog,
    "scipy_solver": ScipySolver,
}


def odeint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float | Tensor = 1e-7,
    atol: float | Tensor = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[..., Tensor] | None = None,
    gradient: GradientMethod | str | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
) -> Any:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; ``y`` at every time of ``t`` (first axis), a tuple of such
    tensors for a tuple ``y0``. With ``event_fn``, ``t = [t0, t_any]`` and the solve stops where ``event_fn(t, y)``
    crosses 0: returns ``(event_t, y at [t0, event_t])``.

    ``method`` defaults to ``"dopri5"``; ``gradient=None`` takes the default of :func:`anode_core.use_gradient`,
    else ``Anode()``. ``adjoint_params`` are added to the tensors gradients flow to (found from ``func``'s first
    evaluation otherwise: parameters, closures, buffers that require grad).
    """
    inp = check_inputs(func, y0, t, rtol, atol, method, options, event_fn, METHODS)
    solver_cls = METHODS[inp.method]
    adaptive = issubclass(solver_cls, AdaptiveSolver)
    unexpected(inp.method, inp.options, ADAPTIVE_OPTIONS if adaptive else FIXED_OPTIONS | solver_knobs(solver_cls))
    valid = set(CALLBACKS) if adaptive else set() if solver_cls is ScipySolver else {"callback_step"}
    if inp.callback_names - valid:
        warnings.warn(
            f"method {inp.method!r} does not support callbacks {sorted(inp.callback_names - valid)}", stacklevel=2
        )
    grad_method = resolve_gradient(gradient, solver_cls)
    if gradient is None and inp.options.get("interp", "linear") != "linear" and isinstance(grad_method, Anode):
        grad_method = Anode()  # cubic interpolation reads across output times: the default takes the one-pass path
    if inp.event_fn is not None:
        event_t, flat = _until_event(inp, solver_cls, grad_method, adjoint_params)
        event_t = event_t.to(t)
        if inp.reverse:
            event_t = -event_t
        return event_t, flat if inp.shapes is None else flat_to_shape(flat, (2,), inp.shapes)
    flat = _solve(inp, solver_cls, grad_method, adjoint_params, t)
    return flat if inp.shapes is None else flat_to_shape(flat, (len(t),), inp.shapes)


def odeint_event(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t0: Tensor,
    *,
    event_fn: Callable[..., Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    **kwargs: Any,
) -> tuple[Tensor, Any]:
    """Solve from ``t0`` until ``event_fn(t, y) = 0``: ``(event_t, y at [t0, event_t])``, with the gradient
    of ``event_t`` through the implicit function theorem (torchdiffeq's ``odeint_event``). ``reverse_time``
    searches backwards; ``odeint_interface`` may be :func:`odeint_adjoint`."""
    if not isinstance(t0, Tensor):
        raise TypeError(f"`t0` must be a tensor (a 0-d time); got {type(t0).__name__}")
    step = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + step])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    shapes = None if isinstance(y0, Tensor) else [part.shape for part in y0]
    inp = check_inputs(func, y0, t, 0.0, 0.0, None, None, event_fn, METHODS)
    state_t = solution[-1] if shapes is None else torch.cat([s[-1].reshape(-1) for s in solution])
    if reverse_time:
        event_t = -event_t
    assert inp.event_fn is not None
    event_t, state_t = _ImplicitEventGradient.apply(inp.func, inp.event_fn, event_t, state_t)
    if reverse_time:
        event_t = -event_t
    if shapes is None:
        return event_t, torch.cat([solution[:-1], state_t[None]], dim=0)
    parts = flat_to_shape(state_t, (), shapes)
    return event_t, tuple(torch.cat([s[:-1], p[None]], dim=0) for s, p in zip(solution, parts, strict=True))


class _ImplicitEventGradient(torch.autograd.Function):
    """``event_t`` and ``y(event_t)`` forward; backward adds the gradient through ``event_fn(t, y(t)) = 0``."""

    @staticmethod
    def forward(ctx: Any, func: Any, event_fn: Any, event_t: Tensor, state_t: Tensor) -> tuple[Tensor, Tensor]:
        ctx.func, ctx.event_fn = func, event_fn
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach(), state_t.detach()

    @staticmethod
    def backward(ctx: Any, grad_t: Tensor, grad_state: Tensor) -> tuple[None, None, None, Tensor]:
        event_t, state_t = ctx.saved_tensors
        event_t = event_t.detach().clone().requires_grad_(True)
        state_t = state_t.detach().clone().requires_grad_(True)
        f_val = ctx.func(event_t, state_t)
        with torch.enable_grad():
            c, (par_dt, dstate) = torch.autograd.functional.vjp(  # type: ignore[no-untyped-call]
                ctx.event_fn, (event_t, state_t)
            )
        dcdt = par_dt + torch.sum(dstate * f_val)
        grad_t = grad_t + torch.sum(grad_state * f_val)
        dstate = dstate * (-grad_t / (dcdt + 1e-12)).reshape_as(c)
        return None, None, None, grad_state + dstate


def _options(inp: Inputs, solver_cls: type[Solver]) -> Options:
    o = inp.options
    dtype = torch.promote_types(o.get("dtype", torch.float64), inp.y0.abs().dtype)

    def tensor(name: str, default: Any) -> Any:
        value = o.get(name, default)
        if value is None:
            return None
        try:
            return torch.as_tensor(value, dtype=dtype, device=inp.y0.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"`options['{name}']` must be a number or a tensor; got {value!r}") from error

    max_num_steps = o.get("max_num_steps", 2**31 - 1)
    if isinstance(max_num_steps, bool) or not isinstance(max_num_steps, int) or max_num_steps < 1:
        raise ValueError(f"`options['max_num_steps']` must be an integer ≥ 1; got {max_num_steps!r}")
    for name in ("rtol", "atol"):
        value = getattr(inp, name)
        if not isinstance(value, Tensor) and not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"`{name}` must be a number ≥ 0 or a tensor; got {value!r}")
    return Options(
        rtol=torch.as_tensor(inp.rtol, dtype=dtype, device=inp.y0.device),
        atol=torch.as_tensor(inp.atol, dtype=dtype, device=inp.y0.device),
        norm=o["norm"],
        first_step=tensor("first_step", None),
        min_step=tensor("min_step", 0.0),
        max_step=tensor("max_step", float("inf")),
        step_t=tensor("step_t", None),
        jump_t=tensor("jump_t", None),
        safety=tensor("safety", 0.9),
        ifactor=tensor("ifactor", 10.0),
        dfactor=tensor("dfactor", 0.2),
        max_num_steps=max_num_steps,
    )


def _time_dtype(inp: Inputs) -> torch.dtype:
    return torch.promote_types(inp.options.get("dtype", torch.float64), inp.y0.abs().dtype)


def _leaves(output: Tensor, start: Tensor) -> list[Tensor]:
    """The tensors requiring grad that ``output`` was computed from (its graph's leaves), ``start`` and what it
    was computed from left out."""
    found: dict[int, Tensor] = {}
    pending, seen = [output.grad_fn], {id(start.grad_fn)} if start.grad_fn is not None else set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            found[id(variable)] = variable
            continue
        pending.extend(n for n, _ in node.next_functions)
    return list(found.values())


class _Plan:
    """One solve: its values without a graph, and the same solve again with one (sizes held fixed)."""

    def __init__(self, inp: Inputs, solver_cls: type[Solver], t: Tensor, grid: Tensor | None = None) -> None:
        self.inp, self.solver = inp, make_solver(solver_cls, inp)
        self.preset = grid
        """A fixed grid given by the caller (an event search's steps), else ``time_grid``'s."""
        self.adaptive = isinstance(self.solver, AdaptiveSolver)
        self.t = t.detach().to(_time_dtype(inp)) if self.adaptive else t.detach()
        self.steps: list[Accepted] = []
        self.grid: Tensor | None = None
        self.f0: Tensor | None = None
        self.probe: tuple[Tensor, Tensor] | None = None
        """``(z, f(t0, z))`` with its graph, ``z`` the detached start: the first evaluation, made once."""
        self.first: tuple[Tensor, Tensor] | None = None
        """A fixed grid's first evaluation ``(z, f(t0, z))``, made once: its first step uses it."""

    def values(
        self, y0: Tensor, f0: Tensor | None = None, graph: bool = False, scope: StepScope = no_scope
    ) -> list[Tensor]:
        """The solver's values at ``t[1:]`` (recording its steps); ``graph``: with the accepted steps' graph,
        each step's operations inside ``scope``."""
        inp = self.inp
        with torch.set_grad_enabled(graph):
            if isinstance(self.solver, AdaptiveSolver):
                tab, order = self.solver.tableau, self.solver.order
                opts = _options(inp, type(self.solver))
                ctl = Controller(tab, order, inp.func, y0, opts, inp.callbacks, inp.method, scope)
                ctl.start(self.t[0], self.f0 if f0 is None else f0)
                out = [ctl.advance(ti) for ti in self.t[1:]]
                self.steps = ctl.accepted
                return out
            if self.grid is None:
                self.grid = self.fixed_grid(y0)
            first = self._first(y0, graph)
            return integrate(self.solver, inp.func, y0, self.t, self.grid, inp.options, inp.callbacks.step, first,
                             scope)

    def fixed_grid(self, y0: Tensor) -> Tensor:
        return time_grid(self.inp.func, y0, self.t, self.inp.options) if self.preset is None else self.preset

    def graph(self, y0: Tensor) -> list[Tensor]:
        inp = self.inp
        if isinstance(self.solver, AdaptiveSolver):
            return replay(self.solver.tableau, inp.func, y0, self.t, self.steps)
        assert self.grid is not None
        return integrate(self.solver, inp.func, y0, self.t, self.grid, inp.options, _no_callback, self._first(y0, True))

    def _first(self, y0: Tensor, graph: bool) -> Tensor | None:
        """The first evaluation, once: its value for a solve without a graph; with its graph for one that grows
        from the probe's own start, else none (evaluated again)."""
        first, self.first = self.first, None
        if first is None:
            return None
        z, slope = first
        return slope.detach() if not graph else slope if z is y0 else None

    def float_grid(self) -> Grid:
        if self.adaptive:
            starts = tuple(s.t0.item() for s in self.steps)
            return Grid(starts, tuple(s.dt.item() for s in self.steps), self.t[-1].item())
        assert self.grid is not None
        points = self.grid.double().tolist()
        return Grid(tuple(points[:-1]), tuple(b - a for a, b in zip(points, points[1:], strict=False)), points[-1])


def solver_knobs(solver_cls: type[Solver]) -> frozenset[str]:
    """The options a fixed-grid solver takes as its own fields (``max_iters``, ``max_order``, ``tol``)."""
    names = {f.name for f in dataclasses.fields(solver_cls)} if dataclasses.is_dataclass(solver_cls) else set()
    return frozenset(names - {"rtol", "atol"})


def make_solver(solver_cls: type[Solver], inp: Inputs) -> Solver:
    """The solver, with ``rtol``/``atol`` where it judges convergence by them and its own options."""
    if issubclass(solver_cls, AdaptiveSolver):
        return solver_cls()
    names = {f.name for f in dataclasses.fields(solver_cls)} if dataclasses.is_dataclass(solver_cls) else set()
    kwargs = {k: v for k, v in inp.options.items() if k in solver_knobs(solver_cls)}
    for name in ("rtol", "atol"):
        value = getattr(inp, name)
        if name in names and not isinstance(value, Tensor):
            kwargs[name] = float(value)
    return solver_cls(**kwargs)


def _no_callback(t0: Tensor, y0: Tensor, dt: Tensor) -> None:
    return None


def _solve(
    inp: Inputs,
    solver_cls: type[Solver],
    method: GradientMethod,
    adjoint_params: Sequence[Tensor] | None,
    t_user: Tensor,
    grid: Tensor | None = None,
) -> Tensor:
    y0 = inp.y0
    if len(inp.t) == 1:
        return y0.unsqueeze(0)
    plan = _Plan(inp, solver_cls, inp.t, grid)
    problem = shown(_problem(inp, plan, _given(inp, adjoint_params)), y0)
    start = _StartTime.apply(y0, t_user[0], inp.func) if torch.is_grad_enabled() and t_user.requires_grad else y0
    direct = isinstance(method, Direct)
    rooted = not plan.adaptive and (direct or _stepwise(plan, method))  # a fixed grid's graph grows from start
    leaves = _probe(inp, plan, adjoint_params, start if rooted else None)
    wants = torch.is_grad_enabled() and (y0.requires_grad or t_user.requires_grad or bool(leaves))
    if isinstance(plan.solver, ReversibleSolver) or not (isinstance(method, (Direct, Anode))):
        check_pairing(plan.solver, method)
    if not wants:
        with torch.no_grad():
            rest = (
                plan.values(y0) if not isinstance(plan.solver, ReversibleSolver) else _pieces(plan, problem, y0, method)
            )
        return torch.stack([y0, *rest])
    if _stepwise(plan, method):
        rest = list(_stepwise_solve(plan, start).unbind(0))
    elif not isinstance(plan.solver, ReversibleSolver) and (
        (isinstance(method, Anode) and method.checkpoints is None) or (direct and plan.adaptive)
    ):
        rest_flat: Tensor = _ReplayInBackward.apply(plan, direct, start, *leaves)
        rest = list(rest_flat.unbind(0))
    elif isinstance(method, Direct) and not isinstance(plan.solver, ReversibleSolver):
        if plan.adaptive:
            plan.values(start)
        else:
            plan.grid = plan.fixed_grid(y0)
        rest = plan.graph(start)
    else:
        with torch.no_grad():
            values = plan.values(start) if not isinstance(plan.solver, ReversibleSolver) else None
        if plan.grid is None and not plan.adaptive:
            plan.grid = plan.fixed_grid(y0)
        problem = _problem(inp, plan, leaves)
        pieces = _pieces(plan, problem, start, method)
        rest = pieces if values is None else [_Stitch.apply(p, v) for p, v in zip(pieces, values, strict=True)]
    stacked = torch.stack(rest)
    if t_user.requires_grad:
        stacked = _OutputTimes.apply(stacked, t_user[1:], inp.func)
    return torch.cat([y0.unsqueeze(0), stacked])


def _stepwise(plan: _Plan, method: GradientMethod) -> bool:
    """``Anode(checkpoints="auto")`` on an adaptive pair or an explicit tableau with linear outputs: the solver runs
    once, backward rebuilds about sqrt(N) segments of it (:mod:`anode_core.gradients.stepwise`)."""
    if not (isinstance(method, Anode) and method.checkpoints == "auto"):
        return False
    if plan.adaptive:
        return plan.probe is not None
    return isinstance(plan.solver, RungeKutta) and plan.inp.options.get("interp", "linear") == "linear"


def _given(inp: Inputs, adjoint_params: Sequence[Tensor] | None) -> list[Tensor]:
    if adjoint_params is None:
        func = inp.func.func
        return [p for p in func.parameters() if p.requires_grad] if isinstance(func, nn.Module) else []
    return [p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad]


def _probe(
    inp: Inputs, plan: _Plan, adjoint_params: Sequence[Tensor] | None, start: Tensor | None = None
) -> list[Tensor]:
    """Under grad mode, the first evaluation runs with a graph: the tensors it reaches are what gradients flow to.
    It is the solve's own first evaluation (the controller's first slope, a fixed grid's first stage), so the
    field sees torchdiffeq's evaluations, no more. It is made from ``start`` (a solve that builds its graph from
    there), else from a detached copy of ``y0``."""
    given = _given(inp, adjoint_params)
    if isinstance(plan.solver, ReversibleSolver):
        return given
    if not torch.is_grad_enabled():
        return given
    t0 = plan.t[0]
    perturb = Perturb.NEXT if (not plan.adaptive and inp.options.get("perturb")) else Perturb.NONE
    z = inp.y0.detach().requires_grad_(inp.y0.requires_grad) if start is None else start
    with torch.enable_grad():
        probe = inp.func(t0, z, perturb)
    if plan.adaptive:
        plan.f0, plan.probe = probe.detach(), (z, probe)
    else:
        plan.first = (z, probe)
    found = {id(p): p for p in _leaves(probe, z) if p.requires_grad and p is not z} if probe.requires_grad else {}
    for p in given:
        found.setdefault(id(p), p)
    return list(found.values())


def _problem(inp: Inputs, plan: _Plan, leaves: Sequence[Tensor]) -> Problem:
    t0, t1 = float(plan.t[0]), float(plan.t[-1])
    solver = plan.solver
    if isinstance(solver, AdaptiveSolver):
        tol = [float(x) if not isinstance(x, Tensor) or x.numel() == 1 else 1e-7 for x in (inp.rtol, inp.atol)]
        solver = type(solver)(rtol=min(tol[0], 0.5), atol=min(tol[1], 0.5)) if tol[0] or tol[1] else solver
        grid = plan.float_grid() if plan.steps else None
        return Problem(inp.func, tuple(leaves), solver, t0, t1, len(grid) if grid else 0, grid)
    grid = plan.float_grid() if plan.grid is not None else None
    steps = len(grid) if grid is not None else len(plan.t) - 1
    return Problem(inp.func, tuple(leaves), solver, t0, t1, steps, grid, sides=bool(inp.options.get("perturb")))


def _pieces(plan: _Plan, problem: Problem, y0: Tensor, method: GradientMethod) -> list[Tensor]:
    """The grid cut at the output times, each piece a :class:`Problem` for ``method``'s ``solve`` hook."""
    if plan.grid is None and not plan.adaptive:
        plan.grid = plan.fixed_grid(y0)
    if plan.adaptive and not plan.steps:
        with torch.no_grad():
            plan.values(y0)
    grid = plan.float_grid()
    times = plan.t.double().tolist()

    def piece(g: Grid, y: Tensor) -> Tensor:
        return method.solve(problem.on_grid(g), y)

    if plan.adaptive:
        ends = [s + h for s, h in zip(grid.starts, grid.sizes, strict=True)]
        outputs, y, at = [], y0, 0
        for ti in times[1:]:
            m = next(k for k in range(at, len(ends)) if ends[k] >= ti)
            if m > at:
                y = piece(grid.segment(at, m, grid.starts[m]), y)
                at = m
            outputs.append(piece(grid.segment(m, m + 1, ti), y))
        return outputs
    if plan.inp.options.get("interp", "linear") != "linear":
        raise ValueError(
            f"`options['interp']` must be 'linear' with gradient={method!r}; 'cubic' is differentiated"
            " by Direct() and Anode() only"
        )
    points = [*grid.starts, grid.end]
    cells = [max(1, next(n for n in range(1, len(points)) if points[n] >= ti)) for ti in times[1:]]
    needed = sorted({0, *cells, *(c - 1 for c in cells)})
    states = {0: y0}
    for a, b in zip(needed, needed[1:], strict=False):
        states[b] = piece(Grid(grid.starts[a:b], grid.sizes[a:b], points[b]), states[a])
    outputs = []
    for ti, n in zip(times[1:], cells, strict=True):
        g0, g1, y_a, y_b = points[n - 1], points[n], states[n - 1], states[n]
        outputs.append(y_a if ti == g0 else y_b if ti == g1 else y_a + (ti - g0) / (g1 - g0) * (y_b - y_a))
    return outputs


class _ReplayInBackward(torch.autograd.Function):
    """ANODE on one ``odeint`` call: forward is the solver alone, run once. Like an ``Anode`` block that is the
    latest of its chain, it keeps the graph of its accepted steps (rejected trials hold nothing, step sizes are
    constants) until backward or until a later ``odeint`` call continues from its output; then backward
    replays the accepted steps with their graph (Zhuang et al.'s adaptive checkpoint adjoint, one block) and
    back-propagates once. Memory: at most one call's graph per chain, ``L·S + s·N_t·A``, as ``Anode``.
    ``Direct`` (``keep``) is the same forward whose graph is never dropped: one call's gradients are the same bits.
    """

    @staticmethod
    def forward(ctx: Any, plan: _Plan, keep: bool, y0: Tensor, *leaves: Tensor) -> Tensor:
        ctx.plan, ctx.leaves, ctx.kept, ctx.keep = plan, leaves, None, keep
        ctx.save_for_backward(y0)
        _drop_kept_upstream(y0)
        if not plan.adaptive or plan.probe is None:
            return torch.stack(plan.values(y0))
        z, f0 = _root(plan, y0)
        with torch.enable_grad():
            out = torch.stack(plan.values(z, f0, graph=True))
        ctx.kept = (z, out)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (y0,) = ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:]
        kept, ctx.kept = ctx.kept, None
        with torch.enable_grad():
            if kept is None:
                z = y0.detach().requires_grad_(True)
                out = torch.stack(ctx.plan.graph(z))
            else:
                z, out = kept
            inputs = [x for x, want in zip((z, *ctx.leaves), wanted, strict=True) if want and x.requires_grad]
            found = iter(torch.autograd.grad(out, inputs, grad, allow_unused=True)) if inputs else iter(())
        return (
            None,
            None,
            *(
                next(found) if want and x.requires_grad else None
                for x, want in zip((z, *ctx.leaves), wanted, strict=True)
            ),
        )


def _root(plan: _Plan, y0: Tensor) -> tuple[Tensor, Tensor]:
    """``(z, f(t0, z))`` with its graph, ``z`` a leaf equal to ``y0`` from which the solve's graph grows: the probe's
    (:func:`_probe`), unless ``y0`` needs a gradient the probe's ``z`` does not take (only ``t[0]`` asked for
    one): then the first slope is evaluated again."""
    assert plan.probe is not None
    (z, f0), plan.probe = plan.probe, None
    if y0.requires_grad and not z.requires_grad:
        z = y0.detach().requires_grad_(True)
        with torch.enable_grad():
            f0 = plan.inp.func(plan.t[0], z, Perturb.NONE)
    return z, f0


def _stepwise_solve(plan: _Plan, start: Tensor) -> Tensor:
    """The solver once, its graph growing from ``start`` with nothing saved in it but about sqrt(N) step starts
    (:class:`Stepwise`): ``y`` at ``t[1:]``, stacked. On an adaptive pair the first slope is the probe's
    (:func:`_probe`), grafted onto ``start``."""
    func = plan.inp.func
    _drop_kept_upstream(start)
    drop_kept_upstream(start)
    if plan.adaptive:
        assert plan.probe is not None and isinstance(plan.solver, AdaptiveSolver)  # _stepwise checked
        (z, f0), plan.probe = plan.probe, None
        if start.requires_grad and not z.requires_grad:  # only t[0] wants a gradient: a first slope from start
            f0 = func(plan.t[0], start, Perturb.NONE)
        elif start.requires_grad:
            f0 = graft(start, z, f0)
        tableau = plan.solver.tableau
        sw = Stepwise(func, lambda *a: rebuild_accepted(tableau, func, plan.steps)(*a), None)  # steps: known later
    else:
        assert isinstance(plan.solver, RungeKutta)  # _stepwise checked
        f0, plan.grid = None, plan.fixed_grid(start)  # an event's second solve keeps the search's steps
        perturb = bool(plan.inp.options.get("perturb", False))
        first = plan.first[1] if plan.first is not None and plan.first[0] is start else None  # the probe's, reused
        sw = Stepwise(func, rebuild_grid(plan.solver, func, plan.grid, perturb, first), len(plan.grid) - 1)
    with sw.hooks(start):
        out = torch.stack(plan.values(start, f0, graph=True, scope=sw.step))
    sw.finish(len(plan.steps) if plan.adaptive else sw.steps)
    ended: Tensor = BlockEnd.apply(out, sw)
    return ended


def _drop_kept_upstream(y0: Tensor) -> None:
    """Drop the kept graph of every earlier ``odeint`` call ``y0`` descends from (the walk stops at each)."""
    pending, seen = [y0.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, _ReplayInBackward._backward_cls):
            ctx: Any = node
            if not ctx.keep:  # Direct keeps its graph
                ctx.kept = None
            continue
        pending.extend(n for n, _ in node.next_functions)


class _StartTime(torch.autograd.Function):
    """``y0`` itself; backward gives ``t0`` its gradient ``−⟨a0, f(t0, y0)⟩`` from the gradient ``a0`` that
    reached the solve's start (the first output ``y(t0) = y0`` does not pass here)."""

    @staticmethod
    def forward(ctx: Any, y0: Tensor, t0: Tensor, func: Any) -> Tensor:
        ctx.func = func
        ctx.save_for_backward(y0, t0)
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        y0, t0 = ctx.saved_tensors
        with torch.no_grad():
            slope = ctx.func.user(t0.to(y0.abs().dtype), y0)
        return grad, -torch.sum(grad * slope).reshape(()).to(t0.dtype), None


class _OutputTimes(torch.autograd.Function):
    """``y(t_1 …)`` themselves; backward gives each ``t_i`` the gradient ``⟨g_i, f(t_i, y_i)⟩``."""

    @staticmethod
    def forward(ctx: Any, ys: Tensor, t: Tensor, func: Any) -> Tensor:
        ctx.func = func
        ctx.save_for_backward(ys, t)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        ys, t = ctx.saved_tensors
        with torch.no_grad():
            slopes = torch.stack([ctx.func.user(ti.to(y.abs().dtype), y) for ti, y in zip(t, ys, strict=True)])
        dims = tuple(range(1, grad.dim()))
        return grad, (grad * slopes).sum(dim=dims).to(t.dtype) if dims else (grad * slopes).to(t.dtype), None


def _until_event(
    inp: Inputs, solver_cls: type[Solver], method: GradientMethod, adjoint_params: Sequence[Tensor] | None
) -> tuple[Tensor, Tensor]:
    """Find the event without a graph, then solve to it as an ordinary two-time solve on the same steps (a fixed
    grid: the search's own, its last step past the event, so a multistep history and the interpolation are the
    search's)."""
    assert inp.event_fn is not None
    solver = make_solver(solver_cls, inp)
    y0 = inp.y0
    grid = None
    with torch.no_grad():
        if isinstance(solver, AdaptiveSolver):
            t0 = inp.t[0].to(y0.device, _time_dtype(inp))
            ctl = Controller(
                solver.tableau, solver.order, inp.func, y0, _options(inp, solver_cls), inp.callbacks, inp.method
            )
            ctl.start(t0)
            event_t, y_event = ctl.advance_until_event(inp.event_fn)
        elif isinstance(solver, ReversibleSolver):
            raise ValueError(f"`event_fn` is not supported with method={inp.method!r}: use an adaptive method")
        else:
            event_t, y_event, grid = integrate_until_event(
                solver, inp.func, y0, inp.t[0], inp.options, inp.event_fn, float(torch.as_tensor(inp.atol).max())
            )
    wants = torch.is_grad_enabled() and (
        y0.requires_grad
        or any(p.requires_grad for p in adjoint_params or ())
        or (isinstance(inp.func.func, nn.Module) and any(p.requires_grad for p in inp.func.func.parameters()))
    )
    if not wants or event_t <= inp.t[0]:
        return event_t, torch.stack([y0, y_event])
    times = torch.stack([inp.t[0].to(event_t.dtype), event_t])
    inp2 = Inputs(**{**inp.__dict__, "t": times, "event_fn": None})
    flat = _solve(inp2, solver_cls, method, adjoint_params, times, grid)  # the search's steps, whatever the method
    return event_t, flat
