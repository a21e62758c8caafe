"""Classifiers with ODE blocks: an MLP-ODE for points, a small conv ODE net, and the paper's two CIFAR networks.

Every ODE block is an :class:`anode_core.ODEBlock` over a field from :mod:`anode_lab.experiments.fields`, with
the spec's solver, number of steps, activation and gradient method. Layers that change the shape (stems,
downsampling, heads) sit between the blocks, as they must.

The CIFAR networks follow ANODE §4 (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298) and the authors'
code (github.com/amirgholami/anode, ``models/resnet.py``: ``ResNet18(ODEBlock)``, and ``models/sqnxt.py``:
``SqNxt_23_1x(10, ODEBlock)``) as published: four stages whose widths double while the resolution halves, each
an ordinary residual block (which downsamples) followed by an ODE block in place of the second residual block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

from torch import Tensor, nn

from anode_core.block import ODEBlock
from anode_core.registry import gradient_named, solver_named
from anode_lab.experiments.fields import (
    ConvField,
    MLPField,
    ResNetField,
    SqueezeNextField,
    norm_named,
    squeezenext_layers,
)
from anode_lab.specs.common import OdeSpec
from anode_lab.specs.train import TrainSpec, dataset_classes, dataset_shape, plugin_models

STAGES = 4
STAGE_GROWTH = 2 ** (STAGES - 1)
"""The last stage is this many times as wide as the first."""


def ode_block(field: nn.Module, ode: OdeSpec) -> ODEBlock:
    """An ODE block over ``field`` solved and differentiated as ``ode`` says."""
    gradient = gradient_named(ode.gradient.method, **ode.gradient.knobs())
    return ODEBlock(field, steps=ode.steps, solver=solver_named(ode.solver, **ode.solver_knobs()), gradient=gradient)


class MLPODE(nn.Module):
    """Points -> ``width`` features -> ``blocks`` ODE blocks (MLP fields) in a row -> class scores."""

    def __init__(self, *, features: int, classes: int, width: int, hidden: int, ode: OdeSpec, blocks: int = 1) -> None:
        super().__init__()
        self.lift = nn.Linear(features, width)
        chain = [ode_block(MLPField(width, hidden, ode.activation), ode) for _ in range(blocks)]
        self.block = chain[0] if blocks == 1 else nn.Sequential(*chain)  # one block: the state dict of before
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.block(self.lift(x)))
        return out


def _conv_unit(c_in: int, c_out: int, norm: str, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none"), norm_named(norm, c_out), nn.ReLU()
    )


class _Classifier(nn.Module):
    """``stem -> body -> global average pool -> linear``."""

    def __init__(self, stem: nn.Module, body: nn.Module, features: int, classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.body = body
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, classes))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.body(self.stem(x)))
        return out


def conv_ode(*, channels: int, classes: int, width: int, norm: str, ode: OdeSpec) -> nn.Module:
    """Small conv ODE net for 8×8 to 32×32 images: ODE block, stride-2 conv to twice the width, ODE block."""
    body = nn.Sequential(
        ode_block(ConvField(width, ode.activation, norm), ode),
        _conv_unit(width, 2 * width, norm, stride=2),
        ode_block(ConvField(2 * width, ode.activation, norm), ode),
    )
    return _Classifier(_conv_unit(channels, width, norm), body, 2 * width, classes)


class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))``; the shortcut is a strided 1×1 conv and a norm when the shape changes, then
    a ReLU where the network has one there (``shortcut_act``, SqueezeNext)."""

    def __init__(self, branch: nn.Module, c_in: int, c_out: int, stride: int, norm: str, *, bias: bool | None = None,
                 shortcut_act: bool = False) -> None:
        super().__init__()
        self.branch = branch
        bias = norm == "none" if bias is None else bias
        layers: list[nn.Module] = []
        if stride != 1 or c_in != c_out:
            layers += [nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias), norm_named(norm, c_out)]
        if shortcut_act:
            layers.append(nn.ReLU())
        self.shortcut = nn.Sequential(*layers)  # empty: the identity
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.branch(x) + self.shortcut(x))
        return out


def basic_block(c_in: int, c_out: int, stride: int, norm: str) -> ResidualBlock:
    """ResNet's basic block (He et al., CVPR 2016): two 3×3 convs."""
    branch = nn.Sequential(
        _conv_unit(c_in, c_out, norm, stride),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none"),
        norm_named(norm, c_out),
    )
    return ResidualBlock(branch, c_in, c_out, stride, norm)


def squeezenext_block(c_in: int, c_out: int, stride: int, norm: str) -> ResidualBlock:
    """SqueezeNext's block as the authors' ``models/sqnxt.py`` builds it for CIFAR: the branch of
    :func:`squeezenext_layers` with reduction 1 when it downsamples, 0.25 when it narrows, else 0.5; convs with
    biases, and a ReLU on the shortcut."""
    reduction = 1.0 if stride == 2 else 0.25 if c_in > c_out else 0.5
    layers = squeezenext_layers(c_in, c_out, reduction=reduction, activation="relu", norm=norm, stride=stride)
    return ResidualBlock(nn.Sequential(*layers), c_in, c_out, stride, norm, bias=True, shortcut_act=True)


def _stages(
    c_in: int,
    width: int,
    norm: str,
    ode: OdeSpec,
    block: Callable[[int, int, int, str], nn.Module],
    field: Callable[[int, str, str], nn.Module],
) -> list[nn.Module]:
    """Per stage (widths ``width·2^i``) ``block``, downsampling from the second stage on, then an ODE block."""
    stages: list[nn.Module] = []
    for i in range(STAGES):
        c_out = width * 2**i
        stages += [block(c_in, c_out, 1 if i == 0 else 2, norm), ode_block(field(c_out, ode.activation, norm), ode)]
        c_in = c_out
    return stages


def resnet_ode(*, channels: int, classes: int, width: int, norm: str, ode: OdeSpec) -> nn.Module:
    """ANODE's ResNet (``ResNet18(ODEBlock)``): a 3×3 stem to ``width``, four stages of a basic block and an ODE block
    over :class:`ResNetField`; 11,173,962 parameters at width 64, as ResNet-18."""
    body = nn.Sequential(*_stages(width, width, norm, ode, basic_block, ResNetField))
    return _Classifier(_conv_unit(channels, width, norm), body, STAGE_GROWTH * width, classes)


def squeezenext_ode(*, channels: int, classes: int, width: int, norm: str, ode: OdeSpec) -> nn.Module:
    """ANODE's SqueezeNext (``SqNxt_23_1x(10, ODEBlock)``): a 3×3 stem to ``2·width``, four stages of a SqueezeNext
    block and an ODE block over :class:`SqueezeNextField`, then a 1×1 conv to ``4·width`` with norm and ReLU;
    461,466 parameters at width 32 (stages 32-64-128-256)."""
    stem = nn.Sequential(nn.Conv2d(channels, 2 * width, 3, padding=1), norm_named(norm, 2 * width), nn.ReLU())
    body = nn.Sequential(
        *_stages(2 * width, width, norm, ode, squeezenext_block, SqueezeNextField),
        nn.Conv2d(STAGE_GROWTH * width, 4 * width, 1),
        norm_named(norm, 4 * width),
        nn.ReLU(),
    )
    return _Classifier(stem, body, 4 * width, classes)


class _ConvNet(TypedDict):
    """The arguments every convolutional classifier takes."""

    channels: int
    classes: int
    width: int
    norm: str
    ode: OdeSpec


def build_model(spec: TrainSpec) -> nn.Module:
    """The classifier ``spec`` asks for, sized for its data set, in float32 on the CPU."""
    shape, classes = dataset_shape(spec.dataset), dataset_classes(spec.dataset)
    if spec.model in plugin_models():
        return _plugin_model(spec, shape, classes)
    if spec.model == "mlp_ode":
        return MLPODE(features=shape[0], classes=classes, width=spec.width, hidden=spec.field_hidden, ode=spec.ode,
                      blocks=spec.ode_blocks)
    conv: _ConvNet = {
        "channels": shape[0], "classes": classes, "width": spec.width, "norm": spec.field_norm, "ode": spec.ode
    }
    if spec.model == "conv_ode":
        return conv_ode(**conv)
    if spec.model == "resnet_ode":
        return resnet_ode(**conv)
    return squeezenext_ode(**conv)


def _plugin_model(spec: TrainSpec, shape: tuple[int, ...], classes: int) -> nn.Module:
    """A model an installed package adds (:mod:`anode_lab.plugins`); its builder is imported here, in the worker."""
    from anode_lab.plugins import load_callable

    plugin = plugin_models()[spec.model]
    model = load_callable(plugin.build)(spec=spec, shape=shape, classes=classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model plugin {spec.model!r}: {plugin.build} must return an nn.Module; got "
                        f"{type(model).__name__}")
    return model
