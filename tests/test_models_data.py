"""Models and data sets of the training runs: shapes, ODE blocks as the spec says, losses that go down, data read
from torchvision's on-disk formats, and a batch order fixed by the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import make_spec, stand_ins, write_cifar, write_mnist  # noqa: F401  (fixture)

import anode_core as ac
from anode_lab.experiments.data import (
    DatasetNotFoundError,
    augment,
    epoch_batches,
    load_data,
    two_spirals,
)
from anode_lab.experiments.models import build_model
from anode_lab.specs.train import CLASSES, SHAPES

pytestmark = pytest.mark.usefixtures("stand_ins")  # the files these tests write are stand-ins

MODELS = [
    pytest.param({"model": "mlp_ode", "dataset": "moons", "width": 4, "hidden": 8}, 1, id="mlp-moons"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "width": 4}, 2, id="conv-digits"),
    pytest.param({"model": "conv_ode", "dataset": "mnist", "root": "/x", "width": 4}, 2, id="conv-mnist"),
    pytest.param({"model": "resnet_ode", "dataset": "cifar10", "root": "/x", "width": 4}, 4, id="resnet-cifar10"),
    pytest.param({"model": "squeezenext_ode", "dataset": "cifar100", "root": "/x", "width": 8}, 4,
                 id="squeezenext-cifar100"),
]
NORMS = [pytest.param(n, id=n) for n in ("batch", "group", "none")]


def _batch(dataset: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPES[dataset], generator=gen)
    return x, torch.randint(0, CLASSES[dataset], (n,), generator=gen)


@pytest.mark.parametrize(("fields", "blocks"), MODELS)
def test_model_output_shape_and_ode_blocks(fields: dict, blocks: int) -> None:
    spec = make_spec(**fields, ode={"solver": "rk4", "steps": 3, "gradient": {"method": "adjoint"}})
    model = build_model(spec)
    x, _ = _batch(spec.dataset, 3, seed=0)
    assert model(x).shape == (3, CLASSES[spec.dataset])
    found = ac.ode_blocks(model)
    assert len(found) == blocks
    assert all((b.steps, b.solver, b.gradient) == (3, ac.RK4(), ac.Adjoint()) for b in found)


@pytest.mark.parametrize(("fields", "blocks"), MODELS)
def test_loss_decreases_over_a_few_steps(fields: dict, blocks: int) -> None:
    torch.manual_seed(0)
    model = build_model(make_spec(**fields))
    x, y = _batch(make_spec(**fields).dataset, 16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("norm", NORMS)
def test_conv_norms_build_and_run(norm: str) -> None:
    model = build_model(make_spec(model="conv_ode", dataset="digits", width=6, norm=norm))
    x, _ = _batch("digits", 2, seed=0)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", ["moons", "circles", "spirals"])
def test_point_sets(name: str) -> None:
    spec = make_spec(dataset=name, n_samples=200, noise=0.05)
    data = load_data(spec)
    assert (len(data.train), len(data.test), data.classes) == (150, 50, 2)
    assert data.train.x.shape == (150, 2)
    assert set(data.train.y.tolist()) == {0, 1}
    torch.testing.assert_close(data.train.x.mean(0), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)
    again = load_data(spec)
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)


def test_two_spirals_lie_on_their_arms() -> None:
    x, y = two_spirals(400, noise=0.0, seed=0)
    r = np.hypot(x[:, 0], x[:, 1])
    angle = np.arctan2(x[:, 1], x[:, 0])
    expected = r * 1.5 * 2 * np.pi + y * np.pi
    np.testing.assert_allclose(np.cos(angle - expected), 1.0, rtol=0, atol=1e-9)
    assert abs(y.mean() - 0.5) <= 1e-12


def test_digits_split_is_fixed_and_normalised() -> None:
    data = load_data(make_spec(model="conv_ode", dataset="digits"))
    assert (len(data.train), len(data.test), data.classes) == (1347, 450, 10)
    assert data.train.x.shape[1:] == (1, 8, 8)
    assert abs(data.train.x.mean().item()) <= 1e-6 and abs(data.train.x.std().item() - 1) <= 1e-3
    per_digit = torch.bincount(torch.cat([data.train.y, data.test.y])).double()
    assert (torch.bincount(data.test.y) - 0.25 * per_digit).abs().max().item() <= 1.0  # stratified
    assert torch.equal(load_data(make_spec(model="conv_ode", dataset="digits", seed=5)).test.x, data.test.x)


def test_mnist_reads_torchvision_raw_files(tmp_path: Path) -> None:
    written = write_mnist(tmp_path, n_train=12, n_test=5)
    data = load_data(make_spec(model="conv_ode", dataset="mnist", root=str(tmp_path)))
    assert data.train.x.shape == (12, 1, 28, 28) and data.train.x.dtype == torch.uint8
    np.testing.assert_array_equal(data.train.x[:, 0].numpy(), written["train_images"])
    np.testing.assert_array_equal(data.test.y.numpy(), written["t10k_labels"])
    x = data.inputs(data.train.x[:2], dtype=torch.float64, device=torch.device("cpu"))
    expected = (torch.from_numpy(written["train_images"][:2]).double() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[:, 0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_torchvision_pickles(tmp_path: Path, name: str) -> None:
    written = write_cifar(tmp_path, name, per_batch=3, n_test=4)
    data = load_data(make_spec(model="conv_ode", dataset=name, root=str(tmp_path)))
    assert (len(data.train), len(data.test), data.classes) == (15, 4, CLASSES[name])
    np.testing.assert_array_equal(data.train.x.reshape(15, -1).numpy(), written["train_data"])
    np.testing.assert_array_equal(data.train.y.numpy(), written["train_labels"])
    np.testing.assert_array_equal(data.test.x.reshape(4, -1).numpy(), written["test_data"])


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("mnist", "MNIST/raw/train-images-idx3-ubyte"), ("cifar10", "cifar-10-batches-py/data_batch_1"),
     ("cifar100", "cifar-100-python/train")],
)
def test_missing_data_says_where_and_how(tmp_path: Path, dataset: str, expected: str) -> None:
    root = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as info:
        load_data(make_spec(model="conv_ode", dataset=dataset, root=str(root)))
    message = str(info.value)
    assert str(root / expected) in message
    assert "download=True" in message and "https://" in message


def test_batch_order_depends_on_seed_and_epoch_only() -> None:
    first = epoch_batches(10, 4, seed=3, epoch=0)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches(10, 4, seed=3, epoch=0), strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(epoch_batches(10, 4, seed=3, epoch=1)))
    assert not torch.equal(torch.cat(first), torch.cat(epoch_batches(10, 4, seed=4, epoch=0)))


def test_a_last_batch_of_one_is_dropped() -> None:
    """BatchNorm cannot train on a single example."""
    assert [len(b) for b in epoch_batches(9, 4, seed=0, epoch=0)] == [4, 4]


def test_augment_crops_and_flips_reproducibly() -> None:
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = augment(x, seed=1, epoch=2, batch=3, pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(x, seed=1, epoch=2, batch=3, pad=2))
    assert not torch.equal(out, augment(x, seed=1, epoch=2, batch=4, pad=2))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
