"""The paper's CIFAR networks as the authors published them (github.com/amirgholami/anode).

Where the official numbers come from: the authors' ``models/resnet.py`` (``ResNet18(ODEBlock)``) and
``models/sqnxt.py`` (``SqNxt_23_1x(10, ODEBlock)``) at commit 870444b, built with an ODE block that only holds its
field, and ``sum(p.numel() for p in part.parameters())`` per named child: ResNet-18 has 11,173,962 parameters,
SqNxt_23_1x 461,466. The parts here are listed in the official order (stem conv + BN; per stage the residual block,
then the ODE block; SqueezeNext's final 1×1 conv + BN; the linear head).
"""

from __future__ import annotations

import pytest
from torch import nn

import anode_core as ac
from anode_lab.experiments.fields import ResNetField, SqueezeNextField
from anode_lab.experiments.models import ResidualBlock, build_model
from anode_lab.specs.train import PRESETS

OFFICIAL_RESNET = {
    "stem": 1_728 + 128,
    "stages": [73_984, 73_984, 230_144, 295_424, 919_040, 1_180_672, 3_673_088, 4_720_640],
    "tail": 0,
    "head": 5_130,
    "total": 11_173_962,
}
OFFICIAL_SQUEEZENEXT = {
    "stem": 1_792 + 128,
    "stages": [5_224, 2_568, 10_960, 9_744, 42_400, 37_920, 166_720, 149_568],
    "tail": 32_896 + 256,
    "head": 1_290,
    "total": 461_466,
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parts(model: nn.Module) -> dict[str, object]:
    body = list(model.body)
    return {
        "stem": count(model.stem),
        "stages": [count(m) for m in body[:8]],
        "tail": sum(count(m) for m in body[8:]),
        "head": count(model.head),
        "total": count(model),
    }


@pytest.mark.parametrize(
    "preset,official",
    [
        pytest.param("cifar10-resnet-anode", OFFICIAL_RESNET, id="resnet18"),
        pytest.param("cifar10-squeezenext-anode", OFFICIAL_SQUEEZENEXT, id="sqnxt_23_1x"),
    ],
)
def test_presets_have_the_official_parameter_counts(preset: str, official: dict[str, object]) -> None:
    assert parts(build_model(PRESETS[preset])) == official


def layer_kinds(module: nn.Module) -> list[str]:
    return [type(m).__name__ for m in module.modules() if not list(m.children())]


def test_resnet_field_is_conv_bn_relu_twice_without_bias() -> None:
    field = ResNetField(16)
    assert layer_kinds(field) == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    convs = [m for m in field.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.bias) for c in convs] == [((3, 3), None)] * 2


def test_squeezenext_field_squeezes_then_1x3_before_3x1() -> None:
    field = SqueezeNextField(32)
    assert layer_kinds(field) == ["Conv2d", "BatchNorm2d", "ReLU"] * 5  # BN and ReLU after the last conv too
    convs = [m for m in field.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (32, 16, (1, 1)), (16, 8, (1, 1)), (8, 16, (1, 3)), (16, 16, (3, 1)), (16, 32, (1, 1)),
    ]
    assert all(c.bias is not None for c in convs)


def test_squeezenext_network_structure() -> None:
    model = build_model(PRESETS["cifar10-squeezenext-anode"])
    body = list(model.body)
    blocks, odes = body[0:8:2], body[1:8:2]
    assert all(isinstance(b, ResidualBlock) for b in blocks)
    assert [type(b.field) for b in odes] == [SqueezeNextField] * 4 and all(isinstance(b, ac.ODEBlock) for b in odes)
    assert [b.field.net[0].in_channels for b in odes] == [32, 64, 128, 256]
    # reduction 0.25 where the block narrows (64 -> 32), 1 where it downsamples
    assert [(b.branch[0].in_channels, b.branch[0].out_channels, b.branch[0].stride) for b in blocks] == [
        (64, 16, (1, 1)), (32, 32, (2, 2)), (64, 64, (2, 2)), (128, 128, (2, 2)),
    ]
    assert all(isinstance(b.shortcut[-1], nn.ReLU) for b in blocks)  # a ReLU on the shortcut
    conv, norm, act = body[8:]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (256, 128, (1, 1))
    assert isinstance(norm, nn.BatchNorm2d) and isinstance(act, nn.ReLU)


def test_resnet_network_structure() -> None:
    model = build_model(PRESETS["cifar10-resnet-anode"])
    odes = list(model.body)[1:8:2]
    assert [type(b.field) for b in odes] == [ResNetField] * 4
    assert [b.field.net[0].in_channels for b in odes] == [64, 128, 256, 512]
    assert isinstance(list(model.body)[0].shortcut, nn.Sequential) and len(list(model.body)[0].shortcut) == 0
