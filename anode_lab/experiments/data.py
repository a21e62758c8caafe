"""Data sets for training runs, held in memory as tensors, with a batch order that depends on the seed alone.

* 2-D sets: two moons and two circles (``sklearn.datasets``), two interleaved spirals (generated here).
* ``digits``: scikit-learn's 8×8 handwritten digits (1797 images, shipped with scikit-learn).
* ``mnist``, ``cifar10``, ``cifar100``: read from a local folder in the layout torchvision writes; nothing is
  downloaded. Each file is read once into memory and checked against torchvision's published MD5
  (``MNIST.resources``, ``CIFAR10.train_list`` / ``test_list`` / ``meta``) before anything parses it, so a
  hand-made file is refused instead of parsed: CIFAR's batches are pickles, and unpickling a file someone else
  chose runs their code. MNIST is read from its four ``*-ubyte.gz`` files (IDX arrays, no pickle).

The batch order of epoch ``e`` is a permutation drawn from a ``torch.Generator`` seeded with ``(seed, e)`` and
CIFAR augmentation draws from one seeded with ``(seed, e, batch)``: a run resumed at (epoch, batch) sees exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from anode_lab.specs.train import CLASSES, TrainSpec, plugin_datasets

DATA_SEED = 0
"""Seed of the generated 2-D sets and of the digits train/test split: fixed, so every run sees the same data."""
TEST_FRACTION = 0.25

_MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    # the ANODE authors' CIFAR-10 constants (github.com/amirgholami/anode, train.py)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_SOURCES = {
    "mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four *-ubyte.gz files)"),
    "cifar10": ("CIFAR10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A local data set is missing; the message says where to put it and how to fetch it."""


class ChecksumError(ValueError):
    """A local data file is not the one torchvision publishes; nothing of it was parsed."""


@dataclass(frozen=True)
class Split:
    x: Tensor
    """Points as floats, or images as uint8 (N, C, H, W) normalised batch by batch in :meth:`Data.inputs`."""
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Data:
    name: str
    train: Split
    test: Split
    classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def inputs(self, x: Tensor, *, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A batch as the model takes it: uint8 images scaled to [0, 1] and normalised per channel."""
        x = x.to(device)
        if x.dtype != torch.uint8:
            return x.to(dtype)
        x = x.to(dtype) / 255.0
        assert self.mean is not None and self.std is not None
        mean = torch.tensor(self.mean, dtype=dtype, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=device).view(1, -1, 1, 1)
        return (x - mean) / std


def load_data(spec: TrainSpec) -> Data:
    """The train and test splits of ``spec.dataset``."""
    name = spec.dataset
    if name in ("moons", "circles", "spirals"):
        return _points(name, spec.points, spec.point_noise)
    if name == "digits":
        return _digits()
    if name in plugin_datasets():
        return _plugin(name)
    assert spec.root is not None  # the spec requires it for local sets
    root = Path(spec.root).expanduser()
    if name == "mnist":
        return _mnist(root)
    return _cifar(name, root)


def _points(name: str, n: int, noise: float) -> Data:
    from sklearn import datasets

    if name == "moons":
        x, y = datasets.make_moons(n, noise=noise, random_state=DATA_SEED)
    elif name == "circles":
        x, y = datasets.make_circles(n, noise=noise, factor=0.5, random_state=DATA_SEED)
    else:
        x, y = two_spirals(n, noise=noise, seed=DATA_SEED)
    order = np.random.default_rng(DATA_SEED).permutation(n)
    n_test = max(1, round(n * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / std
    return Data(name, _split(x[train], y[train]), _split(x[test], y[test]), 2)


def two_spirals(n: int, *, noise: float, seed: int, turns: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on two interleaved Archimedean spirals (class 0 and 1), with Gaussian ``noise``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    r = np.sqrt(rng.uniform(0.05, 1.0, n))  # uniform density along the arms
    angle = r * turns * 2 * math.pi + y * math.pi
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return x + noise * rng.standard_normal(x.shape), y


def _digits() -> Data:
    """scikit-learn's 8×8 digits, pixels 0..16 scaled to mean 0 and std 1, a fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=TEST_FRACTION, random_state=DATA_SEED, stratify=bunch.target
    )
    mean, std = x_train.mean(), x_train.std()
    return Data("digits", _split((x_train - mean) / std, y_train), _split((x_test - mean) / std, y_test), 10)


def _plugin(name: str) -> Data:
    """A data set an installed package adds (:mod:`anode_lab.plugins`), checked against its declaration."""
    from anode_lab.plugins import load_callable

    plugin = plugin_datasets()[name]
    parts = load_callable(plugin.load)(seed=DATA_SEED)
    if not isinstance(parts, tuple) or len(parts) != 4:
        raise ValueError(f"data-set plugin {name!r}: {plugin.load} must return (x_train, y_train, x_test, y_test)")
    train, test = (_split(np.asarray(x), np.asarray(y)) for x, y in (parts[:2], parts[2:]))
    for split, which in ((train, "train"), (test, "test")):
        if tuple(split.x.shape[1:]) != tuple(plugin.shape) or len(split.x) != len(split.y) or not len(split.y):
            raise ValueError(f"data-set plugin {name!r}: x_{which} must be (N, *{tuple(plugin.shape)}) with one "
                             f"label per row; got x {tuple(split.x.shape)}, y {tuple(split.y.shape)}")
        if split.y.min() < 0 or split.y.max() >= plugin.classes:
            raise ValueError(f"data-set plugin {name!r}: y_{which} must hold classes 0..{plugin.classes - 1}")
    return Data(name, train, test, plugin.classes)


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64), torch.as_tensor(y, dtype=torch.int64))


def _missing(name: str, root: Path, expected: Path) -> DatasetNotFoundError:
    cls, url = _SOURCES[name]
    return DatasetNotFoundError(
        f"{name} not found: expected {expected} under `root` = {str(root)!r}. Put the extracted files there "
        f"(from {url}), or on a machine with internet access run "
        f"`python -c \"import torchvision; torchvision.datasets.{cls}({str(root)!r}, download=True)\"` "
        f"and copy the folder {root} here. Nothing is downloaded during a run."
    )


def published_md5(name: str) -> dict[str, str]:
    """torchvision's published MD5 of every file of ``name``, by its path under ``root``."""
    from torchvision.datasets import CIFAR10, CIFAR100, MNIST

    if name == "mnist":
        return {f"{MNIST.__name__}/raw/{file}": md5 for file, md5 in MNIST.resources}
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    files = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
    return {f"{cls.base_folder}/{file}": md5 for file, md5 in files}


def read_verified(name: str, root: Path) -> dict[str, bytes]:
    """Every file of ``name`` under ``root``, read once and checked against :func:`published_md5` (the bytes
    checked are the bytes returned: nothing can swap a file in between)."""
    expected = published_md5(name)
    missing = [root / rel for rel in expected if not (root / rel).is_file()]
    if missing:
        raise _missing(name, root, missing[0])
    contents: dict[str, bytes] = {}
    for rel, md5 in expected.items():
        data = (root / rel).read_bytes()
        if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
            raise ChecksumError(
                f"{root / rel} is not torchvision's {name} file (its MD5 is not {md5}), so it was not loaded: a "
                f"damaged or hand-made file. Replace it with the original (from {_SOURCES[name][1]}), or delete "
                f"{root} and put the data set there again"
            )
        contents[rel] = data
    return contents


def _mnist(root: Path) -> Data:
    files = read_verified("mnist", root)

    def idx(kind: str, prefix: str) -> Tensor:
        data = gzip.decompress(files[f"MNIST/raw/{prefix}-{kind}.gz"])
        dims = data[3]
        shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
        return torch.from_numpy(np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape).copy())

    train, test = (Split(idx("images-idx3-ubyte", p)[:, None].contiguous(), idx("labels-idx1-ubyte", p).long())
                   for p in ("train", "t10k"))
    mean, std = _MEAN_STD["mnist"]
    return Data("mnist", train, test, 10, mean, std)


def _cifar(name: str, root: Path) -> Data:
    """CIFAR-10/100 from torchvision's folder (``cifar-10-batches-py`` / ``cifar-100-python``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    files = read_verified(name, root)
    train = _cifar_batches([files[f"{cls.base_folder}/{f}"] for f, _ in cls.train_list])
    test = _cifar_batches([files[f"{cls.base_folder}/{f}"] for f, _ in cls.test_list])
    mean, std = _MEAN_STD[name]
    return Data(name, train, test, CLASSES[name], mean, std)


def _cifar_batches(contents: list[bytes]) -> Split:
    """Batches whose bytes :func:`read_verified` checked: torchvision's own pickles, safe to load."""
    xs, ys = [], []
    for data in contents:
        entry = pickle.loads(data, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64))
    return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))


def _generator(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + k) % 2**63
    return torch.Generator().manual_seed(seed)


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[Tensor]:
    """Index batches of epoch ``epoch``: a seeded permutation cut into ``batch_size`` pieces.

    A final partial batch is kept unless it holds a single example (BatchNorm cannot train on one).
    """
    order = torch.randperm(n, generator=_generator(seed, epoch))
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def augment(x: Tensor, *, seed: int, epoch: int, batch: int, pad: int = 4) -> Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, per image, seeded by the position."""
    gen = _generator(seed, epoch, batch, 1)
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    cols = torch.arange(w).view(1, 1, w)
    cols = torch.where(flip.view(b, 1, 1), w - 1 - cols, cols)
    rows = dy + torch.arange(h).view(1, h, 1)
    out = padded[torch.arange(b).view(b, 1, 1), :, rows, dx + cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
