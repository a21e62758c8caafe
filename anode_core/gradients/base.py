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
