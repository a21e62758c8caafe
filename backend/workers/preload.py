"""Imported by the run processes' forkserver (:func:`backend.workers.child.context`): imports what runs import
(:data:`~backend.workers.child.RUN_IMPORTS`), so every run's child starts with them loaded.

A module that fails to import is left out, not raised: the forkserver only forgives ``ImportError``, and any other
error (``RuntimeError: operator torchvision::nms does not exist`` from a torchvision built for another torch)
would end it, and every run with it, as "EOFError: unexpected EOF". Each run's child imports the same modules
again and fails with that error itself, and the worker's start-up check reports it.
"""

from __future__ import annotations

import contextlib
import importlib

from backend.workers.child import RUN_IMPORTS

for _module in RUN_IMPORTS:
    with contextlib.suppress(Exception):
        importlib.import_module(_module)
