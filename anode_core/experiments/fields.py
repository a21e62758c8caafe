"""Vector fields f(t, z) for ODE blocks, with a selectable activation."""

from __future__ import annotations

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


class MLPField(nn.Module):
    """``f(t, z) = W2 σ(W1 z + b1) + b2`` on vectors (autonomous: t is ignored)."""

    def __init__(self, dim: int, hidden: int = 32, activation: str = "tanh") -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), activation_named(activation), nn.Linear(hidden, dim))

    def forward(self, t: float, z: Tensor) -> Tensor:
        return self.net(z)


class ConvField(nn.Module):
    """``f(t, z) = conv(σ(norm(conv(z))))`` on feature maps, shape-preserving (the paper's ODE-block field)."""

    def __init__(self, channels: int, activation: str = "relu", norm: str = "group") -> None:
        super().__init__()
        norms = {"group": lambda: nn.GroupNorm(min(4, channels), channels), "batch": lambda: nn.BatchNorm2d(channels),
                 "none": nn.Identity}
        if norm not in norms:
            raise ValueError(f"`norm` must be one of {', '.join(norms)}; got {norm!r}")
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            norms[norm](),
            activation_named(activation),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, t: float, z: Tensor) -> Tensor:
        return self.net(z)
