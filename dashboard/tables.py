"""Runs, specs and artifact tables shaped for display: pure functions, no Streamlit, no network."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard

from dashboard.text import csv_cell

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "diverged")
STATUS_COLOURS = {"queued": "gray", "running": "blue", "succeeded": "green", "failed": "red",
                  "cancelled": "orange", "diverged": "violet"}
"""Streamlit's named colours, for ``:colour-badge[status]``."""

METHOD_COLOURS = {
    "direct": "#222222", "anode": "#1f77b4", "adjoint": "#d62728", "adjoint(stored)": "#ff7f0e",
    "finite_difference": "#7f7f7f", "reversible": "#2ca02c",
}
CHECKPOINT_COLOURS = ("#6baed6", "#3182bd", "#08519c", "#9ecae1")
METHOD_DASHES = {"direct": "solid", "anode": "dash", "adjoint": "dot", "adjoint(stored)": "dashdot",
                 "reversible": "longdashdot"}
"""With the colours, so that methods whose curves coincide (Direct and ANODE are exact; the adjoint and its
stored-state twin nearly agree) stay visible on top of each other."""
OTHER_METHOD_COLOUR = "#9467bd"
"""A method the table does not know (a plugin's)."""
RUN_COLOURS = (
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173",
    "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#cedb9c",
)
"""For runs without one gradient method (sweeps, demos): one colour per run, chosen by its id, none of them a
method's colour."""

MISSING = "—"
"""What a table shows where a run has no value yet (a queued run's accuracy), instead of "None"."""
ADAPTIVE_SOLVERS = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "tsit5", "dopri8")
"""Solvers whose sweep cells run along ``tolerances`` (the catalog's ``kind`` says so to the forms; a run row
has no catalog at hand)."""
TABLE_COLUMNS = ("id", "name", "kind", "status", "method", "solver", "N_t", "activation", "best accuracy",
                 "duration", "created")


def method_dash(label: str) -> str:
    return METHOD_DASHES.get(label, "longdash" if not label.startswith("anode(c=") else "dashdot")


def method_colour(label: str) -> str:
    """A gradient method's colour, the same on every page (``anode(c=…)`` in blues)."""
    if label in METHOD_COLOURS:
        return METHOD_COLOURS[label]
    if label.startswith("anode(c="):
        digits = "".join(ch for ch in label if ch.isdigit())
        return CHECKPOINT_COLOURS[int(digits or 0) % len(CHECKPOINT_COLOURS)]
    return OTHER_METHOD_COLOUR


def run_colour(run: Mapping[str, Any]) -> str:
    """A training run's colour is its gradient method's, on every page (Runs, Run detail, Compare); a run without
    one method (a sweep, a demo) keeps one by its id."""
    gradient = ((run.get("spec") or {}).get("ode") or {}).get("gradient")
    if isinstance(gradient, Mapping) and gradient.get("method"):
        return method_colour(method_label(gradient))
    return RUN_COLOURS[(int(run["id"]) - 1) % len(RUN_COLOURS)]


def run_label(run: Mapping[str, Any]) -> str:
    name = run.get("name") or _default_name(run)
    return f"#{run['id']} {name}"


def _default_name(run: Mapping[str, Any]) -> str:
    spec = run.get("spec") or {}
    if run.get("kind") == "demo":
        return str(spec.get("name", "demo"))
    if run.get("kind") == "compare":
        return "sweep"
    return f"{spec.get('model', 'train')} on {spec.get('dataset', '?')}"


def method_label(gradient: Mapping[str, Any]) -> str:
    """``anode``, ``anode(c=2)``, ``adjoint(stored)``: the labels the sweeps write in ``results.csv``."""
    method = str(gradient.get("method", "?"))
    if method == "anode" and gradient.get("checkpoints") is not None:
        return f"anode(c={gradient['checkpoints']})"
    if method == "adjoint" and gradient.get("reconstruct") is False:
        return "adjoint(stored)"
    return method


def method_options(catalog: Mapping[str, Any]) -> list[str]:
    """Every gradient method the catalog offers, then the variants its default sweep compares
    (``adjoint(stored)``) and revolve checkpoints (``anode(c=4)``): the labels a user can pick."""
    return list(dict.fromkeys([*(m["name"] for m in catalog["gradient_methods"]),
                               *(method_label(m) for m in catalog["kinds"]["compare"]["default"]["methods"]),
                               "anode(c=4)"]))


def method_from_label(label: str) -> dict[str, Any]:
    """The inverse of :func:`method_label`."""
    if label.startswith("anode(c=") and label.endswith(")"):
        return {"method": "anode", "checkpoints": int(label[len("anode(c="):-1])}
    if label == "adjoint(stored)":
        return {"method": "adjoint", "reconstruct": False}
    return {"method": label}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration_seconds(run: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Seconds from start to finish; for a running run, to ``now``."""
    started = parse_time(run.get("started_at"))
    if started is None:
        return None
    finished = parse_time(run.get("finished_at")) or (now or datetime.now(UTC))
    return max(0.0, (finished - started).total_seconds())


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _ode_columns(run: Mapping[str, Any]) -> dict[str, Any]:
    spec = run.get("spec") or {}
    kind = run.get("kind")
    if kind == "train":
        ode = spec.get("ode") or {}
        return {"method": method_label(ode.get("gradient") or {}), "solver": ode.get("solver", ""),
                "N_t": steps_label(ode), "activation": ode.get("activation", "")}
    if kind == "compare":
        steps = spec.get("steps") or []
        tolerances = spec.get("tolerances") or []
        axes = [f"{min(steps)}–{max(steps)}" if steps else ""]
        if tolerances and any(s in ADAPTIVE_SOLVERS for s in spec.get("solvers") or []):
            axes.append(f"rtol {max(tolerances):g}–{min(tolerances):g}")
        return {"method": ", ".join(method_label(m) for m in spec.get("methods") or []),
                "solver": ", ".join(spec.get("solvers") or []),
                "N_t": ", ".join(a for a in axes if a),
                "activation": ", ".join(spec.get("activations") or [])}
    steps = spec.get("steps") or []
    return {"method": spec.get("name", ""), "solver": ", ".join(spec.get("solvers") or []),
            "N_t": ", ".join(str(n) for n in steps), "activation": ""}


def steps_label(ode: Mapping[str, Any]) -> str:
    """N_t of a training run's ODE blocks, or for an adaptive solver (no ``steps``) its tolerance."""
    if ode.get("steps") is not None:
        return str(ode["steps"])
    return f"rtol {ode['rtol']:g}" if finite(ode.get("rtol")) else ""


def run_row(run: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """One line of the runs table (:data:`TABLE_COLUMNS`); text a spreadsheet would read as a formula is
    neutralised (the table's CSV export writes the cells as shown)."""
    summary = run.get("summary") or {}
    best = summary.get("best_test_acc")
    created = parse_time(run.get("created_at"))
    return {
        "id": run["id"],
        "name": csv_cell(run.get("name") or _default_name(run)),
        "kind": run.get("kind", ""),
        "status": run.get("status", ""),
        **_ode_columns(run),
        "best accuracy": float(best) if isinstance(best, (int, float)) else None,
        "duration": duration_seconds(run, now),
        "created": created.astimezone().strftime("%Y-%m-%d %H:%M:%S") if created else "",
    }


def filter_rows(rows: Iterable[dict[str, Any]], *, statuses: Sequence[str] = (), kinds: Sequence[str] = (),
                text: str = "") -> list[dict[str, Any]]:
    needle = text.strip().lower()
    return [
        row for row in rows
        if (not statuses or row["status"] in statuses) and (not kinds or row["kind"] in kinds)
        and (not needle or needle in str(row["name"]).lower() or needle in str(row["method"]).lower())
    ]


def sort_rows(rows: Iterable[dict[str, Any]], column: str, descending: bool) -> list[dict[str, Any]]:
    """Rows ordered by ``column``; empty cells last whichever the direction."""
    rows = list(rows)
    present = [r for r in rows if r.get(column) not in (None, "")]
    missing = [r for r in rows if r.get(column) in (None, "")]

    def key(row: dict[str, Any]) -> Any:
        value = row[column]
        return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value).lower())

    return sorted(present, key=key, reverse=descending) + missing


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ode": {"steps": 2}}`` -> ``{"ode.steps": 2}``; lists become comma-separated text."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        elif isinstance(value, list):
            out[path] = ", ".join(method_label(v) if isinstance(v, Mapping) else str(v) for v in value)
        else:
            out[path] = value
    return out


def differing(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flattened spec fields whose values are not the same in every spec."""
    flat = [flatten(s) for s in specs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def parse_csv(data: bytes | str) -> list[dict[str, Any]]:
    """A CSV artifact as rows; numbers become floats (``nan``/``inf`` too), empty cells ``None``."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _number(value: str | None) -> Any:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return number


def finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def distinct(rows: Iterable[Mapping[str, Any]], key: str) -> list[Any]:
    return list(dict.fromkeys(row.get(key) for row in rows if row.get(key) is not None))


def select(rows: Iterable[Mapping[str, Any]], **equal: Any) -> list[Mapping[str, Any]]:
    return [row for row in rows if all(row.get(k) == v for k, v in equal.items())]


def summary_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Final metrics (the run summaries) next to the spec fields on which the runs differ; formula-like text
    neutralised as in :func:`run_row`."""
    keys = differing([r.get("spec") or {} for r in runs])
    out = []
    for run in runs:
        summary = {k: v for k, v in (run.get("summary") or {}).items() if not isinstance(v, (dict, list))}
        flat = flatten(run.get("spec") or {})
        row = {"run": run_label(run), "status": run.get("status"), **summary, **{k: flat.get(k) for k in keys}}
        out.append({k: csv_cell(v) for k, v in row.items()})
    return out
