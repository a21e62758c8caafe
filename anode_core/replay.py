"""Make a recomputation replay the forward pass exactly, and leave no trace on the model.

Recomputing a block in backward must (1) draw the same random numbers as the forward pass did, so dropout masks
match, (2) run under the same autocast settings, so every op computes in the forward's precision, and (3) not
touch module buffers a second time, so BatchNorm running statistics are updated once per training step, as with
plain backpropagation. The RNG and autocast handling follows ``torch.utils.checkpoint``, which saves both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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


@dataclass(frozen=True)
class AutocastState:
    """Whether autocast was on, and in which dtype, for CPU and for the device type of each of ``tensors``.

    Captured in the forward pass and re-entered around every recomputation (``enabled=False`` included: a
    backward called inside an autocast region must still recompute a full-precision forward in full precision).
    """

    regions: tuple[tuple[str, bool, torch.dtype], ...]  # (device type, enabled, dtype)
    cache_enabled: bool

    @classmethod
    def capture(cls, *tensors: Tensor) -> AutocastState:
        kinds = ["cpu"]
        for t in tensors:
            if t.device.type not in kinds and torch.amp.is_autocast_available(t.device.type):
                kinds.append(t.device.type)
        regions = tuple((kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)) for kind in kinds)
        return cls(regions, torch.is_autocast_cache_enabled())

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body under the captured settings (at no cost when they are already in force, the usual case)."""
        if all(
            torch.is_autocast_enabled(kind) == enabled and (not enabled or torch.get_autocast_dtype(kind) == dtype)
            for kind, enabled, dtype in self.regions
        ):
            yield
            return
        with ExitStack() as stack:
            for kind, enabled, dtype in self.regions:
                stack.enter_context(
                    torch.autocast(kind, dtype=dtype, enabled=enabled, cache_enabled=self.cache_enabled)
                )
            yield


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
