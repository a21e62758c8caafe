"""Pieces shared by the experiment specs. Pydantic only: importing this never imports torch.

Bounds here are what one request may ask of a machine; the API, the CLI and the worker all validate with them.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from anode_core.pairing import SolverKind as SolverKind, Use, refusal, use_of


class SolverFacts(NamedTuple):
    order: int
    stages: int
    """Field evaluations per step (the length of the solver's tableau; per Broyden iteration for an implicit
    scheme; the one new slope a step for a multistep method)."""
    description: str
    kind: SolverKind = "fixed"
    """fixed: N_t explicit steps of one size; adaptive: an embedded pair choosing its steps from ``rtol``/``atol``;
    implicit: N_t implicit steps, each solved by Broyden iterations; multistep: N_t steps carrying the history of
    their slopes; reversible: fixed steps whose states can be rebuilt backwards exactly (the ``reversible``
    method). Which gradient methods pair with each kind is :data:`anode_core.pairing.PAIRS`."""


SOLVERS: dict[str, SolverFacts] = {
    "euler": SolverFacts(1, 1, "forward Euler (a ResNet block)"),
    "midpoint": SolverFacts(2, 2, "explicit midpoint (RK2)"),
    "heun": SolverFacts(2, 2, "Heun's method (RK2, trapezoidal; torchdiffeq's heun2)"),
    "heun3": SolverFacts(3, 3, "Heun's third-order method"),
    "rk4": SolverFacts(4, 4, "classic Runge-Kutta"),
    "dopri5": SolverFacts(5, 7, "Dormand-Prince 5(4), adaptive steps (torchdiffeq's default)", "adaptive"),
    "bosh3": SolverFacts(3, 4, "Bogacki-Shampine 3(2), adaptive steps", "adaptive"),
    "reversible_heun": SolverFacts(2, 1, "reversible Heun (Kidger et al. 2021), algebraically reversible; reversal "
                                   "amplifies rounding on expanding fields (float32: 1.9e-2 from Direct at N_t 10⁴)",
                                   "reversible"),
    "alf": SolverFacts(2, 1, "asynchronous leapfrog (MALI, Zhuang et al. 2021), algebraically reversible; reversal "
                       "amplifies rounding on expanding fields (float32: 3.5e-2 from Direct at N_t 100)",
                       "reversible"),
    "explicit_adams": SolverFacts(4, 1, "Adams-Bashforth up to order 11 after 3/8-rule start-up steps "
                                  "(torchdiffeq's; unstable on long solves at the default max_order)", "multistep"),
    "implicit_adams": SolverFacts(4, 1, "Adams-Bashforth predictor, Adams-Moulton corrector iterated up to 4 "
                                  "times (torchdiffeq's implicit_adams and fixed_adams)", "multistep"),
    "implicit_euler": SolverFacts(1, 1, "backward Euler, Broyden iterations", "implicit"),
    "implicit_midpoint": SolverFacts(2, 1, "implicit midpoint (1-stage Gauss), Broyden iterations", "implicit"),
    "trapezoid": SolverFacts(2, 2, "implicit trapezoid (Crank-Nicolson), Broyden iterations", "implicit"),
    "radauIIA3": SolverFacts(3, 2, "Radau IIA, 2 stages, L-stable, Broyden iterations", "implicit"),
    "radauIIA5": SolverFacts(5, 3, "Radau IIA, 3 stages, L-stable, Broyden iterations", "implicit"),
    "gl4": SolverFacts(4, 2, "Gauss-Legendre, 2 stages, symplectic, Broyden iterations", "implicit"),
    "gl6": SolverFacts(6, 3, "Gauss-Legendre, 3 stages, symplectic, Broyden iterations", "implicit"),
    "sdirk2": SolverFacts(2, 2, "singly diagonally implicit RK, L-stable, stage by stage", "implicit"),
    "trbdf2": SolverFacts(2, 3, "TR-BDF2 (trapezoid then BDF2) as an ESDIRK, stage by stage", "implicit"),
    "adaptive_heun": SolverFacts(2, 2, "Heun with an Euler error estimate, adaptive steps", "adaptive"),
    "fehlberg2": SolverFacts(2, 3, "Fehlberg 2(1), adaptive steps", "adaptive"),
    "tsit5": SolverFacts(5, 7, "Tsitouras 5(4), adaptive steps", "adaptive"),
    "dopri8": SolverFacts(8, 14, "Dormand-Prince 8(7), adaptive steps", "adaptive"),
}
"""The solvers of ``anode_core.ALL_SOLVERS`` without importing torch: the one table the specs, the catalog and
the dashboard read. A test checks names, orders, stages and kinds against the library's registry."""
SolverName = Literal[
    "euler", "midpoint", "heun", "heun3", "rk4", "dopri5", "bosh3", "reversible_heun", "alf", "explicit_adams",
    "implicit_adams", "implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "radauIIA5", "gl4", "gl6",
    "sdirk2", "trbdf2", "adaptive_heun", "fehlberg2", "tsit5", "dopri8",
]
"""The keys of :data:`SOLVERS`, spelled for the type checker and the JSON schema (a test checks they agree)."""
MethodName = Literal["direct", "anode", "adjoint", "reversible"]
ActivationName = Literal["relu", "tanh", "softplus", "elu", "gelu", "leaky_relu", "sigmoid"]
DtypeName = Literal["float32", "float64"]
DeviceName = Literal["auto", "cpu", "cuda"]

MAX_STEPS = 256
MAX_CHECKPOINTS = 64
MIN_RTOL, MAX_RTOL = 1e-10, 1e-1
MIN_ATOL, MAX_ATOL = 1e-12, 1e-1
FLOAT32_MIN_RTOL = 1e-6
"""float32 carries about 7 digits: a tighter tolerance is never met and the solve ends at its step limit."""
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-5
DEFAULT_STEP_LIMIT = 1000
MAX_STEP_LIMIT = 4096


def control_character(text: str) -> str | None:
    """Why ``text`` cannot be stored as text (``None`` when it can): a control character (NUL, escape, newline…)
    or a lone surrogate, which the stores refuse (PostgreSQL rejects NUL, neither store encodes a surrogate), the
    filesystem refuses (NUL) or a reader would take for markup."""
    for at, char in enumerate(text):
        category = unicodedata.category(char)
        if category in ("Cc", "Cs"):
            what = "a lone surrogate" if category == "Cs" else "a control character"
            return f"holds {what} (U+{ord(char):04X}) at position {at}: remove it (stored text is printable)"
    return None


def is_adaptive(solver: str) -> bool:
    return SOLVERS[solver].kind == "adaptive"


def adaptive_steps(solver: str, rtol: float, limit: int) -> int:
    """A guess of the steps an adaptive solve over [0, 1] takes at ``rtol``, for a sweep's work bound and the
    demos' fixed presets: the controller picks h with local error ∝ h^(p+1) ≈ rtol, so about rtol^(−1/p) steps
    (dopri5: 12 accepted steps at 1e-8 where this says 40, ~19 trial steps per conv block at 1e-7 where it says 25;
    bosh3: 231 at 1e-8 where it says 465); never more than the step limit. Not a bound: a stiff field takes far
    more (137 where this says 4), so admission counts the step limit (``anode_lab.specs.cost.worst_steps``)."""
    order = SOLVERS[solver].order
    guess: float = rtol ** (-1.0 / order)
    return max(1, min(limit, math.ceil(guess)))


def pairing_error(solver: str, gradient: GradientSpec) -> str | None:
    """Why ``gradient`` cannot differentiate ``solver`` (``None`` when it can): the rule the library checks,
    :data:`anode_core.pairing.PAIRS` (torch-free), in a spec's words, so a spec is refused with a 422 rather than
    failing in the worker."""
    use = use_of(gradient.method, gradient.checkpoints, gradient.reconstruct)
    kinds = {name: facts.kind for name, facts in SOLVERS.items()}
    return refusal(SOLVERS[solver].kind, use, repr(solver), SPEC_SPELLING, kinds)


SPEC_SPELLING: dict[Use, str] = {
    "direct": "method 'direct'",
    "anode": "method 'anode'",
    "checkpoints": "method 'anode' with `checkpoints`",
    "adjoint": "method 'adjoint'",
    "stored_states": "method 'adjoint' with `reconstruct: false`",
    "reversible": "method 'reversible'",
}


class SpecModel(BaseModel):
    """Base of every spec: immutable, unknown keys rejected (a typo is an error, not a silent default), NaN and
    infinities refused as such (not as "less than or equal to" a bound they fail to compare with)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class GradientSpec(SpecModel):
    """How the ODE blocks are differentiated."""

    method: MethodName = Field("anode", description="direct: backprop; anode: exact, O(L)+O(N_t); "
                             "adjoint: the continuous adjoint (Chen et al.); reversible: exact, O(L), "
                             "reversible_heun and alf only")
    checkpoints: int | None = Field(
        None, ge=0, le=MAX_CHECKPOINTS, description="anode only: states kept inside a block (binomial schedule)"
    )
    reconstruct: bool = Field(True, description="adjoint only: false restarts each reverse step from the "
                               "stored forward state (no accumulated reconstruction error)")

    @model_validator(mode="after")
    def _knobs_match_method(self) -> GradientSpec:
        if self.checkpoints is not None and self.method != "anode":
            raise ValueError("`checkpoints` applies to method 'anode' only; remove it or set method to 'anode'")
        if not self.reconstruct and self.method != "adjoint":
            raise ValueError("`reconstruct: false` applies to method 'adjoint' only; remove it")
        return self

    def knobs(self) -> dict[str, object]:
        """Keyword arguments for ``anode_core.gradient_named(self.method, **knobs)``."""
        if self.method == "anode":
            return {"checkpoints": self.checkpoints}
        if self.method == "adjoint":
            return {"reconstruct": self.reconstruct}
        return {}  # direct, reversible


_ADAPTIVE_ONLY = ("rtol", "atol", "step_limit")
_ADAPTIVE_DEFAULTS = {"rtol": DEFAULT_RTOL, "atol": DEFAULT_ATOL, "step_limit": DEFAULT_STEP_LIMIT}


class OdeSpec(SpecModel):
    """The ODE blocks of a model: scheme, number of steps (or tolerances), field activation and gradient method.

    A fixed-step or reversible solver takes ``steps``; an adaptive one (dopri5, tsit5, …) takes ``rtol``, ``atol``
    and ``step_limit`` instead, filled with their defaults when left out, so a stored spec says what ran.
    """

    solver: SolverName = "euler"
    steps: int | None = Field(2, ge=1, le=MAX_STEPS, description="N_t, fixed steps per ODE block; null (and "
                              "left out) for an adaptive solver, which chooses its own")
    rtol: float | None = Field(None, ge=MIN_RTOL, le=MAX_RTOL, description="adaptive solvers only: relative "
                               f"tolerance of each step (default {DEFAULT_RTOL:g})")
    atol: float | None = Field(None, ge=MIN_ATOL, le=MAX_ATOL, description="adaptive solvers only: absolute "
                               f"tolerance of each step (default {DEFAULT_ATOL:g})")
    step_limit: int | None = Field(None, ge=1, le=MAX_STEP_LIMIT, description="adaptive solvers only: the most "
                                   "steps (accepted and rejected) one block's solve may take before the run fails "
                                   f"naming it (default {DEFAULT_STEP_LIMIT})")
    activation: ActivationName = "relu"
    gradient: GradientSpec = GradientSpec()

    @model_validator(mode="before")
    @classmethod
    def _knobs_of_the_solver(cls, data: Any) -> Any:
        """Adaptive solvers take tolerances, not ``steps``; fixed ones the reverse. Defaults are filled in."""
        solver = data.get("solver", "euler") if isinstance(data, dict) else None
        if not isinstance(solver, str) or solver not in SOLVERS:
            return data
        if is_adaptive(solver):
            if data.get("steps") is not None:
                raise ValueError(f"`steps` applies to fixed-step solvers; {solver!r} chooses its own steps: "
                                 "remove `steps` (bound them with `step_limit`)")
            filled = {k: v if data.get(k) is None else data[k] for k, v in _ADAPTIVE_DEFAULTS.items()}
            return {**data, "steps": None, **filled}
        stray = [k for k in _ADAPTIVE_ONLY if data.get(k) is not None]
        if stray:
            adaptive = [name for name in SOLVERS if is_adaptive(name)]
            raise ValueError(f"`{stray[0]}` applies to adaptive solvers ({', '.join(adaptive)}) only; remove it or "
                             f"set `solver` to {' or '.join(adaptive)}")
        return data

    @model_validator(mode="after")
    def _pairs_with_the_method(self) -> OdeSpec:
        if self.steps is None and not is_adaptive(self.solver):
            raise ValueError(f"solver {self.solver!r} takes fixed steps: set `steps` (N_t), e.g. 2")
        problem = pairing_error(self.solver, self.gradient)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def adaptive(self) -> bool:
        return is_adaptive(self.solver)

    def solver_knobs(self) -> dict[str, object]:
        """Keyword arguments for ``anode_core.solver_named(self.solver, **knobs)``."""
        if not self.adaptive:
            return {}
        return {"rtol": self.rtol, "atol": self.atol, "max_steps": self.step_limit}
