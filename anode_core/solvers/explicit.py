"""Fixed-step explicit Runge–Kutta schemes, each no more than its Butcher tableau.

References: Hairer, Nørsett & Wanner, *Solving ODEs I* (1993), Table II.1.2 (Heun's third-order method, Kutta's
classical RK4); torchdiffeq's ``heun2``/``heun3`` (``_impl/fixed_grid.py``) are the same tableaux.
"""

from __future__ import annotations

from anode_core.solvers.base import RungeKutta, Tableau


class Euler(RungeKutta):
    """Forward Euler, order 1: one ResNet block per step."""

    name = "euler"
    order = 1
    tableau = Tableau(c=(0.0,), a=((),), b=(1.0,))


class Midpoint(RungeKutta):
    """Explicit midpoint rule (RK2), order 2."""

    name = "midpoint"
    order = 2
    tableau = Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))


class Heun(RungeKutta):
    """Heun's method (explicit trapezoid, RK2), order 2: torchdiffeq's ``heun2``."""

    name = "heun"
    order = 2
    tableau = Tableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))


class Heun3(RungeKutta):
    """Heun's third-order method: torchdiffeq's ``heun3``."""

    name = "heun3"
    order = 3
    tableau = Tableau(c=(0.0, 1 / 3, 2 / 3), a=((), (1 / 3,), (0.0, 2 / 3)), b=(1 / 4, 0.0, 3 / 4))


class RK4(RungeKutta):
    """The classical fourth-order Runge–Kutta scheme."""

    name = "rk4"
    order = 4
    tableau = Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    )


class RK38(RungeKutta):
    """Kutta's 3/8 rule, order 4: torchdiffeq's fixed-grid ``rk4`` (``rk4_alt_step_func``), and the start-up
    steps of its Adams methods."""

    name = "rk4_38"
    order = 4
    tableau = Tableau(
        c=(0.0, 1 / 3, 2 / 3, 1.0),
        a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    )


SOLVERS: dict[str, type[RungeKutta]] = {cls.name: cls for cls in (Euler, Midpoint, Heun, Heun3, RK4)}
