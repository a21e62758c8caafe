"""`anode-lab check FILE.py:FACTORY`: a user's own model through :func:`anode_core.check`, as table, CSV, SVG, JSON.

``FACTORY()`` returns ``(model, batch, loss)`` and ``loss(model, batch)`` a scalar tensor. Every bad input is a
:class:`CheckInputError` whose message names what to fix; the command turns it into exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib.util
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import torch
from torch import nn

import anode_core as ac
from anode_core.instruments.check import ROW_KEYS, CheckReport, NoSolveError

USAGE = "TARGET must be FILE.py:FACTORY, e.g. my_model.py:build"
RETURNS = "FACTORY() must return (model, batch, loss): an nn.Module, its input, and loss(model, batch) -> scalar tensor"
_METHOD = re.compile(r"^\s*(\w+)\s*(?:\((.*)\))?\s*$")


class CheckInputError(ValueError):
    """A bad target, factory, method, device or loss: the message says what to change."""


def load_factory(target: str) -> Callable[[], Any]:
    """``"path/model.py:build"`` -> the function ``build`` of that file, imported under its own name."""
    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name.isidentifier():
        raise CheckInputError(f"{USAGE}; got {target!r}")
    path = Path(path_text)
    if not path.is_file():
        raise CheckInputError(f"no such file: {path_text} ({USAGE})")
    spec = importlib.util.spec_from_file_location(f"anode_lab_check_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise CheckInputError(f"{path_text} is not a Python file ({USAGE})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: any failure is reported, not raised
        raise CheckInputError(f"importing {path_text} failed: {type(error).__name__}: {error}") from error
    finally:
        sys.path.remove(str(path.resolve().parent))
    factory: object = getattr(module, name, None)
    if not callable(factory):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and getattr(v, "__module__", None)
                         == module.__name__ and not k.startswith("_"))
        raise CheckInputError(
            f"{path_text} has no function {name!r}; it defines: {', '.join(defined) or 'no functions'}"
        )
    return factory


def build(factory: Callable[[], Any]) -> tuple[nn.Module, Any, Callable[[nn.Module, Any], Any]]:
    """Call the factory and check that it returned ``(model, batch, loss)``."""
    try:
        made = factory()
    except Exception as error:  # the user's code: report it in one line, as for an import
        raise CheckInputError(f"FACTORY() raised {type(error).__name__}: {error}") from error
    if not isinstance(made, tuple) or len(made) != 3:
        got = f"a tuple of {len(made)}" if isinstance(made, tuple) else type(made).__name__
        raise CheckInputError(f"{RETURNS}; got {got}")
    model, batch, loss = made
    if not isinstance(model, nn.Module):
        raise CheckInputError(f"{RETURNS}; got {type(model).__name__} as the model")
    if not callable(loss):
        raise CheckInputError(f"{RETURNS}; got {type(loss).__name__} as the loss")
    return model, batch, loss


def parse_method(text: str) -> ac.GradientMethod:
    """``anode``, ``anode(checkpoints=2)``, ``adjoint(reconstruct=False)`` -> the method object."""
    match = _METHOD.match(text)
    if match is None:
        raise CheckInputError(f"--methods takes names such as anode or anode(checkpoints=2); got {text!r}")
    name, args = match.group(1).lower(), match.group(2)
    knobs: dict[str, Any] = {}
    try:
        if args and args.strip():
            call = ast.parse(f"f({args})", mode="eval").body
            if not isinstance(call, ast.Call) or call.args:
                raise ValueError("only keyword options")
            knobs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        return ac.gradient_named(name, **knobs)
    except (SyntaxError, ValueError) as error:
        raise CheckInputError(f"--methods {text!r}: {error}") from None


def parse_device(text: str | None) -> torch.device | None:
    if text is None:
        return None
    try:
        device = torch.device(text)
    except RuntimeError:
        raise CheckInputError(f"--device must be cpu, cuda or cuda:N; got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckInputError(f"--device {text}: no CUDA device is available here; use --device cpu")
    return device


def run_check(target: str, methods: Sequence[str] | None, device: str | None) -> CheckReport:
    """Load, build and check; every bad input raises :class:`CheckInputError`."""
    chosen = [parse_method(m) for m in methods] if methods else None
    where = parse_device(device)
    model, batch, loss = build(load_factory(target))
    try:
        return ac.check(model, batch, loss, chosen, device=where)
    except NoSolveError as error:
        raise CheckInputError(str(error)) from None
    except ValueError as error:
        if "loss(model, batch)" in str(error):
            raise CheckInputError(str(error)) from None
        raise


def table(report: CheckReport) -> str:
    """The terminal table: one line per method, its plain verdict, then what it held and cost."""
    head = ("method", "verdict", "rel. error", "cosine", "signs agree", "peak held", "seconds", "NFE f/b", "worst")
    lines = [head]
    for m in report.methods:
        worst = "" if m.verdict == "exact" else ", ".join(f"{p.name} {_short(p.rel_error)}" for p in m.worst[:2])
        lines.append((
            m.method, m.verdict, _short(m.rel_error), f"{m.cosine:.6f}", f"{100 * m.sign_agreement:.1f} %",
            _bytes(m.peak_bytes), f"{m.seconds:.3f}", f"{m.nfe_forward}/{m.nfe_backward}", worst,
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    notes = [f"{m.method}: reverse reconstruction error {_short(m.reconstruction_error)}"
             for m in report.methods if m.reconstruction_error is not None]
    notes += [f"{name}: skipped, {why}" for name, why in report.skipped.items()]
    return "\n".join([*text, *notes])


def write_csv(report: CheckReport, path: Path) -> Path:
    rows = report.rows()
    columns = [*ROW_KEYS, "verdict", "reconstruction_error", "cuda_peak_bytes", "worst_parameters"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            worst = "; ".join(f"{w['name']}={w['rel_error']}" for w in row["worst_parameters"])
            writer.writerow({**row, "worst_parameters": worst})
    return path


def write_svg(report: CheckReport, path: Path) -> Path:
    """Two bar panels, relative error against Direct (log axis) and peak bytes held, one bar per method."""
    methods = report.methods
    label_w, bar_w, row_h, top = 210, 300, 24, 40
    height = top + row_h * len(methods) + 30
    errors = [m.rel_error for m in methods if math.isfinite(m.rel_error) and m.rel_error > 0]
    lo = math.floor(math.log10(min(errors))) if errors else -16
    hi = max(math.ceil(math.log10(max(errors))), lo + 1) if errors else 0
    peak = max([m.peak_bytes for m in methods] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + 2 * bar_w + 120}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<text x="{label_w}" y="20" font-weight="bold">'
             f'relative error against Direct (log, 1e{lo} to 1e{hi})</text>',
             f'<text x="{label_w + bar_w + 40}" y="20" font-weight="bold">peak bytes held for backward</text>']
    for i, m in enumerate(methods):
        y = top + i * row_h
        share = 0.0
        if math.isfinite(m.rel_error) and m.rel_error > 0:
            share = (math.log10(m.rel_error) - lo) / (hi - lo)
        colour = "#2a9d8f" if m.verdict == "exact" else "#e76f51"
        parts += [
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(m.method)}</text>',
            f'<rect x="{label_w}" y="{y + 3}" width="{max(share, 0.0) * bar_w:.1f}" height="{row_h - 8}" '
            f'fill="{colour}"/>',
            f'<text x="{label_w + 4}" y="{y + 15}">{escape(m.verdict)}</text>',
            f'<rect x="{label_w + bar_w + 40}" y="{y + 3}" width="{m.peak_bytes / peak * bar_w:.1f}" '
            f'height="{row_h - 8}" fill="#264653"/>',
            f'<text x="{label_w + bar_w + 44 + m.peak_bytes / peak * bar_w:.1f}" y="{y + 15}">'
            f'{escape(_bytes(m.peak_bytes))}</text>',
        ]
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def check_command(args: argparse.Namespace) -> int:
    try:
        report = run_check(args.target, args.methods, args.device)
    except CheckInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / f"check-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(report, out / "check.csv"), write_svg(report, out / "check.svg")]
    if args.json:
        print(json.dumps(report.rows(), indent=2))
    else:
        print(table(report))
    print(f"wrote {', '.join(str(p.resolve()) for p in written)}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _short(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
