"""Let instruments see every ODE solve that runs through anode_core, whoever started it.

``ODEBlock``, ``odesolve`` (and so ``odeint``) hand each solve to :func:`solve_problem`, which shows it to the
active watchers before solving. A watcher may return a replacement problem (for instance with a counting field);
this is how :class:`~anode_core.EvaluationCounter` and :func:`~anode_core.check` work on any model, not only on
models built of :class:`~anode_core.ODEBlock`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from torch import Tensor

from anode_core.problem import Problem

if TYPE_CHECKING:
    from anode_core.gradients import GradientMethod

Watcher = Callable[[Problem, Tensor], Problem]

_watchers: list[Watcher] = []


def solve_problem(problem: Problem, z0: Tensor, gradient: GradientMethod) -> Tensor:
    """Solve ``problem`` from ``z0`` the way ``gradient`` differentiates, after showing it to the watchers."""
    return gradient.solve(shown(problem, z0), z0)


def shown(problem: Problem, z0: Tensor) -> Problem:
    """``problem`` after the active watchers saw it (each may return a replacement)."""
    for watcher in tuple(_watchers):
        problem = watcher(problem, z0)
    return problem


@contextmanager
def watching_solves(watcher: Watcher) -> Iterator[None]:
    """Call ``watcher(problem, z0)`` on every solve started inside the ``with`` body."""
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)
