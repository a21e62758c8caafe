"""anode-lab, the application on top of the :mod:`anode_core` library: specs (pydantic, no torch at import),
experiments (models, data, training, sweeps, teaching demos), spec files and the `anode-lab` command line."""

from anode_lab.tracking import TrackedRun, track

__all__ = ["TrackedRun", "track"]
