"""The hook every gradient method implements, and the vector–Jacobian product they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from anode_core.problem import Problem


class GradientMethod(ABC):
    """How to differentiate one ODE block. Subclasses are frozen dataclasses whose fields are their knobs."""

    name: ClassVar[str]
    exact: ClassVar[bool]
    """True when the method returns the exact gradient of the computed (discrete) network."""

    @abstractmethod
    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        """Return ``z(t1)`` with an autograd history that differentiates it the method's way."""


def vjp(output: Tensor, inputs: Sequence[Tensor], wanted: Sequence[bool], grad_output: Tensor) -> list[Tensor | None]:
    """``grad_output^T d output / d inputs`` in one backward pass: ``None`` where not wanted, zeros where unused."""
    chosen = [x for x, want in zip(inputs, wanted, strict=True) if want]
    grads = iter(torch.autograd.grad(output, chosen, grad_output, allow_unused=True)) if chosen else iter(())
    out: list[Tensor | None] = []
    for x, want in zip(inputs, wanted, strict=True):
        if not want:
            out.append(None)
            continue
        g = next(grads)
        out.append(torch.zeros_like(x) if g is None else g)
    return out


def check_reach(output: Tensor, state: Tensor, params: Sequence[Tensor], method: str) -> None:
    """Raise when ``output`` (one field evaluation at the leaf ``state``) depends on a tensor that needs a gradient
    but is not among ``params``: a method that integrates ``aᵀ∂f/∂θ`` for the listed ``θ`` alone cannot give it,
    and silently leaving its ``.grad`` empty is what this check exists to prevent.

    Walks the evaluation's graph once, down to its leaves (the history of a tensor the field closes over included).
    """
    known = {id(p) for p in params} | {id(state)}
    missing: list[Tensor] = []
    pending, seen = [output.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            if id(variable) not in known:
                missing.append(variable)
            continue
        pending.extend(next_node for next_node, _ in node.next_functions)
    if missing:
        shapes = ", ".join(f"a tensor of shape {tuple(t.shape)}" for t in missing[:3])
        raise ValueError(
            f"the field uses {len(missing)} tensor(s) that need a gradient but are not in `adjoint_params` "
            f"({shapes}{', …' if len(missing) > 3 else ''}); gradient={method} gives gradients to the listed tensors "
            "only: pass every tensor the field uses in adjoint_params=[...] (odesolve: params=(...)), or use "
            "gradient=Anode() or Direct(), which reach every tensor the field touches"
        )
