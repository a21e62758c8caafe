"""Helpers for the training tests: small data sets written in torchvision's on-disk formats, spec builders and a
metrics recorder.

The files follow torchvision's layout exactly: MNIST as gzipped IDX files under ``MNIST/raw`` (LeCun et al.'s
format: a big-endian magic number, the sizes, then uint8 data) and CIFAR as python pickles under ``cifar-10-batches-py``
(``data_batch_1..5``, ``test_batch``, ``batches.meta``) or ``cifar-100-python`` (``train``, ``test``, ``meta``).
Their checksums are not torchvision's: a test that loads them uses the :func:`stand_ins` fixture, which makes
:func:`anode_lab.experiments.data.published_md5` accept the MD5 of exactly what these helpers wrote (the real
data sets cannot be downloaded here).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anode_lab.experiments.context import RunContext
from anode_lab.specs.train import TrainSpec

STAND_INS: dict[str, str] = {}
"""MD5 of every stand-in file written, by its path under the data root."""


def _written(root: Path, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    STAND_INS[path.relative_to(root).as_posix()] = hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Make the data loader accept the stand-ins written in this test (and nothing else that is not published)."""
    from anode_lab.experiments import data

    real = data.published_md5
    STAND_INS.clear()
    monkeypatch.setattr(data, "published_md5", lambda name: {rel: STAND_INS.get(rel, md5)
                                                              for rel, md5 in real(name).items()})
    yield STAND_INS
    STAND_INS.clear()


STEP_TIME_SERIES = {"step_time"}
"""Wall-clock series: the only ones that may differ between two runs of the same spec."""


def write_mnist(root: Path, *, n_train: int = 24, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28×28 digits in MNIST's gzipped IDX files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _written(root, raw / f"{prefix}-images-idx3-ubyte.gz",
                 gzip.compress(struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes(), mtime=0))
        _written(root, raw / f"{prefix}-labels-idx1-ubyte.gz",
                 gzip.compress(struct.pack(">ii", 2049, n) + labels.tobytes(), mtime=0))
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    return arrays


def write_cifar(root: Path, name: str, *, per_batch: int = 8, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 32×32 RGB images as CIFAR-10 (five train batches) or CIFAR-100 pickles; returns the arrays."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if name == "cifar10" else "fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    per_file = per_batch if name == "cifar10" else 5 * per_batch

    def batch(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, classes, n)
        entry: dict[str, Any] = {"data": data, key: labels.tolist(), "filenames": [f"{i}.png" for i in range(n)]}
        if name == "cifar100":
            entry["coarse_labels"] = (labels // 5).tolist()
        _written(root, path, pickle.dumps(entry))
        return data, labels

    parts = [batch(folder / f, per_file) for f in train_files]
    test = batch(folder / ("test_batch" if name == "cifar10" else "test"), n_test)
    meta = {"label_names": [f"c{i}" for i in range(10)]} if name == "cifar10" else {
        "fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]}
    _written(root, folder / ("batches.meta" if name == "cifar10" else "meta"), pickle.dumps(meta))
    return {
        "train_data": np.concatenate([p[0] for p in parts]), "train_labels": np.concatenate([p[1] for p in parts]),
        "test_data": test[0], "test_labels": test[1],
    }


def make_spec(**fields: Any) -> TrainSpec:
    """A validated spec: small, single-threaded, on the CPU unless told otherwise."""
    return TrainSpec.model_validate({"device": "cpu", "threads": 1, **fields})


def respec(spec: TrainSpec, **changes: Any) -> TrainSpec:
    """``spec`` with ``changes``, validated again (``model_copy(update=...)`` would skip validation)."""
    return TrainSpec.model_validate({**spec.model_dump(), **changes})


class Recorder:
    """Collects what a run reports; ``metrics[(step, series)]`` keeps the last value, as a store would."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[int, str], float] = {}
        self.calls: list[tuple[int, dict[str, float]]] = []
        self.progress: list[tuple[int, int, str]] = []

    def on_metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.calls.append((step, dict(values)))
        for series, value in values.items():
            self.metrics[(step, series)] = value

    def context(self, workdir: Path, **callbacks: Any) -> RunContext:
        callbacks.setdefault("on_metrics", self.on_metrics)
        callbacks.setdefault("on_progress", lambda done, total, note: self.progress.append((done, total, note)))
        return RunContext(workdir=workdir, **callbacks)

    def series(self, name: str) -> list[float]:
        return [v for (step, s), v in sorted(self.metrics.items()) if s == name]

    def deterministic(self) -> dict[tuple[int, str], float]:
        """Every value but wall-clock times."""
        return {k: v for k, v in self.metrics.items() if k[1] not in STEP_TIME_SERIES}
