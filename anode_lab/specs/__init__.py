"""Experiment specs, one per kind, validated once and shared by the CLI, the API and the worker (no torch)."""

from __future__ import annotations

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


__all__ = ["SPECS", "CompareSpec", "DemoSpec", "GradientSpec", "OdeSpec", "TrainSpec", "parse_spec"]
