"""What both tables of ``bench/gradients.py`` measure with: the networks, a metered pass, a training step, a verdict.

The fixed-step table (``gradients.py``) and the adaptive and reversible one (``adaptive_gradients.py``) import
from here rather than from each other.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import anode_core as ac
from anode_lab.experiments.fields import ConvField, MLPField

BLOCKS = 4
MIB = 2**20


@dataclass(frozen=True)
class Network:
    """Four fields (one per ODE block), a fixed input batch and labels; the loss is cross-entropy."""

    name: str
    description: str
    fields: nn.ModuleList
    x: Tensor
    labels: Tensor

    def loss(self, model: nn.Module, x: Tensor | None = None) -> Tensor:
        z = model(self.x if x is None else x)
        logits = z.mean(dim=(2, 3)) if z.dim() == 4 else z  # conv: global average pool, one class per channel
        return F.cross_entropy(logits, self.labels)

    def double(self) -> Network:
        """A float64 copy (the fields are copied too)."""
        fields_ = copy.deepcopy(self.fields).double()
        return Network(self.name, self.description + ", float64", fields_, self.x.double(), self.labels)


def conv_network(batch: int, channels: int, size: int) -> Network:
    torch.manual_seed(0)
    fields_ = nn.ModuleList(ConvField(channels, activation="relu", norm="group") for _ in range(BLOCKS))
    x = torch.randn(batch, channels, size, size)
    labels = torch.randint(channels, (batch,))
    desc = (
        f"conv: {BLOCKS} ODE blocks of ConvField({channels}, relu, group norm), input {batch}×{channels}×{size}×{size}"
    )
    return Network("conv", desc, fields_, x, labels)


def mlp_network(batch: int, dim: int, hidden: int) -> Network:
    torch.manual_seed(1)
    fields_ = nn.ModuleList(MLPField(dim, hidden, activation="tanh") for _ in range(BLOCKS))
    x = torch.randn(batch, dim)
    labels = torch.randint(dim, (batch,))
    desc = f"mlp:  {BLOCKS} ODE blocks of MLPField({dim}, hidden {hidden}, tanh), input {batch}×{dim}"
    return Network("mlp", desc, fields_, x, labels)


@dataclass(frozen=True)
class Instrumented:
    """What the untimed, metered pass of one method returned."""

    grads: dict[str, Tensor]
    peak_bytes: int
    left_bytes: int
    """Bytes the meter still counts once the step, its input and its graph are dropped: should be 0."""
    nfe_forward: int
    nfe_backward: int


@contextmanager
def counting(modules: Sequence[nn.Module]) -> Iterator[list[int]]:
    """``calls[0]``: calls to any of ``modules`` so far (counts torchdiffeq's calls too, unlike EvaluationCounter)."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def instrumented_pass(model: nn.Module, net: Network) -> Instrumented:
    model.zero_grad(set_to_none=True)
    x = net.x.clone()  # dropped below with the graph, so nothing the step held need outlive it
    with ac.MemoryMeter() as meter, counting(list(net.fields)) as calls:
        loss = net.loss(model, x)
        nfe_forward = calls[0]
        loss.backward()
        nfe_backward = calls[0] - nfe_forward
        del loss, x
        left_bytes = meter.current_bytes
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return Instrumented(grads, meter.peak_bytes, left_bytes, nfe_forward, nfe_backward)


def training_step(model: nn.Module, net: Network) -> Callable[[], None]:
    def step() -> None:
        net.loss(model).backward()

    return step


def judge(ratios: Sequence[float], ok: Callable[[float], bool]) -> tuple[bool, str]:
    """PASS/FAIL on the median; 'within noise' when the quartiles fall on both sides of the bound."""
    median = statistics.median(ratios)
    q1, q3 = statistics.quantiles(ratios, n=4, method="inclusive")[::2] if len(ratios) > 1 else (median, median)
    passed = ok(median)
    noisy = ok(q1) != ok(q3)
    text = f"{median:.2f} [{q1:.2f}–{q3:.2f}] {'PASS' if passed else 'FAIL'}{' (within noise)' if noisy else ''}"
    return passed, text
