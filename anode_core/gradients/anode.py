"""ANODE: exact discretize-then-optimize gradients with memory O(L) + O(N_t).

Gholami, Keutzer & Biros, "ANODE: Unconditionally Accurate Memory-Efficient Gradients for Neural ODEs",
IJCAI 2019 (arXiv:1902.10298), §3 and Fig. 2: keep only each ODE block's input during the forward pass; in
backward, recompute that block with its graph and back-propagate through it. With ``checkpoints=c`` the
block itself is reversed with a binomial (revolve) schedule, so memory no longer grows with N_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.base import GradientMethod, vjp
from anode_core.gradients.revolve import revolve_backward
from anode_core.problem import Problem
from anode_core.replay import RngState, frozen_buffers, isolated_rng


@dataclass(frozen=True)
class Anode(GradientMethod):
    """Checkpoint the block input, recompute the block in backward.

    ``checkpoints=None`` recomputes the whole block once and back-propagates once (memory ``L·S + s·N_t·A``).
    ``checkpoints=c`` keeps at most ``c`` states inside the block besides its input and reverses it with
    Griewank & Walther's binomial schedule (ACM TOMS 26(1), 2000), memory ``(L + c)·S + s·A``. Both return the
    gradient of exactly the network that was computed, identical to :class:`~anode_core.Direct`.
    """

    checkpoints: int | None = None

    name = "anode"
    exact = True

    def __post_init__(self) -> None:
        c = self.checkpoints
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 0):
            raise ValueError(
                f"`checkpoints` must be None (recompute the whole block) or an integer ≥ 0; got {c!r}"
            )

    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        return _AnodeFunction.apply(problem, self.checkpoints, z0, *problem.params)


class _AnodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, checkpoints: int | None, z0: Tensor, *params: Tensor) -> Tensor:
        ctx.problem = problem
        ctx.checkpoints = checkpoints
        ctx.rng = RngState.capture(z0)
        ctx.save_for_backward(z0)
        return problem.advance(z0, 0, problem.steps)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (z0,) = ctx.saved_tensors
        problem: Problem = ctx.problem
        wanted = ctx.needs_input_grad[2:]
        with torch.enable_grad(), isolated_rng(ctx.rng), frozen_buffers(problem.field):
            if ctx.checkpoints is None:
                z = z0.detach().requires_grad_(wanted[0])
                z1 = problem.advance(z, 0, problem.steps)
                grads = vjp(z1, (z, *problem.params), wanted, grad_out)
            else:
                grads = revolve_backward(problem, z0, ctx.rng, grad_out, ctx.checkpoints, wanted)
        return (None, None, *grads)
