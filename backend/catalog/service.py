"""The catalog, built from the spec models' JSON schemas and the preset tables of :mod:`anode_lab.specs`
(pydantic only: no torch). The dashboard builds its forms from it."""

from __future__ import annotations

import re
import sys
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

METHODS = {
    "direct": "backpropagate through every step: the exact gradient, memory grows with N_t",
    "anode": "ANODE: keep each block's input, recompute the block in backward; exact, memory O(L) + O(N_t)",
    "adjoint": "the continuous adjoint (Chen et al.): solve backwards; O(L) memory, gradient off by O(dt^p) for smooth "
               "fields (ReLU's kinks change the measured slope); on adaptive steps by 4 to 8,000 × rtol "
               "(slope 0.7–1.1)",
    "reversible": "rebuild the states backwards algebraically (reversible_heun, alf): exact up to rounding, which "
                  "the reversal amplifies on fields that expand (float32, weights ×3, t1 = 3: 1.9e-2 from Direct for "
                  "reversible_heun at N_t 10⁴, 3.5e-2 for alf at 100, against float32's own 1e-4); O(L) memory",
}
ACTIVATIONS = {
    "relu": "max(0, x): kinks make the adjoint's error large at small N_t",
    "tanh": "smooth and bounded",
    "softplus": "smooth ReLU, log(1 + e^x)",
    "elu": "exponential below zero, identity above",
    "gelu": "Gaussian error linear unit",
    "leaky_relu": "ReLU with slope 0.01 below zero",
    "sigmoid": "1 / (1 + e^-x)",
}
MODELS = {
    "mlp_ode": "MLP-ODE classifier for 2-D points",
    "conv_ode": "small conv ODE net for images (digits, MNIST, CIFAR)",
    "resnet_ode": "the paper's ResNet with ODE blocks, 32×32 images",
    "squeezenext_ode": "the paper's SqueezeNext with ODE blocks, 32×32 images",
}
DATASETS = {
    "moons": "two interleaved half circles (2-D, generated)",
    "circles": "two concentric circles (2-D, generated)",
    "spirals": "two interleaved spirals (2-D, generated)",
    "digits": "sklearn's 8×8 digits (shipped with scikit-learn)",
    "mnist": "MNIST from a local torchvision folder (`root`)",
    "cifar10": "CIFAR-10 from a local torchvision folder (`root`)",
    "cifar100": "CIFAR-100 from a local torchvision folder (`root`)",
}
BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength",
              "maxLength")


def plain(text: str) -> str:
    """A docstring line as users read it: Sphinx roles (``:data:`DEMOS```) and double backticks dropped."""
    return re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text).replace("``", "")


def _named(names: tuple[str, ...], descriptions: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "description": descriptions.get(name, "")} for name in names]


def _default_spec(model: type[BaseModel], module: Any) -> dict[str, Any]:
    try:
        return model.model_validate({}).model_dump(mode="json")
    except ValidationError:
        demos = getattr(module, "DEMOS", None) or {}
        return model.model_validate({"name": next(iter(demos))}).model_dump(mode="json")


def _bounds(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"ode.steps": {"minimum": 1, "maximum": 256}, …}`` from a JSON schema with ``$defs``."""
    defs = schema.get("$defs", {})
    out: dict[str, dict[str, Any]] = {}

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return defs[ref.rsplit("/", 1)[1]] if ref else node

    def walk(node: dict[str, Any], path: str, depth: int) -> None:
        node = resolve(node)
        if depth > 6:
            return
        for name, prop in node.get("properties", {}).items():
            here = f"{path}.{name}" if path else name
            variants = [resolve(v) for v in prop.get("anyOf", [prop])]
            found = {k: v[k] for v in [prop, *variants] for k in BOUND_KEYS if k in v}
            items = [resolve(v["items"]) for v in variants if isinstance(v.get("items"), dict)]
            found.update({f"items.{k}": i[k] for i in items for k in BOUND_KEYS if k in i})
            if found:
                out[here] = found
            for variant in variants:
                if "properties" in variant:
                    walk(variant, here, depth + 1)

    walk(schema, "", 0)
    return out


@cache
def catalog() -> dict[str, Any]:
    from anode_lab.specs import SPECS, common

    kinds: dict[str, Any] = {}
    presets: dict[str, list[dict[str, Any]]] = {}
    group_presets: list[dict[str, Any]] = []
    demos: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    datasets: list[dict[str, str]] = []
    bounds: dict[str, Any] = {}
    for kind, model in SPECS.items():
        module = sys.modules[model.__module__]
        schema = model.model_json_schema()
        kinds[kind] = {"description": plain((model.__doc__ or "").strip().splitlines()[0]), "schema": schema,
                       "default": _default_spec(model, module)}
        bounds[kind] = _bounds(schema)
        descriptions = getattr(module, "DESCRIPTIONS", {})
        table = getattr(module, "PRESETS", {})
        if table:
            presets[kind] = [{"name": name, "description": descriptions.get(name, ""),
                              "spec": spec.model_dump(mode="json")} for name, spec in table.items()]
        group_presets += [{"name": name, "body": body} for name, body in getattr(module, "GROUP_PRESETS", {}).items()]
        for name, info in getattr(module, "DEMOS", {}).items():
            demos.append({"name": name, "title": info.title, "explanation": info.explanation,
                          "knobs": list(info.knobs), "defaults": _jsonable(info.defaults),
                          "spec": model.model_validate({"name": name}).model_dump(mode="json")})
        if kind == "train":
            models, datasets = _models_and_datasets(module)
    return {
        "kinds": kinds,
        "solvers": [_solver(name, facts, common) for name, facts in common.SOLVERS.items()],
        "gradient_methods": _named(get_args(common.MethodName), METHODS),
        "activations": _named(get_args(common.ActivationName), ACTIVATIONS),
        "dtypes": list(get_args(common.DtypeName)),
        "devices": list(get_args(common.DeviceName)),
        "models": models,
        "datasets": datasets,
        "presets": presets,
        "group_presets": group_presets,
        "demos": demos,
        "bounds": bounds,
    }


def _solver(name: str, facts: Any, common: Any) -> dict[str, Any]:
    """One solver: its facts, the knobs a spec gives it with their defaults (``steps`` for fixed and reversible
    solvers; ``rtol``, ``atol``, ``step_limit`` for adaptive ones), and the gradient methods that pair with it
    (:func:`anode_lab.specs.common.pairing_error`), with whether ANODE's checkpoints and the adjoint on stored
    states (``reconstruct: false``) do, so a form offers only what the API accepts."""
    def pairs(**gradient: Any) -> bool:
        return common.pairing_error(name, common.GradientSpec(**gradient)) is None

    ode = common.OdeSpec(solver=name).model_dump(mode="json")
    if facts.kind == "adaptive":  # first same as last: the last stage is the next step's first
        cost = f"{facts.stages} stages, {facts.stages - 1} new field evaluations per accepted or rejected step"
    elif facts.kind == "implicit":
        cost = f"{facts.stages} field evaluation{'s' if facts.stages > 1 else ''} per Broyden iteration"
    elif facts.kind == "multistep":
        cost = "1 new field evaluation per step after 2 start-up steps of 4, more with a corrector"
    else:
        cost = f"{facts.stages} field evaluation{'s' if facts.stages > 1 else ''} per step"
    return {"name": name, "kind": facts.kind, "order": facts.order, "stages": facts.stages,
            "description": f"{facts.description}: order {facts.order}, {cost}",
            "knobs": {k: ode[k] for k in ("steps", "rtol", "atol", "step_limit") if ode[k] is not None},
            "methods": [m for m in get_args(common.MethodName) if pairs(method=m)],
            "checkpoints": pairs(method="anode", checkpoints=1),
            "stored_states": pairs(method="adjoint", reconstruct=False)}


def _models_and_datasets(train: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Built-in models and data sets, then installed plugins (``"plugin": true``) from their torch-free
    declarations (:mod:`anode_lab.plugins`); a local set lists the ``files`` it needs under its ``root``."""
    takes = train.model_datasets()
    plugin_models, plugin_sets = train.plugin_models(), train.plugin_datasets()
    models = [{"name": name, "description": MODELS.get(name, ""), "datasets": list(takes[name]), "plugin": False}
              for name in get_args(train.ModelName)]
    models += [{"name": name, "description": p.description, "datasets": list(takes[name]), "plugin": True}
               for name, p in plugin_models.items()]
    datasets = [{**d, "plugin": False, "files": list(train.DATA_FILES.get(d["name"], ()))}
                for d in _named(get_args(train.DatasetName), DATASETS)]
    datasets += [{"name": name, "description": p.description, "plugin": True, "files": []}
                 for name, p in plugin_sets.items()]
    return models, datasets


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
