"""Names to objects: the one place where strings from the API, the CLI or a spec become solvers and methods."""

from __future__ import annotations

from inspect import signature

from anode_core.gradients import Adjoint, Anode, Direct, GradientMethod
from anode_core.solvers import SOLVERS, Solver

GRADIENTS: dict[str, type[GradientMethod]] = {cls.name: cls for cls in (Direct, Anode, Adjoint)}


def solver_named(name: str) -> Solver:
    """``"rk4"`` -> ``RK4()``; an unknown name raises a ``ValueError`` listing the known ones."""
    try:
        return SOLVERS[name]()
    except KeyError:
        raise ValueError(f"`solver` must be one of {', '.join(SOLVERS)}; got {name!r}") from None


def gradient_named(name: str, **knobs: object) -> GradientMethod:
    """``("anode", checkpoints=4)`` -> ``Anode(checkpoints=4)``; unknown names or knobs raise ``ValueError``."""
    try:
        cls = GRADIENTS[name]
    except KeyError:
        raise ValueError(f"`gradient` must be one of {', '.join(GRADIENTS)}; got {name!r}") from None
    try:
        return cls(**knobs)
    except TypeError:
        options = ", ".join(signature(cls).parameters) or "none"
        raise ValueError(f"gradient {name!r} takes the options {options}; got {sorted(knobs)}") from None
