"""States a gradient method keeps for backward outside autograd, announced to whoever is measuring.

Autograd's saved tensors can be observed through ``torch.autograd.graph.saved_tensors_hooks``; what a method
keeps by itself (ANODE's revolve checkpoints, the stored forward states of ``Adjoint(reconstruct=False)``) is
announced here with :func:`note_held`. Like saved-tensor hooks, the registry of listeners is thread-local: a
meter in one thread never counts another thread's work. Torch carries its hooks into the autograd engine's
worker threads (a CUDA backward runs in one); a custom ``Function`` carries these itself, by capturing
:func:`listeners` in forward and re-entering them with :func:`listening` in backward.

This module is below both ``gradients/`` and ``instruments/``: it imports nothing of either.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from torch import Tensor


class Listener(Protocol):
    def hold(self, tensor: Tensor) -> None:
        """``tensor`` is kept for backward until it is garbage-collected."""


_local = threading.local()


def listeners() -> tuple[Listener, ...]:
    """The listeners active in this thread, outermost first."""
    active: tuple[Listener, ...] = getattr(_local, "listeners", ())
    return active


@contextmanager
def listening(*added: Listener) -> Iterator[None]:
    """Announce to ``added`` too (each listener at most once) what this thread holds in the body."""
    before = listeners()
    _local.listeners = before + tuple(x for x in dict.fromkeys(added) if x not in before)
    try:
        yield
    finally:
        _local.listeners = before


def note_held(tensor: Tensor) -> None:
    """Announce that ``tensor`` is kept for backward outside autograd, until it is garbage-collected."""
    for listener in listeners():
        listener.hold(tensor)
