"""Check any model's gradients: every gradient method against the exact one, with what each holds and costs.

``check(model, batch, loss)`` runs ``loss(model, batch).backward()`` once per gradient method, with every ODE
solve inside the model that names no method differentiated that way (:func:`~anode_core.use_gradient`), and
compares each gradient with ``Direct``'s, the exact gradient of the network that was computed. It works for any
``nn.Module`` whose ODE solves go through anode_core (``ODEBlock``, ``odesolve``, ``odeint``): they announce
themselves (:mod:`anode_core.watch`), so the model needs no other change.

Not named ``anode_core/check.py``: importing that submodule would bind it on the package and shadow the
exported function ``anode_core.check`` (see :mod:`anode_core.solve`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from anode_core.gradients import Adjoint, Anode, Direct, GradientMethod
from anode_core.instruments.compare import ParameterComparison, compare_gradients
from anode_core.instruments.measure import Measurement, measure_gradient
from anode_core.instruments.reconstruction import reconstruction_error
from anode_core.problem import Problem
from anode_core.registry import GRADIENTS
from anode_core.replay import RngState, frozen_buffers, isolated_rng
from anode_core.solve import resolve_gradient
from anode_core.watch import watching_solves

NO_SOLVE = (
    "the model computed no ODE solve through anode_core; replace torchdiffeq.odeint with anode_core.odeint "
    "(or torchdiffeq's odeint_adjoint likewise; ODEBlock and odesolve work too)"
)
ROW_KEYS = ("method", "rel_error", "cosine", "sign_agreement", "peak_bytes", "seconds", "nfe_forward", "nfe_backward")


class NoSolveError(ValueError):
    """The checked model ran no ODE solve through anode_core, so there is nothing to compare."""


@dataclass(frozen=True)
class MethodCheck:
    """One gradient method's gradient against ``Direct``'s, and what it held and cost in one training step."""

    method: str
    rel_error: float
    cosine: float
    sign_agreement: float
    worst: tuple[ParameterComparison, ...]
    """The parameters with the largest relative error, worst first."""
    peak_bytes: int
    cuda_peak_bytes: int | None
    seconds: float
    nfe_forward: int
    nfe_backward: int
    reconstruction_error: float | None
    """Largest ``‖z̃(t0) − z(t0)‖/‖z(t0)‖`` over the solves, for methods that rebuild states by a reverse solve."""
    exact_below: float
    """Relative errors up to this (100 ulp of the parameters' dtype) count as exact."""
    unseen: tuple[str, ...] = ()
    """Parameters whose gradient came back all zero where Direct's is not: the method never saw them."""

    @property
    def verdict(self) -> str:
        """``exact``, ``zero gradient for w …``, ``off by 3.2 %, cosine 0.998`` or ``opposite sign on 12 % of
        entries``."""
        if self.unseen:
            return (f"zero gradient for {', '.join(self.unseen)} (Direct's is not): the method never saw "
                    f"{'it' if len(self.unseen) == 1 else 'them'}, a tensor the field reads from outside (a closure); "
                    "make it a parameter of an nn.Module field, or pass it in `adjoint_params`")
        if not (math.isfinite(self.rel_error) and math.isfinite(self.cosine)):
            return "not finite: the gradient holds NaN or inf"
        if self.rel_error <= self.exact_below:
            return "exact"
        flipped = 1.0 - self.sign_agreement
        if flipped >= 0.05 or self.cosine < 0:
            return f"opposite sign on {_percent(flipped)} of entries"
        return f"off by {_percent(self.rel_error)}, cosine {self.cosine:.3g}"

    def row(self) -> dict[str, Any]:
        """The JSON row: :data:`ROW_KEYS` first, then the verdict, reconstruction error and worst parameters."""
        return {
            **{key: _finite(getattr(self, key)) for key in ROW_KEYS},
            "verdict": self.verdict,
            "reconstruction_error": _finite(self.reconstruction_error),
            "cuda_peak_bytes": self.cuda_peak_bytes,
            "worst_parameters": [{"name": p.name, "rel_error": _finite(p.rel_error)} for p in self.worst],
        }


@dataclass(frozen=True)
class CheckReport:
    methods: tuple[MethodCheck, ...]
    solves: int
    """ODE solves in one forward pass of the model."""
    skipped: Mapping[str, str]
    """Default methods that do not apply to this model (a reversible method on a non-reversible solver), and why."""

    def rows(self) -> list[dict[str, Any]]:
        return [m.row() for m in self.methods]


def default_methods() -> tuple[GradientMethod, ...]:
    """``Direct``, ``Anode``, ``Anode(checkpoints='auto')`` (the default of every solve that names none),
    ``Anode(checkpoints=2)``, ``Adjoint``, ``Adjoint(reconstruct=False)``, and every other registered method
    (``Reversible`` where installed) with its default knobs."""
    listed: tuple[GradientMethod, ...] = (
        Direct(), Anode(), Anode(checkpoints="auto"), Anode(checkpoints=2), Adjoint(), Adjoint(reconstruct=False)
    )
    known = {type(m) for m in listed}
    return listed + tuple(cls() for cls in GRADIENTS.values() if cls not in known)


def method_label(method: GradientMethod) -> str:
    """``Anode``, ``Anode(checkpoints=2)``, ``Adjoint(reconstruct=False)``: only knobs that differ from defaults."""
    knobs: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(method) if dataclasses.is_dataclass(method) else ()
    changed = [
        f"{f.name}={getattr(method, f.name)!r}"
        for f in knobs
        if f.default is dataclasses.MISSING or getattr(method, f.name) != f.default
    ]
    return f"{type(method).__name__}({', '.join(changed)})" if changed else type(method).__name__


def check(
    model: nn.Module,
    batch: Any,
    loss: Callable[[nn.Module, Any], Tensor],
    methods: Iterable[GradientMethod | str] | None = None,
    *,
    device: torch.device | str | None = None,
    worst: int = 3,
) -> CheckReport:
    """Differentiate ``loss(model, batch)`` with ``Direct`` and each of ``methods`` and compare them.

    ``Direct`` always runs first, as the reference. Every run starts from the same random-number state and leaves
    the model's buffers (BatchNorm statistics) as they were, so dropout draws the same masks in every method.
    With ``device`` the model and every tensor in ``batch`` are moved there first. Raises :class:`NoSolveError`
    when the model solved no ODE through anode_core, and ``ValueError`` when ``loss`` returns no scalar.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(model, batch) -> scalar tensor; got {type(loss).__name__}")
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 1:
        raise ValueError(f"`worst` must be an integer ≥ 1 (how many parameters to name); got {worst!r}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("`model` has no parameters that require gradients; there is no gradient to check")
    chosen = default_methods() if methods is None else tuple(resolve_gradient(m) for m in methods)
    if device is not None:
        model = model.to(device)
        batch = _to(batch, torch.device(device))
    device = next(model.parameters()).device
    exact_below = 100 * torch.finfo(next(model.parameters()).dtype).eps
    rng = RngState.capture(*model.parameters())

    def scalar_loss(m: nn.Module) -> Tensor:
        value = loss(m, batch)
        if not isinstance(value, Tensor) or value.numel() != 1 or not value.is_floating_point():
            got = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"`loss(model, batch)` must return a scalar floating-point tensor; got {got}")
        return value.reshape(())

    def run(method: GradientMethod) -> tuple[Measurement, list[tuple[Problem, Tensor]]]:
        seen: list[tuple[Problem, Tensor]] = []

        def record(problem: Problem, z0: Tensor) -> Problem:
            seen.append((problem, z0.detach()))
            return problem

        with isolated_rng(rng), frozen_buffers(model), watching_solves(record):
            measured = measure_gradient(model, scalar_loss, method, device=device)
        return measured, seen

    _warm_up()
    reference, solves = run(Direct())
    if not solves:
        raise NoSolveError(NO_SOLVE)
    rows = [_row(Direct(), reference, reference, solves, worst, exact_below)]
    skipped: dict[str, str] = {}
    for method in chosen:
        if isinstance(method, Direct):
            continue
        try:
            measured, _ = run(method)
        except ValueError as error:
            if methods is not None:
                raise
            skipped[method_label(method)] = str(error)
            continue
        rows.append(_row(method, measured, reference, solves, worst, exact_below))
    return CheckReport(tuple(rows), len(solves), skipped)


def _row(
    method: GradientMethod,
    measured: Measurement,
    reference: Measurement,
    solves: Sequence[tuple[Problem, Tensor]],
    worst: int,
    exact_below: float,
) -> MethodCheck:
    comparison = compare_gradients(reference.grads, measured.grads)
    ranked = sorted(comparison.per_parameter, key=lambda p: -p.rel_error if not math.isnan(p.rel_error) else -math.inf)
    rebuilds = isinstance(method, Adjoint) and method.reconstruct
    fixed = [(p, z0) for p, z0 in solves if not getattr(p, "adaptive", False)]  # an adaptive grid is settled later
    return MethodCheck(
        method=method_label(method),
        rel_error=comparison.rel_error,
        cosine=comparison.cosine,
        sign_agreement=comparison.sign_agreement,
        worst=tuple(ranked[:worst]),
        peak_bytes=measured.peak_bytes,
        cuda_peak_bytes=measured.cuda_peak_bytes,
        seconds=measured.seconds,
        nfe_forward=measured.nfe_forward,
        nfe_backward=measured.nfe_backward,
        reconstruction_error=max(reconstruction_error(p, z0) for p, z0 in fixed) if rebuilds and fixed else None,
        exact_below=exact_below,
        unseen=tuple(p.name for p in comparison.per_parameter if p.rel_error == 1.0 and math.isnan(p.cosine)),
    )


def _warm_up() -> None:
    """The first ``autograd.grad`` with explicit output gradients imports sympy (about 1 s): not a method's cost."""
    x = torch.zeros(1, requires_grad=True)
    torch.autograd.grad(x * 2, x, torch.ones(1))


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_to(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def _percent(share: float) -> str:
    return f"{100 * share:.2g} %" if share < 0.1 else f"{100 * share:.0f} %"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
