"""ANODE: exact discretize-then-optimize gradients with memory O(L) + O(N_t).

Gholami, Keutzer & Biros, "ANODE: Unconditionally Accurate Memory-Efficient Gradients for Neural ODEs",
IJCAI 2019 (arXiv:1902.10298), §3 and Fig. 2: keep only each ODE block's input during the forward pass; in
backward, recompute that block with its graph and back-propagate through it. With ``checkpoints=c`` the
block itself is reversed with a binomial (revolve) schedule, so memory no longer grows with N_t; with
``checkpoints="auto"`` the block is cut into about ``sqrt(N_t)`` segments whose starts are kept, each rebuilt once.
The recomputation is :mod:`anode_core.gradients.recompute`'s: the forward graph is autograd's own, its saved
tensors rebuilt on demand, so closures, buffers and a tensor time get their gradients with no parameter list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from anode_core.gradients.adaptive import stitched
from anode_core.gradients.base import GradientMethod
from anode_core.gradients.recompute import BlockEnd, Recomputation, StoredStarts, drop_kept_upstream
from anode_core.gradients.revolve import RevolveStarts
from anode_core.problem import Problem
from anode_core.reversible import ReversibleSolver


@dataclass(frozen=True)
class Anode(GradientMethod):
    """Checkpoint the block input, recompute the block in backward.

    ``checkpoints=None`` recomputes the whole block once (memory ``L·S + s·N_t·A``). ``checkpoints=c`` keeps at
    most ``c`` states inside the block besides its input and reverses it with Griewank & Walther's binomial
    schedule (ACM TOMS 26(1), 2000), memory ``(L + c)·S + s·A``. ``checkpoints="auto"`` keeps the start of every
    ``k = ⌈sqrt(N_t)⌉``-th step and rebuilds one segment of ``k`` steps at a time (Chen et al. 2016,
    arXiv:1604.06174), memory ``L·S + (N_t/k)·S + k·s·A`` for one extra forward pass: on an adaptive solve, the
    accepted steps' states are kept only at segment starts (TorchDiffEqPack's ACA keeps every one). All return the
    gradient of exactly the network that was computed; on CPU it is bit-identical to :class:`~anode_core.Direct`'s
    (the same ops, summed by autograd in the same order). Without checkpoints the latest block of a chain keeps
    what its forward saved until the next block starts (:func:`~anode_core.gradients.recompute.drop_kept_upstream`),
    so a chain of L blocks recomputes L − 1 of them.
    """

    checkpoints: int | str | None = None

    name = "anode"
    exact = True

    def __post_init__(self) -> None:
        c = self.checkpoints
        if c != "auto" and c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 0):
            raise ValueError(
                f"`checkpoints` must be None (recompute the whole block), \"auto\" (about sqrt(N_t) segments) or "
                f"an integer ≥ 0 (revolve slots); got {c!r}"
            )

    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        if problem.adaptive and problem.grid is None:
            z1, settled = problem.settle(z0)
            if not torch.is_grad_enabled():
                return z1
            return stitched(self.recompute(settled, z0, keep_whole=False), z1)
        return self.recompute(problem, z0, keep_whole=True)

    def recompute(self, problem: Problem, z0: Tensor, keep_whole: bool) -> Tensor:
        """``z(t1)`` with the forward's graph, whose saved tensors are rebuilt in backward. What the last segment
        saved is kept until the next block starts (backward needs it first), and without checkpoints that is the
        whole block: not on an adaptive solve (``keep_whole=False``), whose forward already ran the controller,
        where the block input alone is kept, as in the ACA."""
        if not torch.is_grad_enabled():
            return problem.advance(z0, 0, problem.steps)
        n, c = problem.steps, self.checkpoints
        if c is None or isinstance(problem.solver, ReversibleSolver):  # a reversible solver runs from 0 only
            drop_kept_upstream(z0)  # before building this one: one block's saved tensors at a time per chain
            recomputation = Recomputation(problem, (0, n), StoredStarts(), 0 if keep_whole else None)
        elif c == "auto":
            drop_kept_upstream(z0)
            bounds = (*range(0, n, auto_segment(n)), n)
            recomputation = Recomputation(problem, bounds, StoredStarts(), kept_from=len(bounds) - 2)
        else:
            recomputation = Recomputation(problem, range(n + 1), RevolveStarts(problem, int(c)), kept_from=None)
        z1 = recomputation.forward(z0)
        if not z1.requires_grad:  # nothing the field touched needs a gradient
            return z1
        out: Tensor = BlockEnd.apply(z1, recomputation)
        return out


def auto_segment(steps: int) -> int:
    """Steps per segment of ``checkpoints="auto"``: ``⌈sqrt(N_t)⌉`` balances the kept starts against one
    segment's graph."""
    return max(1, math.ceil(math.sqrt(steps)))
