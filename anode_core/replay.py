"""Make a recomputation replay the forward pass exactly, and leave no trace on the model.

Recomputing a block in backward must (1) draw the same random numbers as the forward pass did, so dropout masks
match, and (2) not touch module buffers a second time, so BatchNorm running statistics are updated once per
training step, as with plain backpropagation. The RNG handling follows ``torch.utils.checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import get_device_states, set_device_states


@dataclass(frozen=True)
class RngState:
    """The CPU generator state and the states of the CUDA devices that ``tensors`` live on."""

    cpu: Tensor
    devices: tuple[int, ...]
    device_states: tuple[Tensor, ...]

    @classmethod
    def capture(cls, *tensors: Tensor) -> RngState:
        accelerated = [t for t in tensors if t.device.type != "cpu"]
        devices, states = get_device_states(*accelerated) if accelerated else ([], [])
        return cls(torch.get_rng_state(), tuple(devices), tuple(states))

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.devices:
            set_device_states(list(self.devices), list(self.device_states))


@contextmanager
def isolated_rng(state: RngState) -> Iterator[None]:
    """Run the body from ``state`` and give the caller's RNG stream back untouched afterwards."""
    with torch.random.fork_rng(devices=list(state.devices)):
        state.restore()
        yield


@contextmanager
def frozen_buffers(field: Callable[..., Tensor]) -> Iterator[None]:
    """Restore every buffer of ``field`` (BatchNorm running statistics, counters) on exit."""
    saved = [(buf, buf.detach().clone()) for buf in field.buffers()] if isinstance(field, nn.Module) else []
    if not saved:
        yield
        return
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
