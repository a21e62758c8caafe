"""How well the adjoint's reverse solve rebuilds each block's input (ANODE §2, flaw (a))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from anode_core.problem import Problem
from anode_core.replay import frozen_buffers
from anode_core.watch import watching_solves


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
    """:func:`reconstruction_error` of every ODE solve in ``model(*inputs)`` (``ODEBlock``, ``odesolve``,
    ``odeint``), in the order they run, each on the input it received."""
    seen: list[tuple[Problem, Tensor]] = []

    def record(problem: Problem, z0: Tensor) -> Problem:
        seen.append((problem, z0.detach()))
        return problem

    with torch.no_grad(), torch.random.fork_rng(), frozen_buffers(model), watching_solves(record):
        model(*inputs)
    return [reconstruction_error(problem, z0) for problem, z0 in seen]
