"""Gradient strategies: sibling classes with one hook, :meth:`GradientMethod.solve`."""

from anode_core.gradients.adjoint import Adjoint
from anode_core.gradients.anode import Anode
from anode_core.gradients.base import GradientMethod
from anode_core.gradients.direct import Direct
from anode_core.gradients.reversible import Reversible

__all__ = ["Adjoint", "Anode", "Direct", "GradientMethod", "Reversible"]
