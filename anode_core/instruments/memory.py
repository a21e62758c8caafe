"""Measure the memory a gradient method holds for backward, and the analytic model it should follow.

:class:`MemoryMeter` counts, at every moment of a forward and backward pass, the bytes of

* every tensor autograd saves for backward (through ``torch.autograd.graph.saved_tensors_hooks``), and
* every state a gradient method keeps outside autograd for later (ANODE's checkpoints, the stored forward
  states of ``Adjoint(reconstruct=False)``), which those methods announce with
  :func:`anode_core.held.note_held` to the meters active in their thread,

each storage counted once however many ops save it or views alias it, and released when autograd (or the
method) lets go of it. Parameters are not counted: they live in the model whatever the method. Its
``peak_bytes`` is the largest total seen. On CUDA it also reports ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor

from anode_core.held import listening

_lock = threading.Lock()  # finalizers may release bytes from whichever thread collects the owner


class _Packed:
    """What autograd stores instead of the tensor while a meter is active; its death releases the bytes."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


class MemoryMeter:
    """Context manager measuring peak bytes held for backward (see module docstring)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.peak_bytes = 0
        self.current_bytes = 0
        self.cuda_peak_bytes: int | None = None
        self._refs: dict[tuple[str, int], list[int]] = {}  # storage key -> [holders, nbytes]
        self._open = False
        self._scope = ExitStack()

    def __enter__(self) -> MemoryMeter:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_base = torch.cuda.memory_allocated(self.device)
        self._scope.enter_context(torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack))
        self._scope.enter_context(listening(self))
        self._open = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._open = False
        self._scope.__exit__(kind, exc, tb)
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._cuda_base

    def _pack(self, tensor: Tensor) -> Tensor | _Packed:
        base = tensor if tensor._base is None else tensor._base  # nn.Linear saves a view, weight.t()
        if base.is_leaf and base.requires_grad:  # a parameter (or a detached alias of a counted state)
            return tensor
        packed = _Packed(tensor.detach())  # holding `tensor` itself would tie a saved output to its grad_fn
        self._hold(packed, tensor)
        return packed

    @staticmethod
    def _unpack(packed: Tensor | _Packed) -> Tensor:
        return packed.tensor if isinstance(packed, _Packed) else packed

    def hold(self, tensor: Tensor) -> None:
        """Count ``tensor``, kept outside autograd, until it is garbage-collected (see :mod:`anode_core.held`)."""
        if self._open:  # a Function re-enters the meters of its forward in backward; a closed one counts no more
            self._hold(tensor, tensor)

    def _hold(self, owner: object, tensor: Tensor) -> None:
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        key = (str(tensor.device), storage.data_ptr())
        with _lock:
            entry = self._refs.get(key)
            if entry is None:
                self._refs[key] = [1, nbytes]
                self.current_bytes += nbytes
                self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            else:
                entry[0] += 1
        weakref.finalize(owner, self._release, key)

    def _release(self, key: tuple[str, int]) -> None:
        with _lock:
            entry = self._refs.get(key)
            if entry is None:
                return
            entry[0] -= 1
            if entry[0] == 0:
                self.current_bytes -= entry[1]
                del self._refs[key]


@dataclass(frozen=True)
class MemoryModel:
    """The analytic memory model of ANODE §3 (Gholami, Keutzer & Biros, arXiv:1902.10298), in bytes: Direct holds
    ``L·s·N_t·A``, ANODE ``L·S + s·N_t·A``, the continuous adjoint ``L·S + A``.

    ``blocks`` = L, ``state_bytes`` = S (one block input), ``stages`` = s, ``steps`` = N_t and
    ``eval_bytes`` = A (what one field evaluation saves for backward).
    """

    blocks: int
    state_bytes: int
    stages: int
    steps: int
    eval_bytes: int

    def direct(self) -> int:
        return self.blocks * self.steps * self.stages * self.eval_bytes

    def anode(self, checkpoints: int | None = None) -> int:
        """``L·S + s·N_t·A``; with c checkpoints inside a block ``L·S + c·S + s·A``."""
        if checkpoints is None:
            return self.blocks * self.state_bytes + self.stages * self.steps * self.eval_bytes
        return (self.blocks + checkpoints) * self.state_bytes + self.stages * self.eval_bytes

    def adjoint(self, reconstruct: bool = True) -> int:
        """``L·S + A`` with reconstruction; the stored states add ``N_t·S`` per block without it."""
        stored = 0 if reconstruct else self.blocks * self.steps * self.state_bytes
        return self.blocks * self.state_bytes + stored + self.eval_bytes


def saved_bytes_of_one_evaluation(field: torch.nn.Module, z: Tensor, t: float = 0.0) -> int:
    """A of the model: bytes one evaluation ``field(t, z)`` saves for backward, measured on its own."""
    z = z.detach().requires_grad_(True).clone()  # a non-leaf, as a stage input inside a solve is
    with MemoryMeter() as meter:
        out = field(t, z)
        held = meter.current_bytes
    del out
    return held
