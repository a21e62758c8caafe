"""Reverse one ODE block with a binomial checkpointing schedule (revolve).

Griewank & Walther, "Algorithm 799: revolve", ACM TOMS 26(1):19–45, 2000. A segment of ``n`` steps whose start
is held, with ``c`` free slots, is reversed by advancing ``m`` steps to a split, storing that state, reversing
the right part with ``c - 1`` slots and then the left part with ``c``. With ``h = c + 1`` states held and
``beta(h, r) = C(h + r, h)``, the least number of steps advanced without a graph is

    r·n − C(h + r, h + 1),   r the least integer with beta(h, r) ≥ n     (Griewank & Walther, Prop. 1),

and a split attains it exactly when ``n − beta(h − 1, r) ≤ m ≤ beta(h, r − 1)`` and
``beta(h, r − 2) ≤ m ≤ n − beta(h − 1, r − 1)``; :func:`split_point` takes the smallest such ``m``. With no
free slot every step is replayed from the segment's start: ``n(n − 1)/2`` steps. Backward then makes
``s·(advanced + n)`` field evaluations for an ``s``-stage solver (``n`` steps recomputed with their graph), each step
rebuilt by :class:`~anode_core.gradients.recompute.Recomputation` when autograd first asks for what it saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import comb

import torch
from torch import Tensor

from anode_core.gradients.recompute import Snapshot
from anode_core.held import note_held
from anode_core.problem import Problem
from anode_core.replay import RngState


@dataclass(frozen=True)
class Store:
    """Advance without a graph from the held state at ``source`` to grid point ``target`` and hold it."""

    source: int
    target: int


@dataclass(frozen=True)
class Reverse:
    """Replay from the held state at ``source`` to grid point ``step``, recompute that step with its graph and
    back-propagate through it."""

    source: int
    step: int


@dataclass(frozen=True)
class Free:
    """Drop the state held at grid point ``point``."""

    point: int


Action = Store | Reverse | Free


def _beta(held: int, sweeps: int) -> int:
    """Most steps reversible with ``held`` states and ``sweeps`` sweeps: ``C(held + sweeps, held)``."""
    return comb(held + sweeps, held) if sweeps >= 0 else 0


def _sweeps(n: int, held: int) -> int:
    sweeps = 0
    while _beta(held, sweeps) < n:
        sweeps += 1
    return sweeps


def advanced_steps(n: int, slots: int) -> int:
    """Steps advanced without a graph when ``n`` steps are reversed with ``slots`` free checkpoints (optimal)."""
    if n <= 1:
        return 0
    if slots == 0:
        return n * (n - 1) // 2
    held = slots + 1  # the segment's start counts as a checkpoint
    sweeps = _sweeps(n, held)
    return sweeps * n - comb(held + sweeps, held + 1)


def split_point(n: int, slots: int) -> int:
    """Length of the left segment when ``n ≥ 2`` steps are reversed with ``slots ≥ 1`` free checkpoints: the
    smallest split of an optimal schedule (module docstring)."""
    held = slots + 1
    sweeps = _sweeps(n, held)
    return max(1, n - _beta(held - 1, sweeps), _beta(held, sweeps - 2))


def binomial_schedule(n: int, slots: int) -> Iterator[Action]:
    """The actions that reverse grid points ``0..n`` with the state at 0 held and ``slots`` free checkpoints."""
    yield from _segment(0, n, slots)


def _segment(start: int, stop: int, slots: int) -> Iterator[Action]:
    if slots == 0 or stop - start == 1:
        for step in range(stop - 1, start - 1, -1):
            yield Reverse(start, step)
        return
    mid = start + split_point(stop - start, slots)
    yield Store(start, mid)
    yield from _segment(mid, stop, slots - 1)
    yield Free(mid)
    yield from _segment(start, mid, slots)


class RevolveStarts:
    """The start of step ``n`` in backward, from a binomial schedule with ``slots`` free checkpoints.

    Backward asks for the steps from the last to the first; each request drives the schedule to its ``Reverse`` of
    that step, storing and freeing states on the way, and advances without a graph from the held state it names.
    A request out of that order (a second backward through a retained graph) starts the schedule again.
    """

    def __init__(self, problem: Problem, slots: int) -> None:
        self.problem = problem
        self.slots = slots
        self.first: Snapshot | None = None
        self.held: dict[int, Snapshot] = {}
        self.actions: Iterator[Action] = iter(())

    def record(self, segment: int, n: int, z: Tensor) -> None:
        if segment == 0:
            self.first = Snapshot(n, z.detach(), RngState.capture(z))
            note_held(self.first.z)

    def start(self, segment: int) -> Snapshot:
        for restarted in (False, True):
            if restarted:
                assert self.first is not None  # recorded by the forward pass
                self.held = {0: self.first}
                self.actions = binomial_schedule(self.problem.steps, self.slots)
            for action in self.actions:
                match action:
                    case Store(source, target):
                        self.held[target] = _advance(self.problem, self.held[source], target)
                        note_held(self.held[target].z)
                    case Reverse(source, step) if step == segment:
                        return _advance(self.problem, self.held[source], step)
                    case Free(point):
                        del self.held[point]
        raise RuntimeError(f"the binomial schedule never reverses step {segment} of {self.problem.steps}")


def _advance(problem: Problem, start: Snapshot, n: int) -> Snapshot:
    """The snapshot at grid point ``n``, recomputed without a graph from ``start``, RNG replayed."""
    if n == start.n:
        return start
    start.rng.restore()
    with torch.no_grad():
        z = problem.advance(start.z, start.n, n)
    return Snapshot(n, z, RngState.capture(z))
