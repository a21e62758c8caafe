"""Count field evaluations of every ODE block of a model."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from torch import nn

from anode_core.block import ode_blocks


class EvaluationCounter:
    """``with EvaluationCounter(model) as nfe: ...``; ``nfe.calls`` is the number of field evaluations so far."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self._fields = [block.field for block in ode_blocks(model)]
        self._handles: list[Any] = []

    def _count(self, *_: object) -> None:
        self.calls += 1

    def __enter__(self) -> EvaluationCounter:
        self._handles = [f.register_forward_pre_hook(self._count) for f in self._fields]
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
