"""Spec files for the command line: read one, validate it once, and explain every mistake in it.

A spec file is YAML or JSON, either the body the API takes (``kind:``, ``spec:``, optional ``name:`` and
``tags:``) or a bare spec whose kind is given on the command line (``--kind``). ``anode-lab specs`` prints the
presets in the first form, ready to run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from anode_lab.specs import SPECS, parse_spec, unknown_field_message

TOP_LEVEL = ("kind", "spec", "name", "tags")


class SpecFileError(Exception):
    """A spec file that cannot be run; ``lines`` say what is wrong and how to fix it."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class SpecFile:
    kind: str
    spec: BaseModel
    name: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def load_spec_file(path: Path, kind: str | None = None) -> SpecFile:
    """Read and validate ``path``; ``kind`` (from ``--kind``) must agree with the file's ``kind:`` if both are set."""
    data = _read(path)
    if not isinstance(data, dict):
        raise SpecFileError([f"{path}: expected a mapping (`kind:` and `spec:`, or a bare spec); "
                             f"got {type(data).__name__}"])
    wrapped = "spec" in data
    file_kind = data.get("kind")
    if kind is not None and file_kind is not None and kind != file_kind:
        raise SpecFileError([f"{path}: the file says `kind: {file_kind}` but --kind is {kind}; drop one of them"])
    kind = kind or file_kind
    if kind is None:
        raise SpecFileError([f"{path}: say which experiment this is: add `kind: train` (or compare, demo) with "
                             "the spec under `spec:`, or pass --kind"])
    if not isinstance(kind, str) or kind not in SPECS:
        raise SpecFileError([f"{path}: `kind` must be one of {', '.join(SPECS)}; got {kind!r}"])
    if wrapped:
        unknown = sorted(set(data) - set(TOP_LEVEL))
        if unknown:
            raise SpecFileError([f"{path}: unknown top-level keys {', '.join(map(str, unknown))}; allowed are "
                                 f"{', '.join(TOP_LEVEL)} (spec fields go under `spec:`)"])
        body = data["spec"] if data["spec"] is not None else {}
    else:
        body = {k: v for k, v in data.items() if k != "kind"}
    try:
        spec = parse_spec(kind, body)
    except ValidationError as exc:
        prefix = "spec." if wrapped else ""
        raise SpecFileError([f"{path}: invalid {kind} spec ({exc.error_count()} "
                             f"{'error' if exc.error_count() == 1 else 'errors'}):",
                             *(f"  {line}" for line in describe_errors(exc, prefix, kind))]) from None
    name, tags = data.get("name"), data.get("tags") or []
    if name is not None and not isinstance(name, str | int | float):  # YAML reads `name: 2024` as a number
        raise SpecFileError([f"{path}: `name` must be text; got {name!r}"])
    if not isinstance(tags, list) or not all(isinstance(t, str | int | float) for t in tags):
        raise SpecFileError([f"{path}: `tags` must be a list of words, e.g. [baseline, moons]; got {tags!r}"])
    return SpecFile(kind, spec, None if name is None else str(name), tuple(str(t) for t in tags))


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError([f"cannot read the spec file {path}: {exc.strerror or exc}"]) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecFileError([f"{path} is not valid JSON: {exc}"]) from None
        except RecursionError:
            raise SpecFileError([f"{path} nests too deeply to be a spec"]) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecFileError([f"{path} is not valid YAML: {exc}"]) from None
    except RecursionError:
        raise SpecFileError([f"{path} nests too deeply to be a spec"]) from None


def describe_errors(exc: ValidationError, prefix: str = "", kind: str = "") -> list[str]:
    """One line per wrong field: its location, what is wrong and how to fix it, and the value given."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = prefix + ".".join(str(part) for part in err["loc"]) if err["loc"] else prefix.rstrip(".") or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_field_message(kind, err["loc"])
        elif err["type"] == "missing":
            msg = "required; add it"
        got = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {err['input']!r})"
        lines.append(f"{loc}: {msg}{got}")
    return lines


def presets() -> Iterator[tuple[str, str, str, BaseModel]]:
    """``(name, kind, description, spec)`` of every preset of every kind that defines ``PRESETS``."""
    for kind, model in SPECS.items():
        module = sys.modules[model.__module__]
        notes: dict[str, str] = getattr(module, "DESCRIPTIONS", {})
        for name, spec in getattr(module, "PRESETS", {}).items():
            yield name, kind, notes.get(name, ""), spec


def preset_yaml(name: str, kind: str, description: str, spec: BaseModel) -> str:
    """A preset as a runnable spec file, with a comment saying what it is and how to run it."""
    import yaml

    body = {"kind": kind, "spec": spec.model_dump(mode="json", exclude_none=True)}
    head = f"# {name}: {description}\n" if description else f"# {name}\n"
    head += f"# run: anode-lab specs {name} > {name}.yaml && anode-lab run {name}.yaml\n"
    text: str = yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    return head + text


def specs_command(args: argparse.Namespace) -> int:
    found = list(presets())
    if args.name is not None:
        found = [p for p in found if p[0] == args.name]
        if not found:
            names = ", ".join(p[0] for p in presets())
            print(f"unknown preset {args.name!r}; choose one of {names}", file=sys.stderr)
            return 2
    print("---\n".join(preset_yaml(*p) for p in found), end="")
    return 0
