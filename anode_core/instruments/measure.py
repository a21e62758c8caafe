"""One forward and backward pass of a model with a chosen gradient method, fully instrumented."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from anode_core.block import use_gradient
from anode_core.gradients import GradientMethod
from anode_core.instruments.counting import EvaluationCounter
from anode_core.instruments.memory import MemoryMeter
from anode_core.solve import resolve_gradient


@dataclass(frozen=True)
class Measurement:
    """What one training step of ``method`` cost and returned."""

    method: str
    loss: float
    grads: dict[str, Tensor]
    forward_seconds: float
    backward_seconds: float
    nfe_forward: int
    nfe_backward: int
    peak_bytes: int
    cuda_peak_bytes: int | None

    @property
    def seconds(self) -> float:
        return self.forward_seconds + self.backward_seconds


def measure_gradient(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    gradient: GradientMethod | str,
    *,
    device: torch.device | str | None = None,
) -> Measurement:
    """Run ``loss_fn(model).backward()`` with every ODE block using ``gradient``; time, count and meter it.

    Parameter gradients are returned (cloned) and left zeroed on the model.
    """
    method = resolve_gradient(gradient)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    with use_gradient(model, method), EvaluationCounter(model) as nfe, MemoryMeter(device) as meter:
        _sync(device)
        start = time.perf_counter()
        loss = loss_fn(model)
        _sync(device)
        forward_seconds = time.perf_counter() - start
        nfe_forward = nfe.calls
        loss_value = loss.item()
        start = time.perf_counter()
        torch.autograd.backward(loss)
        _sync(device)
        backward_seconds = time.perf_counter() - start
        nfe_backward = nfe.calls - nfe_forward
    grads = {
        name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    model.zero_grad(set_to_none=True)
    return Measurement(
        method=repr(method),
        loss=loss_value,
        grads=grads,
        forward_seconds=forward_seconds,
        backward_seconds=backward_seconds,
        nfe_forward=nfe_forward,
        nfe_backward=nfe_backward,
        peak_bytes=meter.peak_bytes,
        cuda_peak_bytes=meter.cuda_peak_bytes,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
