"""What a metric series may be called: the one home of the contract that the API's schema
(:mod:`backend.runs.schemas`), the worker's ingest and the tracker (:mod:`anode_lab.tracking`) all hold to."""

from __future__ import annotations

import re

SERIES_NAME_PATTERN = r"^[A-Za-z0-9_.:/()+=\-]+$"
"""ASCII letters, digits and ``_ . : / ( ) + = -`` (``train_loss``, ``anode/probe_rel_error``,
``adjoint(stored)/loss``), spelled as a class rather than ``\\w`` so that the OpenAPI schema's regex dialect (ECMA,
ASCII ``\\w``) and the server's (Unicode ``\\w``) mean the same names."""
SERIES_NAME_MAX = 64
"""The store's column width (``metrics.series``)."""
_SERIES_NAME = re.compile(SERIES_NAME_PATTERN)


def check_series_name(name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when it is outside the contract."""
    if not (isinstance(name, str) and len(name) <= SERIES_NAME_MAX and _SERIES_NAME.fullmatch(name)):
        raise ValueError(f"series name {name!r} is outside the API's contract: 1 to {SERIES_NAME_MAX} ASCII letters, "
                         "digits and _ . : / ( ) + = -; rename the series")
