"""Vector fields f(t, z) for ODE blocks, with a selectable activation."""

from __future__ import annotations

import math

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


def activation_named(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"`activation` must be one of {', '.join(ACTIVATIONS)}; got {name!r}") from None


NORMS = ("group", "batch", "none")


def norm_named(norm: str, channels: int) -> nn.Module:
    """A normalisation layer for ``channels`` feature maps: GroupNorm (up to 4 groups), BatchNorm or none."""
    if norm == "group":
        return nn.GroupNorm(math.gcd(4, channels), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"`norm` must be one of {', '.join(NORMS)}; got {norm!r}")


class MLPField(nn.Module):
    """``f(t, z) = W2 σ(W1 z + b1) + b2`` on vectors (autonomous: t is ignored)."""

    def __init__(self, dim: int, hidden: int = 32, activation: str = "tanh") -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), activation_named(activation), nn.Linear(hidden, dim))

    def forward(self, t: float, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out


class ConvField(nn.Module):
    """``f(t, z) = conv(σ(norm(conv(z))))`` on feature maps, shape-preserving: the small conv ODE net's field (the
    paper's ResNet field is :class:`ResNetField`)."""

    def __init__(self, channels: int, activation: str = "relu", norm: str = "group") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            norm_named(norm, channels),
            activation_named(activation),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, t: float, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out


class ResNetField(nn.Module):
    """``f(t, z) = σ(norm(conv(σ(norm(conv(z))))))``, 3×3 convs without bias: the field of the ODE blocks of ANODE's
    ResNet (``BasicBlock2`` in ``models/resnet.py`` of github.com/amirgholami/anode), a basic block without its
    shortcut."""

    def __init__(self, channels: int, activation: str = "relu", norm: str = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            conv = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none")
            layers += [conv, norm_named(norm, channels), activation_named(activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, t: float, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out


def squeezenext_layers(
    c_in: int, c_out: int, *, reduction: float, activation: str, norm: str, stride: int = 1
) -> list[nn.Module]:
    """SqueezeNext's branch as published for CIFAR (``models/sqnxt.py`` of github.com/amirgholami/anode; Gholami et
    al., "SqueezeNext", CVPR Workshops 2018, arXiv:1803.10615, Fig. 3): with ``r = c_in·reduction``, 1×1 convs to
    ``r`` (carrying ``stride``) and ``r/2``, a 1×3 conv back to ``r``, a 3×1 conv, a 1×1 conv to ``c_out``; every
    conv with a bias and followed by a norm and the activation, the last one included."""
    wide, narrow = max(1, int(c_in * reduction)), max(1, int(c_in * reduction * 0.5))
    layers: list[nn.Module] = []
    for i, (a, b, kernel, pad) in enumerate((
        (c_in, wide, (1, 1), (0, 0)),
        (wide, narrow, (1, 1), (0, 0)),
        (narrow, wide, (1, 3), (0, 1)),
        (wide, wide, (3, 1), (1, 0)),
        (wide, c_out, (1, 1), (0, 0)),
    )):
        conv = nn.Conv2d(a, b, kernel, stride=stride if i == 0 else 1, padding=pad)
        layers += [conv, norm_named(norm, b), activation_named(activation)]
    return layers


class SqueezeNextField(nn.Module):
    """A SqueezeNext branch with reduction 0.5 as a shape-preserving field (:func:`squeezenext_layers`): the field of
    the ODE blocks of ANODE's SqueezeNext (``BasicBlock2`` in the authors' ``models/sqnxt.py``)."""

    def __init__(self, channels: int, activation: str = "relu", norm: str = "batch") -> None:
        super().__init__()
        layers = squeezenext_layers(channels, channels, reduction=0.5, activation=activation, norm=norm)
        self.net = nn.Sequential(*layers)

    def forward(self, t: float, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out
