"""Names to objects: the one place where strings from the API, the CLI or a spec become solvers and methods."""

from __future__ import annotations

from collections.abc import Mapping
from inspect import signature
from typing import TypeVar

from anode_core.adaptive_pairs import ADAPTIVE_METHODS
from anode_core.gradients import Adjoint, Anode, Direct, GradientMethod, Reversible
from anode_core.reversible import DampedLeapfrog, ReversibleHeun
from anode_core.solvers import IMPLICIT_SOLVERS, SOLVERS, AdamsBashforth, AdamsBashforthMoulton, Solver

GRADIENTS: dict[str, type[GradientMethod]] = {cls.name: cls for cls in (Direct, Anode, Adjoint, Reversible)}
ALL_SOLVERS: dict[str, type[Solver]] = {
    **SOLVERS,
    **{name: ADAPTIVE_METHODS[name] for name in ("dopri5", "bosh3")},  # the lab's first two, in their old places
    **{cls.name: cls for cls in (ReversibleHeun, DampedLeapfrog, AdamsBashforth, AdamsBashforthMoulton)},
    **IMPLICIT_SOLVERS,
    **ADAPTIVE_METHODS,
}
"""Fixed-step tableaux (``SOLVERS``), the adaptive pairs, the reversible schemes, the Adams methods and the
implicit Runge–Kutta schemes, by name. ``anode_lab.specs.common.SOLVERS`` lists the same (a test checks it)."""
T = TypeVar("T")


def solver_named(name: str, **knobs: object) -> Solver:
    """``"rk4"`` -> ``RK4()``, ``("dopri5", rtol=1e-6)`` -> ``Dopri5(rtol=1e-6)``; unknown names raise
    ``ValueError``."""
    return _built("solver", ALL_SOLVERS, name, knobs)


def gradient_named(name: str, **knobs: object) -> GradientMethod:
    """``("anode", checkpoints=4)`` -> ``Anode(checkpoints=4)``; unknown names or knobs raise ``ValueError``."""
    return _built("gradient", GRADIENTS, name, knobs)


def _built(what: str, table: Mapping[str, type[T]], name: str, knobs: Mapping[str, object]) -> T:
    """``table[name](**knobs)``; an unknown name or knob is a ``ValueError`` naming what ``what`` may be."""
    try:
        cls = table[name]
    except KeyError:
        raise ValueError(f"`{what}` must be one of {', '.join(table)}; got {name!r}") from None
    try:
        return cls(**knobs)
    except TypeError:
        options = ", ".join(signature(cls).parameters) or "none"
        raise ValueError(f"{what} {name!r} takes the options {options}; got {sorted(knobs)}") from None
