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

from anode_core.gradients.adaptive import adaptive_anode
from anode_core.gradients.base import GradientMethod, vjp
from anode_core.gradients.recompute import recompute_block
from anode_core.held import listeners
from anode_core.problem import Problem
from anode_core.replay import AutocastState, RngState


@dataclass(frozen=True)
class Anode(GradientMethod):
    """Checkpoint the block input, recompute the block in backward.

    ``checkpoints=None`` recomputes the whole block once and back-propagates once (memory ``L·S + s·N_t·A``).
    ``checkpoints=c`` keeps at most ``c`` states inside the block besides its input and reverses it with
    Griewank & Walther's binomial schedule (ACM TOMS 26(1), 2000), memory ``(L + c)·S + s·A``. Both return the
    gradient of exactly the network that was computed, identical to :class:`~anode_core.Direct`. Without
    checkpoints the latest block of a chain keeps its graph until the next block starts (see
    :class:`_KeptGraph`), so a chain of L blocks recomputes L − 1 of them.
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
        z1: Tensor = _AnodeFunction.apply(problem, self.checkpoints, torch.is_grad_enabled(), z0, *problem.params)
        return z1


class _KeptGraph:
    """The graph of a whole-block Anode forward, kept until the next Anode block of the same chain starts.

    Backward visits the blocks in reverse, so the last block computed is the first differentiated: keeping its
    graph spares its recomputation. Only the block's autograd node (its ``ctx``) holds it, so it lives exactly
    as long as the output's autograd history: an output dropped without backward (an evaluation with grad
    enabled, an exception, a probe) frees it. A block whose input descends from an earlier block's output
    drops that block's graph (:func:`_drop_graphs_upstream`), so a chain holds one block's graph at a time,
    the same ``s·N_t·A`` that recomputation holds in backward anyway: the memory model ``L·S + s·N_t·A`` is
    unchanged and the cost drops from one extra forward pass to ``(L − 1)/L`` of one. Another model's forward
    in between touches nothing of this chain.
    """

    __slots__ = ("z", "z1")

    def __init__(self, z: Tensor, z1: Tensor) -> None:
        self.z: Tensor | None = z
        self.z1: Tensor | None = z1

    def take(self) -> tuple[Tensor, Tensor] | None:
        z, z1 = self.z, self.z1
        self.z = self.z1 = None
        return None if z is None or z1 is None else (z, z1)


def _drop_graphs_upstream(z0: Tensor) -> None:
    """Drop the kept graph of every Anode block that ``z0`` descends from without another Anode block between.

    The walk stops at Anode nodes: it visits the ops between this block and the Anode blocks before it (the
    whole history of ``z0`` when there is none), a few Python steps per op next to the block's forward pass.
    """
    pending = [z0.grad_fn]
    seen: dict[int, object] = {}  # holding the nodes keeps their ids from being reused during the walk
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        if isinstance(node, _AnodeFunction._backward_cls):
            ctx: Any = node  # a custom Function's autograd node is its ctx
            if ctx.kept is not None:
                ctx.kept.take()
            continue
        pending.extend(next_node for next_node, _ in node.next_functions)


class _AnodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, problem: Problem, checkpoints: int | None, grad_mode: bool, z0: Tensor, *params: Tensor
    ) -> Tensor:
        ctx.problem = problem
        ctx.checkpoints = checkpoints
        ctx.rng = RngState.capture(z0)
        ctx.autocast = AutocastState.capture(z0)
        ctx.listeners = listeners()
        ctx.save_for_backward(z0)
        ctx.kept = None
        if checkpoints is not None or not grad_mode or not any(ctx.needs_input_grad[3:]):
            return problem.advance(z0, 0, problem.steps)
        _drop_graphs_upstream(z0)  # before building this one: one block's graph at a time per chain
        with torch.enable_grad():
            z = z0.detach().requires_grad_(ctx.needs_input_grad[3])
            z1 = problem.advance(z, 0, problem.steps)
        ctx.kept = _KeptGraph(z, z1)
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
        grads = recompute_block(ctx, problem, z0, grad_out, wanted)
        return (None, None, None, *grads)
