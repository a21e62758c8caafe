"""``scipy.integrate.solve_ivp`` as a solver: torchdiffeq's ``scipy_solver`` (``_impl/scipy_wrapper.py``, MIT).

Each step is one ``solve_ivp`` call from ``t`` to ``t + dt`` with the chosen ``solver`` (``RK45``, ``RK23``,
``DOP853``, ``Radau``, ``BDF``, ``LSODA``) and its own adaptive steps; the state crosses to NumPy and back, so
the result has no graph. Only the continuous adjoint differentiates it (the pairing rule, kind ``external``): it
solves the augmented system backwards with ``solve_ivp`` too, as torchdiffeq's ``odeint_adjoint`` does.

Reference: Virtanen et al., "SciPy 1.0", Nature Methods 17, 2020 (``solve_ivp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from anode_core.solvers.base import Solver, State, TupleField, flattener

SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


@dataclass(frozen=True)
class ScipySolver(Solver):
    """One ``solve_ivp`` call a step (module docstring). ``min_step`` applies to ``LSODA`` only (scipy ignores
    it elsewhere); ``max_step`` to all."""

    solver: str = "LSODA"
    rtol: float = 1e-7
    atol: float = 1e-9
    min_step: float = 0.0
    max_step: float = math.inf

    name = "scipy_solver"
    order = 0  # the order is the chosen scipy method's, and LSODA's varies
    kind = "external"
    stages = 1

    def __post_init__(self) -> None:
        if self.solver not in SCIPY_METHODS:
            raise ValueError(f"`solver` must be one of {', '.join(SCIPY_METHODS)}; got {self.solver!r}")
        for knob in ("rtol", "atol", "min_step", "max_step"):
            value = getattr(self, knob)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"`{knob}` must be a number ≥ 0; got {value!r}")

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
        from scipy.integrate import solve_ivp  # here: importing scipy costs time every other solver never pays

        flat, unflat = flattener(y)
        like = flat(y).detach()

        def rhs(s: float, v: np.ndarray) -> np.ndarray:
            state = unflat(torch.from_numpy(v).to(like))
            with torch.no_grad():
                return flat(f(float(s), state)).detach().cpu().double().numpy()

        extra = {"min_step": self.min_step} if self.solver == "LSODA" else {}
        sol = solve_ivp(rhs, (t, t + dt), like.cpu().double().numpy(), method=self.solver, rtol=self.rtol,
                        atol=self.atol, max_step=self.max_step, **extra)
        if not sol.success:
            raise RuntimeError(f"scipy_solver ({self.solver}) failed between t={t:.6g} and {t + dt:.6g}: {sol.message}")
        return unflat(torch.from_numpy(sol.y[:, -1]).to(like))
