"""ANODE: exact discretize-then-optimize gradients with memory O(L) + O(N_t).

Gholami, Keutzer & Biros, "ANODE: Unconditionally Accurate Memory-Efficient Gradients for Neural ODEs",
IJCAI 2019 (arXiv:1902.10298), §3 and Fig. 2: keep only each ODE block's input during the forward pass; in
backward, recompute that block with its graph and back-propagate through it. With ``checkpoints=c`` the
block itself is reversed with a binomial (revolve) schedule, so memory no longer grows with N_t.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.adaptive import adaptive_anode
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
    gradient of exactly the network that was computed, identical to :class:`~anode_core.Direct`. Without
    checkpoints the latest block keeps its graph until the next block starts (see :class:`_KeptGraph`), so
    a chain of L blocks recomputes L − 1 of them.
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
        if problem.adaptive and problem.grid is None:
            return adaptive_anode(problem, self.checkpoints, z0)
        # apply() reports needs_input_grad even under no_grad, so the grad mode is read here, outside
        return _AnodeFunction.apply(problem, self.checkpoints, torch.is_grad_enabled(), z0, *problem.params)


class _KeptGraph:
    """The graph of the latest whole-block Anode forward, kept until the next such block starts.

    Backward visits the blocks in reverse, so the last block computed is the first differentiated: keeping its
    graph spares its recomputation. At most one block's graph is alive at any time, the same ``s·N_t·A`` that
    recomputation holds in backward anyway, so the memory model ``L·S + s·N_t·A`` is unchanged and the cost
    drops from one extra forward pass to ``(L − 1)/L`` of one.
    """

    __slots__ = ("z", "z1")

    def __init__(self, z: Tensor, z1: Tensor) -> None:
        self.z: Tensor | None = z
        self.z1: Tensor | None = z1

    def take(self) -> tuple[Tensor, Tensor] | None:
        z, z1 = self.z, self.z1
        self.z = self.z1 = None
        return None if z is None or z1 is None else (z, z1)


_latest = threading.local()


def _drop_latest_graph() -> None:
    kept: _KeptGraph | None = getattr(_latest, "graph", None)
    if kept is not None:
        kept.take()
    _latest.graph = None


class _AnodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, problem: Problem, checkpoints: int | None, grad_mode: bool, z0: Tensor, *params: Tensor
    ) -> Tensor:
        ctx.problem = problem
        ctx.checkpoints = checkpoints
        ctx.rng = RngState.capture(z0)
        ctx.save_for_backward(z0)
        ctx.kept = None
        if checkpoints is not None or not grad_mode or not any(ctx.needs_input_grad[3:]):
            return problem.advance(z0, 0, problem.steps)
        _drop_latest_graph()  # before building this one: one block's graph at a time
        with torch.enable_grad():
            z = z0.detach().requires_grad_(ctx.needs_input_grad[3])
            z1 = problem.advance(z, 0, problem.steps)
        ctx.kept = _latest.graph = _KeptGraph(z, z1)
        return z1.detach()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (z0,) = ctx.saved_tensors
        problem: Problem = ctx.problem
        wanted = ctx.needs_input_grad[3:]
        kept = ctx.kept.take() if ctx.kept is not None else None
        ctx.kept = None
        if kept is not None:
            with torch.enable_grad():
                return (None, None, None, *vjp(kept[1], (kept[0], *problem.params), wanted, grad_out))
        with torch.enable_grad(), isolated_rng(ctx.rng), frozen_buffers(problem.field):
            if ctx.checkpoints is None:
                z = z0.detach().requires_grad_(wanted[0])
                z1 = problem.advance(z, 0, problem.steps)
                grads = vjp(z1, (z, *problem.params), wanted, grad_out)
            else:
                grads = revolve_backward(problem, z0, ctx.rng, grad_out, ctx.checkpoints, wanted)
        return (None, None, None, *grads)
