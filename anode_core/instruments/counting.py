"""Count the field evaluations of every ODE solve that runs through anode_core."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import TracebackType
from typing import Any

from torch import Tensor, nn

from anode_core.block import ode_blocks
from anode_core.problem import Problem
from anode_core.watch import watching_solves


class EvaluationCounter:
    """``with EvaluationCounter(model) as nfe: ...``; ``nfe.calls`` is the number of field evaluations so far.

    Counts every solve started inside the body through ``ODEBlock``, ``odesolve`` or ``odeint``, forward and
    backward, until the body ends; with ``model`` given, only solves whose field is, or wraps, one of its modules
    (and fields that are plain functions). ``nfe.solves`` is the number of solves started.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self.calls = 0
        self.solves = 0
        self._model = model
        self._active = False
        self._hooked: dict[int, Any] = {}
        self._watch = watching_solves(self._see)

    def _count(self, *_: object) -> None:
        self.calls += self._active  # a plain-function field's wrapper may outlive the body

    def _see(self, problem: Problem, z0: Tensor) -> Problem:
        field = problem.field
        if not isinstance(field, nn.Module):
            self.solves += 1
            return dataclasses.replace(problem, field=_Counted(field, self._count))
        if self._model is not None:
            ours = {id(m) for m in self._model.modules()}
            if not any(id(m) in ours for m in field.modules()):
                return problem
        self.solves += 1
        self._hook(field)
        return problem

    def _hook(self, field: nn.Module) -> None:
        if id(field) not in self._hooked:
            self._hooked[id(field)] = field.register_forward_pre_hook(self._count)

    def __enter__(self) -> EvaluationCounter:
        self._active = True
        if self._model is not None:  # blocks whose forward ran before the body still recompute inside it
            for block in ode_blocks(self._model):
                self._hook(block.field)
        self._watch.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._watch.__exit__(kind, exc, tb)
        for handle in self._hooked.values():
            handle.remove()
        self._hooked = {}
        self._active = False


class _Counted:
    """A plain-function field that reports each evaluation."""

    def __init__(self, field: Callable[[float, Tensor], Tensor], count: Callable[[], None]) -> None:
        self.field, self.count = field, count

    def __call__(self, t: float, z: Tensor) -> Tensor:
        self.count()
        return self.field(t, z)
