"""Names to objects: the one place where strings from the API, the CLI or a spec become solvers and methods."""

from __future__ import annotations

from inspect import signature

from anode_core.adaptive import Bosh3, Dopri5
from anode_core.gradients import Adjoint, Anode, Direct, GradientMethod, Reversible
from anode_core.reversible import DampedLeapfrog, ReversibleHeun
from anode_core.solvers import SOLVERS, Solver

GRADIENTS: dict[str, type[GradientMethod]] = {cls.name: cls for cls in (Direct, Anode, Adjoint, Reversible)}
ALL_SOLVERS: dict[str, type[Solver]] = {
    **SOLVERS,
    **{cls.name: cls for cls in (Dopri5, Bosh3, ReversibleHeun, DampedLeapfrog)},
}
"""Fixed-step tableaux (``SOLVERS``), the adaptive pairs and the reversible schemes, by name."""


def solver_named(name: str, **knobs: object) -> Solver:
    """``"rk4"`` -> ``RK4()``, ``("dopri5", rtol=1e-6)`` -> ``Dopri5(rtol=1e-6)``; unknown names raise
    ``ValueError``."""
    try:
        cls = ALL_SOLVERS[name]
    except KeyError:
        raise ValueError(f"`solver` must be one of {', '.join(ALL_SOLVERS)}; got {name!r}") from None
    try:
        return cls(**knobs)
    except TypeError:
        options = ", ".join(signature(cls).parameters) or "none"
        raise ValueError(f"solver {name!r} takes the options {options}; got {sorted(knobs)}") from None


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
