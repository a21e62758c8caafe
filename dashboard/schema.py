"""Pure helpers over the catalog's JSON schemas: dotted paths into a spec, a field's schema, bounds, choices and
help. No Streamlit here (the form widgets in :mod:`dashboard.forms` use these), so they are tested as plain
functions and any module may import them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

Named = Sequence[Mapping[str, str]]
"""A catalog list such as ``catalog["solvers"]``: ``[{"name": ..., "description": ...}]``."""
BOUND_CHECKS = (("minimum", "≥", operator.ge), ("maximum", "≤", operator.le),
                ("exclusiveMinimum", ">", operator.gt), ("exclusiveMaximum", "<", operator.lt))


def get_path(spec: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = spec
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def schema_field(schema: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The JSON-schema property at dotted ``path`` (``$ref`` followed), merged with its non-null ``anyOf``
    variant, so ``type``, ``enum`` and ``description`` are at the top."""
    defs = schema.get("$defs", {})

    def resolve(node: Mapping[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return dict(defs[ref.rsplit("/", 1)[1]]) if ref else dict(node)

    node: dict[str, Any] = resolve(schema)
    for part in path.split("."):
        prop = resolve(node.get("properties", {}).get(part, {}))
        for variant in prop.get("anyOf", []):
            variant = resolve(variant)
            if variant.get("type") != "null":
                prop = {**variant, **{k: v for k, v in prop.items() if k != "anyOf"}}
                break
        node = prop
    return node


def field_help(schema: Mapping[str, Any], bounds: Mapping[str, Any], path: str,
               choices: Named | None = None) -> str | None:
    """The field's description, its bounds in words and, for a choice, what each option means."""
    field = schema_field(schema, path)
    lines = [field["description"]] if field.get("description") else []
    limits = bounds.get(path, {})
    words = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    said = [f"{sign} {limits[k]}" for k, sign in words.items() if k in limits]
    if said:
        lines.append("Allowed: " + ", ".join(said) + ".")
    for item in choices or ():
        if item.get("description"):
            lines.append(f"- **{item['name']}**: {item['description']}")
    return "\n\n".join(lines) if lines else None


def number_limits(schema: Mapping[str, Any], bounds: Mapping[str, Any], path: str) -> tuple[bool, Any, Any]:
    """``(is_integer, min_value, max_value)`` for a number input. Exclusive float bounds are left to the API,
    whose 422 then names the field."""
    field = schema_field(schema, path)
    integer = field.get("type") == "integer"
    limits = bounds.get(path, {})
    low, high = limits.get("minimum"), limits.get("maximum")
    if integer and "exclusiveMinimum" in limits:
        low = limits["exclusiveMinimum"] + 1
    if integer and "exclusiveMaximum" in limits:
        high = limits["exclusiveMaximum"] - 1
    return integer, low, high


def enum_of(schema: Mapping[str, Any], path: str) -> list[Any]:
    field = schema_field(schema, path)
    if "enum" in field:
        return list(field["enum"])
    items = field.get("items") or {}
    if isinstance(items, Mapping) and "enum" in items:
        return list(items["enum"])
    return []


def names(items: Named) -> list[str]:
    return [item["name"] for item in items]


def description_of(items: Named, name: str) -> str:
    return next((item.get("description", "") for item in items if item["name"] == name), "")


def bound_error(value: Any, bounds: Mapping[str, Any], path: str) -> str | None:
    """What is wrong with ``value`` for the number field at ``path`` (``None`` when it is allowed): the check a
    number box would make silently (keeping its previous value), said in words so the page shows it under the
    field and refuses to launch."""
    if value is None:
        return None
    limits = bounds.get(path, {})
    for key, sign, ok in BOUND_CHECKS:
        if key in limits and not ok(value, limits[key]):
            return f"must be {sign} {limits[key]:g}; got {value:g}"
    return None


def log_grid(low: float, high: float, mantissas: Sequence[int] = (1, 2, 5)) -> list[float]:
    """``1, 2, 5 × 10^k`` (or the ``mantissas`` given) from ``low`` to ``high``, ascending: the choices of a
    tolerance, which is read and changed by factors, not by differences."""
    out = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in mantissas:
            value = float(f"{mantissa}e{exponent}")
            if low <= value <= high:
                out.append(value)
    return out


def solver_entry(solvers: Named, name: str) -> Mapping[str, Any]:
    """The catalog's entry for solver ``name`` (an empty one for a name it does not list)."""
    return next((s for s in solvers if s["name"] == name), {})


def pairs(solver: Mapping[str, Any], gradient: Mapping[str, Any]) -> bool:
    """Whether the catalog says ``gradient`` (a spec's ``{"method", "checkpoints", "reconstruct"}``) can
    differentiate ``solver``: the API refuses the pairs for which this is False."""
    return (gradient.get("method") in solver.get("methods", ())
            and (gradient.get("checkpoints") is None or bool(solver.get("checkpoints")))
            and (gradient.get("reconstruct") is not False or bool(solver.get("stored_states"))))
