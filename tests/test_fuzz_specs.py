"""Bad input on the command line: specs and spec files fuzzed with hypothesis.

``parse_spec`` either returns a spec or raises pydantic's ``ValidationError`` (never another exception), and a spec
it returns is inside the bounds, holds only finite JSON numbers and survives a round trip. ``load_spec_file``
either returns a ``SpecFile`` or raises ``SpecFileError`` with lines saying what to fix, whatever the file holds.
Derandomized with a bounded number of examples, so the suite is reproducible and quick.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel, ValidationError

from anode_lab.specfile import SpecFile, SpecFileError, load_spec_file
from anode_lab.specs import SPECS, parse_spec
from anode_lab.specs.common import MAX_STEPS

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

NASTY_NUMBERS = st.sampled_from([0, -1, 1, 2, 2**31, 2**63, 2**64, -(2**63) - 1, 10**400, 256, 257, 4096, 10**9,
                                 math.nan, math.inf, -math.inf, -0.0, 1e-320, 1e308, 0.5, 1.0, 10.0, 1e-6])
NASTY_STRINGS = st.one_of(
    st.sampled_from(["", "euler", "rk4", "dopri5", "anode", "adjoint", "relu", "moons", "mnist", "cifar10", "cpu",
                     "cuda", "auto", "float64", "wrong-sign", "../../etc/passwd", "/", "\x00", "名前", "ʕ•ᴥ•ʔ",
                     "a" * 5000, "NaN", "Infinity", "1e999", "true", "null", "__class__"]),
    st.text(max_size=20),
)
SCALARS = st.one_of(st.none(), st.booleans(), NASTY_NUMBERS, st.integers(), st.floats(), NASTY_STRINGS)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                         st.dictionaries(NASTY_STRINGS, inner, max_size=4)),
                      max_leaves=20)


def field_names(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def spec_data(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts over the spec's own field names (plus a stray key now and then) with hostile values, nested specs
    (``ode``, ``gradient``, ``methods``) built the same way: most reach the validators, not just the key check."""
    model = SPECS[kind]
    nested = st.fixed_dictionaries({}, optional={
        "solver": NASTY_STRINGS, "steps": NASTY_NUMBERS, "activation": NASTY_STRINGS,
        "gradient": st.fixed_dictionaries({}, optional={"method": NASTY_STRINGS, "checkpoints": NASTY_NUMBERS,
                                                        "reconstruct": SCALARS}),
        "method": NASTY_STRINGS, "checkpoints": NASTY_NUMBERS,
    })
    value = st.one_of(SCALARS, nested, st.lists(st.one_of(NASTY_NUMBERS, NASTY_STRINGS, nested), max_size=8), VALUES)
    keys = st.one_of(st.sampled_from(field_names(model)), NASTY_STRINGS)
    return st.dictionaries(keys, value, max_size=8)


def assert_sound(kind: str, spec: BaseModel) -> None:
    """A spec that validated: finite JSON, the same spec after a round trip, N_t within bounds."""
    dumped = spec.model_dump(mode="json")
    text = json.dumps(dumped, allow_nan=False)
    assert parse_spec(kind, json.loads(text)) == spec
    ode = getattr(spec, "ode", None)
    steps = [ode.steps] if ode is not None else list(getattr(spec, "steps", None) or ())
    assert all(1 <= n <= MAX_STEPS for n in steps)


@pytest.mark.parametrize("kind", list(SPECS))
@FUZZ
@given(data=st.data())
def test_parse_spec_accepts_or_explains(kind: str, data: st.DataObject) -> None:
    body = data.draw(st.one_of(spec_data(kind), VALUES))
    try:
        spec = parse_spec(kind, body)
    except ValidationError as exc:
        assert exc.error_count() >= 1 and all(e["msg"] for e in exc.errors())
        return
    assert_sound(kind, spec)


@FUZZ
@given(kind=st.one_of(NASTY_STRINGS, SCALARS))
def test_parse_spec_refuses_unknown_kinds_with_value_error(kind: Any) -> None:
    if isinstance(kind, str) and kind in SPECS:
        return
    with pytest.raises(ValueError, match="`kind` must be one of"):
        parse_spec(kind, {})


def file_documents() -> st.SearchStrategy[Any]:
    """What a spec file may hold: the API body form, a bare spec, or anything at all."""
    kinds = st.one_of(st.sampled_from(list(SPECS)), SCALARS, st.lists(SCALARS, max_size=2))
    wrapped = st.fixed_dictionaries({"spec": st.one_of(spec_data("train"), spec_data("demo"), VALUES)},
                                    optional={"kind": kinds, "name": SCALARS,
                                              "tags": st.one_of(SCALARS, st.lists(SCALARS, max_size=3)),
                                              "extra": SCALARS})
    bare = st.one_of(spec_data("train"), spec_data("compare")).map(lambda d: {"kind": "train", **d})
    return st.one_of(wrapped, bare, VALUES)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@FUZZ
@given(document=file_documents(), kind=st.one_of(st.none(), st.sampled_from(list(SPECS))))
def test_spec_files_load_or_say_what_to_fix(tmp_path: Path, suffix: str, document: Any, kind: str | None) -> None:
    import yaml

    path = tmp_path / f"spec{suffix}"
    try:
        text = json.dumps(document) if suffix == ".json" else yaml.safe_dump(document, allow_unicode=True)
    except (ValueError, yaml.YAMLError):
        return
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        loaded = load_spec_file(path, kind)
    except SpecFileError as exc:
        assert exc.lines and all(isinstance(line, str) and line for line in exc.lines)
        return
    assert isinstance(loaded, SpecFile)
    assert_sound(loaded.kind, loaded.spec)
    assert loaded.name is None or isinstance(loaded.name, str)
    assert all(isinstance(tag, str) for tag in loaded.tags)


HOSTILE_FILES = [
    "kind: train\nspec: {lr: .nan}\n",
    "kind: train\nspec: {lr: .inf}\n",
    "kind: train\nspec: {ode: {steps: 1000000000000000000000}}\n",
    "kind: [train]\nspec: {}\n",
    "kind: {a: 1}\nspec: {}\n",
    "kind: train\nspec: [1, 2]\n",
    "kind: train\nspec: {}\ntags: 5\n",
    "kind: train\nspec: {}\ntags: [[1]]\n",
    "kind: train\nspec: {}\nname: [1, 2]\n",
    "a: &a [*a]\n",
    "a: &a ['x', 'x']\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
    "[" * 10_000 + "]" * 10_000,
    "\x00\x01",
    "kind: train\nspec: {model: conv_ode, dataset: mnist, root: /}\n",
    "kind: compare\nspec: {steps: [" + ", ".join(["1"] * 20_000) + "]}\n",
]


@pytest.mark.parametrize("text", HOSTILE_FILES, ids=[f"{i}:{t[:24]!r}" for i, t in enumerate(HOSTILE_FILES)])
def test_hostile_spec_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_spec_file(path)
    except SpecFileError as exc:
        assert exc.lines
        return
    assert_sound(loaded.kind, loaded.spec)
    assert loaded.name is None or isinstance(loaded.name, str)
