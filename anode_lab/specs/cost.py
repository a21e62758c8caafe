"""What a spec costs, estimated from its fields alone (pure arithmetic, no torch), and the operator's limits.

Field bounds keep each knob sane, but knobs multiply: within every bound a sweep can ask for tens of GB and a
training run for tens of millions of steps. :func:`admit` checks a spec against :class:`RunLimits` (the API
before it stores a run, the worker before it runs one) and refuses, naming the estimate, the limit and the fields
to lower; it also confines a data set's ``root`` to the operator's folders and requires its files there.

The memory estimate is the analytic model of ANODE §3 (``anode_core.MemoryModel``: L blocks, S bytes
per block input, s stages, N_t steps, A bytes saved by one field evaluation), over sizes computed from the spec:

* A of an MLP field is ``batch·(dim + hidden)`` values (its input and the hidden layer), of a conv field
  :data:`CONV_FIELD_SAVES` state-sized tensors (two conv inputs, the norm, the activation);
* Direct holds ``Σ N_t·s·A`` over the blocks, ANODE ``Σ S + s·N_t·A`` of the largest block (``(c + …)·S + s·A``
  with c checkpoints), the adjoint ``Σ S + A`` (and ``Σ N_t·S`` when it stores states);
* N_t of an adaptive solve is its ``step_limit``: the most it may take, and the only bound (a ReLU field at weight
  scale 30 took 137 steps where the tolerance suggests 4);
* a sweep's peak is its Direct reference at the largest ``s·N_t`` (every cell computes it), over the model it
  names (:func:`model_sizes`, the sizes a training run of that model has) or its synthetic field; a training run
  adds the data set as loaded, four copies of the parameters (weights, gradients, two optimizer moments) and
  :data:`OTHER_SAVES` state-sized tensors per block for the layers between the blocks, and the Direct probe when
  ``probe_every`` is on.

Disk is the metric rows a run reports (:data:`METRIC_ROW_BYTES` each, in the store and the worker's journal), its
saved model and checkpoints, and a sweep's tables. It is a guard against asking for the machine, not a prediction
to the byte: the child process's memory limit (``backend.workers.child``) catches what it misses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from anode_lab.specs.common import MAX_STEP_LIMIT, GradientSpec, adaptive_steps, is_adaptive
from anode_lab.specs.compare import STAGES, CompareSpec
from anode_lab.specs.demo import DemoSpec
from anode_lab.specs.train import (
    DATA_FILES,
    DEFAULT_HIDDEN,
    MODEL_DATASETS,
    POINT_SETS,
    TrainSpec,
    plugin_datasets,
)

BYTES = {"float32": 4, "float64": 8}
CONV_FIELD_SAVES = 5
PAPER_FIELD_SAVES = 7
"""State-sized tensors one evaluation of the paper's fields saves (two convs, two norms, two activations)."""
OTHER_SAVES = 4
PAPER_OTHER_SAVES = 8
"""State-sized tensors the paper's residual block before each ODE block saves (convs, norms, shortcut)."""
WIDTH: int = TrainSpec.model_fields["width"].default
"""The width a sweep builds a named model at (``TrainSpec``'s default)."""
TEST_FRACTION = 0.25
TRAIN_SIZES = {"digits": 1797, "mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
"""Examples in each stored data set's training split (digits: all 1797, of which a quarter is held out)."""
DATA_BYTES = {"digits": 1797 * 64 * 8, "mnist": 70_000 * 784, "cifar10": 60_000 * 3072, "cifar100": 60_000 * 3072}
"""Bytes of each stored data set as held in memory (digits as float64, images as uint8)."""
IMAGE_SIDE = {"digits": 8, "mnist": 28, "cifar10": 32, "cifar100": 32}
IMAGE_CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3, "cifar100": 3}
CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
DEMO_BYTES = 256 * 2**20
DEMO_DISK = 16 * 2**20
"""A demo's figures and tables: a few small files."""
METRIC_ROW_BYTES = 128
"""Disk of one metric value: its row and index in the store (SQLite about 60 bytes, PostgreSQL about 90) and its
share of the worker's journal (9 bytes), rounded up."""
FILE_BYTES = 64 * 2**10
"""What a saved model or checkpoint holds besides its tensors (torch's zip and pickle, the RNG states)."""
CSV_ROW_BYTES = 512
"""One row of a sweep's ``results.csv``."""
STEP_SERIES, EPOCH_SERIES, PROBE_SERIES = 5, 8, 4
"""Series a training run reports every step, every epoch (with the first step's measurements), every probe."""
CELL_SERIES = 22
"""Numeric columns of ``results.csv`` a sweep reports as metrics for each cell (at most)."""
"""The demos are fixed small presets: a 2-block MLP of width 16 at most, or one 28×28 image."""


@dataclass(frozen=True)
class RunLimits:
    """What one run may ask of the machine: ``ANODE_MAX_RUN_BYTES``, ``ANODE_MAX_RUN_STEPS`` and the folders a
    data ``root`` must lie under (``None``: any folder, as for the CLI's local user)."""

    max_bytes: int
    max_steps: int
    data_roots: tuple[Path, ...] | None = None
    max_disk_bytes: int | None = None
    """``ANODE_MAX_RUN_DISK_BYTES``: metric rows, checkpoints and artifacts of one run (``None``: no limit)."""


@dataclass(frozen=True)
class Cost:
    """Estimated peak memory (bytes), ODE solver steps (forward and backward, every block) and disk (bytes of
    metric rows, checkpoints and artifacts) of one run."""

    bytes: int
    steps: int
    disk: int = 0


PATH_MAX, NAME_MAX = 4096, 255
"""Bytes of a path (with its final NUL) and of one folder name that Linux filesystems take."""


class SpecRefused(ValueError):
    """A spec within its fields' bounds that the operator's service cannot take; ``fields`` are what to change,
    ``error`` says why: ``cost_limit`` (memory, steps or disk over a limit), ``outside_data_roots``, ``root_too_long``
    or ``data_missing`` (a ``root`` the service cannot read)."""

    def __init__(self, message: str, fields: tuple[str, ...], error: str = "cost_limit") -> None:
        super().__init__(message)
        self.fields = fields
        self.error = error


def admit(kind: str, spec: BaseModel, limits: RunLimits) -> BaseModel:
    """``spec`` if it fits ``limits``, with a data ``root`` made absolute and resolved; else :class:`SpecRefused`."""
    if isinstance(spec, TrainSpec) and spec.root is not None and limits.data_roots is not None:
        files = DATA_FILES.get(spec.dataset, ())
        root = confine_root(spec.root, limits.data_roots, room=max((len(rel) + 1 for rel in files), default=0))
        require_files(spec.dataset, spec.root, root)
        spec = spec.model_copy(update={"root": str(root)})
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
    if limits.max_disk_bytes is not None and cost.disk > limits.max_disk_bytes:
        fields = _disk_fields(spec)
        raise SpecRefused(
            f"the run would write about {readable_size(cost.disk)} to disk (metric rows, checkpoints, artifacts); "
            f"this service allows {readable_size(limits.max_disk_bytes)} per run (ANODE_MAX_RUN_DISK_BYTES): "
            f"lower {_listed(fields)}", fields)
    return spec


def confine_root(root: str, allowed: tuple[Path, ...], room: int = 0) -> Path:
    """``root`` resolved (symlinks and ``..`` followed; a relative one is taken under the first allowed folder),
    if it lies under one of ``allowed`` and the filesystem can open it with ``room`` more bytes (the data set's
    files under it); else :class:`SpecRefused` saying which."""
    path = Path(root).expanduser()
    resolved = (path if path.is_absolute() else allowed[0] / path).resolve()
    if not any(resolved.is_relative_to(folder) for folder in allowed):
        raise SpecRefused(
            f"`root` {root!r} is outside the data folders of this service; put the data set under one of "
            f"{', '.join(str(f) for f in allowed)} (ANODE_DATA_ROOTS) and set `root` to that folder", ("root",),
            "outside_data_roots")
    size, longest = len(os.fsencode(resolved)), max(len(os.fsencode(part)) for part in resolved.parts)
    if size + room >= PATH_MAX or longest > NAME_MAX:
        files = f" with the {room - 1} bytes of its data set's files under it" if room else ""
        raise SpecRefused(
            f"`root` resolves to a path of {size} bytes{files}, whose longest folder name has {longest}; the "
            f"filesystem takes paths under {PATH_MAX} bytes and names of at most {NAME_MAX}: set `root` to a "
            "shorter folder", ("root",), "root_too_long")
    return resolved


def require_files(dataset: str, given: str, root: Path) -> None:
    """:class:`SpecRefused` naming the files of ``dataset`` missing under ``root`` (nothing is downloaded)."""
    missing = [rel for rel in DATA_FILES.get(dataset, ()) if not _is_file(root / rel)]
    if missing:
        raise SpecRefused(
            f"`root` {given!r} ({root}) does not hold {dataset}: {len(missing)} of its {len(DATA_FILES[dataset])} "
            f"files are missing, e.g. {root / missing[0]}; expected {', '.join(DATA_FILES[dataset])} under it "
            "(the layout torchvision writes; nothing is downloaded): put them there or set `root` to the folder "
            "that holds them", ("root",), "data_missing")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # unreadable folder on the way: not there, as far as the run could tell
        return False


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
        return Cost(DEMO_BYTES, solves * max(1, spec.iterations or 1), DEMO_DISK)
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


@dataclass(frozen=True)
class Sizes:
    """Bytes of a model at one batch: each ODE block's input and what one evaluation of its field saves for
    backward, the parameters, and what the layers between the blocks (stem, downsampling, head) save."""

    inputs: list[int]
    saves: list[int]
    params: int
    others: int


def model_sizes(model: str, dataset: str, batch: int, width: int, hidden: int, itemsize: int,
                blocks: int = 1) -> Sizes:
    """:class:`Sizes` of the built-in ``model`` on ``dataset`` (a plugin model is sized as an MLP-ODE; an MLP-ODE
    has ``blocks`` ODE blocks in a row)."""
    if model == "mlp_ode" or model not in MODEL_DATASETS:
        inputs = [batch * width * itemsize] * blocks
        params = (2 * width + 2 * width * hidden * blocks + width * 2) * itemsize
        return Sizes(inputs, [batch * (width + hidden) * itemsize] * blocks, params, OTHER_SAVES * sum(inputs))
    side, blocks = IMAGE_SIDE[dataset], (2 if model == "conv_ode" else 4)
    channels = [width * 2**i for i in range(blocks)] if blocks == 4 else [width, 2 * width]
    sides = [max(1, side // 2**i) for i in range(blocks)] if blocks == 4 else [side, max(1, (side + 1) // 2)]
    inputs = [batch * c * s * s * itemsize for c, s in zip(channels, sides, strict=True)]
    per_evaluation = CONV_FIELD_SAVES if model == "conv_ode" else PAPER_FIELD_SAVES
    params = (9 * IMAGE_CHANNELS[dataset] * width + sum(36 * c * c for c in channels)
              + channels[-1] * CLASSES[dataset]) * itemsize
    between = OTHER_SAVES if model == "conv_ode" else PAPER_OTHER_SAVES
    return Sizes(inputs, [per_evaluation * size for size in inputs], params, between * sum(inputs))


def worst_steps(solver: str, steps: int | None, step_limit: int | None) -> int:
    """N_t of a fixed-step solve; an adaptive one counted at its ``step_limit``, the most it may take (a ReLU field
    at weight scale 30 took 137 steps at a tolerance that suggests 4: no guess from the tolerance is a bound)."""
    if is_adaptive(solver):
        assert step_limit is not None
        return step_limit
    assert steps is not None
    return steps


def _compare(spec: CompareSpec) -> Cost:
    itemsize = max(BYTES[d] for d in spec.dtypes)
    if spec.model is not None:
        assert spec.dataset is not None
        sizes = model_sizes(spec.model, spec.dataset, spec.batch, WIDTH, DEFAULT_HIDDEN, itemsize)
    else:
        state = spec.state_elements * itemsize
        if spec.field == "mlp":
            save = spec.batch * (spec.state_dim + spec.field_hidden) * itemsize
            params = 2 * spec.state_dim * spec.field_hidden * itemsize
        else:
            save = CONV_FIELD_SAVES * state
            params = 18 * spec.map_channels**2 * itemsize
        sizes = Sizes([state] * spec.blocks, [save] * spec.blocks, spec.blocks * params, 3 * spec.blocks * state)
    def steps_at(solver: str, value: float) -> int:  # ``value``: N_t, or the rtol of an adaptive solver's cell
        return worst_steps(solver, None if is_adaptive(solver) else int(value), spec.step_limit)

    longest = max(STAGES[s] * steps_at(s, v) for s in spec.solvers for v in spec.axis(s))
    reference = held_bytes(GradientSpec(method="direct"), sizes.inputs, sizes.saves, longest, 1)  # every cell's
    peak = reference + sizes.others + 4 * sizes.params + sum(sizes.inputs)
    steps = 0
    for solver in spec.solvers:
        solves = (3 * len(spec.methods_of(solver)) + 1) * spec.timing_repeats + 2 * spec.fd_check
        steps += sum(STAGES[solver] * steps_at(solver, v) for v in spec.axis(solver)) * solves
    disk = spec.cells * (CELL_SERIES * METRIC_ROW_BYTES + CSV_ROW_BYTES)
    return Cost(peak, steps * spec.per_setting * len(sizes.inputs), disk)


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
    hidden = spec.field_hidden if spec.model == "mlp_ode" else DEFAULT_HIDDEN
    sizes = model_sizes(spec.model, spec.dataset, spec.batch_size, spec.width, hidden, itemsize,
                        blocks=spec.ode_blocks if spec.model == "mlp_ode" else 1)
    if spec.dataset in plugin_datasets():
        plugin = plugin_datasets()[spec.dataset]
        data = 2 * plugin.examples * math.prod(plugin.shape) * 8 * 4 // 3
    elif spec.dataset in POINT_SETS:
        data = spec.points * 3 * 8
    else:
        data = 2 * DATA_BYTES[spec.dataset]  # a second copy while the files are read
    stages, n_t = STAGES[spec.ode.solver], worst_steps(spec.ode.solver, spec.ode.steps, spec.ode.step_limit)
    held = held_bytes(spec.ode.gradient, sizes.inputs, sizes.saves, n_t, stages)
    if spec.probe_every:
        held = max(held, held_bytes(GradientSpec(method="direct"), sizes.inputs, sizes.saves, n_t, stages))
    peak = data + 4 * sizes.params + held + sizes.others
    solves = 2 + (2 / spec.probe_every if spec.probe_every else 0)
    return Cost(peak, math.ceil(train_steps(spec) * len(sizes.inputs) * n_t * solves), _train_disk(spec, sizes))


def metric_rows(spec: TrainSpec) -> int:
    """Metric rows a training run reports at most (:mod:`anode_lab.experiments.train` lists its series): every
    step's, every epoch's (with the first step's measurements) and every probe's."""
    steps = train_steps(spec)
    probes = steps // spec.probe_every if spec.probe_every else 0
    epochs = min(spec.epochs, steps)
    return steps * STEP_SERIES + epochs * EPOCH_SERIES + probes * PROBE_SERIES


def _train_disk(spec: TrainSpec, sizes: Sizes) -> int:
    """Metric rows, then the final model and, with ``checkpoint_every``, two checkpoints (the newest is written
    before the older one is deleted) holding the parameters and the optimizer's moments."""
    moments = 2 if spec.optimizer == "adam" else 1
    checkpoints = 2 * ((1 + moments) * sizes.params + FILE_BYTES) if spec.checkpoint_every else 0
    return metric_rows(spec) * METRIC_ROW_BYTES + sizes.params + FILE_BYTES + checkpoints


def _memory_fields(spec: BaseModel) -> tuple[str, ...]:
    if isinstance(spec, TrainSpec):
        return ("batch_size", "width", *(("hidden", "blocks") if spec.model == "mlp_ode" else ()), *_ode_fields(spec),
                "ode.gradient.method (anode keeps one block's graph)")
    if isinstance(spec, CompareSpec):
        state = ("model (a smaller network)",) if spec.model else (
            ("dim", "hidden") if spec.field == "mlp" else ("channels", "size")) + ("blocks",)
        return (*_axis_fields(spec, "steps (the largest N_t)"), "batch", *state, "solvers (rk4 has 4 stages)",
                "dtypes")
    return ("steps",)


def _step_fields(spec: BaseModel) -> tuple[str, ...]:
    if isinstance(spec, TrainSpec):
        points = ("n_samples",) if spec.dataset in POINT_SETS else ()
        return ("epochs", "max_steps", *points, *_ode_fields(spec), *(("blocks",) if spec.model == "mlp_ode" else ()),
                "batch_size (raise it: fewer steps per epoch)")
    if isinstance(spec, CompareSpec):
        return (*_axis_fields(spec, "steps"), "methods", "solvers", "activations", "weight_scales", "dtypes", "blocks")
    return ("steps", "iterations")


def _disk_fields(spec: BaseModel) -> tuple[str, ...]:
    if isinstance(spec, TrainSpec):
        return ("max_steps", "epochs", "probe_every (raise it, or 0: fewer metric rows)",
                "width (checkpoints hold the parameters)")
    return ("steps", "methods", "solvers", "activations", "weight_scales", "dtypes")


def _ode_fields(spec: TrainSpec) -> tuple[str, ...]:
    """What sets N_t: ``ode.steps``, or an adaptive solver's step limit (at which it is counted) and tolerance."""
    if spec.ode.adaptive:
        return ("ode.step_limit (an adaptive solve is counted at its limit)",
                "ode.rtol (raise it, so that a lower limit suffices)")
    return ("ode.steps",)


def _axis_fields(spec: CompareSpec, steps: str) -> tuple[str, ...]:
    """``steps`` when a fixed-step or reversible solver is swept, the tolerances when an adaptive one is."""
    fixed = (steps,) if len(spec.adaptive_solvers) < len(spec.solvers) else ()
    adaptive = (("step_limit (an adaptive solve is counted at its limit)",
                 "tolerances (raise the smallest rtol, so that a lower limit suffices)") if spec.adaptive_solvers
                else ())
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
           "require_files", "train_steps"]
