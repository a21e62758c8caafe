"""Reverse one ODE block with a binomial checkpointing schedule (revolve).

Griewank & Walther, "Algorithm 799: revolve", ACM TOMS 26(1):19–45, 2000. A segment of ``n`` steps whose start
is held, with ``c`` free slots, is reversed by advancing ``m`` steps to a split, storing that state, reversing
the right part with ``c - 1`` slots and then the left part with ``c``. With ``h = c + 1`` states held and
``beta(h, r) = C(h + r, h)``, the least number of steps advanced without a graph is

    r·n − C(h + r, h + 1),   r the least integer with beta(h, r) ≥ n     (Griewank & Walther, Prop. 1),

and a split attains it exactly when ``n − beta(h − 1, r) ≤ m ≤ beta(h, r − 1)`` and
``beta(h, r − 2) ≤ m ≤ n − beta(h − 1, r − 1)``; :func:`split_point` takes the smallest such ``m``. With no
free slot every step is replayed from the segment's start: ``n(n − 1)/2`` steps. Backward then makes
``s·(advanced + n)`` field evaluations for an ``s``-stage solver (``n`` steps recomputed with their graph).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import comb

import torch
from torch import Tensor

from anode_core.gradients.base import vjp
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


@dataclass
class _Snapshot:
    """A state at grid point ``n`` and the RNG state from which the forward pass left it."""

    n: int
    z: Tensor
    rng: RngState


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


def revolve_backward(
    problem: Problem,
    z0: Tensor,
    rng0: RngState,
    grad_out: Tensor,
    slots: int,
    wanted: Sequence[bool],
) -> list[Tensor | None]:
    """Gradients of ``<grad_out, z_N>`` w.r.t. ``(z0, *params)`` holding at most ``slots`` extra states."""
    params = problem.params
    acc: list[Tensor | None] = [torch.zeros_like(p) if w else None for p, w in zip(params, wanted[1:], strict=True)]
    held = {0: _Snapshot(0, z0.detach(), rng0)}
    grad = grad_out
    for action in binomial_schedule(problem.steps, slots):
        match action:
            case Store(source, target):
                held[target] = _advance(problem, held[source], target)
                note_held(held[target].z)
            case Reverse(source, step):
                grad = _step_backward(problem, _advance(problem, held[source], step), grad, acc, wanted)
            case Free(point):
                del held[point]
    return [grad if wanted[0] else None, *acc]


def _advance(problem: Problem, start: _Snapshot, n: int) -> _Snapshot:
    """The snapshot at grid point ``n``, recomputed without a graph from ``start``, RNG replayed."""
    if n == start.n:
        return start
    start.rng.restore()
    with torch.no_grad():
        z = problem.advance(start.z, start.n, n)
    return _Snapshot(n, z, RngState.capture(z))


def _step_backward(
    problem: Problem, snap: _Snapshot, grad: Tensor, acc: list[Tensor | None], wanted: Sequence[bool]
) -> Tensor:
    """One step recomputed with its graph and back-propagated; parameter gradients are accumulated."""
    snap.rng.restore()
    want_z = snap.n > 0 or wanted[0]
    z = snap.z.detach().requires_grad_(want_z)
    out = problem.step(z, snap.n)
    grads = vjp(out, (z, *problem.params), (want_z, *wanted[1:]), grad)
    for total, g in zip(acc, grads[1:], strict=True):
        if total is not None and g is not None:
            total.add_(g)
    return grads[0] if grads[0] is not None else torch.zeros_like(z)  # the block input's, when it is not wanted
