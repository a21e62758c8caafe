"""What a spec costs, estimated from its fields alone (pure arithmetic, no torch), and the operator's limits.

Field bounds keep each knob sane, but knobs multiply: within every bound a sweep can ask for tens of GB and a
training run for tens of millions of steps. :func:`admit` checks a spec against :class:`RunLimits` (the API
before it stores a run, the worker before it runs one) and refuses, naming the estimate, the limit and the fields
to lower; it also confines a data set's ``root`` to the operator's folders.

The memory estimate is the analytic model of ANODE §3 (``anode_core.MemoryModel``: L blocks, S bytes
per block input, s stages, N_t steps, A bytes saved by one field evaluation), over sizes computed from the spec:

* A of an MLP field is ``batch·(dim + hidden)`` values (its input and the hidden layer), of a conv field
  :data:`CONV_FIELD_SAVES` state-sized tensors (two conv inputs, the norm, the activation);
* Direct holds ``Σ N_t·s·A`` over the blocks, ANODE ``Σ S + s·N_t·A`` of the largest block (``(c + …)·S + s·A``
  with c checkpoints), the adjoint ``Σ S + A`` (and ``Σ N_t·S`` when it stores states);
* a sweep's peak is its Direct reference at the largest ``s·N_t`` (every cell computes it); a training run adds
  the data set as loaded, four copies of the parameters (weights, gradients, two optimizer moments) and
  :data:`OTHER_SAVES` state-sized tensors per block for the layers between the blocks, and the Direct probe when
  ``probe_every`` is on.

It is a guard against asking for the machine, not a prediction to the byte: the child process's memory limit
(``backend.workers.child``) catches what it misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from anode_lab.specs.common import MAX_STEP_LIMIT, GradientSpec, adaptive_steps, is_adaptive
from anode_lab.specs.compare import STAGES, CompareSpec
from anode_lab.specs.demo import DemoSpec
from anode_lab.specs.train import DEFAULT_HIDDEN, MODEL_DATASETS, POINT_SETS, TrainSpec, plugin_datasets

BYTES = {"float32": 4, "float64": 8}
CONV_FIELD_SAVES = 5
OTHER_SAVES = 4
TEST_FRACTION = 0.25
TRAIN_SIZES = {"digits": 1797, "mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
"""Examples in each stored data set's training split (digits: all 1797, of which a quarter is held out)."""
DATA_BYTES = {"digits": 1797 * 64 * 8, "mnist": 70_000 * 784, "cifar10": 60_000 * 3072, "cifar100": 60_000 * 3072}
"""Bytes of each stored data set as held in memory (digits as float64, images as uint8)."""
IMAGE_SIDE = {"digits": 8, "mnist": 28, "cifar10": 32, "cifar100": 32}
IMAGE_CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3, "cifar100": 3}
CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
DEMO_BYTES = 256 * 2**20
"""The demos are fixed small presets: a 2-block MLP of width 16 at most, or one 28×28 image."""


@dataclass(frozen=True)
class RunLimits:
    """What one run may ask of the machine: ``ANODE_MAX_RUN_BYTES``, ``ANODE_MAX_RUN_STEPS`` and the folders a
    data ``root`` must lie under (``None``: any folder, as for the CLI's local user)."""

    max_bytes: int
    max_steps: int
    data_roots: tuple[Path, ...] | None = None


@dataclass(frozen=True)
class Cost:
    """Estimated peak memory (bytes) and ODE solver steps (forward and backward, every block) of one run."""

    bytes: int
    steps: int


class SpecRefused(ValueError):
    """A spec within its fields' bounds that asks for more than the operator allows; ``fields`` are what to
    change."""

    def __init__(self, message: str, fields: tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields = fields


def admit(kind: str, spec: BaseModel, limits: RunLimits) -> BaseModel:
    """``spec`` if it fits ``limits``, with a data ``root`` made absolute and resolved; else :class:`SpecRefused`."""
    if isinstance(spec, TrainSpec) and spec.root is not None and limits.data_roots is not None:
        spec = spec.model_copy(update={"root": str(confine_root(spec.root, limits.data_roots))})
    cost = estimate(kind, spec)
    if cost.bytes > limits.max_bytes:
        fields = _memory_fields(spec)
        raise SpecRefused(
            f"the run would need about {readable_size(cost.bytes)} of memory; "
            f"this service allows {readable_size(limits.max_bytes)} "
            f"per run (ANODE_MAX_RUN_BYTES): lower {_listed(fields)}", fields)
    if cost.steps > limits.max_steps:
        fields = _step_fields(spec)
        raise SpecRefused(
            f"the run would take about {cost.steps:.3g} ODE solver steps; this service allows {limits.max_steps:.3g} "
            f"per run (ANODE_MAX_RUN_STEPS): lower {_listed(fields)}", fields)
    return spec


def confine_root(root: str, allowed: tuple[Path, ...]) -> Path:
    """``root`` resolved (symlinks and ``..`` followed; a relative one is taken under the first allowed folder),
    if it lies under one of ``allowed``; else :class:`SpecRefused` listing them."""
    path = Path(root).expanduser()
    resolved = (path if path.is_absolute() else allowed[0] / path).resolve()
    if any(resolved.is_relative_to(folder) for folder in allowed):
        return resolved
    raise SpecRefused(
        f"`root` {root!r} is outside the data folders of this service; put the data set under one of "
        f"{', '.join(str(f) for f in allowed)} (ANODE_DATA_ROOTS) and set `root` to that folder", ("root",))


def estimate(kind: str, spec: BaseModel) -> Cost:
    if isinstance(spec, TrainSpec):
        return _train(spec)
    if isinstance(spec, CompareSpec):
        return _compare(spec)
    if isinstance(spec, DemoSpec):
        solvers = spec.solvers or ("euler",)
        per_solver = [sum(adaptive_steps(s, rtol, MAX_STEP_LIMIT) for rtol in spec.tolerances or ())
                      if is_adaptive(s) else sum(spec.steps or (1,)) for s in solvers]
        solves = sum(per_solver) * 4
        return Cost(DEMO_BYTES, solves * max(1, spec.iterations or 1))
    raise ValueError(f"`kind` must be one of train, compare, demo; got {kind!r}")


def held_bytes(gradient: GradientSpec, inputs: list[int], saves: list[int], steps: int, stages: int) -> int:
    """What ``gradient`` keeps for backward over blocks with input bytes ``inputs`` and per-evaluation bytes
    ``saves`` (ANODE §3; ``anode_core.MemoryModel`` for one block size)."""
    if gradient.method == "direct":
        return sum(steps * stages * a for a in saves)
    if gradient.method == "reversible":  # each block's output and its second state; one step's graph at a time
        return 2 * sum(inputs) + stages * max(saves)
    if gradient.method == "anode":
        if gradient.checkpoints is None:
            return sum(inputs) + stages * steps * max(saves)
        return sum(inputs) + gradient.checkpoints * max(inputs) + stages * max(saves)
    stored = 0 if gradient.reconstruct else steps * sum(inputs)
    return sum(inputs) + stored + max(saves)


def _compare(spec: CompareSpec) -> Cost:
    itemsize = max(BYTES[d] for d in spec.dtypes)
    state = spec.state_elements * itemsize
    if spec.field == "mlp":
        save = spec.batch * (spec.state_dim + spec.field_hidden) * itemsize
        params = 2 * spec.state_dim * spec.field_hidden * itemsize
    else:
        save = CONV_FIELD_SAVES * state
        params = 18 * spec.map_channels**2 * itemsize
    longest = max(STAGES[s] * spec.planned_steps(s, v) for s in spec.solvers for v in spec.axis(s))
    reference = spec.blocks * longest * save  # Direct, computed in every cell
    peak = reference + 4 * spec.blocks * (state + params)
    return Cost(peak, spec.work // max(1, spec.state_elements))


def train_steps(spec: TrainSpec) -> int:
    """Optimizer steps the run plans: epochs × batches per epoch, or ``max_steps`` if fewer."""
    if spec.dataset in plugin_datasets():
        examples = plugin_datasets()[spec.dataset].examples
    else:
        examples = spec.points - int(spec.points * TEST_FRACTION) if spec.dataset in POINT_SETS else (
            TRAIN_SIZES[spec.dataset] - (int(1797 * TEST_FRACTION) if spec.dataset == "digits" else 0))
    planned = spec.epochs * math.ceil(examples / spec.batch_size)
    return planned if spec.max_steps is None else min(planned, spec.max_steps)


def _train(spec: TrainSpec) -> Cost:
    itemsize = BYTES[spec.dtype]
    batch, width = spec.batch_size, spec.width
    if spec.model == "mlp_ode" or spec.model not in MODEL_DATASETS:  # a plugin: estimated as an MLP-ODE
        hidden = spec.field_hidden if spec.model == "mlp_ode" else DEFAULT_HIDDEN
        blocks = spec.ode_blocks if spec.model == "mlp_ode" else 1
        inputs = [batch * width * itemsize] * blocks
        saves = [batch * (width + hidden) * itemsize] * blocks
        params = (2 * width + 2 * width * hidden * blocks + width * 2) * itemsize
        data = spec.points * 3 * 8
        if spec.dataset in plugin_datasets():
            plugin = plugin_datasets()[spec.dataset]
            data = 2 * plugin.examples * math.prod(plugin.shape) * 8 * 4 // 3
    else:
        side, blocks = IMAGE_SIDE[spec.dataset], (2 if spec.model == "conv_ode" else 4)
        channels = [width * 2**i for i in range(blocks)] if blocks == 4 else [width, 2 * width]
        sides = [max(1, side // 2**i) for i in range(blocks)] if blocks == 4 else [side, max(1, (side + 1) // 2)]
        inputs = [batch * c * s * s * itemsize for c, s in zip(channels, sides, strict=True)]
        saves = [CONV_FIELD_SAVES * size for size in inputs]
        params = (9 * IMAGE_CHANNELS[spec.dataset] * width + sum(36 * c * c for c in channels)
                  + channels[-1] * CLASSES[spec.dataset]) * itemsize
        data = 2 * DATA_BYTES[spec.dataset]  # a second copy while the files are read
    stages, n_t = STAGES[spec.ode.solver], spec.ode.planned_steps
    held = held_bytes(spec.ode.gradient, inputs, saves, n_t, stages)
    if spec.probe_every:
        held = max(held, held_bytes(GradientSpec(method="direct"), inputs, saves, n_t, stages))
    peak = data + 4 * params + held + OTHER_SAVES * sum(inputs)
    solves = 2 + (2 / spec.probe_every if spec.probe_every else 0)
    return Cost(peak, math.ceil(train_steps(spec) * len(inputs) * n_t * solves))


def _memory_fields(spec: BaseModel) -> tuple[str, ...]:
    if isinstance(spec, TrainSpec):
        return ("batch_size", "width", *(("hidden", "blocks") if spec.model == "mlp_ode" else ()), *_ode_fields(spec),
                "ode.gradient.method (anode keeps one block's graph)")
    if isinstance(spec, CompareSpec):
        state = ("dim", "hidden") if spec.field == "mlp" else ("channels", "size")
        return (*_axis_fields(spec, "steps (the largest N_t)"), "batch", *state, "blocks",
                "solvers (rk4 has 4 stages)", "dtypes")
    return ("steps",)


def _step_fields(spec: BaseModel) -> tuple[str, ...]:
    if isinstance(spec, TrainSpec):
        points = ("n_samples",) if spec.dataset in POINT_SETS else ()
        return ("epochs", "max_steps", *points, *_ode_fields(spec), *(("blocks",) if spec.model == "mlp_ode" else ()),
                "batch_size (raise it: fewer steps per epoch)")
    if isinstance(spec, CompareSpec):
        return (*_axis_fields(spec, "steps"), "methods", "solvers", "activations", "weight_scales", "dtypes", "blocks")
    return ("steps", "iterations")


def _ode_fields(spec: TrainSpec) -> tuple[str, ...]:
    """What sets N_t: ``ode.steps``, or an adaptive solver's tolerance and step limit."""
    if spec.ode.adaptive:
        return ("ode.rtol (raise it: fewer steps)", "ode.step_limit")
    return ("ode.steps",)


def _axis_fields(spec: CompareSpec, steps: str) -> tuple[str, ...]:
    """``steps`` when a fixed-step or reversible solver is swept, the tolerances when an adaptive one is."""
    fixed = (steps,) if len(spec.adaptive_solvers) < len(spec.solvers) else ()
    adaptive = ("tolerances (raise the smallest rtol)", "step_limit") if spec.adaptive_solvers else ()
    return (*fixed, *adaptive)


def readable_size(n: int) -> str:
    """``n`` bytes in GiB, MiB or KiB, three digits."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _listed(fields: tuple[str, ...]) -> str:
    return ", ".join(f"`{f.split(' ')[0]}`{f[len(f.split(' ')[0]):]}" for f in fields)


__all__ = ["Cost", "RunLimits", "SpecRefused", "admit", "confine_root", "estimate", "held_bytes", "readable_size",
           "train_steps"]
