"""Models and data sets added by installed packages, through the entry-point groups ``anode_lab.models`` and
``anode_lab.datasets`` (the packaging mechanism pytest's plugins use). No torch, no pydantic.

A package declares each of them in its ``pyproject.toml``::

    [project.entry-points."anode_lab.models"]
    tiny_ode = "tiny_plugin:MODEL"          # a ModelPlugin

    [project.entry-points."anode_lab.datasets"]
    xor = "tiny_plugin:XOR"                 # a DatasetPlugin

The entry point names a *declaration* in a module that imports neither torch nor the model: its description, the
data it takes and the ``"module:function"`` that builds it. The API's catalog and spec validation read only
these declarations, so the API stays free of torch; the worker imports the builder when it runs. A request names a
plugin by its entry-point name and never a module or a file: only code the operator installed can run.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

MODELS_GROUP = "anode_lab.models"
DATASETS_GROUP = "anode_lab.datasets"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPlugin:
    """A model a package adds. ``build`` is ``"module:function"``, called in the worker as
    ``function(spec=TrainSpec, shape=tuple, classes=int) -> nn.Module`` returning class scores; its ODE solves
    should name no gradient method, so the spec's method (``anode_core.use_gradient``) applies to them.

    ``data`` lists what it trains on: ``"points"`` (the 2-D sets), ``"images"`` (every image set),
    ``"images:C×H×W"`` (image sets of that shape, e.g. ``"images:1x8x8"``), or data-set names, built-in or
    added under ``anode_lab.datasets``.
    """

    description: str
    build: str
    data: tuple[str, ...] = ("points",)

    def __post_init__(self) -> None:
        _check_ref("build", self.build)
        if not self.data or not all(isinstance(d, str) and d for d in self.data):
            raise ValueError(f"`data` must name at least one kind or data set, e.g. ('points',); got {self.data!r}")


@dataclass(frozen=True)
class DatasetPlugin:
    """A data set a package adds. ``load`` is ``"module:function"``, called in the worker as
    ``function(seed=int) -> (x_train, y_train, x_test, y_test)`` (arrays or tensors; ``y`` integer classes in
    ``0 .. classes-1``, ``x`` of shape ``(N, *shape)``). ``examples`` is the size of its training split, which
    the cost estimate (:mod:`anode_lab.specs.cost`) needs before anything is loaded."""

    description: str
    load: str
    shape: tuple[int, ...]
    classes: int
    examples: int

    def __post_init__(self) -> None:
        _check_ref("load", self.load)
        if not self.shape or not all(isinstance(n, int) and n >= 1 for n in self.shape):
            raise ValueError(f"`shape` must be positive sizes of one example, e.g. (2,); got {self.shape!r}")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2:
            raise ValueError(f"`classes` must be an integer ≥ 2; got {self.classes!r}")
        if isinstance(self.examples, bool) or not isinstance(self.examples, int) or self.examples < 1:
            raise ValueError(f"`examples` must be the number of training examples, an integer ≥ 1; got "
                             f"{self.examples!r}")


P = TypeVar("P", ModelPlugin, DatasetPlugin)


@cache
def model_plugins() -> dict[str, ModelPlugin]:
    """Installed model plugins by entry-point name (read once per process; restart to see new installs)."""
    return _discover(MODELS_GROUP, ModelPlugin)


@cache
def dataset_plugins() -> dict[str, DatasetPlugin]:
    """Installed data-set plugins by entry-point name (read once per process)."""
    return _discover(DATASETS_GROUP, DatasetPlugin)


def forget() -> None:
    """Read the entry points again on next use (after installing a plugin into a running process)."""
    model_plugins.cache_clear()
    dataset_plugins.cache_clear()


def load_callable(ref: str) -> Callable[..., Any]:
    """The function ``"module:function"`` of an installed declaration (never a name from a request)."""
    module, _, name = ref.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


def _discover(group: str, kind: type[P]) -> dict[str, P]:
    """A broken or ill-named plugin is logged and left out: it must not take the service down."""
    found: dict[str, P] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if not NAME.match(ep.name) or ep.name in found:
            log.warning("ignoring %s plugin %r: names are unique, lower case, [a-z0-9_], ≤ 40 characters", group,
                        ep.name)
            continue
        had_torch = "torch" in sys.modules
        try:
            declared = ep.load()
        except Exception:  # an installed package's import error: report it, serve the rest
            log.exception("ignoring %s plugin %r: loading %s failed", group, ep.name, ep.value)
            continue
        if not isinstance(declared, kind):
            log.warning("ignoring %s plugin %r: %s is a %s, not an anode_lab.plugins.%s", group, ep.name, ep.value,
                        type(declared).__name__, kind.__name__)
            continue
        if not had_torch and "torch" in sys.modules:
            log.warning("%s plugin %r imported torch while declaring itself, so the API process now holds torch: "
                        "move the model into the module its builder names", group, ep.name)
        found[ep.name] = declared
    return found


def _check_ref(field: str, ref: object) -> None:
    if not isinstance(ref, str) or not _REF.match(ref):
        raise ValueError(f"`{field}` must be 'module:function', e.g. 'my_package.model:build'; got {ref!r}")
