"""Which gradient method may differentiate which kind of solver: the one rule, declared as data.

Torch-free (it imports nothing but the standard library), so the library (:func:`anode_core.solve.check_pairing`),
the specs (:func:`anode_lab.specs.common.pairing_error`) and, through the catalog, the dashboard all read this
same table. Each solver class names its ``kind``; a gradient method is used in one of six ways (:data:`Use`).

Why the holes: a solver that *carries* state between steps (a reversible carry, a multistep history) cannot take
the isolated steps that revolve checkpoints and the fixed-grid adjoint restart from; only an algebraically
reversible solver can be rebuilt backwards; the adjoint on stored states restarts from the states of a fixed grid;
an external solver (scipy) computes without a graph, so only the continuous adjoint, which solves backwards with
the same solver, can differentiate it (as torchdiffeq's ``odeint_adjoint`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

SolverKind = Literal["fixed", "adaptive", "implicit", "multistep", "reversible", "external"]
Use = Literal["direct", "anode", "checkpoints", "adjoint", "stored_states", "reversible"]

USES: tuple[Use, ...] = ("direct", "anode", "checkpoints", "adjoint", "stored_states", "reversible")

PAIRS: dict[SolverKind, frozenset[Use]] = {
    "fixed": frozenset({"direct", "anode", "checkpoints", "adjoint", "stored_states"}),
    "implicit": frozenset({"direct", "anode", "checkpoints", "adjoint", "stored_states"}),
    "adaptive": frozenset({"direct", "anode", "checkpoints", "adjoint"}),
    "multistep": frozenset({"direct", "anode"}),
    "reversible": frozenset({"direct", "anode", "reversible"}),
    "external": frozenset({"adjoint", "stored_states"}),
}
"""The rule: the uses each kind of solver pairs with."""

KINDS: dict[SolverKind, str] = {
    "fixed": "takes N_t fixed explicit steps",
    "implicit": "takes N_t fixed implicit steps, each solved by Broyden iterations",
    "adaptive": "chooses its own steps from rtol and atol",
    "multistep": "carries the history of its slopes from step to step",
    "reversible": "carries a second state so that each step can be undone algebraically",
    "external": "solves in NumPy (scipy.integrate.solve_ivp) without a graph",
}
"""What each kind of solver is, as the refusals say it."""

NEEDS: dict[Use, str] = {
    "direct": "back-propagates through the solve",
    "anode": "recomputes the block from its input",
    "checkpoints": "restarts isolated steps from the states it keeps",
    "adjoint": "steps the adjoint backwards one isolated step at a time",
    "stored_states": "restarts each reverse step from a stored state of a fixed grid",
    "reversible": "needs an algebraically reversible solver",
}
"""What each use needs of the solver, as the refusals say it."""


DEFAULTS: dict[SolverKind, Use] = {"external": "adjoint"}
"""The use a solve that names no gradient method gets, where the library's default (``anode``) does not pair."""


def use_of(method: str, checkpoints: int | str | None = None, reconstruct: bool = True) -> Use:
    """The use a gradient method named ``method`` (``direct``, ``anode``, ``adjoint``, ``reversible``) makes;
    ``Anode(checkpoints="auto")`` restarts from kept steps, as revolve does."""
    if method == "anode":
        return "anode" if checkpoints is None else "checkpoints"
    if method == "adjoint":
        return "adjoint" if reconstruct else "stored_states"
    if method in ("direct", "reversible"):
        return method  # type: ignore[return-value]  # the two literals themselves
    raise ValueError(f"`method` must be one of direct, anode, adjoint, reversible; got {method!r}")


def pairs(kind: SolverKind, use: Use) -> bool:
    return use in PAIRS[kind]


def refusal(
    kind: SolverKind, use: Use, solver: str, spelled: Mapping[Use, str], kinds: Mapping[str, SolverKind]
) -> str | None:
    """Why ``use`` cannot differentiate ``solver`` of ``kind`` (``None`` when it can), with each use written as
    the caller writes it (``spelled``: ``gradient=Anode()`` in the library, ``method 'anode'`` in a spec) and the
    solvers that would pair named from ``kinds`` (solver name -> kind)."""
    if pairs(kind, use):
        return None
    alternatives = " or ".join(spelled[u] for u in USES if pairs(kind, u))
    others = " or ".join(
        f"{k} ({', '.join(name for name, of in kinds.items() if of == k)})" for k in PAIRS if pairs(k, use)
    )
    return (f"{spelled[use]} {NEEDS[use]}; got solver {solver}, which {KINDS[kind]}: use {alternatives} with this "
            f"solver, or a solver of kind {others}")
