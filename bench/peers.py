"""torchdiffeq, the peer every gradient table compares against: the installed one (``pip install
anode-lab[bench]``), or a source checkout put first on ``sys.path`` by ``TORCHDIFFEQ_SRC=/path/to/torchdiffeq``
(0.2.5, the newest release, has no tsit5). ``torchdiffeq`` is None when neither is there: the tables then skip
their peer rows."""

from __future__ import annotations

import os
import sys
from types import ModuleType

if os.environ.get("TORCHDIFFEQ_SRC"):
    sys.path.insert(0, os.environ["TORCHDIFFEQ_SRC"])

torchdiffeq: ModuleType | None
try:
    import torchdiffeq
    from torchdiffeq._impl.odeint import SOLVERS as _SOLVERS
except ImportError:
    torchdiffeq, _SOLVERS = None, {}

PEER_METHODS: frozenset[str] = frozenset(_SOLVERS)
"""The methods the peer has (its ``odeint``'s ``method`` names)."""
