"""Session-wide test settings.

The numerical tests solve tiny problems; torch's intra-op thread pool only adds synchronisation there, and on a
shared CPU it is far slower (a 2-block conv solve: 0.5 ms with one thread, 50 ms with two contended ones).
Torch is not imported here, so suites that must run without it (dashboard, API) are unaffected.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield
