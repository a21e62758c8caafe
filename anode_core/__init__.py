"""anode_core: exact, memory-lean gradients of neural ODEs, next to the methods they are compared with.

>>> import anode_core as ac
>>> z1 = ac.odesolve(field, z0, steps=8, solver=ac.RK4(), gradient=ac.Anode())
>>> block = ac.ODEBlock(field, steps=2, solver=ac.Euler(), gradient=ac.Adjoint())
>>> report = ac.check(model, batch, loss)          # every gradient method against the exact one
>>> z1 = ac.odesolve(field, z0, solver=ac.Dopri5(rtol=1e-6, atol=1e-8), gradient=ac.Anode())
>>> ys = ac.odeint(func, y0, t, method="dopri5")          # torchdiffeq's signature

The library imports torch and nothing of pydantic, HTTP, SQL or queues; the application (specs, experiments,
demos, the CLI) lives in :mod:`anode_lab`. The names below are the whole public API: ``__all__`` lists them.
"""

from anode_core.adaptive import (
    AdaptiveSolver,
    Bosh3,
    Dopri5,
    Grid,
)
from anode_core.adaptive_pairs import (
    AdaptiveHeun,
    Dopri8,
    Fehlberg2,
    Tsit5,
)
from anode_core.block import (
    ODEBlock,
    ode_blocks,
    use_gradient,
)
from anode_core.compat import (
    odeint,
    odeint_event,
)
from anode_core.compat_adjoint import (
    odeint_adjoint,
)
from anode_core.gradients import (
    Adjoint,
    Anode,
    Direct,
    GradientMethod,
    Reversible,
)
from anode_core.instruments.check import (
    CheckReport,
    MethodCheck,
    NoSolveError,
    check,
)
from anode_core.instruments.compare import (
    GradientComparison,
    ParameterComparison,
    compare_gradients,
)
from anode_core.instruments.counting import (
    EvaluationCounter,
)
from anode_core.instruments.measure import (
    Measurement,
    measure_gradient,
)
from anode_core.instruments.memory import (
    MemoryMeter,
    MemoryModel,
    saved_bytes_of_one_evaluation,
)
from anode_core.instruments.reconstruction import (
    block_reconstruction_errors,
    reconstruction_error,
)
from anode_core.problem import (
    Problem,
)
from anode_core.registry import (
    ALL_SOLVERS,
    GRADIENTS,
    gradient_named,
    solver_named,
)
from anode_core.reversible import (
    DampedLeapfrog,
    ReversibleHeun,
    ReversibleSolver,
)
from anode_core.solve import (
    odesolve,
)
from anode_core.solvers import (
    RK4,
    SDIRK2,
    SOLVERS,
    TRBDF2,
    AdamsBashforth,
    AdamsBashforthMoulton,
    Euler,
    GaussLegendre4,
    GaussLegendre6,
    Heun,
    Heun3,
    ImplicitEuler,
    ImplicitMidpoint,
    ImplicitSolver,
    Midpoint,
    RadauIIA3,
    RadauIIA5,
    RungeKutta,
    Solver,
    Tableau,
    Trapezoid,
)

__version__ = "0.1.0"

__all__ = [
    "ALL_SOLVERS",
    "AdamsBashforth",
    "AdamsBashforthMoulton",
    "AdaptiveHeun",
    "AdaptiveSolver",
    "Adjoint",
    "Anode",
    "Bosh3",
    "CheckReport",
    "DampedLeapfrog",
    "Direct",
    "Dopri5",
    "Dopri8",
    "Euler",
    "EvaluationCounter",
    "Fehlberg2",
    "GRADIENTS",
    "GaussLegendre4",
    "GaussLegendre6",
    "GradientComparison",
    "GradientMethod",
    "Grid",
    "Heun",
    "Heun3",
    "ImplicitEuler",
    "ImplicitMidpoint",
    "ImplicitSolver",
    "Measurement",
    "MemoryMeter",
    "MemoryModel",
    "MethodCheck",
    "Midpoint",
    "NoSolveError",
    "ODEBlock",
    "ParameterComparison",
    "Problem",
    "RK4",
    "RadauIIA3",
    "RadauIIA5",
    "Reversible",
    "ReversibleHeun",
    "ReversibleSolver",
    "RungeKutta",
    "SDIRK2",
    "SOLVERS",
    "Solver",
    "TRBDF2",
    "Tableau",
    "Trapezoid",
    "Tsit5",
    "block_reconstruction_errors",
    "check",
    "compare_gradients",
    "gradient_named",
    "measure_gradient",
    "ode_blocks",
    "odeint",
    "odeint_adjoint",
    "odeint_event",
    "odesolve",
    "reconstruction_error",
    "saved_bytes_of_one_evaluation",
    "solver_named",
    "use_gradient",
]
