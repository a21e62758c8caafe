"""Reverse one ODE block with a binomial checkpointing schedule (revolve).

Griewank & Walther, "Algorithm 799: revolve", ACM TOMS 26(1):19–45, 2000. With ``s`` states held (the block
input included) and ``t`` sweeps, ``beta(s, t) = C(s + t, s)`` steps can be reversed; we split each segment so
that its right part fits ``s - 1`` slots and its left part ``t - 1`` sweeps, which attains that bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb

import torch
from torch import Tensor

from anode_core.gradients.base import vjp
from anode_core.held import note_held
from anode_core.problem import Problem
from anode_core.replay import RngState


@dataclass
class _Snapshot:
    """A state at grid point ``n`` and the RNG state from which the forward pass left it."""

    n: int
    z: Tensor
    rng: RngState


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
    g0 = _reverse(problem, _Snapshot(0, z0.detach(), rng0), problem.steps, slots, grad_out, acc, wanted)
    return [g0 if wanted[0] else None, *acc]


def split_point(n: int, slots: int) -> int:
    """Length of the left segment when ``n`` steps are reversed with ``slots`` free checkpoints (≥ 1)."""
    held = slots + 1  # the segment's start counts as a checkpoint
    sweeps = 0
    while comb(held + sweeps, held) < n:
        sweeps += 1
    return max(1, n - comb(held - 1 + sweeps, held - 1))


def _reverse(
    problem: Problem,
    start: _Snapshot,
    stop: int,
    slots: int,
    grad: Tensor,
    acc: list[Tensor | None],
    wanted: Sequence[bool],
) -> Tensor:
    """Back-propagate ``grad`` from grid point ``stop`` to ``start.n``; returns the gradient at ``start.n``."""
    if slots == 0 or stop - start.n == 1:
        for n in range(stop - 1, start.n - 1, -1):
            grad = _step_backward(problem, _advance(problem, start, n), grad, acc, wanted)
        return grad
    mid = start.n + split_point(stop - start.n, slots)
    middle = _advance(problem, start, mid)
    note_held(middle.z)
    grad = _reverse(problem, middle, stop, slots - 1, grad, acc, wanted)
    del middle
    return _reverse(problem, start, mid, slots, grad, acc, wanted)


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
