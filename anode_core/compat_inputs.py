"""What ``odeint`` does to its arguments before solving, as torchdiffeq does (``_impl/misc.py``: ``_check_inputs``).

A tuple state is flattened into one tensor (``torch.cat`` of the reshaped parts; the field sees the tuple, the norm
sees the tuple); decreasing times are negated (``func`` is called at ``−s`` and its slope negated, ``step_t``,
``jump_t`` and ``grid_constructor`` follow); the field takes a ``perturb`` side; callbacks are read off ``func``.
Every error names the argument or option as the caller spelled it. Port of torchdiffeq 0.2 (MIT), Chen et al.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from anode_core.controller import Callbacks, Perturb, rms

CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
ADJOINT_CALLBACKS = tuple(name + "_adjoint" for name in CALLBACKS)
ADAPTIVE_OPTIONS = frozenset(
    {
        "norm",
        "first_step",
        "min_step",
        "max_step",
        "step_t",
        "jump_t",
        "safety",
        "ifactor",
        "dfactor",
        "max_num_steps",
        "dtype",
    }
)
FIXED_OPTIONS = frozenset({"norm", "step_size", "grid_constructor", "interp", "perturb"})

UserFunc = Callable[..., Any]


def mixed_norm(tensors: Sequence[Tensor]) -> Tensor | float:
    """The largest root-mean-square over the parts of a tuple state (torchdiffeq's ``_mixed_norm``)."""
    return max([rms(x) for x in tensors]) if len(tensors) else 0.0


def flat_to_shape(tensor: Tensor, length: tuple[int, ...], shapes: Sequence[torch.Size]) -> tuple[Tensor, ...]:
    parts, total = [], 0
    for shape in shapes:
        nxt = total + shape.numel()
        parts.append(tensor[..., total:nxt].view((*length, *shape)))
        total = nxt
    return tuple(parts)


class FlatFunc(nn.Module):
    """``func`` on the flat increasing-time state: ``f(t, y, perturb)``; ``t`` is cast to the state's real dtype
    and nudged one ulp to the requested side (torchdiffeq's ``_TupleFunc``, ``_ReverseFunc``, ``_PerturbFunc``)."""

    def __init__(self, func: UserFunc, shapes: Sequence[torch.Size] | None, reverse: bool) -> None:
        super().__init__()
        self.func = func
        self.shapes = shapes
        self.reverse = reverse

    def user(self, t: Tensor, y: Tensor) -> Tensor:
        """``func`` at the user's time ``t`` on the flat state, its slope flat."""
        if self.shapes is None:
            out: Tensor = self.func(t, y)
            return out
        parts = self.func(t, flat_to_shape(y, (), self.shapes))
        return torch.cat([p.reshape(-1) for p in parts])

    def forward(self, t: Tensor | float, y: Tensor, perturb: Perturb = Perturb.NONE) -> Tensor:
        if not isinstance(t, Tensor):  # a Problem's solvers pass Python floats (the replay of other methods)
            t = torch.tensor(t, dtype=torch.float64, device=y.device)
        if torch.is_complex(t):
            t = t.real
        t = t.to(y.abs().dtype)
        if perturb is not Perturb.NONE:
            with torch.no_grad():
                t = torch.nextafter(t, t + 1 if perturb is Perturb.NEXT else t - 1)
        if self.reverse:
            return -1.0 * self.user(-t, y)
        return self.user(t, y)


@dataclass
class Inputs:
    """``odeint``'s arguments after :func:`check_inputs`: a flat state solved forward in time."""

    shapes: list[torch.Size] | None
    func: FlatFunc
    y0: Tensor
    t: Tensor
    rtol: Tensor | float
    atol: Tensor | float
    method: str
    options: dict[str, Any]
    event_fn: Callable[[Tensor, Tensor], Tensor] | None
    reverse: bool
    callbacks: Callbacks
    callback_names: set[str]
    adjoint_callbacks: dict[str, Callable[..., Any]]


def check_inputs(
    func: UserFunc,
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    rtol: Any,
    atol: Any,
    method: str | None,
    options: dict[str, Any] | None,
    event_fn: Callable[[Tensor, Any], Tensor] | None,
    methods: dict[str, Any],
) -> Inputs:
    if not callable(func):
        raise TypeError(f"`func` must be callable as func(t, y) -> dy/dt; got {type(func).__name__}")
    _check_time(t)
    if event_fn is not None:
        if len(t) != 2:
            raise ValueError(
                f"`t` must hold 2 times (the start and a time in the direction to search) when "
                f"`event_fn` is given; got len(t)={len(t)}"
            )
        event_fn = _combined_event(event_fn, t[0], y0)
    shapes: list[torch.Size] | None = None
    if isinstance(y0, tuple):
        if not all(isinstance(part, Tensor) for part in y0):
            raise TypeError(
                "`y0` must be a tensor or a tuple of tensors; got a tuple holding "
                f"{sorted({type(p).__name__ for p in y0})}"
            )
        shapes = [part.shape for part in y0]
        rtol, atol = _tuple_tol("rtol", rtol, shapes), _tuple_tol("atol", atol, shapes)
        y0 = torch.cat([part.reshape(-1) for part in y0])
        if event_fn is not None:
            event_fn = _tuple_event(event_fn, shapes)
    elif not isinstance(y0, Tensor):
        raise TypeError(f"`y0` must be a tensor or a tuple of tensors; got {type(y0).__name__}")
    if not (y0.is_floating_point() or y0.is_complex()):
        raise TypeError(f"`y0` must be a floating-point tensor; got dtype {y0.dtype}")
    method = "dopri5" if method is None else method
    if method not in methods:
        raise ValueError(f"`method` must be one of {', '.join(methods)}; got {method!r}")
    options = {} if options is None else dict(options)
    if not isinstance(options, dict):
        raise TypeError(f"`options` must be a dict of option names to values; got {type(options).__name__}")
    norm = options.get("norm")
    if shapes is not None:
        user_norm = mixed_norm if norm is None else norm
        frozen = list(shapes)
        options["norm"] = lambda tensor: user_norm(flat_to_shape(tensor, (), frozen))
    elif norm is None:
        options["norm"] = rms
    if not callable(options["norm"]):
        raise TypeError(f"`options['norm']` must be callable as norm(y) -> scalar; got {norm!r}")
    reverse = len(t) > 1 and bool(t[0] > t[1])
    if reverse:
        t = -t
        if event_fn is not None:
            event_fn = _reversed_event(event_fn)
        constructor = options.get("grid_constructor")
        if constructor is not None:
            options["grid_constructor"] = lambda f, y, tt: -constructor(f, y, -tt)
        for name in ("step_t", "jump_t"):
            if isinstance(options.get(name), Tensor):
                options[name] = -options[name]
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, Tensor) and tol.requires_grad:
            raise ValueError(f"`{name}` cannot require gradient: detach it")
    if t.device != y0.device:
        warnings.warn("`t` is not on the same device as `y0`: moving it to y0's device", stacklevel=3)
        t = t.to(y0.device)
    flat = FlatFunc(func, shapes, reverse)
    callbacks, named = _callbacks(func, shapes, reverse)
    adjoint = {name: getattr(func, name) for name in ADJOINT_CALLBACKS if hasattr(func, name)}
    return Inputs(shapes, flat, y0, t, rtol, atol, method, options, event_fn, reverse, callbacks, named, adjoint)


def _check_time(t: Tensor) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() != 1 or t.numel() < 1:
        got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(
            f"`t` must be a 1-D floating-point tensor of output times, such as torch.linspace(0, 1, 5); got {got}"
        )
    times = t.detach().tolist()
    if not all(math.isfinite(x) for x in times):
        raise ValueError(f"`t` must be finite; got {times}")
    if len(times) > 1:
        steps = [b - a for a, b in zip(times, times[1:], strict=False)]
        if not (all(d > 0 for d in steps) or all(d < 0 for d in steps)):
            raise ValueError(f"`t` must be strictly increasing or strictly decreasing; got {times}")


def _tuple_tol(name: str, tol: Any, shapes: Sequence[torch.Size]) -> Any:
    try:
        parts = tuple(tol)
    except TypeError:
        return tol
    if len(parts) != len(shapes):
        raise ValueError(f"`{name}` given per part of the tuple `y0` must have {len(shapes)} entries; got {len(parts)}")
    return torch.cat([torch.as_tensor(p).expand(shape.numel()) for p, shape in zip(parts, shapes, strict=True)])


def _combined_event(event_fn: Callable[..., Tensor], t0: Tensor, y0: Any) -> Callable[..., Tensor]:
    """Several event functions stop at the first root: each is made positive at ``t0``, then their minimum."""
    with torch.no_grad():
        signs = torch.sign(event_fn(t0, y0))

    def combined(t: Tensor, y: Any) -> Tensor:
        return torch.min(event_fn(t, y) * signs)

    return combined


def _tuple_event(event_fn: Callable[..., Tensor], shapes: Sequence[torch.Size]) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda t, y: event_fn(t, flat_to_shape(y, (), shapes))


def _reversed_event(event_fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda t, y: event_fn(-t, y)


def _callbacks(func: UserFunc, shapes: Sequence[torch.Size] | None, reverse: bool) -> tuple[Callbacks, set[str]]:
    found: dict[str, Callable[[Tensor, Tensor, Tensor], object]] = {}
    named: set[str] = set()
    for name in CALLBACKS:
        callback = getattr(func, name, None)
        if callback is None:
            found[name] = _none
            continue
        named.add(name)
        found[name] = _wrap_callback(callback, shapes, reverse)
    return Callbacks(found["callback_step"], found["callback_accept_step"], found["callback_reject_step"]), named


def _wrap_callback(
    callback: Callable[..., object], shapes: Sequence[torch.Size] | None, reverse: bool
) -> Callable[[Tensor, Tensor, Tensor], object]:
    def wrapped(t0: Tensor, y0: Tensor, dt: Tensor) -> object:
        state: Any = y0 if shapes is None else flat_to_shape(y0, (), shapes)
        return callback(-t0 if reverse else t0, state, dt)

    return wrapped


def _none(t0: Tensor, y0: Tensor, dt: Tensor) -> None:
    return None


def unexpected(method: str, options: dict[str, Any], allowed: frozenset[str]) -> None:
    """torchdiffeq ignores options a method does not take, with a warning; so does this, naming them."""
    extra = sorted(set(options) - allowed)
    if extra:
        warnings.warn(
            f"`options` {extra} are not taken by method {method!r} and are ignored (it takes {sorted(allowed)})",
            stacklevel=4,
        )
