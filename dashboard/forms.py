"""Spec forms built from ``GET /catalog``: each widget takes its bounds, help text and choices from the spec's
JSON schema, and shows the API's validation error for its field right under it.

:class:`SpecForm` holds the spec being edited; a page calls one method per field, in the order of the screen.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import streamlit as st

Named = Sequence[Mapping[str, str]]
"""A catalog list such as ``catalog["solvers"]``: ``[{"name": ..., "description": ...}]``."""
T = TypeVar("T")


# ------------------------------------------------------------------------------------ pure schema helpers
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


# -------------------------------------------------------------------------------------------- the form
class SpecForm:
    """Widgets for one spec of ``kind``; every value goes into :attr:`spec` at its dotted path.

    ``key`` prefixes every widget key (``launch.train.ode.steps``); ``errors`` are the last 422's messages by
    path (:meth:`dashboard.api_client.ApiError.field_errors`)."""

    def __init__(self, catalog: Mapping[str, Any], kind: str, base: Mapping[str, Any], *, key: str,
                 errors: Mapping[str, str] | None = None) -> None:
        self.schema = catalog["kinds"][kind]["schema"]
        self.bounds = catalog["bounds"].get(kind, {})
        self.spec: dict[str, Any] = copy.deepcopy(dict(base))
        self.key = key
        self.errors = dict(errors or {})
        self.shown: set[str] = set()

    def _key(self, path: str) -> str:
        return f"{self.key}.{path}"

    def field_error(self, path: str) -> None:
        """Show the API's error about ``path`` here, and remember that it was shown."""
        self.shown.add(path)
        for where, message in self.errors.items():
            if where == path:
                st.error(message, icon=":material/error:")

    def _store(self, path: str, value: T) -> T:
        set_path(self.spec, path, value)
        self.field_error(path)
        return value

    def select(self, path: str, label: str, options: Sequence[Any] | None = None, *, choices: Named | None = None,
               format_func: Callable[[Any], str] = str, describe: bool = True) -> Any:
        """A select box; ``choices`` (a catalog list) gives the options and explains the chosen one."""
        options = list(options if options is not None else (names(choices) if choices else enum_of(self.schema, path)))
        current = get_path(self.spec, path)
        index = options.index(current) if current in options else 0
        value = st.selectbox(label, options, index=index, key=self._key(path), format_func=format_func,
                             help=field_help(self.schema, self.bounds, path, choices))
        if choices and describe:
            st.caption(description_of(choices, value))
        return self._store(path, value)

    def number(self, path: str, label: str, *, optional: bool = False, step: float | None = None,
               fmt: str | None = None, default: Any = None) -> Any:
        """A number input with the field's bounds; ``optional`` allows an empty box (the spec's ``None``:
        "the model's default", or "off")."""
        integer, low, high = number_limits(self.schema, self.bounds, path)
        current = get_path(self.spec, path, default)
        if current is None and not optional:
            current = low if low is not None else 0
        if integer:
            low, high = (None if low is None else int(low)), (None if high is None else int(high))
            current = None if current is None else int(current)
        else:
            low, high = (None if low is None else float(low)), (None if high is None else float(high))
            current = None if current is None else float(current)
        value = st.number_input(label, min_value=low, max_value=high, value=current,
                                step=step if step is not None else (1 if integer else None), format=fmt,
                                key=self._key(path), placeholder="default" if optional else None,
                                help=field_help(self.schema, self.bounds, path))
        return self._store(path, value)

    def toggle(self, path: str, label: str) -> bool:
        value = st.toggle(label, value=bool(get_path(self.spec, path, False)), key=self._key(path),
                          help=field_help(self.schema, self.bounds, path))
        return bool(self._store(path, value))

    def text(self, path: str, label: str, *, placeholder: str | None = None) -> str | None:
        value = st.text_input(label, value=get_path(self.spec, path) or "", key=self._key(path),
                              placeholder=placeholder, help=field_help(self.schema, self.bounds, path))
        return self._store(path, value.strip() or None)

    def multiselect(self, path: str, label: str, options: Sequence[Any] | None = None, *,
                    choices: Named | None = None, format_func: Callable[[Any], str] = str,
                    to_spec: Callable[[Any], Any] | None = None,
                    from_spec: Callable[[Any], Any] | None = None) -> list[Any]:
        """A multi-select; ``to_spec``/``from_spec`` map between what is shown and what the spec holds."""
        options = list(options if options is not None else (names(choices) if choices else enum_of(self.schema, path)))
        current = [from_spec(v) if from_spec else v for v in get_path(self.spec, path) or []]
        default = [v for v in current if v in options]
        values = st.multiselect(label, options, default=default, key=self._key(path), format_func=format_func,
                                help=field_help(self.schema, self.bounds, path, choices))
        return self._store(path, [to_spec(v) if to_spec else v for v in values])

    def omit(self, path: str, value: Any = None) -> None:
        """A field that does not apply to what is chosen: send its "not set" value so the API accepts it."""
        set_path(self.spec, path, value)

    def other_errors(self) -> dict[str, str]:
        """Errors of fields this form has not shown (whole-spec rules, or fields it does not edit)."""
        return {path: message for path, message in self.errors.items() if path not in self.shown}


def reset_keys(prefix: str) -> None:
    """Forget the widgets under ``prefix`` so they start again from a new base spec (a preset)."""
    for name in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix)]:
        del st.session_state[name]
