"""Pieces shared by the experiment specs. Pydantic only: importing this never imports torch.

Bounds here are what one request may ask of a machine; the API, the CLI and the worker all validate with them.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

SolverKind = Literal["fixed", "adaptive", "reversible"]


class SolverFacts(NamedTuple):
    order: int
    stages: int
    """Field evaluations per step (the length of the solver's tableau)."""
    description: str
    kind: SolverKind = "fixed"
    """fixed: N_t steps of one size; adaptive: an embedded pair choosing its steps from ``rtol``/``atol``;
    reversible: fixed steps whose states can be rebuilt backwards exactly (the ``reversible`` method)."""


SOLVERS: dict[str, SolverFacts] = {
    "euler": SolverFacts(1, 1, "forward Euler (a ResNet block)"),
    "midpoint": SolverFacts(2, 2, "explicit midpoint (RK2)"),
    "heun": SolverFacts(2, 2, "Heun's method (RK2, trapezoidal)"),
    "rk4": SolverFacts(4, 4, "classic Runge-Kutta"),
    "dopri5": SolverFacts(5, 7, "Dormand-Prince 5(4), adaptive steps (torchdiffeq's default)", "adaptive"),
    "bosh3": SolverFacts(3, 4, "Bogacki-Shampine 3(2), adaptive steps", "adaptive"),
    "reversible_heun": SolverFacts(2, 1, "reversible Heun (Kidger et al. 2021), algebraically reversible; reversal "
                                   "amplifies rounding on expanding fields (float32: 1.9e-2 from Direct at N_t 10⁴)",
                                   "reversible"),
    "alf": SolverFacts(2, 1, "asynchronous leapfrog (MALI, Zhuang et al. 2021), algebraically reversible; reversal "
                       "amplifies rounding on expanding fields (float32: 3.5e-2 from Direct at N_t 100)",
                       "reversible"),
}
"""The solvers of ``anode_core.ALL_SOLVERS`` without importing torch: the one table the specs, the catalog and
the dashboard read. A test checks names, orders, stages and kinds against the library's registry."""
SolverName = Literal["euler", "midpoint", "heun", "rk4", "dopri5", "bosh3", "reversible_heun", "alf"]
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
    """Why ``gradient`` cannot differentiate ``solver`` (``None`` when it can): the torch-free twin of
    ``anode_core.solve.check_pairing``, so a spec is refused with a 422 rather than failing in the worker."""
    kind = SOLVERS[solver].kind
    if gradient.method == "reversible" and kind != "reversible":
        return (f"method 'reversible' rebuilds the states backwards and needs an algebraically reversible solver; "
                f"got solver {solver!r}: set the solver to reversible_heun or alf, or the method to 'anode'")
    if kind == "reversible" and (gradient.method == "adjoint" or gradient.checkpoints is not None):
        return (f"solver {solver!r} carries a second state and cannot be differentiated with "
                f"{'the adjoint' if gradient.method == 'adjoint' else 'checkpoints'}: use method 'reversible' "
                "(memory flat in N_t), 'direct' or 'anode' without checkpoints")
    if kind == "adaptive" and gradient.method == "adjoint" and not gradient.reconstruct:
        return (f"`reconstruct: false` restarts from stored states on a fixed grid; with the adaptive solver "
                f"{solver!r} remove it (the adjoint then solves backwards adaptively)")
    return None


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

    A fixed-step or reversible solver takes ``steps``; an adaptive one (dopri5, bosh3) takes ``rtol``, ``atol``
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
            raise ValueError(f"`{stray[0]}` applies to adaptive solvers (dopri5, bosh3) only; remove it or set "
                             "`solver` to dopri5 or bosh3")
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
