"""Spec forms built from ``GET /catalog``: each widget takes its bounds, help text and choices from the spec's
JSON schema, and shows the API's validation error for its field right under it.

:class:`SpecForm` holds the spec being edited; a page calls one method per field, in the order of the screen.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import streamlit as st

from dashboard.schema import (
    Named,
    bound_error,
    description_of,
    enum_of,
    field_help,
    get_path,
    log_grid,
    names,
    number_limits,
    set_path,
)
from dashboard.text import md

T = TypeVar("T")


# -------------------------------------------------------------------------------------------- the form
class SpecForm:
    """Widgets for one spec of ``kind``; every value goes into :attr:`spec` at its dotted path.

    ``key`` prefixes every widget key (``launch.train.ode.steps``); ``errors`` are the last 422's messages by
    path (:meth:`dashboard.api_client.ApiError.field_errors`). Number boxes take any number typed (a box with
    bounds would keep its previous value and launch that); one out of bounds is listed in :attr:`invalid`, with
    its message under the field, and a page launches nothing while :attr:`invalid` is not empty."""

    def __init__(self, catalog: Mapping[str, Any], kind: str, base: Mapping[str, Any], *, key: str,
                 errors: Mapping[str, str] | None = None) -> None:
        self.schema = catalog["kinds"][kind]["schema"]
        self.bounds = catalog["bounds"].get(kind, {})
        self.spec: dict[str, Any] = copy.deepcopy(dict(base))
        self.key = key
        self.errors = dict(errors or {})
        self.shown: set[str] = set()
        self.invalid: dict[str, str] = {}
        """``{path: "must be ≥ 1; got 0"}``: values the API would refuse."""
        self.labels: dict[str, str] = {}

    def _key(self, path: str) -> str:
        return f"{self.key}.{path}"

    def field_error(self, path: str, label: str = "") -> None:
        """Show the bound this field breaks, or else the API's error about it, here (naming the field), and
        remember that it was shown."""
        self.shown.add(path)
        message = self.invalid.get(path) or self.errors.get(path)
        if message:
            st.error(md(f"{label}: {message}" if label else message), icon=":material/error:")

    def _store(self, path: str, value: T, label: str = "") -> T:
        set_path(self.spec, path, value)
        self.labels[path] = label
        self.field_error(path, label)
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
        return self._store(path, value, label)

    def number(self, path: str, label: str, *, optional: bool = False, step: float | None = None,
               fmt: str | None = None, default: Any = None) -> Any:
        """A number input; ``optional`` allows an empty box (the spec's ``None``: "the model's default", or
        "off"). The field's bounds are in its help and checked here, not by the box (see the class)."""
        integer, low, _ = number_limits(self.schema, self.bounds, path)
        current = get_path(self.spec, path)
        current = default if current is None else current
        if current is None and not optional:
            current = low if low is not None else 0
        if current is not None:
            current = int(current) if integer else float(current)
        value = st.number_input(label, value=current, step=step if step is not None else (1 if integer else None),
                                format=fmt, key=self._key(path), placeholder="default" if optional else None,
                                help=field_help(self.schema, self.bounds, path))
        problem = bound_error(value, self.bounds, path)
        if problem:
            self.invalid[path] = problem
        return self._store(path, value, label)

    def log_slider(self, path: str, label: str, *, default: float) -> float:
        """A tolerance on a slider of ``1, 2, 5 × 10^k`` between the field's bounds (the spec's value joins the
        choices if it is not one of them): every choice is allowed, and moving it changes the value by a factor."""
        _, low, high = number_limits(self.schema, self.bounds, path)
        current = get_path(self.spec, path)
        current = float(default if current is None else current)
        options = sorted({*log_grid(low or current, high or current), current})
        value = st.select_slider(label, options, value=current, key=self._key(path), format_func=lambda v: f"{v:g}",
                                 help=field_help(self.schema, self.bounds, path))
        return float(self._store(path, value, label))

    def toggle(self, path: str, label: str) -> bool:
        value = st.toggle(label, value=bool(get_path(self.spec, path, False)), key=self._key(path),
                          help=field_help(self.schema, self.bounds, path))
        return bool(self._store(path, value, label))

    def text(self, path: str, label: str, *, placeholder: str | None = None, note: str = "") -> str | None:
        """A text field; ``note`` is added to its help."""
        described = "\n\n".join(part for part in (field_help(self.schema, self.bounds, path), note) if part)
        value = st.text_input(label, value=get_path(self.spec, path) or "", key=self._key(path),
                              placeholder=placeholder, help=described or None)
        return self._store(path, value.strip() or None, label)

    def multiselect(self, path: str, label: str, options: Sequence[Any] | None = None, *,
                    choices: Named | None = None, format_func: Callable[[Any], str] = str,
                    to_spec: Callable[[Any], Any] | None = None,
                    from_spec: Callable[[Any], Any] | None = None, variant: str = "") -> list[Any]:
        """A multi-select; ``to_spec``/``from_spec`` map between what is shown and what the spec holds. A
        ``variant`` is a widget of its own (its own default and state) for the same field."""
        options = list(options if options is not None else (names(choices) if choices else enum_of(self.schema, path)))
        current = [from_spec(v) if from_spec else v for v in get_path(self.spec, path) or []]
        default = [v for v in current if v in options]
        values = st.multiselect(label, options, default=default, key=self._key(path) + variant, format_func=format_func,
                                help=field_help(self.schema, self.bounds, path, choices))
        return self._store(path, [to_spec(v) if to_spec else v for v in values], label)

    def omit(self, path: str, value: Any = None) -> None:
        """A field that does not apply to what is chosen: send its "not set" value so the API accepts it."""
        set_path(self.spec, path, value)

    def drop(self, path: str) -> None:
        """A field the API must not receive for what is chosen (``steps`` of an adaptive solver): left out."""
        parent = get_path(self.spec, path.rpartition(".")[0]) if "." in path else self.spec
        if isinstance(parent, dict):
            parent.pop(path.rpartition(".")[2], None)

    def other_errors(self) -> dict[str, str]:
        """Errors of fields this form has not shown (whole-spec rules, or fields it does not edit)."""
        return {path: message for path, message in self.errors.items() if path not in self.shown}
