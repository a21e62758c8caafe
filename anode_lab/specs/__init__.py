"""Experiment specs, one per kind, validated once and shared by the CLI, the API and the worker (no torch)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from anode_lab.specs.common import GradientSpec, OdeSpec
from anode_lab.specs.compare import CompareSpec
from anode_lab.specs.demo import DemoSpec
from anode_lab.specs.train import TrainSpec

SPECS: dict[str, type[BaseModel]] = {"train": TrainSpec, "compare": CompareSpec, "demo": DemoSpec}


def parse_spec(kind: str, data: Any) -> BaseModel:
    """Validate ``data`` as a spec of ``kind``; raises ``ValueError`` for an unknown kind and pydantic's
    ``ValidationError`` (every wrong field, with its location) for a bad spec."""
    model = SPECS.get(kind) if isinstance(kind, str) else None  # a list or dict kind: unhashable, not a KeyError
    if model is None:
        raise ValueError(f"`kind` must be one of {', '.join(SPECS)}; got {kind!r}")
    return model.model_validate(data)


def unknown_field_message(kind: str, loc: Sequence[str | int]) -> str:
    """What to say about the unknown key at ``loc`` of a ``kind`` spec: ``unknown field; did you mean epochs?``
    when a field of the same level is spelled alike (the CLI and the API both say it)."""
    model: Any = SPECS.get(kind)
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        model = field.annotation if field is not None else None
    known = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6) if loc else []
    return f"unknown field; did you mean {close[0]}?" if close else "unknown field; remove it or check its spelling"


__all__ = [
    "SPECS", "CompareSpec", "DemoSpec", "GradientSpec", "OdeSpec", "TrainSpec", "parse_spec", "unknown_field_message"
]
