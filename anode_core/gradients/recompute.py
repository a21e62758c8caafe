"""ANODE's recomputation, with the machinery of ``torch.utils.checkpoint``'s non-reentrant mode.

The block's forward runs with its graph, under saved-tensor hooks that keep nothing: each tensor an op saves for
backward is replaced by a handle naming its segment of the block and its place in that segment. Backward's first
request for a handle of segment ``j`` rebuilds that segment from its start under the forward's RNG and autocast
state (module buffers restored afterwards, :mod:`anode_core.replay`), collects the tensors the rebuild saves in the
same order, and hands them out one by one. The graph autograd walks is the forward's own, so every tensor the field
touches (parameters, closed-over and unregistered tensors, buffers, a tensor time) gets the gradient backprop gives
it, double backward works as under ``Direct``, and no parameter list is needed. Where the segment's start comes from
is the strategy: the block input (ANODE, Gholami et al. 2019), states stored every ``k`` steps (Chen, Xu, Zhang &
Guestrin, "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174, 2016), or a binomial schedule
(revolve, :mod:`anode_core.gradients.revolve`).

Reference: ``torch/utils/checkpoint.py`` (``_checkpoint_hook``, ``_recomputation_hook``). As there, the tensors
handed back are detached; autograd re-attaches the saved tensor's history when it unpacks, which is what makes
double backward work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from anode_core.held import Listener, listeners, listening, note_held
from anode_core.problem import Problem
from anode_core.replay import AutocastState, RngState, frozen_buffers, isolated_rng


@dataclass(frozen=True)
class Snapshot:
    """A state at grid point ``n`` (without history) and the RNG state from which the forward pass left it."""

    n: int
    z: Tensor
    rng: RngState


class Starts(Protocol):
    """Where a segment's rebuild starts: told every segment's start in the forward pass, asked in backward."""

    def record(self, segment: int, n: int, z: Tensor) -> None:
        """Segment ``segment`` starts from ``z`` at grid point ``n``, now (the RNG state is the current one)."""

    def start(self, segment: int) -> Snapshot:
        """The start of ``segment`` (called in backward, inside the forward's RNG, autocast and buffer state)."""


class StoredStarts:
    """Keep the start of every segment (one segment: the block input alone)."""

    def __init__(self) -> None:
        self.held: dict[int, Snapshot] = {}

    def record(self, segment: int, n: int, z: Tensor) -> None:
        self.held[segment] = Snapshot(n, z.detach(), RngState.capture(z))
        note_held(self.held[segment].z)

    def start(self, segment: int) -> Snapshot:
        return self.held[segment]


@dataclass(frozen=True)
class _Handle:
    segment: int
    index: int


class Recomputation:
    """Saved-tensor hooks for one block split at grid points ``bounds`` (see the module docstring).

    What the forward saves in segments ``kept_from`` onwards is kept, as plain backprop does, until :meth:`drop`
    (the latest block of a chain keeps it until the next block starts: its last segment is the first backward
    needs); dropped or never kept (``kept_from=None``), it is rebuilt on demand.
    """

    def __init__(self, problem: Problem, bounds: Sequence[int], starts: Starts, kept_from: int | None) -> None:
        self.problem = problem
        self.bounds = tuple(bounds)
        self.starts = starts
        self.kept_from = kept_from
        self.saved: dict[_Handle, Tensor] = {}
        self.counts: list[int] = []
        self.wants_grad: list[bool] = []
        self.listeners: tuple[Listener, ...] = ()
        self.autocast: AutocastState | None = None
        self.rng: RngState | None = None

    def forward(self, z0: Tensor) -> Tensor:
        """``z`` at the last bound, with the forward's graph and nothing saved in it (unless kept)."""
        self.autocast = AutocastState.capture(z0)
        self.rng = RngState.capture(z0)
        self.listeners = listeners()
        z = z0
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            for j, (a, b) in enumerate(zip(self.bounds, self.bounds[1:], strict=False)):
                self.starts.record(j, a, z)
                self.wants_grad.append(z.requires_grad)
                self.counts.append(0)
                z = self.problem.advance(z, a, b)
        return z

    def drop(self) -> None:
        """Stop keeping the forward's saved tensors: backward rebuilds them."""
        self.kept_from = None
        self.saved.clear()

    def _pack(self, x: Tensor) -> _Handle:
        segment = len(self.counts) - 1
        handle = _Handle(segment, self.counts[segment])
        self.counts[segment] += 1
        if self.kept_from is not None and segment >= self.kept_from:
            self.saved[handle] = _announced(x)
        return handle

    def _unpack(self, handle: _Handle) -> Tensor:
        x = self.saved.pop(handle, None)
        if x is None:
            self._rebuild(handle.segment)
            x = self.saved.pop(handle, None)
        if x is None:  # _rebuild checked the count: only a second unpack of one tensor in one backward gets here
            raise RuntimeError(f"recomputation: saved tensor {handle.index} of segment {handle.segment} is missing")
        return x

    def _rebuild(self, segment: int) -> None:
        self.saved.clear()  # one segment's saved tensors at a time
        assert self.autocast is not None and self.rng is not None  # set by forward()
        collected: list[Tensor] = []

        def collect(x: Tensor) -> Tensor:
            kept = _announced(x)  # x itself would tie a saved output to its own grad_fn: a cycle
            collected.append(kept)
            return kept

        with (
            isolated_rng(self.rng),  # finding the start may replay steps too (revolve)
            self.autocast.entered(),
            listening(*self.listeners),
            frozen_buffers(self.problem.field),
        ):
            start = self.starts.start(segment)
            start.rng.restore()
            z = start.z.detach().requires_grad_(self.wants_grad[segment])
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(collect, _identity):
                self.problem.advance(z, self.bounds[segment], self.bounds[segment + 1])
        if len(collected) != self.counts[segment]:
            a, b = self.bounds[segment], self.bounds[segment + 1]
            raise RuntimeError(
                f"recomputing steps {a}..{b} saved {len(collected)} tensors for backward where the forward pass saved "
                f"{self.counts[segment]}: the field must run the same operations when called again on the same state "
                "(no branches on global state or call counts); or use gradient=Direct()"
            )
        self.saved = {_Handle(segment, i): x for i, x in enumerate(collected)}


def _identity(x: Any) -> Any:
    return x


def _announced(x: Tensor) -> Tensor:
    """``x`` detached, announced to the memory meters unless it is a parameter (a leaf that lives in the model
    anyway; nn.Linear saves a view of one, weight.t())."""
    base = x if x._base is None else x._base
    kept = x.detach()
    if not (base.is_leaf and base.requires_grad):
        note_held(kept)
    return kept


class Droppable(Protocol):
    def drop(self) -> None:
        """Stop keeping the forward's saved tensors: backward rebuilds them."""


class BlockEnd(torch.autograd.Function):
    """Marks the end of a recomputed block in the graph (a view of its output) and holds its :class:`Recomputation`
    (or :class:`~anode_core.gradients.stepwise.Stepwise`), so the next block can find it (:func:`drop_kept_upstream`).
    Backward passes the gradient through."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, recomputation: Droppable) -> Tensor:
        ctx.recomputation = recomputation
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def drop_kept_upstream(z0: Tensor) -> None:
    """Drop what every block that ``z0`` descends from without another block between keeps of its forward.

    The walk stops at block ends: it visits the ops between this block and the blocks before it (the whole history
    of ``z0`` when there is none), a few Python steps per op next to the block's forward pass.
    """
    pending = [z0.grad_fn]
    seen: dict[int, object] = {}  # holding the nodes keeps their ids from being reused during the walk
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        if isinstance(node, BlockEnd._backward_cls):
            ctx: Any = node  # a custom Function's autograd node is its ctx
            ctx.recomputation.drop()
            continue
        pending.extend(next_node for next_node, _ in node.next_functions)
