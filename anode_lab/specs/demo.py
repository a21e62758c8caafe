"""The spec of a teaching demo, and :data:`DEMOS`, the catalog of presets. Pydantic only: no torch here.

Each preset reproduces one claim of ANODE (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298, §2–§4) about
the continuous adjoint of Chen et al. (NeurIPS 2018) in seconds on a CPU; two go beyond the paper, to adaptive
steps (adaptive-adjoint) and to an algebraically reversible solver (reversible-exact). A spec names the preset and
may set a few knobs; knobs a preset does not take are rejected, and knobs left out take the preset's defaults, so
a stored spec always says exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from pydantic import Field, model_validator

from anode_lab.specs.common import (
    FLOAT32_MIN_RTOL,
    MAX_RTOL,
    MAX_STEPS,
    MIN_RTOL,
    SOLVERS,
    DeviceName,
    DtypeName,
    SolverKind,
    SolverName,
    SpecModel,
)

DemoName = Literal["adjoint-order", "wrong-sign", "reconstruction-blowup", "non-invertible", "memory", "training",
                   "adaptive-adjoint", "reversible-exact"]
ImageName = Literal["digit", "pattern"]

MAX_DEMO_STEPS = 12
"""Entries of a demo's `steps` list (and of its `tolerances` list)."""
MAX_DEMO_ITERATIONS = 5000
DIFFUSION_KAPPA = 4.0
"""κ of reconstruction-blowup's field κ·Δz; the finest mode of Δz has eigenvalue −8 (nearly)."""
DIFFUSION_MIN_STEPS = 32
"""Smallest N_t of reconstruction-blowup (κ = 4): with dt·8κ ≤ 1 a reverse Euler step after a forward one
amplifies no mode in exact arithmetic, so what explodes is the rounding (below 16 the forward solve itself is
unstable)."""


def _too_few_diffusion_steps(n: int) -> str:
    """Why ``n`` Euler steps of reconstruction-blowup would hide the rounding blow-up, in numbers."""
    x = 8 * DIFFUSION_KAPPA / n  # 8κ·dt
    if x > 2:
        return f"at N_t = {n} the forward Euler steps are themselves unstable (|1 − 8κ·dt| = {abs(1 - x):.3g} > 1)"
    if x > 2**0.5:
        return (f"at N_t = {n} a forward step followed by a reverse one multiplies the finest mode by "
                f"1 − (8κ·dt)² = {1 - x * x:.3g}, larger than 1 in size once 8κ·dt > √2")
    return (f"at N_t = {n} a forward step followed by a reverse one multiplies the finest mode by "
            f"1 − (8κ·dt)² = {1 - x * x:.3g}: no blow-up, but the forward step flips that mode's sign (8κ·dt > 1)")


@dataclass(frozen=True)
class DemoInfo:
    """What a preset shows (for the catalog) and the knobs it takes, with their defaults."""

    title: str
    explanation: str
    defaults: dict[str, Any] = field(default_factory=dict)
    solver_kind: SolverKind = "fixed"
    """The kind of solver its ``solvers`` knob takes (``SOLVERS[name].kind``)."""

    @property
    def knobs(self) -> tuple[str, ...]:
        return ("seed", "device", "threads", *self.defaults)


DEMOS: dict[str, DemoInfo] = {
    "adjoint-order": DemoInfo(
        "The continuous adjoint's gradient error shrinks only as dt^p",
        "A ReLU MLP field, integrated with Euler and with the midpoint rule for growing N_t. ANODE's gradient equals "
        "the exact gradient of the computed network (Direct) to rounding at every N_t. The continuous adjoint "
        "differentiates the ODE rather than the network, so its gradient differs from Direct's by O(dt^p) for a "
        "smooth field: the log-log slope of its relative error against N_t is then minus the solver's order, -1 for "
        "Euler and -2 for midpoint. This field is ReLU, whose kinks can move the measured slope away from -p (more "
        "so for higher-order solvers): the run reports the slopes it measured. At the small N_t used in practice "
        "the error is large (of order 10% of the gradient's norm for "
        "Euler at N_t = 2), and nearly the same whether the adjoint rebuilds the states by a reverse solve or reads "
        "stored ones: this is flaw (b) of ANODE §2, independent of reconstruction.",
        {"steps": (2, 4, 8, 16, 32, 64, 128), "solvers": ("euler", "midpoint"), "dtype": "float64"},
    ),
    "wrong-sign": DemoInfo(
        "A ReLU field for which the continuous adjoint's gradient has the wrong sign",
        "The scalar field f(z; θ) = θ·z − K·relu(z) with gain K = 3 and θ = 0.5, started at z0 = 1, with Euler and "
        "loss L = z_N. With dt·K > 1 the first Euler step jumps over the kink of the ReLU to a negative z. The exact "
        "gradient of the computed network (central finite differences, Direct and ANODE) uses ∂f/∂θ = z at the "
        "states the step started from (z0 = 1 > 0), so dL/dθ > 0. The continuous adjoint evaluates the same "
        "derivative at the end of each step (ANODE §2: its Euler step takes the Jacobians at z_{n+1} instead of "
        "z_n), on the other side of the kink where z < 0, and returns dL/dθ < 0. Reading the exact stored states "
        "does not help. With more "
        "steps (dt·K < 1) no step crosses the kink and the signs agree again. At N_t = 1 the forward step is "
        "itself unstable on the z > 0 branch (|1 − dt·(K − θ)| > 1; the run prints its value), so there the "
        "network is a poor model of the ODE; the gradients are still compared on the network actually computed.",
        {"steps": (1, 2, 4, 8, 16), "dtype": "float64"},
    ),
    "reconstruction-blowup": DemoInfo(
        "Reversing a blur: the continuous adjoint's reconstruction explodes",
        "A diffusion field f(z) = κ·Δz (a fixed 5-point Laplacian stencil applied as a convolution, κ = 4) blurs an "
        "image in the forward solve. The adjoint must rebuild the states by solving backwards, which is the "
        "ill-posed backward heat equation: every reverse Euler step multiplies the finest modes by up to "
        "1 + 8κ·dt, (1 + 8κ·dt)^N_t in all: 4·10^9 at N_t = 32, approaching e^32 ≈ 8·10^13 as N_t grows. That "
        "is a bound on how much an error in the finest mode can grow, not the error observed: the rounding errors "
        "of the blurred image put little there, and come back amplified. In float32 the rebuilt input is a "
        "checkerboard many times larger than the image (the error reported is relative to the image's norm), "
        "and worse for larger N_t; in float64 the rounding is about 10^9 times smaller and what remains is the "
        "mismatch between a reverse Euler step and the inverse of a forward one, which shrinks with N_t more "
        "slowly than dt (the run reports its measured order). The table also holds the gradient with "
        "respect to κ: in this linear example it survives, because the adjoint variable is itself diffused on its "
        "way back and holds almost nothing in the modes the reconstruction ruins. ANODE never solves backwards.",
        {"steps": (32, 64, 128, 256), "image": "digit"},
    ),
    "non-invertible": DemoInfo(
        "A ResNet step that maps two inputs to one output",
        "One forward-Euler step z ↦ z + dt·f(z) of the ReLU field f(z) = −K·relu(z) (an MLP field with W1 = I, "
        "W2 = −K·I, K = 4) sends each positive coordinate to (1 − dt·K) times itself and leaves negative ones alone. "
        "When dt·K ≥ 1 it folds the plane: the input a = (1, 0.5) and the input b = a + dt·f(a) land on the same "
        "output. No reverse solve can tell them apart; the adjoint's reverse step returns b from that output even "
        "when the network was fed a. A step is guaranteed invertible when dt·Lip(f) < 1 (here Lip(f) = K), "
        "which N_t = 8 restores.",
        {"steps": (1, 2, 4, 8), "dtype": "float64"},
    ),
    "memory": DemoInfo(
        "Memory against N_t for every gradient method",
        "Bytes held for backward, measured while a two-block MLP-ODE takes one gradient step, next to the analytic "
        "model of ANODE §3 (L blocks, S bytes per block input, s stages, A bytes saved by one field evaluation): "
        "Direct keeps L·N_t·s·A and grows linearly with N_t; ANODE keeps L·S + s·N_t·A, one block's graph at a "
        "time; ANODE with c checkpoints keeps (L + c)·S + s·A, flat in N_t; the adjoint keeps L·S + A, flat, and "
        "L·N_t·S more when it stores the forward states instead of reconstructing them. That model counts the "
        "state an evaluation starts from twice (in S and in A) and leaves out the loss's saved tensor; the demo "
        "also counts every storage once and shows the measurement against both.",
        {"steps": (1, 2, 4, 8, 16, 32, 64), "solvers": ("euler", "rk4"), "dtype": "float32"},
    ),
    "training": DemoInfo(
        "Training with the continuous adjoint against ANODE, same seed",
        "Two copies of one small MLP-ODE classifier (ReLU field, Euler, N_t = 2) start from the same weights and see "
        "the same batches of the two-spirals set; one is trained with the adjoint's gradients, the other with "
        "ANODE's. Every few steps a probe compares each run's gradient with the exact Direct gradient of its own "
        "current network: ANODE's matches it to rounding; the adjoint's does not, and the probes also record how "
        "well each network's block can be reversed and what the adjoint would give with stored states, to tell "
        "a bad reconstruction (flaw (a)) from the discretisation error (flaw (b)). Whether the wrong gradients "
        "hurt the loss depends on the problem and the seed; the demo reports what happened, not what should.",
        {"steps": (2,), "iterations": 300, "dtype": "float64"},
    ),
    "adaptive-adjoint": DemoInfo(
        "The adjoint under adaptive steps: what a tolerance buys",
        "A smooth MLP field (tanh, float64) integrated with dopri5 at each relative tolerance rtol (atol = rtol/100); "
        "the controller chooses the accepted steps. Direct back-propagates through those steps: the exact gradient "
        "of the computed solve, its step sizes held fixed. ANODE keeps the block's input and the accepted grid and "
        "replays the steps once in backward (the adaptive checkpoint adjoint of Zhuang et al., ICML 2020): its "
        "gradient equals Direct's to rounding at every tolerance, for the forward solve's evaluations plus one "
        "recomputation, and the run reports its largest difference. The continuous adjoint (Chen et al. 2018; "
        "torchdiffeq's odeint_adjoint) solves a second ODE backwards with its own adaptive steps; it holds only the "
        "block's input, but its gradient is not the gradient of the computed solve, and the gap shrinks only as the "
        "tolerance does (4 to 8,000 × rtol measured, slopes 0.7–1.1: not 'about the tolerance'): the run fits the "
        "log-log slope of its relative error against rtol (1 when the error is proportional to rtol) and reports "
        "the evaluations each digit of tolerance costs, forward and backward.",
        {"solvers": ("dopri5",), "tolerances": (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8), "dtype": "float64"},
        solver_kind="adaptive",
    ),
    "reversible-exact": DemoInfo(
        "Two O(L) methods: the reversible solver is exact, the adjoint is not",
        "Both methods hold memory flat in N_t, and only one returns the exact gradient. The reversible Heun solver "
        "(Kidger et al., NeurIPS 2021) carries a second state so that every step can be undone algebraically; the "
        "Reversible method rebuilds the states backwards and back-propagates one step at a time, and its gradient "
        "equals Direct's through the same solver to rounding (the run reports the largest relative difference, "
        "in float64). The continuous adjoint, here on the explicit midpoint rule (order 2, like reversible Heun), "
        "solves the adjoint ODE backwards and differs from the exact gradient of its own network by O(dt²): the "
        "run fits the log-log slope of its relative error against N_t (−2 expected). Bytes held after the forward "
        "pass, on the same tanh MLP field as adaptive-adjoint: Reversible and the adjoint hold a few states (the "
        "final state pair, or the block's input, and the loss's saved output) whatever N_t; Direct keeps every "
        "step's graph and grows linearly with N_t. The run reports each of them at the smallest and largest N_t. "
        "Exact holds to rounding, and a reversed solve amplifies rounding on a field that expands: in float32, with "
        "the weights ×3 over [0, 3], the run measures Reversible() against float32 Direct next to float32 Direct's "
        "own distance from float64, for reversible_heun and alf.",
        {"steps": (8, 16, 32, 64, 128, 256)},
    ),
}
"""Every preset: name -> title, one paragraph on what it shows, and its knobs' defaults."""

DEFAULT_DEMO: DemoName = "wrong-sign"
_OPTIONAL_KNOBS = ("steps", "solvers", "tolerances", "dtype", "image", "iterations")


class DemoSpec(SpecModel):
    """Run one teaching demo (one of the catalog's demos), with its knobs."""

    name: DemoName = Field(DEFAULT_DEMO, description="the preset; an empty spec runs wrong-sign")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="weights and data of the random presets; the digit shown")
    device: DeviceName = "cpu"
    threads: int | None = Field(
        1, ge=1, le=256, description="CPU threads for torch; null keeps torch's own. The demos' tensors are tiny: "
        "on one thread they run fastest, and on a shared machine many times faster"
    )
    steps: tuple[int, ...] | None = Field(
        None, min_length=1, max_length=MAX_DEMO_STEPS, description="the N_t values, increasing"
    )
    solvers: tuple[SolverName, ...] | None = Field(
        None, min_length=1, description="adjoint-order and memory (fixed-step), adaptive-adjoint (adaptive) only"
    )
    tolerances: tuple[float, ...] | None = Field(
        None, min_length=1, max_length=MAX_DEMO_STEPS, description="adaptive-adjoint only: the rtol values, "
        "decreasing (atol = rtol/100)"
    )
    dtype: DtypeName | None = None
    image: ImageName | None = Field(None, description="reconstruction-blowup only: an sklearn digit or a pattern")
    iterations: int | None = Field(None, ge=1, le=MAX_DEMO_ITERATIONS, description="training only: optimiser steps")

    @model_validator(mode="before")
    @classmethod
    def _preset_knobs(cls, data: Any) -> Any:
        """Reject knobs the preset does not take; fill the ones left out with the preset's defaults."""
        if isinstance(data, dict) and "name" not in data:
            data = {**data, "name": DEFAULT_DEMO}
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or data["name"] not in DEMOS:
            return data
        info = DEMOS[data["name"]]
        stray = [k for k in _OPTIONAL_KNOBS if data.get(k) is not None and k not in info.defaults]
        if stray:
            raise ValueError(
                f"`{stray[0]}` does not apply to demo {data['name']!r}, which takes {', '.join(info.knobs)}; "
                f"remove `{stray[0]}`"
            )
        return {**info.defaults, **{k: v for k, v in data.items() if v is not None}}

    @model_validator(mode="after")
    def _steps_fit_the_preset(self) -> DemoSpec:
        steps = self.steps or ()
        if any(n < 1 or n > MAX_STEPS for n in steps):
            raise ValueError(f"every entry of `steps` (N_t) must be between 1 and {MAX_STEPS}; got {list(steps)}")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"`steps` must be strictly increasing (each N_t once); got {list(steps)}")
        kind = self.info.solver_kind
        wrong = [s for s in self.solvers or () if SOLVERS[s].kind != kind]
        if wrong:
            fitting = ", ".join(k for k, f in SOLVERS.items() if f.kind == kind)
            raise ValueError(f"`solvers` of {self.name} are {kind} solvers ({fitting}); remove {wrong[0]}")
        self._tolerances_fit()
        if self.solvers is not None and len(set(self.solvers)) != len(self.solvers):
            raise ValueError(f"`solvers` lists a solver more than once; list each once (got {list(self.solvers)})")
        if self.name == "reconstruction-blowup" and steps[0] < DIFFUSION_MIN_STEPS:
            raise ValueError(
                f"`steps` of reconstruction-blowup must all be ≥ {DIFFUSION_MIN_STEPS} (8κ·dt ≤ 1, where what blows up "
                f"is the rounding the demo shows): {_too_few_diffusion_steps(steps[0])}; got {list(steps)}"
            )
        if self.name == "training" and len(steps) != 1:
            raise ValueError(f"`steps` of training is the one N_t both runs use, e.g. [2]; got {list(steps)}")
        return self

    def _tolerances_fit(self) -> None:
        rtols = self.tolerances or ()
        if any(not MIN_RTOL <= r <= MAX_RTOL for r in rtols):
            raise ValueError(f"every entry of `tolerances` (rtol) must be between {MIN_RTOL:g} and {MAX_RTOL:g}; "
                             f"got {list(rtols)}")
        if any(b >= a for a, b in pairwise(rtols)):
            raise ValueError(f"`tolerances` must be strictly decreasing (each rtol tighter than the one before); "
                             f"got {list(rtols)}")
        tight = [f"{r:g}" for r in rtols if r < FLOAT32_MIN_RTOL]
        if self.dtype == "float32" and tight:
            raise ValueError(f"`tolerances` below {FLOAT32_MIN_RTOL:g} are never met in float32 (about 7 digits): "
                             f"remove {', '.join(tight)} or set `dtype` to float64")

    @property
    def info(self) -> DemoInfo:
        return DEMOS[self.name]
