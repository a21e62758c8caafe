"""The spec of a gradient-comparison sweep. Pydantic only: importing this never imports torch.

A sweep is a grid solvers × N_t × gradient methods (× activations × weight scales × dtypes) over one seeded
model; every cell is compared with the exact Direct (discretize-then-optimize) gradient of the same network.
An adaptive solver (dopri5, tsit5, dopri8, …) runs along the tolerance axis (``tolerances``, the rtol values) instead of
N_t; a method that cannot differentiate a solver (the reversible method on a non-reversible solver, the adjoint
on reversible_heun or alf) has no cell there.
The bounds keep one request to seconds or minutes on a CPU: at most :data:`MAX_CELLS` cells and
:data:`MAX_WORK` state-element field evaluations in all.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from anode_lab.specs.common import (
    FLOAT32_MIN_RTOL,
    MAX_RTOL,
    MAX_STEP_LIMIT,
    MAX_STEPS,
    MIN_ATOL,
    MIN_RTOL,
    SOLVERS,
    ActivationName,
    DeviceName,
    DtypeName,
    GradientSpec,
    SolverName,
    SpecModel,
    adaptive_steps,
    is_adaptive,
    pairing_error,
)
from anode_lab.specs.train import dataset_shape, model_datasets

FieldKind = Literal["mlp", "conv"]

MAX_CELLS = 400
MAX_BLOCKS = 8
MAX_BATCH = 1024
MAX_DIM = 256
MAX_HIDDEN = 512
MAX_CHANNELS = 32
MAX_SIZE = 32
MAX_STATE_ELEMENTS = 2**20
"""Elements of one block input (batch × dim, or batch × channels × size²)."""
MAX_WORK = 2 * 10**9
"""Bound on Σ over cells of blocks · N_t · stages · state elements: the field evaluations of a sweep, weighted."""
MAX_FD_ENTRIES = 16
DEFAULT_DIM, DEFAULT_HIDDEN, DEFAULT_CHANNELS, DEFAULT_SIZE = 8, 32, 4, 8
MAX_WEIGHT_SCALE = 100.0

STAGES: dict[str, int] = {name: solver.stages for name, solver in SOLVERS.items()}
"""Field evaluations per step of each solver (its tableau's length), from the one table of solver facts."""

_CONV_ONLY = ("channels", "size")
_MLP_ONLY = ("dim", "hidden")
MAX_TIMING_REPEATS = 20
DEFAULT_METHODS = (
    GradientSpec(method="direct"),
    GradientSpec(method="anode"),
    GradientSpec(method="anode", checkpoints=2),
    GradientSpec(method="adjoint"),
    GradientSpec(method="adjoint", reconstruct=False),
)
EXTRA_DEFAULT_METHODS = (GradientSpec(method="reversible"),)
"""Default methods that pair with reversible solvers only: a sweep with one gets them too."""
MAX_TOLERANCES = 12
DEFAULT_SWEEP_STEP_LIMIT = 1000


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep's grid, in the order the sweep runs them (``index`` is the metrics step)."""

    index: int
    dtype: DtypeName
    activation: ActivationName
    weight_scale: float
    solver: SolverName
    steps: int | None
    """N_t of a fixed-step or reversible solver; ``None`` for an adaptive one."""
    method: GradientSpec
    rtol: float | None = None
    """The tolerance of an adaptive solver's cell (``None`` for the others)."""
    atol: float | None = None

    @property
    def label(self) -> str:
        return method_label(self.method)

    @property
    def where(self) -> str:
        """``N_t=8`` or ``rtol=1e-05``: the cell's place on its solver's axis, for progress lines."""
        return f"N_t={self.steps}" if self.rtol is None else f"rtol={self.rtol:g}"


def method_label(gradient: GradientSpec) -> str:
    """A short, unique name of a gradient method with its knobs: ``anode``, ``anode(c=2)``, ``adjoint(stored)``."""
    if gradient.method == "anode" and gradient.checkpoints is not None:
        return f"anode(c={gradient.checkpoints})"
    if gradient.method == "adjoint" and not gradient.reconstruct:
        return "adjoint(stored)"
    return gradient.method


class CompareSpec(SpecModel):
    """Compare gradient methods with the exact Direct gradient over a grid of solvers, N_t and settings."""

    field: FieldKind = Field("mlp", description="mlp: MLP field on random vectors; conv: conv field on feature maps")
    model: str | None = Field(
        None, max_length=40, description="instead of `field`: a train model, built in or an installed plugin (the "
        "catalog lists them), on random inputs of its data set's shape with random class labels"
    )
    dim: int | None = Field(None, ge=1, le=MAX_DIM, description=f"mlp only: state dimension (default {DEFAULT_DIM})")
    hidden: int | None = Field(
        None, ge=1, le=MAX_HIDDEN, description=f"mlp only: hidden units of the field (default {DEFAULT_HIDDEN})"
    )
    channels: int | None = Field(
        None, ge=1, le=MAX_CHANNELS, description=f"conv only: feature-map channels (default {DEFAULT_CHANNELS})"
    )
    size: int | None = Field(
        None, ge=2, le=MAX_SIZE, description=f"conv only: height and width of the maps (default {DEFAULT_SIZE})"
    )
    blocks: int = Field(3, ge=1, le=MAX_BLOCKS, description="ODE blocks in a row, each with its own field "
                        "(several by default: ANODE keeps one block's graph at a time, Direct keeps all of them)")
    timing_repeats: int = Field(3, ge=1, le=MAX_TIMING_REPEATS,
                                description="times each gradient is measured; the median forward and backward "
                                "times are reported, not one noisy shot")
    batch: int = Field(16, ge=1, le=MAX_BATCH)
    solvers: tuple[SolverName, ...] = Field(("euler", "midpoint"), min_length=1)
    steps: tuple[int, ...] = Field((1, 2, 4, 8, 16, 32), min_length=1, description="the N_t values of the grid "
                                   "(fixed-step and reversible solvers)")
    tolerances: tuple[float, ...] = Field(
        (1e-3, 1e-5, 1e-7), min_length=1, max_length=MAX_TOLERANCES, description="adaptive solvers (dopri5, tsit5, …) "
        "only: the rtol values of their axis, instead of N_t"
    )
    atol_ratio: float = Field(0.01, ge=1e-6, le=1.0, description="adaptive solvers: atol = rtol × atol_ratio")
    step_limit: int = Field(DEFAULT_SWEEP_STEP_LIMIT, ge=1, le=MAX_STEP_LIMIT, description="adaptive solvers: the "
                            "most steps (accepted and rejected) one block's solve may take")
    methods: tuple[GradientSpec, ...] = Field(
        DEFAULT_METHODS,
        min_length=1,
        description="gradient methods compared with Direct (which is always computed as the reference); left out: "
        "those of direct, anode, anode(c=2), adjoint, adjoint(stored), reversible that pair with one of `solvers`",
    )
    activations: tuple[ActivationName, ...] = Field(("relu",), min_length=1)
    weight_scales: tuple[float, ...] = Field(
        (1.0,), min_length=1, description="every field weight multiplied by this (larger = stiffer field)"
    )
    dtypes: tuple[DtypeName, ...] = Field(("float64",), min_length=1)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="weights, inputs and targets; the same for every cell")
    fd_check: int = Field(
        0, ge=0, le=MAX_FD_ENTRIES, description="check the Direct reference by central differences on k entries"
    )
    fd_epsilon: float | None = Field(
        None, gt=0.0, le=1.0, description="step of the finite differences (default 1e-6 float64, 1e-3 float32)"
    )
    device: DeviceName = "auto"
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for torch (default: torch's own); small states run fastest on 1"
    )

    @field_validator("solvers", "activations", "dtypes", "weight_scales", "steps", "tolerances")
    @classmethod
    def _unique(cls, values: tuple[object, ...], info: ValidationInfo) -> tuple[object, ...]:
        repeated = sorted(str(v) for v, n in Counter(values).items() if n > 1)  # linear: lists may be long
        if repeated:
            raise ValueError(f"`{info.field_name}` lists {', '.join(repeated)} more than once; list each value once")
        return values

    @field_validator("model")
    @classmethod
    def _model_installed(cls, model: str | None) -> str | None:
        if model is not None and model not in model_datasets():
            raise ValueError(f"model {model!r} is not installed: set `model` to one of {', '.join(model_datasets())}"
                             " or remove it")
        return model

    @field_validator("steps")
    @classmethod
    def _steps_in_range(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        bad = [n for n in steps if not 1 <= n <= MAX_STEPS]
        if bad:
            raise ValueError(f"every entry of `steps` (N_t) must be between 1 and {MAX_STEPS}; got {bad}")
        return steps

    @field_validator("tolerances")
    @classmethod
    def _tolerances_in_range(cls, tolerances: tuple[float, ...]) -> tuple[float, ...]:
        bad = [t for t in tolerances if not (math.isfinite(t) and MIN_RTOL <= t <= MAX_RTOL)]
        if bad:
            raise ValueError(f"every entry of `tolerances` (rtol) must be in [{MIN_RTOL:g}, {MAX_RTOL:g}]; got {bad}")
        return tolerances

    @field_validator("weight_scales")
    @classmethod
    def _scales_in_range(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        bad = [s for s in scales if not (math.isfinite(s) and 0.0 < s <= MAX_WEIGHT_SCALE)]
        if bad:
            raise ValueError(f"every entry of `weight_scales` must be in (0, {MAX_WEIGHT_SCALE:g}]; got {bad}")
        return scales

    @field_validator("methods")
    @classmethod
    def _methods_unique(cls, methods: tuple[GradientSpec, ...]) -> tuple[GradientSpec, ...]:
        labels = [method_label(m) for m in methods]
        repeated = sorted(label for label, n in Counter(labels).items() if n > 1)
        if repeated:
            raise ValueError(f"`methods` lists {', '.join(repeated)} more than once; list each method once")
        return methods

    @model_validator(mode="before")
    @classmethod
    def _one_block_for_a_model(cls, data: Any) -> Any:
        """A named model brings its own blocks: the synthetic field's default of several does not apply."""
        if isinstance(data, dict) and data.get("model") is not None and "blocks" not in data:
            return {**data, "blocks": 1}
        return data

    @model_validator(mode="before")
    @classmethod
    def _default_methods_of_the_solvers(cls, data: Any) -> Any:
        """Left out, ``methods`` is every default method that pairs with one of the solvers, written into the
        spec, so the stored spec lists exactly the methods that ran (and validates again as it stands)."""
        if not isinstance(data, dict) or data.get("methods") is not None:
            return data
        solvers = data.get("solvers", cls.model_fields["solvers"].default)
        if not isinstance(solvers, (list, tuple)) or not all(isinstance(s, str) and s in SOLVERS for s in solvers):
            return data  # the field's own validation names what is wrong
        methods = [m for m in (*DEFAULT_METHODS, *EXTRA_DEFAULT_METHODS)
                   if any(pairing_error(s, m) is None for s in solvers)]
        return {**data, "methods": methods}

    @model_validator(mode="after")
    def _fits_the_machine(self) -> CompareSpec:
        wrong = _CONV_ONLY if self.field == "mlp" else _MLP_ONLY
        if self.model is not None:
            stray = [name for name in (*_MLP_ONLY, *_CONV_ONLY) if getattr(self, name) is not None]
            if stray or self.blocks != 1:
                raise ValueError(f"`{stray[0] if stray else 'blocks'}` shapes the synthetic field; with `model` the "
                                 "model decides: remove it")
        stray = [name for name in wrong if getattr(self, name) is not None]
        if stray:
            other = "conv" if self.field == "mlp" else "mlp"
            raise ValueError(f"`{stray[0]}` applies to field {other!r} only; remove it or set `field` to {other!r}")
        self._methods_pair_with_solvers()
        if self.adaptive_solvers and min(self.tolerances) * self.atol_ratio < MIN_ATOL:
            raise ValueError(
                f"atol = rtol × `atol_ratio` = {min(self.tolerances):g} × {self.atol_ratio:g} is below {MIN_ATOL:g}: "
                f"raise `atol_ratio` to at least {MIN_ATOL / min(self.tolerances):.3g} or the smallest of `tolerances`"
            )
        if "float32" in self.dtypes and self.adaptive_solvers and min(self.tolerances) < FLOAT32_MIN_RTOL:
            raise ValueError(
                f"float32 carries about 7 digits: an adaptive solve at rtol {min(self.tolerances):g} never meets it; "
                f"keep `tolerances` ≥ {FLOAT32_MIN_RTOL:g} or remove float32 from `dtypes`"
            )
        if self.state_elements > MAX_STATE_ELEMENTS:
            raise ValueError(
                f"one block input has {self.state_elements} elements (`batch` × the state); at most "
                f"{MAX_STATE_ELEMENTS}: lower `batch`, `dim`, `channels` or `size`"
            )
        if self.cells > MAX_CELLS:
            raise ValueError(
                f"the grid `solvers` × `steps` (or `tolerances`) × `methods` × `activations` × `weight_scales` × "
                f"`dtypes` has "
                f"{self.cells} cells; at most {MAX_CELLS}: shorten one of these lists"
            )
        if self.work > MAX_WORK:
            loosen = ", loosen the tightest of `tolerances`" if self.adaptive_solvers else ""
            raise ValueError(
                f"the sweep would evaluate {self.work:.3g} state elements (Σ blocks·N_t·stages·state); at most "
                f"{MAX_WORK:.3g}: lower the largest `steps`{loosen}, `batch` or the state size, or shorten `methods`"
            )
        return self

    def _methods_pair_with_solvers(self) -> None:
        """Every method listed differentiates at least one solver, every solver has a method: else an entry with
        no cells (left out, ``methods`` holds only methods that pair: :meth:`_default_methods_of_the_solvers`)."""
        for method in self.methods:
            problems = [pairing_error(s, method) for s in self.solvers]
            if all(problems):
                raise ValueError(f"`methods` lists {method_label(method)}, which none of `solvers` takes: "
                                 f"{problems[0]}")
        for solver in self.solvers:
            if not self.methods_of(solver):
                raise ValueError(f"no method of `methods` can differentiate solver {solver!r}: "
                                 f"{pairing_error(solver, self.methods[0])}")

    def methods_of(self, solver: str) -> list[GradientSpec]:
        """The methods of the spec that can differentiate ``solver``, in the spec's order."""
        return [m for m in self.methods if pairing_error(solver, m) is None]

    def axis(self, solver: str) -> tuple[float, ...] | tuple[int, ...]:
        """The values a solver's cells run along: ``tolerances`` for an adaptive one, else ``steps``."""
        return self.tolerances if is_adaptive(solver) else self.steps

    @property
    def adaptive_solvers(self) -> list[str]:
        return [s for s in self.solvers if is_adaptive(s)]

    @property
    def state_dim(self) -> int:
        return DEFAULT_DIM if self.dim is None else self.dim

    @property
    def field_hidden(self) -> int:
        return DEFAULT_HIDDEN if self.hidden is None else self.hidden

    @property
    def map_channels(self) -> int:
        return DEFAULT_CHANNELS if self.channels is None else self.channels

    @property
    def map_size(self) -> int:
        return DEFAULT_SIZE if self.size is None else self.size

    @property
    def dataset(self) -> str | None:
        """With ``model``: the data set whose shape and classes the random inputs take (the first it takes)."""
        return None if self.model is None else model_datasets()[self.model][0]

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example's state: ``(dim,)`` or ``(channels, size, size)``; with ``model``, of its input."""
        if self.dataset is not None:
            return dataset_shape(self.dataset)
        if self.field == "mlp":
            return (self.state_dim,)
        return (self.map_channels, self.map_size, self.map_size)

    @property
    def state_elements(self) -> int:
        return self.batch * math.prod(self.example_shape)

    @property
    def per_setting(self) -> int:
        return len(self.activations) * len(self.weight_scales) * len(self.dtypes)

    @property
    def cells(self) -> int:
        per_solver = sum(len(self.axis(s)) * len(self.methods_of(s)) for s in self.solvers)
        return per_solver * self.per_setting

    def planned_steps(self, solver: str, value: float) -> int:
        """N_t, or for an adaptive solver at rtol ``value`` a guess of its steps (for the work bound)."""
        return adaptive_steps(solver, value, self.step_limit) if is_adaptive(solver) else int(value)

    @property
    def work(self) -> int:
        """Σ over cells of blocks · N_t · stages · state elements, counting the Direct reference once per setting.

        Each method costs at most about two solves (ANODE recomputes the block; the adjoint solves back), so
        a cell counts three, the reference one more per setting, and the finite-difference check two per entry.
        An adaptive solver's N_t is guessed from its tolerance (:func:`anode_lab.specs.common.adaptive_steps`).
        """
        total = 0
        for solver in self.solvers:
            solves = (3 * len(self.methods_of(solver)) + 1) * self.timing_repeats + 2 * self.fd_check
            total += sum(STAGES[solver] * self.planned_steps(solver, v) for v in self.axis(solver)) * solves
        return total * self.per_setting * self.blocks * self.state_elements

    def epsilon(self, dtype: DtypeName) -> float:
        """The finite-difference step for ``dtype``."""
        if self.fd_epsilon is not None:
            return self.fd_epsilon
        return 1e-6 if dtype == "float64" else 1e-3

    def labels(self) -> list[str]:
        return [method_label(m) for m in self.methods]

    def grid(self) -> list[Cell]:
        """Every cell, dtype outermost and method innermost: the order of ``results.csv`` and of the metrics
        steps, so a live view can label step ``i`` with ``grid()[i]`` without waiting for the table. An adaptive
        solver's cells run along ``tolerances`` (``steps`` is ``None``); a method has cells only on the solvers
        it can differentiate."""
        cells: list[Cell] = []
        for dtype, activation, scale, solver in product(self.dtypes, self.activations, self.weight_scales,
                                                        self.solvers):
            for value in self.axis(solver):
                for method in self.methods_of(solver):
                    if is_adaptive(solver):
                        cells.append(Cell(len(cells), dtype, activation, scale, solver, None, method,
                                          float(value), float(f"{value * self.atol_ratio:.12g}")))
                    else:
                        cells.append(Cell(len(cells), dtype, activation, scale, solver, int(value), method))
        return cells
