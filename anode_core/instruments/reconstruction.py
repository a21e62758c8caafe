"""How well the adjoint's reverse solve rebuilds each block's input (ANODE §2, flaw (a))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from anode_core.block import ODEBlock, ode_blocks
from anode_core.problem import Problem
from anode_core.replay import frozen_buffers


def reconstruction_error(problem: Problem, z0: Tensor) -> float:
    """``‖z̃(t0) − z(t0)‖ / ‖z(t0)‖``: solve forward, then backward with the same scheme, as the adjoint does.

    The adjoint's reverse solve of ``z`` does not depend on the adjoint variables, so this is exactly the state
    it differentiates at. ``inf`` or ``nan`` when the reverse solve blows up.
    """
    with torch.no_grad(), torch.random.fork_rng(), frozen_buffers(problem.field):
        z1 = problem.advance(z0, 0, problem.steps)
        z = z1
        for n in range(problem.steps, 0, -1):
            z = problem.solver.step(problem.tuple_field, problem.time(n), (z,), -problem.dt)[0]
        scale = float(z0.double().norm())
        err = float((z.double() - z0.double()).norm())
    return err / scale if scale > 0 else err


def block_reconstruction_errors(model: nn.Module, *inputs: Tensor) -> list[float]:
    """:func:`reconstruction_error` of every ODE block of ``model`` on the inputs it sees in ``model(*inputs)``."""
    seen: list[tuple[ODEBlock, Tensor]] = []
    handles = [
        b.register_forward_pre_hook(lambda m, args: seen.append((m, args[0].detach()))) for b in ode_blocks(model)
    ]
    try:
        with torch.no_grad(), torch.random.fork_rng(), frozen_buffers(model):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return [reconstruction_error(block.problem(z0), z0) for block, z0 in seen]
