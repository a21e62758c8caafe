"""The default gradient of one ``odeint`` call: the solver runs once, its graph built with nothing saved in it.

``odeint``'s ``Anode(checkpoints="auto")`` runs the adaptive controller (or the fixed grid) a single time, under
grad mode and under saved-tensor hooks that keep no activation: each tensor a step's operations save for backward
is replaced by a handle naming the step and its place in it; the state at each step's start is recorded without
history. When the solve ends, about ``sqrt(N)`` of those starts are kept (every ``k = ⌈sqrt(N)⌉``-th step counted
from the end, Chen et al., arXiv:1604.06174), the others let go. Backward's first request for a handle of a
segment replays that segment's steps from its kept start, the same operations with the accepted step sizes
(rejected trials hold nothing), and hands out what they save, one segment's tensors at a time: Zhuang et al.'s
adaptive checkpoint adjoint (ICML 2020) with sqrt(N) kept states instead of N. A start on an adaptive pair is kept
with its FSAL slope, so no evaluation is repeated at a join.

The graph autograd walks is the forward's own, so the gradient is the same bits as ``Direct``'s; the forward costs
the solver's own evaluations, and backward one more evaluation per accepted step but the tail's. When the number of
steps is known in advance, as on a fixed grid, the forward keeps the saved tensors of the trailing whole segments
that hold at most 3/10 of the steps (the last segment at least, :func:`kept_tail`): backward needs them first and
does not rebuild them, which saves their replay for at most 3/10 of ``Direct``'s graph held. Operations
outside a step (the dense output at the requested times, user callbacks) keep what they save, as plain backprop
does. The machinery is :mod:`anode_core.gradients.recompute`'s (``torch.utils.checkpoint``'s non-reentrant mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from anode_core.gradients.anode import auto_segment
from anode_core.gradients.recompute import _announced, _identity
from anode_core.held import Listener, listeners, listening, note_held
from anode_core.replay import AutocastState, RngState, frozen_buffers, isolated_rng


class Scope(Protocol):
    def __call__(self, n: int, start: tuple[Tensor, ...] | None = None) -> Any:
        """A context in which the operations of step ``n`` run; ``start``: its first entry this trial, from these
        state values (a later entry of the same trial passes ``None`` and continues its count)."""


Rebuild = Callable[[int, int, tuple[Tensor, ...], Scope], None]
"""``rebuild(a, b, start, scope)`` runs steps ``a … b − 1`` from ``start`` as the forward did, each inside
``scope(n)``."""


@dataclass(frozen=True)
class _Start:
    values: tuple[Tensor, ...]
    wants_grad: tuple[bool, ...]
    rng: RngState


@dataclass(frozen=True)
class _Kept:
    """A tensor saved outside every step: held, as plain backprop holds it."""

    x: Tensor


def graft(start: Tensor, z: Tensor, f0: Tensor) -> Tensor:
    """``f0 = f(t0, z)`` (computed with its graph from a leaf ``z`` equal to ``start``) as a function of ``start``
    too: its first slope is not evaluated again. Backward passes the gradient on to ``f0``'s own graph (the tensors
    the field reads) and hands ``start`` the vector–Jacobian product through ``z`` (with a graph under
    ``create_graph``, so double backward works)."""
    out: Tensor = _Graft.apply(start, f0, (z, f0))
    return out


class _Graft(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, start: Tensor, f0: Tensor, probe: tuple[Tensor, Tensor]) -> Tensor:
        ctx.probe = probe
        return f0.view_as(f0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, f0 = ctx.probe
        if not f0.requires_grad:  # a field that reads neither y nor any tensor wanting a gradient (y' = g(t))
            return torch.zeros_like(z), grad, None
        with torch.enable_grad():
            (through_z,) = torch.autograd.grad(f0, z, grad, retain_graph=True, create_graph=torch.is_grad_enabled(),
                                               allow_unused=True, materialize_grads=True)
        return through_z, grad, None


def segments(steps: int) -> tuple[int, ...]:
    """Segment bounds of ``steps`` steps: ``k = ⌈sqrt(steps)⌉`` steps each, counted from the end, so the last
    segment, which backward needs first and the forward keeps, is a whole one (the first may be shorter)."""
    return (0, *sorted(range(steps - auto_segment(steps), 0, -auto_segment(steps))), steps)


TAIL_SHARE = (3, 10)
"""The forward keeps the saved tensors of the trailing whole segments that hold at most this share of the steps."""


def kept_tail(bounds: tuple[int, ...]) -> int:
    """The first step of the tail whose saved tensors the forward keeps: the trailing whole segments of ``bounds``
    that hold at most :data:`TAIL_SHARE` of the steps, the last segment at least."""
    steps, (num, den) = bounds[-1], TAIL_SHARE
    return min((b for b in bounds[1:-1] if den * (steps - b) <= num * steps), default=bounds[-2])


class Stepwise:
    """Saved-tensor hooks for a solve run step by step (see the module docstring). ``steps``: the number of steps
    when known before the solve (a fixed grid), so only segment starts are recorded and the tail's saved tensors
    are kept (:func:`kept_tail`); ``None`` (adaptive) records every start and keeps the segment starts when
    :meth:`finish` is told the count."""

    def __init__(self, field: Callable[..., Tensor], rebuild: Rebuild, steps: int | None) -> None:
        self.field, self.rebuild, self.steps = field, rebuild, steps or 0
        self.bounds: tuple[int, ...] = segments(steps) if steps else ()
        self.kept_from = kept_tail(self.bounds) if steps else None
        self.marks = frozenset(self.bounds)
        self.starts: dict[int, _Start] = {}
        self.rngs: dict[int, RngState] = {}
        self.counts: dict[int, int] = {}
        self.saved: dict[tuple[int, int], Tensor] = {}
        self.current: int | None = None
        self.listeners: tuple[Listener, ...] = ()
        self.autocast: AutocastState | None = None
        self.rng: RngState | None = None
        self._collect: list[tuple[int, Tensor]] | None = None

    @contextmanager
    def hooks(self, z0: Tensor) -> Iterator[None]:
        """The forward pass: run the solve inside, each step's operations inside :meth:`step`."""
        self.autocast, self.rng, self.listeners = AutocastState.capture(z0), RngState.capture(z0), listeners()
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield

    @contextmanager
    def step(self, n: int, start: tuple[Tensor, ...] | None = None) -> Iterator[None]:
        if self._collect is None and start is not None:  # forward, a new trial of step n
            self.counts[n] = 0
            if not self.marks or n in self.marks:  # adaptive: every step's (rejected trials draw RNG in between)
                self.rngs[n] = RngState.capture(start[0])
                values, wants = tuple(x.detach() for x in start), tuple(x.requires_grad for x in start)
                self.starts[n] = _Start(values, wants, self.rngs[n])
                for x in self.starts[n].values:
                    note_held(x)
        elif self._collect is not None and start is not None and n in self.rngs:
            self.rngs[n].restore()  # rebuild: from the RNG state the forward's step started from
        previous, self.current = self.current, n
        try:
            yield
        finally:
            self.current = previous

    def finish(self, steps: int) -> None:
        """The solve took ``steps`` steps: keep the segment starts alone."""
        self.bounds = segments(steps)
        self.starts = {n: s for n, s in self.starts.items() if n in self.bounds}

    def drop(self) -> None:
        """Stop keeping the tail's saved tensors (a later solve continues from this one's output)."""
        self.kept_from = None
        self.saved.clear()

    def _pack(self, x: Tensor) -> Any:
        n = self.current
        if n is None:
            return _Kept(_announced(x))
        handle = (n, self.counts[n])
        self.counts[n] += 1
        if self.kept_from is not None and n >= self.kept_from:
            self.saved[handle] = _announced(x)
        return handle

    def _unpack(self, handle: Any) -> Tensor:
        if isinstance(handle, _Kept):
            return handle.x
        x = self.saved.pop(handle, None)
        if x is None:
            self._rebuild(handle[0])
            x = self.saved.pop(handle, None)
        if x is None:
            raise RuntimeError(f"odeint's default gradient: saved tensor {handle[1]} of step {handle[0]} is missing")
        return x

    def _rebuild(self, n: int) -> None:
        segment = max(j for j, a in enumerate(self.bounds[:-1]) if a <= n)
        a, b = self.bounds[segment], self.bounds[segment + 1]
        self.saved.clear()  # one segment's saved tensors at a time
        assert self.autocast is not None and self.rng is not None  # set by hooks()
        start = self.starts[a]
        collected: list[tuple[int, Tensor]] = []

        def collect(x: Tensor) -> Tensor:
            kept = _announced(x)
            assert self.current is not None
            collected.append((self.current, kept))
            return kept

        self._collect = collected
        try:
            with (
                isolated_rng(self.rng),
                self.autocast.entered(),
                listening(*self.listeners),
                frozen_buffers(self.field),
                torch.enable_grad(),
                torch.autograd.graph.saved_tensors_hooks(collect, _identity),
            ):
                values = tuple(
                    x.detach().requires_grad_(w) for x, w in zip(start.values, start.wants_grad, strict=True)
                )
                self.rebuild(a, b, values, self.step)
        finally:
            self._collect = None
        index: dict[int, int] = {}
        for m, x in collected:
            i = index.get(m, 0)
            index[m] = i + 1
            self.saved[(m, i)] = x
        expected = [self.counts.get(m, 0) for m in range(a, b)]
        if [index.get(m, 0) for m in range(a, b)] != expected:
            raise RuntimeError(
                f"recomputing steps {a}..{b} saved {len(collected)} tensors for backward where the forward pass saved "
                f"{sum(expected)}: the field must run the same operations when called again on the same state "
                "(no branches on global state or call counts); or use gradient=Direct()"
            )
