"""Pieces shared by the experiment specs. Pydantic only: importing this never imports torch.

Bounds here are what one request may ask of a machine; the API, the CLI and the worker all validate with them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SolverFacts(NamedTuple):
    order: int
    stages: int
    """Field evaluations per step (the length of the solver's tableau)."""
    description: str


SOLVERS: dict[str, SolverFacts] = {
    "euler": SolverFacts(1, 1, "forward Euler (a ResNet block)"),
    "midpoint": SolverFacts(2, 2, "explicit midpoint (RK2)"),
    "heun": SolverFacts(2, 2, "Heun's method (RK2, trapezoidal)"),
    "rk4": SolverFacts(4, 4, "classic Runge-Kutta"),
}
"""The solvers of ``anode_core.SOLVERS`` without importing torch: the one table the specs, the catalog and the
dashboard read. A test checks names, orders and stages against the library's registry."""
SolverName = Literal["euler", "midpoint", "heun", "rk4"]
"""The keys of :data:`SOLVERS`, spelled for the type checker and the JSON schema (a test checks they agree)."""
MethodName = Literal["direct", "anode", "adjoint"]
ActivationName = Literal["relu", "tanh", "softplus", "elu", "gelu", "leaky_relu", "sigmoid"]
DtypeName = Literal["float32", "float64"]
DeviceName = Literal["auto", "cpu", "cuda"]

MAX_STEPS = 256
MAX_CHECKPOINTS = 64


class SpecModel(BaseModel):
    """Base of every spec: immutable, unknown keys rejected (a typo is an error, not a silent default), NaN and
    infinities refused as such (not as "less than or equal to" a bound they fail to compare with)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class GradientSpec(SpecModel):
    """How the ODE blocks are differentiated."""

    method: MethodName = Field("anode", description="direct: backprop; anode: exact, O(L)+O(N_t); "
                             "adjoint: the continuous adjoint (Chen et al.)")
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
        return {}


class OdeSpec(SpecModel):
    """The ODE blocks of a model: scheme, number of steps, field activation and gradient method."""

    solver: SolverName = "euler"
    steps: int = Field(2, ge=1, le=MAX_STEPS, description="N_t, fixed steps per ODE block")
    activation: ActivationName = "relu"
    gradient: GradientSpec = GradientSpec()
