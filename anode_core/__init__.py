"""anode_core: exact, memory-lean gradients of neural ODEs, next to the methods they are compared with.

>>> import anode_core as ac
>>> z1 = ac.odesolve(field, z0, steps=8, solver=ac.RK4(), gradient=ac.Anode())
>>> block = ac.ODEBlock(field, steps=2, solver=ac.Euler(), gradient=ac.Adjoint())
>>> report = ac.check(model, batch, loss)          # every gradient method against the exact one
>>> z1 = ac.odesolve(field, z0, solver=ac.Dopri5(rtol=1e-6, atol=1e-8), gradient=ac.Anode())
>>> ys = ac.odeint(func, y0, t, method="dopri5")          # torchdiffeq's signature

The library imports torch and nothing of pydantic, HTTP, SQL or queues; the application (specs, experiments,
demos, the CLI) lives in :mod:`anode_lab`. ``_EXPORTS`` is the whole public API (``__all__`` and ``dir()``
list it); names load on first use (PEP 562), so that a torch-free submodule (``anode_core.pairing``, which the
specs read in the API process) imports without torch.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ALL_SOLVERS": "anode_core.registry",
    "AdamsBashforth": "anode_core.solvers",
    "AdamsBashforthMoulton": "anode_core.solvers",
    "AdaptiveHeun": "anode_core.adaptive_pairs",
    "AdaptiveSolver": "anode_core.adaptive",
    "Adjoint": "anode_core.gradients",
    "Anode": "anode_core.gradients",
    "Bosh3": "anode_core.adaptive",
    "CheckReport": "anode_core.instruments.check",
    "DampedLeapfrog": "anode_core.reversible",
    "Direct": "anode_core.gradients",
    "Dopri5": "anode_core.adaptive",
    "Dopri8": "anode_core.adaptive_pairs",
    "Euler": "anode_core.solvers",
    "EvaluationCounter": "anode_core.instruments.counting",
    "Fehlberg2": "anode_core.adaptive_pairs",
    "GRADIENTS": "anode_core.registry",
    "GaussLegendre4": "anode_core.solvers",
    "GaussLegendre6": "anode_core.solvers",
    "GradientComparison": "anode_core.instruments.compare",
    "GradientMethod": "anode_core.gradients",
    "Grid": "anode_core.adaptive",
    "Heun": "anode_core.solvers",
    "Heun3": "anode_core.solvers",
    "ImplicitEuler": "anode_core.solvers",
    "ImplicitMidpoint": "anode_core.solvers",
    "ImplicitSolver": "anode_core.solvers",
    "Measurement": "anode_core.instruments.measure",
    "MemoryMeter": "anode_core.instruments.memory",
    "MemoryModel": "anode_core.instruments.memory",
    "MethodCheck": "anode_core.instruments.check",
    "Midpoint": "anode_core.solvers",
    "NoSolveError": "anode_core.instruments.check",
    "ODEBlock": "anode_core.block",
    "ParameterComparison": "anode_core.instruments.compare",
    "Problem": "anode_core.problem",
    "RK4": "anode_core.solvers",
    "RadauIIA3": "anode_core.solvers",
    "RadauIIA5": "anode_core.solvers",
    "Reversible": "anode_core.gradients",
    "ReversibleHeun": "anode_core.reversible",
    "ReversibleSolver": "anode_core.reversible",
    "RungeKutta": "anode_core.solvers",
    "SDIRK2": "anode_core.solvers",
    "SOLVERS": "anode_core.solvers",
    "Solver": "anode_core.solvers",
    "TRBDF2": "anode_core.solvers",
    "Tableau": "anode_core.solvers",
    "Trapezoid": "anode_core.solvers",
    "Tsit5": "anode_core.adaptive_pairs",
    "block_reconstruction_errors": "anode_core.instruments.reconstruction",
    "check": "anode_core.instruments.check",
    "compare_gradients": "anode_core.instruments.compare",
    "gradient_named": "anode_core.registry",
    "measure_gradient": "anode_core.instruments.measure",
    "ode_blocks": "anode_core.block",
    "odeint": "anode_core.compat",
    "odeint_adjoint": "anode_core.compat_adjoint",
    "odeint_event": "anode_core.compat",
    "odesolve": "anode_core.solve",
    "reconstruction_error": "anode_core.instruments.reconstruction",
    "saved_bytes_of_one_evaluation": "anode_core.instruments.memory",
    "solver_named": "anode_core.registry",
    "use_gradient": "anode_core.block",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'anode_core' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__", *(n for n, v in globals().items() if n.startswith("__"))})


if _TYPE_CHECKING:  # the same names for type checkers (tests/test_validation.py holds the two equal)
    from anode_core.adaptive import AdaptiveSolver as AdaptiveSolver, Bosh3 as Bosh3, Dopri5 as Dopri5, Grid as Grid
    from anode_core.adaptive_pairs import (
        AdaptiveHeun as AdaptiveHeun,
        Dopri8 as Dopri8,
        Fehlberg2 as Fehlberg2,
        Tsit5 as Tsit5,
    )
    from anode_core.block import ODEBlock as ODEBlock, ode_blocks as ode_blocks, use_gradient as use_gradient
    from anode_core.compat import odeint as odeint, odeint_event as odeint_event
    from anode_core.compat_adjoint import odeint_adjoint as odeint_adjoint
    from anode_core.gradients import (
        Adjoint as Adjoint,
        Anode as Anode,
        Direct as Direct,
        GradientMethod as GradientMethod,
        Reversible as Reversible,
    )
    from anode_core.instruments.check import (
        CheckReport as CheckReport,
        MethodCheck as MethodCheck,
        NoSolveError as NoSolveError,
        check as check,
    )
    from anode_core.instruments.compare import (
        GradientComparison as GradientComparison,
        ParameterComparison as ParameterComparison,
        compare_gradients as compare_gradients,
    )
    from anode_core.instruments.counting import EvaluationCounter as EvaluationCounter
    from anode_core.instruments.measure import Measurement as Measurement, measure_gradient as measure_gradient
    from anode_core.instruments.memory import (
        MemoryMeter as MemoryMeter,
        MemoryModel as MemoryModel,
        saved_bytes_of_one_evaluation as saved_bytes_of_one_evaluation,
    )
    from anode_core.instruments.reconstruction import (
        block_reconstruction_errors as block_reconstruction_errors,
        reconstruction_error as reconstruction_error,
    )
    from anode_core.problem import Problem as Problem
    from anode_core.registry import (
        ALL_SOLVERS as ALL_SOLVERS,
        GRADIENTS as GRADIENTS,
        gradient_named as gradient_named,
        solver_named as solver_named,
    )
    from anode_core.reversible import (
        DampedLeapfrog as DampedLeapfrog,
        ReversibleHeun as ReversibleHeun,
        ReversibleSolver as ReversibleSolver,
    )
    from anode_core.solve import odesolve as odesolve
    from anode_core.solvers import (
        RK4 as RK4,
        SDIRK2 as SDIRK2,
        SOLVERS as SOLVERS,
        TRBDF2 as TRBDF2,
        AdamsBashforth as AdamsBashforth,
        AdamsBashforthMoulton as AdamsBashforthMoulton,
        Euler as Euler,
        GaussLegendre4 as GaussLegendre4,
        GaussLegendre6 as GaussLegendre6,
        Heun as Heun,
        Heun3 as Heun3,
        ImplicitEuler as ImplicitEuler,
        ImplicitMidpoint as ImplicitMidpoint,
        ImplicitSolver as ImplicitSolver,
        Midpoint as Midpoint,
        RadauIIA3 as RadauIIA3,
        RadauIIA5 as RadauIIA5,
        RungeKutta as RungeKutta,
        Solver as Solver,
        Tableau as Tableau,
        Trapezoid as Trapezoid,
    )
