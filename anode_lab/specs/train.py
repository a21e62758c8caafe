"""The spec of a training run, and named example specs. Pydantic only: importing this never imports torch.

Every knob is bounded so that one request cannot take the machine; knobs that apply to some models or data sets
only default to ``None`` (meaning "the model's default") and are rejected, with the fix, where they do not apply.
The CIFAR presets follow the ANODE authors' driver (``train.py`` of github.com/amirgholami/anode, for Gholami,
Keutzer & Biros, IJCAI 2019): 350 epochs, batch 256, SGD with lr 0.1, momentum 0.9, weight decay 5e-4, random
crop and flip; the step schedule divides lr by 10 after epochs 150 and 250 of 350, scaled to the run's epochs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from anode_lab.plugins import DatasetPlugin, ModelPlugin, dataset_plugins, model_plugins
from anode_lab.specs.common import (
    FLOAT32_MIN_RTOL,
    DeviceName,
    DtypeName,
    GradientSpec,
    MethodName,
    OdeSpec,
    SolverName,
    SpecModel,
    control_character,
)

ModelName = Literal["mlp_ode", "conv_ode", "resnet_ode", "squeezenext_ode"]
DatasetName = Literal["moons", "circles", "spirals", "digits", "mnist", "cifar10", "cifar100"]
NormName = Literal["batch", "group", "none"]

POINT_SETS = ("moons", "circles", "spirals")
"""Generated 2-D sets (sklearn-style): features are points in the plane."""
LOCAL_SETS = ("mnist", "cifar10", "cifar100")
"""Image sets read through torchvision from a local folder (``root``)."""
CIFAR_SETS = ("cifar10", "cifar100")
DATA_FILES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(f"MNIST/raw/{split}-{kind}-ubyte.gz" for split in ("train", "t10k")
                   for kind in ("images-idx3", "labels-idx1")),
    "cifar10": tuple(f"cifar-10-batches-py/{name}" for name in (
        *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
}
"""The files of each local set under its ``root``, in the layout torchvision writes (torch-free, so the API can
look for them; a test checks them against torchvision's own lists, which the loader verifies by MD5)."""
MODEL_DATASETS: dict[str, tuple[str, ...]] = {
    "mlp_ode": POINT_SETS,
    "conv_ode": ("digits", "mnist", *CIFAR_SETS),
    "resnet_ode": CIFAR_SETS,
    "squeezenext_ode": CIFAR_SETS,
}
"""Which data sets each model takes: the MLP needs points, the paper's networks need 32×32 RGB images."""
SHAPES: dict[str, tuple[int, ...]] = {
    "moons": (2,), "circles": (2,), "spirals": (2,),
    "digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
}
"""Shape of one example of each data set."""
CLASSES: dict[str, int] = {
    "moons": 2, "circles": 2, "spirals": 2, "digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100,
}

DEFAULT_NOISE = 0.1
DEFAULT_POINTS = 1000
DEFAULT_HIDDEN = 32
DEFAULT_MOMENTUM = 0.9
STEP_MILESTONES = (150 / 350, 250 / 350)
"""Fractions of the epochs after which the step schedule divides the learning rate by 10."""

MAX_EPOCHS = 1000
MAX_MLP_BLOCKS = 8
MAX_TRAIN_STEPS = 10_000_000


class TrainSpec(SpecModel):
    """Train one classifier with ODE blocks and report loss, accuracy, gradient error, memory and time."""

    model: str = Field("mlp_ode", max_length=40, description="mlp_ode: 2-D points; conv_ode: any image set; "
                       "resnet_ode / squeezenext_ode: the paper's networks, 32×32 images; or an installed plugin "
                       "(the catalog lists them)")
    dataset: str = Field("moons", max_length=40, validate_default=True,
                         description="a built-in data set or an installed plugin (the catalog lists them)")
    noise: float | None = Field(None, ge=0.0, le=1.0, validate_default=True,
                                description=f"2-D sets only: noise of the points (default {DEFAULT_NOISE})")
    n_samples: int | None = Field(None, ge=16, le=100_000, validate_default=True,
                                  description=f"2-D sets only: points generated (default {DEFAULT_POINTS}), "
                                  "a quarter held out for testing")
    root: str | None = Field(None, max_length=4096, validate_default=True,
                             description="mnist / cifar only: local folder holding the torchvision files")
    ode: OdeSpec = OdeSpec()
    width: int = Field(16, ge=1, le=512, description="state width of the MLP, channels of the first conv stage")
    hidden: int | None = Field(None, ge=1, le=2048, validate_default=True,
                               description=f"mlp_ode only: hidden units of the field (default {DEFAULT_HIDDEN})")
    blocks: int | None = Field(None, ge=1, le=MAX_MLP_BLOCKS, validate_default=True,
                               description="mlp_ode only: ODE blocks in a row (default 1). With one block ANODE keeps "
                               "that block's graph, as Direct does, and saves no memory: add blocks, or checkpoints "
                               "inside the block")
    norm: NormName | None = Field(None, validate_default=True,
                                  description="conv models only: normalisation in the fields (default batch)")
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=4096)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0, validate_default=True,
                                   description=f"sgd only (default {DEFAULT_MOMENTUM})")
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    schedule: Literal["step", "constant"] = Field(
        "step", description="step: lr ÷10 after 150/350 and 250/350 of the epochs (the paper's, scaled)"
    )
    augment: bool = Field(False, validate_default=True, description="cifar only: random crop (pad 4) and flip")
    dtype: DtypeName = Field("float32", validate_default=True)
    device: DeviceName = "auto"
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads for torch (default: torch's own); "
                                "small networks run fastest on 1, and on a busy machine much faster")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    probe_every: int = Field(10, ge=0, le=MAX_TRAIN_STEPS,
                             description="compare the run's gradient with Direct's every k steps (on by default, "
                             "so a first run shows its gradient error); 0 = off")
    checkpoint_every: int = Field(0, ge=0, le=MAX_TRAIN_STEPS,
                                  description="save a resumable checkpoint every k steps; 0 = off")
    max_steps: int | None = Field(None, ge=1, le=MAX_TRAIN_STEPS, description="stop after this many steps")

    @field_validator("model")
    @classmethod
    def _model_installed(cls, model: str) -> str:
        if model not in model_datasets():
            raise ValueError(f"model {model!r} is not installed: set `model` to one of {', '.join(model_datasets())}")
        return model

    @field_validator("dataset")
    @classmethod
    def _dataset_fits_model(cls, dataset: str, info: ValidationInfo) -> str:
        if dataset not in SHAPES and dataset not in plugin_datasets():
            known = ", ".join([*SHAPES, *plugin_datasets()])
            raise ValueError(f"dataset {dataset!r} is not installed: set `dataset` to one of {known}")
        model = info.data.get("model")
        takes_all = model_datasets()
        if model is not None and dataset not in takes_all[model]:
            takes = ", ".join(takes_all[model])
            fits = ", ".join(m for m, sets in takes_all.items() if dataset in sets) or "a model that takes it"
            raise ValueError(
                f"model {model!r} cannot train on {dataset!r}: set `dataset` to one of {takes}, "
                f"or `model` to {fits}"
            )
        return dataset

    @field_validator("noise", "n_samples")
    @classmethod
    def _points_only(cls, value: Any, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        if value is not None and dataset is not None and dataset not in POINT_SETS:
            raise ValueError(f"`{info.field_name}` applies to the 2-D sets {', '.join(POINT_SETS)} only; remove it")
        return value

    @field_validator("root")
    @classmethod
    def _root_for_local_sets(cls, root: str | None, info: ValidationInfo) -> str | None:
        problem = control_character(root) if root is not None else None
        if problem:
            raise ValueError(f"`root` {problem}")
        dataset = info.data.get("dataset")
        if dataset is None:
            return root
        if dataset in LOCAL_SETS and not root:
            raise ValueError(
                f"dataset {dataset!r} is read from a local folder: set `root` to the folder holding its "
                "torchvision files (nothing is downloaded)"
            )
        if dataset not in LOCAL_SETS and root is not None:
            raise ValueError(f"`root` applies to {', '.join(LOCAL_SETS)} only; {dataset!r} needs none: remove it")
        return root

    @field_validator("hidden")
    @classmethod
    def _hidden_for_mlp(cls, hidden: int | None, info: ValidationInfo) -> int | None:
        if hidden is not None and info.data.get("model") not in (None, "mlp_ode"):
            raise ValueError("`hidden` applies to model 'mlp_ode' only (conv models use `width`); remove it")
        return hidden

    @field_validator("blocks")
    @classmethod
    def _blocks_for_mlp(cls, blocks: int | None, info: ValidationInfo) -> int | None:
        if blocks is not None and info.data.get("model") not in (None, "mlp_ode"):
            raise ValueError("`blocks` applies to model 'mlp_ode' only (the conv models have theirs built in); "
                             "remove it")
        return blocks

    @field_validator("norm")
    @classmethod
    def _norm_for_conv(cls, norm: str | None, info: ValidationInfo) -> str | None:
        if norm is not None and info.data.get("model") == "mlp_ode":
            raise ValueError("`norm` applies to the conv models only; remove it for 'mlp_ode'")
        return norm

    @field_validator("momentum")
    @classmethod
    def _momentum_for_sgd(cls, momentum: float | None, info: ValidationInfo) -> float | None:
        if momentum is not None and info.data.get("optimizer") == "adam":
            raise ValueError("`momentum` applies to optimizer 'sgd' only (adam has its own); remove it")
        return momentum

    @field_validator("dtype")
    @classmethod
    def _tolerance_fits_dtype(cls, dtype: str, info: ValidationInfo) -> str:
        ode = info.data.get("ode")
        if dtype == "float32" and isinstance(ode, OdeSpec) and ode.rtol is not None and ode.rtol < FLOAT32_MIN_RTOL:
            raise ValueError(f"float32 carries about 7 digits: an adaptive solve at `ode.rtol` {ode.rtol:g} never "
                             f"meets it; set `ode.rtol` ≥ {FLOAT32_MIN_RTOL:g} or `dtype` to float64")
        return dtype

    @field_validator("augment")
    @classmethod
    def _augment_for_cifar(cls, augment: bool, info: ValidationInfo) -> bool:
        dataset = info.data.get("dataset")
        if augment and dataset is not None and dataset not in CIFAR_SETS:
            raise ValueError(f"`augment` (random crop and flip) applies to {', '.join(CIFAR_SETS)} only; "
                             "set it to false")
        return augment

    @property
    def points(self) -> int:
        return DEFAULT_POINTS if self.n_samples is None else self.n_samples

    @property
    def point_noise(self) -> float:
        return DEFAULT_NOISE if self.noise is None else self.noise

    @property
    def field_hidden(self) -> int:
        return DEFAULT_HIDDEN if self.hidden is None else self.hidden

    @property
    def ode_blocks(self) -> int:
        """ODE blocks of an MLP-ODE in a row."""
        return 1 if self.blocks is None else self.blocks

    @property
    def field_norm(self) -> str:
        return "batch" if self.norm is None else self.norm

    @property
    def sgd_momentum(self) -> float:
        return DEFAULT_MOMENTUM if self.momentum is None else self.momentum

    def milestones(self) -> list[int]:
        """Epochs after which the step schedule divides the learning rate by 10 (empty for 'constant')."""
        if self.schedule == "constant":
            return []
        return sorted({max(1, round(self.epochs * f)) for f in STEP_MILESTONES})

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (0-based): ``lr`` divided by 10 at each milestone passed."""
        return self.lr * 0.1 ** sum(epoch >= m for m in self.milestones())


def plugin_models() -> dict[str, ModelPlugin]:
    """Installed model plugins whose names are not built in (a built-in name always means the built-in)."""
    return {name: p for name, p in model_plugins().items() if name not in MODEL_DATASETS}


def plugin_datasets() -> dict[str, DatasetPlugin]:
    """Installed data-set plugins whose names are not built in."""
    return {name: p for name, p in dataset_plugins().items() if name not in SHAPES}


def dataset_shape(name: str) -> tuple[int, ...]:
    return SHAPES[name] if name in SHAPES else tuple(plugin_datasets()[name].shape)


def dataset_classes(name: str) -> int:
    return CLASSES[name] if name in CLASSES else int(plugin_datasets()[name].classes)


def model_datasets() -> dict[str, tuple[str, ...]]:
    """:data:`MODEL_DATASETS` and, for each model plugin, the data sets its declared ``data`` covers."""
    sets = [*SHAPES, *plugin_datasets()]
    images = [name for name in sets if len(dataset_shape(name)) == 3]

    def covered(kind: str) -> list[str]:
        if kind == "points":
            return [name for name in sets if dataset_shape(name) == (2,)]
        if kind == "images":
            return images
        if kind.startswith("images:"):
            return [name for name in images if "x".join(map(str, dataset_shape(name))) == kind[7:].replace("×", "x")]
        return [kind] if kind in sets else []

    out = dict(MODEL_DATASETS)
    for name, plugin in plugin_models().items():
        out[name] = tuple(dict.fromkeys(d for kind in plugin.data for d in covered(kind)))
    return out


def _anode(steps: int = 2, solver: SolverName = "euler") -> OdeSpec:
    return OdeSpec(solver=solver, steps=steps, activation="relu", gradient=GradientSpec(method="anode"))


PAPER_NETWORKS: dict[str, tuple[ModelName, int]] = {
    "resnet": ("resnet_ode", 64), "squeezenext": ("squeezenext_ode", 32)
}
"""The paper's CIFAR networks and their widths as published: ResNet-18 stages 64-512, SqNxt_23_1x stages 32-256."""
PAPER_METHODS: tuple[MethodName, ...] = ("anode", "adjoint", "direct")
"""ANODE against the continuous adjoint (Chen et al.) and Direct backprop, as the paper compares them."""
PAPER_METHOD_NAMES = {"anode": "ANODE", "adjoint": "the continuous adjoint (Chen et al.)", "direct": "Direct backprop"}


def _paper_cifar(network: str, method: MethodName = "anode") -> TrainSpec:
    """The authors' CIFAR-10 recipe (module docstring) at paper scale, Euler with N_t = 2 (their driver's default);
    every method with the same seed, so the runs differ only in how the ODE blocks are differentiated."""
    model, width = PAPER_NETWORKS[network]
    ode = OdeSpec(solver="euler", steps=2, activation="relu", gradient=GradientSpec(method=method))
    return TrainSpec(
        model=model, dataset="cifar10", root="./data", ode=ode, width=width, epochs=350, batch_size=256,
        optimizer="sgd", lr=0.1, weight_decay=5e-4, schedule="step", augment=True, device="auto",
        seed=0, probe_every=0, checkpoint_every=1000,  # no probes: epoch time and memory are the method's own
    )


PRESETS: dict[str, TrainSpec] = {
    "digits-anode": TrainSpec(
        model="conv_ode", dataset="digits", ode=_anode(), width=16, epochs=12, batch_size=32,
        optimizer="sgd", lr=0.05, weight_decay=5e-4, device="cpu", threads=1, probe_every=50,
    ),
    "moons-adjoint": TrainSpec(
        model="mlp_ode", dataset="moons", noise=0.1, n_samples=1000,
        ode=OdeSpec(solver="euler", steps=4, activation="relu", gradient=GradientSpec(method="adjoint")),
        width=8, hidden=32, epochs=30, batch_size=64, optimizer="adam", lr=0.01, weight_decay=0.0,
        device="cpu", threads=1, probe_every=10,
    ),
    "spirals-anode": TrainSpec(
        model="mlp_ode", dataset="spirals", noise=0.05, n_samples=2000,
        ode=OdeSpec(solver="rk4", steps=8, activation="tanh", gradient=GradientSpec(method="anode")),
        width=16, hidden=64, blocks=3, epochs=60, batch_size=64, optimizer="adam", lr=0.01, weight_decay=0.0,
        device="cpu", threads=1, probe_every=25,
    ),
    "mnist-anode": TrainSpec(
        model="conv_ode", dataset="mnist", root="./data", ode=_anode(), width=32, epochs=10, batch_size=128,
        optimizer="sgd", lr=0.05, weight_decay=5e-4, device="auto", checkpoint_every=500,
    ),
    **{f"cifar10-{net}-{method}": _paper_cifar(net, method) for net in PAPER_NETWORKS for method in PAPER_METHODS},
}
"""Named example specs: ``anode-lab specs NAME`` prints one, ready for ``anode-lab run``."""

DESCRIPTIONS: dict[str, str] = {
    "digits-anode": "conv ODE net on sklearn's 8×8 digits, Euler N_t=2, ANODE; ≥95% test accuracy in seconds "
                    "on one CPU thread",
    "moons-adjoint": "MLP-ODE on two moons with the continuous adjoint (Chen et al.); the probe shows its gradient "
                     "error",
    "spirals-anode": "MLP-ODE of three blocks on two spirals, RK4 N_t=8, ANODE: run it side by side to see ANODE "
                     "hold a fraction of Direct's memory",
    "mnist-anode": "conv ODE net on MNIST (files under ./data/MNIST/raw), ANODE",
    **{
        f"cifar10-{net}-{method}": f"the paper's {'ResNet-18' if net == 'resnet' else 'SqNxt_23_1x'} with ODE blocks "
        f"on CIFAR-10 (./data/cifar-10-batches-py), Euler N_t=2, {PAPER_METHOD_NAMES[method]}, 350 epochs, seed 0"
        for net in PAPER_NETWORKS
        for method in PAPER_METHODS
    },
}
"""One line per preset, shown next to it."""

GROUP_PRESETS: dict[str, dict[str, Any]] = {
    "spirals-side-by-side": {
        "kind": "train",
        "spec": PRESETS["spirals-anode"].model_dump(mode="json", exclude_none=True),
        "methods": [{"method": method} for method in ("direct", "anode", "adjoint")],
        "name": "spirals: Direct, ANODE, adjoint",
    },
    **{f"cifar10-{net}-paper": {
        "kind": "train",
        "spec": PRESETS[f"cifar10-{net}-anode"].model_dump(mode="json", exclude_none=True),
        "methods": [{"method": method} for method in PAPER_METHODS],
        "name": f"CIFAR-10 {net}: {', '.join(PAPER_METHOD_NAMES[m] for m in PAPER_METHODS)}",
    } for net in PAPER_NETWORKS},
}
"""Side-by-side groups, each a ``POST /groups`` body: the spirals preset's three blocks under Direct, ANODE and
the adjoint (the first comparison: ANODE exact at a fraction of Direct's memory), and the paper's CIFAR-10
comparison, whose runs are the ``cifar10-<net>-<method>`` presets, identical (seed included) but for the
gradient method. The catalog lists them, and the Launch page runs them."""
