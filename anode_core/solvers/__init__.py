"""Solvers behind one protocol (:class:`Solver`): explicit tableaux, implicit Runge–Kutta, Adams multistep.

Adaptive pairs live in :mod:`anode_core.adaptive`, reversible schemes in :mod:`anode_core.reversible`.
"""

from anode_core.solvers.adams import AdamsBashforth, AdamsBashforthMoulton
from anode_core.solvers.base import RungeKutta, Solver, SolverState, State, Tableau, TupleField, _combine
from anode_core.solvers.explicit import RK4, RK38, SOLVERS, Euler, Heun, Heun3, Midpoint
from anode_core.solvers.implicit import (
    IMPLICIT_SOLVERS,
    SDIRK2,
    TRBDF2,
    GaussLegendre4,
    GaussLegendre6,
    ImplicitEuler,
    ImplicitMidpoint,
    ImplicitSolver,
    ImplicitTableau,
    RadauIIA3,
    RadauIIA5,
    Trapezoid,
)
from anode_core.solvers.scipy_solver import ScipySolver

__all__ = [
    "IMPLICIT_SOLVERS",
    "RK4",
    "RK38",
    "SDIRK2",
    "ScipySolver",
    "SOLVERS",
    "TRBDF2",
    "AdamsBashforth",
    "AdamsBashforthMoulton",
    "Euler",
    "GaussLegendre4",
    "GaussLegendre6",
    "Heun",
    "Heun3",
    "ImplicitEuler",
    "ImplicitMidpoint",
    "ImplicitSolver",
    "ImplicitTableau",
    "Midpoint",
    "RadauIIA3",
    "RadauIIA5",
    "RungeKutta",
    "Solver",
    "SolverState",
    "State",
    "Tableau",
    "Trapezoid",
    "TupleField",
    "_combine",
]
