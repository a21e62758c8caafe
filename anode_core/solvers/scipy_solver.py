"""``scipy.integrate.solve_ivp`` as a solver: torchdiffeq's ``scipy_solver`` (``_impl/scipy_wrapper.py``, MIT).

A solve is one scipy integrator (``RK45``, ``RK23``, ``DOP853``, ``Radau``, ``BDF``, ``LSODA``) taking its own
adaptive steps across the whole grid, carried from grid point to grid point as the solver's state and read at
each by its dense output, as ``solve_ivp(..., t_eval=t)`` does in torchdiffeq; an isolated :meth:`ScipySolver.step`
(the adjoint's backward steps) is one ``solve_ivp`` call. The state crosses to NumPy and back, so the result has
no graph. Only the continuous adjoint differentiates it (the pairing rule, kind ``external``): it
solves the augmented system backwards with ``solve_ivp`` too, as torchdiffeq's ``odeint_adjoint`` does.

Reference: Virtanen et al., "SciPy 1.0", Nature Methods 17, 2020 (``solve_ivp``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from anode_core.solvers.base import Solver, SolverState, State, TupleField, flattener

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
    carries = True
    stages = 1

    def __post_init__(self) -> None:
        if self.solver not in SCIPY_METHODS:
            raise ValueError(f"`solver` must be one of {', '.join(SCIPY_METHODS)}; got {self.solver!r}")
        for knob in ("rtol", "atol", "min_step", "max_step"):
            value = getattr(self, knob)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"`{knob}` must be a number ≥ 0; got {value!r}")

    def advance(
        self, f: TupleField, t: float, t_next: float, y: State, state: SolverState
    ) -> tuple[State, SolverState]:
        """Step the carried integrator (started here at the first grid point) past ``t_next``; its dense output
        there. Started with an unbounded end, so a grid is one integration whatever its points."""
        import scipy.integrate

        flat, unflat = flattener(y)
        like = flat(y).detach()
        if not state:
            extra = {"min_step": self.min_step} if self.solver == "LSODA" else {}
            ode = getattr(scipy.integrate, self.solver)(
                _numpy_field(f, like, unflat), t, like.cpu().double().numpy(), math.copysign(math.inf, t_next - t),
                rtol=self.rtol, atol=self.atol, max_step=self.max_step, **extra,
            )
            state = (ode,)
        ode = state[0]
        while (t_next - ode.t) * ode.direction > 0:
            message = ode.step()
            if ode.status == "failed":
                raise RuntimeError(f"scipy_solver ({self.solver}) failed at t={ode.t:.6g}: {message}")
        return unflat(torch.from_numpy(ode.dense_output()(t_next)).to(like)), state

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
        from scipy.integrate import solve_ivp  # here: importing scipy costs time every other solver never pays

        flat, unflat = flattener(y)
        like = flat(y).detach()
        extra = {"min_step": self.min_step} if self.solver == "LSODA" else {}
        sol = solve_ivp(_numpy_field(f, like, unflat), (t, t + dt), like.cpu().double().numpy(), method=self.solver,
                        rtol=self.rtol, atol=self.atol, max_step=self.max_step, **extra)
        if not sol.success:
            raise RuntimeError(f"scipy_solver ({self.solver}) failed between t={t:.6g} and {t + dt:.6g}: {sol.message}")
        return unflat(torch.from_numpy(sol.y[:, -1]).to(like))


def _numpy_field(f: TupleField, like: Tensor, unflat: Callable[[Tensor], State]) -> Callable[..., np.ndarray]:
    """``f`` on flat NumPy vectors, evaluated in ``like``'s dtype and device without a graph."""

    def rhs(s: float, v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = f(float(s), unflat(torch.from_numpy(v).to(like)))
        return torch.cat([c.reshape(-1) for c in out]).cpu().double().numpy()

    return rhs
