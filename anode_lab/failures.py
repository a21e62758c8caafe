"""Which failures are the machine's, not the spec's: told apart here (no torch) for the sweep, which must not
blame its step limit for them, and the worker, which must not blame the code."""

from __future__ import annotations

OOM_MARKERS = ("can't allocate memory", "out of memory", "cannot allocate memory")
"""What torch's CPU and CUDA allocators say when an allocation fails (both raise ``RuntimeError``)."""


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError)
                                            and any(m in str(exc).lower() for m in OOM_MARKERS))
