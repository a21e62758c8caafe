"""ANODE's backward for one block: recompute it from its input under the forward's RNG and autocast state and
backprop through the recomputation (whole, or with revolve checkpoints). Shared by fixed and adaptive grids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.base import vjp
from anode_core.gradients.revolve import revolve_backward
from anode_core.held import listening
from anode_core.problem import Problem
from anode_core.replay import frozen_buffers, isolated_rng


def recompute_block(
    ctx: Any, problem: Problem, z0: Tensor, grad_out: Tensor, wanted: tuple[bool, ...]
) -> list[Tensor | None]:
    """Gradients of ``(z0, *problem.params)``; ``ctx`` holds what the forward captured (``rng``, ``autocast``,
    ``listeners``, ``checkpoints``)."""
    with (
        torch.enable_grad(),
        isolated_rng(ctx.rng),
        ctx.autocast.entered(),
        listening(*ctx.listeners),
        frozen_buffers(problem.field),
    ):
        if ctx.checkpoints is None:
            z = z0.detach().requires_grad_(wanted[0])
            return vjp(problem.advance(z, 0, problem.steps), (z, *problem.params), wanted, grad_out)
        return revolve_backward(problem, z0, ctx.rng, grad_out, ctx.checkpoints, wanted)
