"""``odeint_adjoint``: torchdiffeq's continuous adjoint (Chen et al., NeurIPS 2018, Alg. 1), its interface whole.

Port of torchdiffeq 0.2's ``_impl/adjoint.py`` (MIT). Forward is :func:`anode_core.odeint` without a graph;
backward solves the augmented state ``(∂L/∂t, y, a, ∂L/∂θ…)`` from each output time to the one before with
``adjoint_method``/``adjoint_rtol``/``adjoint_atol``/``adjoint_options`` (defaults: the forward ones; the
adjoint norm defaults to the largest of the parts' norms, ``"seminorm"`` leaves the parameter gradients out of
the error estimate, Kidger et al., ICML 2021), restarting ``y`` from the forward value at each output time. The
gradient is that of the continuous problem, off from the computed solve's by an amount that shrinks with the
tolerances. Gradients flow to ``adjoint_params`` (default: ``func``'s parameters; a plain function must name them,
``()`` when there are none). ``func.callback_*_adjoint`` are called during the backward solves.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from anode_core.compat import METHODS, odeint
from anode_core.compat_inputs import ADJOINT_CALLBACKS, CALLBACKS, FlatFunc, check_inputs, flat_to_shape, mixed_norm


class _OdeintAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        shapes: Any,
        func: Any,
        y0: Tensor,
        t: Tensor,
        rtol: Any,
        atol: Any,
        method: str,
        options: dict[str, Any],
        event_fn: Any,
        adjoint_rtol: Any,
        adjoint_atol: Any,
        adjoint_method: str,
        adjoint_options: dict[str, Any],
        t_requires_grad: bool,
        *adjoint_params: Tensor,
    ) -> Any:
        ctx.func, ctx.shapes = func, shapes
        ctx.adjoint_rtol, ctx.adjoint_atol = adjoint_rtol, adjoint_atol
        ctx.adjoint_method, ctx.adjoint_options = adjoint_method, adjoint_options
        ctx.t_requires_grad, ctx.event_mode = t_requires_grad, event_fn is not None
        with torch.no_grad():
            ans = odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn)
            if event_fn is None:
                ctx.save_for_backward(t, ans, *adjoint_params)
            else:
                event_t, y = ans
                ctx.save_for_backward(t, y, event_t, *adjoint_params)
        return ans

    @staticmethod
    def backward(ctx: Any, *grad_y: Tensor) -> tuple[Tensor | None, ...]:
        with torch.no_grad():
            func = ctx.func
            if ctx.event_mode:
                t, y, event_t, *params = ctx.saved_tensors
                original_t = t
                t = torch.cat([t[0].reshape(-1), event_t.reshape(-1)])
                grad = grad_y[1]
            else:
                t, y, *params = ctx.saved_tensors
                grad = grad_y[0]
            adjoint_params = tuple(params)
            aug_state = [torch.zeros((), dtype=y.dtype, device=y.device), y[-1], grad[-1]]
            aug_state.extend(torch.zeros_like(p) for p in adjoint_params)
            t_requires_grad = ctx.t_requires_grad

            def augmented_dynamics(tt: Tensor, y_aug: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
                state, adj_y = y_aug[1], y_aug[2]
                with torch.enable_grad():
                    t_ = tt.detach()
                    tt = t_.requires_grad_(True)
                    state = state.detach().requires_grad_(True)
                    func_eval = func(tt if t_requires_grad else t_, state)
                    # tensors unused by func still count as used, so autograd.grad returns zeros and no error
                    _t = torch.as_strided(tt, (), ())  # noqa: F841
                    _y = torch.as_strided(state, (), ())  # noqa: F841
                    _params = tuple(torch.as_strided(p, (), ()) for p in adjoint_params)  # noqa: F841
                    vjp_t, vjp_y, *vjp_params = torch.autograd.grad(
                        func_eval, (tt, state, *adjoint_params), -adj_y, allow_unused=True, retain_graph=True
                    )
                vjp_t = torch.zeros_like(tt) if vjp_t is None else vjp_t
                vjp_y = torch.zeros_like(state) if vjp_y is None else vjp_y
                vjp_params = [
                    torch.zeros_like(p) if v is None else v for p, v in zip(adjoint_params, vjp_params, strict=True)
                ]
                return (vjp_t, func_eval, vjp_y, *vjp_params)

            dynamics: Any = _WithCallbacks(augmented_dynamics, func)
            time_vjps = torch.empty(len(t), dtype=t.dtype, device=t.device) if t_requires_grad else None
            for i in range(len(t) - 1, 0, -1):
                if time_vjps is not None:
                    slope = func(t[i], y[i])
                    dldt = slope.reshape(-1).dot(grad[i].reshape(-1))
                    aug_state[0] -= dldt
                    time_vjps[i] = dldt
                solved = odeint(
                    dynamics,
                    tuple(aug_state),
                    t[i - 1 : i + 1].flip(0),
                    rtol=ctx.adjoint_rtol,
                    atol=ctx.adjoint_atol,
                    method=ctx.adjoint_method,
                    options=ctx.adjoint_options,
                )
                aug_state = [a[1] for a in solved]
                aug_state[1] = y[i - 1]
                aug_state[2] += grad[i - 1]
            if time_vjps is not None:
                time_vjps[0] = aug_state[0]
                if ctx.event_mode:
                    time_vjps = torch.cat([time_vjps[0].reshape(-1), torch.zeros_like(original_t[1:])])
        return (None, None, aug_state[2], time_vjps, *([None] * 10), *aug_state[3:])


class _WithCallbacks(nn.Module):
    """The augmented dynamics, carrying ``func``'s adjoint callbacks under the forward callbacks' names."""

    def __init__(self, dynamics: Callable[..., Any], func: Any) -> None:
        super().__init__()
        self.dynamics = dynamics
        for name, adjoint_name in zip(CALLBACKS, ADJOINT_CALLBACKS, strict=True):
            callback = getattr(func, adjoint_name, None)
            if callback is not None:
                setattr(self, name, callback)

    def forward(self, t: Tensor, y: tuple[Tensor, ...]) -> Any:
        return self.dynamics(t, y)


def odeint_adjoint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float | Tensor = 1e-7,
    atol: float | Tensor = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[..., Tensor] | None = None,
    adjoint_rtol: float | Tensor | None = None,
    adjoint_atol: float | Tensor | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
) -> Any:
    """torchdiffeq's ``odeint_adjoint``: :func:`anode_core.odeint`'s values, the continuous adjoint's gradient."""
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError(
            "`adjoint_params` must be given when `func` is not an nn.Module: name the tensors func uses that need "
            "gradients (adjoint_params=(weight, ...)), or adjoint_params=() when there are none"
        )
    adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adjoint_atol = atol if adjoint_atol is None else adjoint_atol
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError(
            "`adjoint_options` must be given when `adjoint_method` differs from `method` and `options` are given: "
            "the forward options cannot be assumed to suit the adjoint method"
        )
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if options is not None else {}
    else:
        adjoint_options = dict(adjoint_options)
    if adjoint_params is None:
        assert isinstance(func, nn.Module)
        adjoint_params = tuple(func.parameters())
    else:
        adjoint_params = tuple(adjoint_params)
    given = len(adjoint_params)
    adjoint_params = tuple(p for p in adjoint_params if p.requires_grad)
    if len(adjoint_params) != given and callable(adjoint_options.get("norm")):
        warnings.warn(
            "an entry of `adjoint_params` does not require grad: it is left out of the adjoint pass and of the "
            "adjoint norm",
            stacklevel=2,
        )
    inp = check_inputs(func, y0, t, rtol, atol, method, options, event_fn, METHODS)
    _adjoint_norm(adjoint_options, inp.shapes, inp.options["norm"])
    # the flat, forward-time problem is handed to odeint again, as torchdiffeq does
    ans = _OdeintAdjoint.apply(
        inp.shapes,
        _Flat(inp.func),
        inp.y0,
        inp.t,
        inp.rtol,
        inp.atol,
        inp.method,
        inp.options,
        inp.event_fn,
        adjoint_rtol,
        adjoint_atol,
        adjoint_method,
        adjoint_options,
        inp.t.requires_grad,
        *adjoint_params,
    )
    if event_fn is None:
        solution = ans
    else:
        event_t, solution = ans
        event_t = event_t.to(t)
        if inp.reverse:
            event_t = -event_t
    if inp.shapes is not None:
        solution = flat_to_shape(solution, (len(t),), inp.shapes)
    return solution if event_fn is None else (event_t, solution)


class _Flat(nn.Module):
    """``func`` on the flat, forward-time state, with its callbacks, for the inner ``odeint`` calls."""

    def __init__(self, flat: FlatFunc) -> None:
        super().__init__()
        self.flat = flat
        for name in CALLBACKS:
            callback = getattr(flat.func, name, None)
            if callback is not None:
                setattr(self, name, _wrapped(callback, flat.shapes, flat.reverse))
        for name in ADJOINT_CALLBACKS:
            callback = getattr(flat.func, name, None)
            if callback is not None:
                setattr(self, name, callback)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return -1.0 * self.flat.user(-t, y) if self.flat.reverse else self.flat.user(t, y)


def _wrapped(callback: Callable[..., Any], shapes: Any, reverse: bool) -> Callable[..., Any]:
    def wrapped(t0: Tensor, y0: Tensor, dt: Tensor) -> Any:
        return callback(-t0 if reverse else t0, y0 if shapes is None else flat_to_shape(y0, (), shapes), dt)

    return wrapped


def _adjoint_norm(adjoint_options: dict[str, Any], shapes: Any, state_norm: Callable[[Tensor], Any]) -> None:
    """Choose or wrap the adjoint's norm in place (torchdiffeq's ``handle_adjoint_norm_``)."""

    def default_norm(parts: tuple[Tensor, ...]) -> Any:
        t, y, adj_y, *adj_params = parts
        return max(t.abs(), state_norm(y), state_norm(adj_y), mixed_norm(adj_params))

    norm = adjoint_options.get("norm")
    if norm is None:
        adjoint_options["norm"] = default_norm
    elif norm == "seminorm":

        def seminorm(parts: tuple[Tensor, ...]) -> Any:
            t, y, adj_y, *_ = parts
            return max(t.abs(), state_norm(y), state_norm(adj_y))

        adjoint_options["norm"] = seminorm
    elif isinstance(norm, str):
        raise ValueError(f"`adjoint_options['norm']` must be a callable or 'seminorm'; got {norm!r}")
    elif shapes is not None:

        def tuple_norm(parts: tuple[Tensor, ...]) -> Any:
            t, y, adj_y, *adj_params = parts
            return norm((t, *flat_to_shape(y, (), shapes), *flat_to_shape(adj_y, (), shapes), *adj_params))

        adjoint_options["norm"] = tuple_norm
