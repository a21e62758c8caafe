"""Run a block of work with a given number of torch CPU threads, restoring the caller's afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the body (``None`` leaves torch's setting alone).

    Small tensors run fastest on one thread, and on a machine shared with other jobs many times faster: idle
    intra-op threads wait on each other for cores that are busy elsewhere.
    """
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)
