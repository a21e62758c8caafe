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
    """``f(t, z) = conv(σ(norm(conv(z))))`` on feature maps, shape-preserving (the paper's ODE-block field)."""

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


def squeezenext_layers(c_in: int, c_out: int, *, activation: str, norm: str, stride: int = 1) -> list[nn.Module]:
    """SqueezeNext's branch: 1×1 squeezes to C/2 and C/4, separable 3×1 and 1×3, then a plain 1×1 conv to ``c_out``.

    Gholami et al., "SqueezeNext: Hardware-Aware Neural Network Design", CVPR Workshops 2018 (arXiv:1803.10615),
    Fig. 3. ``stride`` goes on the first 1×1 conv.
    """
    half, quarter = max(1, c_out // 2), max(1, c_out // 4)
    layers: list[nn.Module] = []
    for i, (a, b, kernel, pad) in enumerate((
        (c_in, half, (1, 1), (0, 0)),
        (half, quarter, (1, 1), (0, 0)),
        (quarter, half, (3, 1), (1, 0)),
        (half, half, (1, 3), (0, 1)),
    )):
        conv = nn.Conv2d(a, b, kernel, stride=stride if i == 0 else 1, padding=pad, bias=norm == "none")
        layers += [conv, norm_named(norm, b), activation_named(activation)]
    layers.append(nn.Conv2d(half, c_out, 1))
    return layers


class SqueezeNextField(nn.Module):
    """A SqueezeNext branch as a shape-preserving field (:func:`squeezenext_layers`), the field of the ODE blocks
    in ANODE's SqueezeNext experiments."""

    def __init__(self, channels: int, activation: str = "relu", norm: str = "batch") -> None:
        super().__init__()
        self.net = nn.Sequential(*squeezenext_layers(channels, channels, activation=activation, norm=norm))

    def forward(self, t: float, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out
