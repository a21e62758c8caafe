"""Direct: back-propagation through every stage of every step (discretize-then-optimize)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from anode_core.gradients.adaptive import adaptive_direct
from anode_core.gradients.base import GradientMethod
from anode_core.problem import Problem


@dataclass(frozen=True)
class Direct(GradientMethod):
    """Keep the whole graph of the solve and let autograd differentiate it.

    Exact gradient of the computed network; memory grows as ``L · N_t · s · A`` (blocks, steps, stages,
    activations per stage). The reference every other method is compared against. On an adaptive solve the
    controller runs first without a graph, then the accepted steps are replayed with theirs (the value returned is
    the controller's): rejected trials hold nothing and step sizes are constants (see
    :mod:`anode_core.gradients.adaptive` for what "exact" means there).
    """

    name = "direct"
    exact = True

    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        if problem.adaptive and problem.grid is None:
            return adaptive_direct(problem, z0)
        return problem.advance(z0, 0, problem.steps)
