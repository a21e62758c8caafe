"""Experiment specs, one per kind, validated once and shared by the CLI, the API and the worker (no torch)."""

from anode_core.specs.common import GradientSpec, OdeSpec

__all__ = ["GradientSpec", "OdeSpec"]
