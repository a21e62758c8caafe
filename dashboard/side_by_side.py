"""What the compare page shows about runs side by side: each series' title and unit, and the one-glance table of
a group (final accuracy, gradient error at the end, memory and time as multiples of Direct's). Pure functions
over the API's runs and metric payloads; no Streamlit, no network.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.series import points_of
from dashboard.tables import finite, method_label


@dataclass(frozen=True)
class SeriesInfo:
    """How a metric series is drawn: its chart title, its y axis (name and unit) and its usual scale."""

    title: str
    y_title: str
    log_y: bool = False
    bytes: bool = False


SERIES: dict[str, SeriesInfo] = {
    "train_loss": SeriesInfo("Training loss (batch)", "cross-entropy", log_y=True),
    "test_loss": SeriesInfo("Test loss", "cross-entropy", log_y=True),
    "train_acc": SeriesInfo("Training accuracy (batch)", "fraction correct"),
    "test_acc": SeriesInfo("Test accuracy", "fraction correct"),
    "probe_rel_error": SeriesInfo("Gradient error against the exact gradient (Direct)", "relative error",
                                  log_y=True),
    "probe_cosine": SeriesInfo("Cosine with the exact gradient", "cosine"),
    "probe_sign_agreement": SeriesInfo("Signs agreeing with the exact gradient", "fraction of entries"),
    "probe_recon_error": SeriesInfo("Reverse-reconstruction error", "relative error", log_y=True),
    "peak_memory_bytes": SeriesInfo("Memory held for backward", "bytes", bytes=True),
    "cuda_peak_bytes": SeriesInfo("CUDA peak memory", "bytes", bytes=True),
    "step_time": SeriesInfo("Step time", "seconds"),
    "grad_norm": SeriesInfo("Gradient norm", "L2 norm", log_y=True),
    "nfe_forward": SeriesInfo("Field evaluations, forward", "evaluations per step"),
    "nfe_backward": SeriesInfo("Field evaluations, backward", "evaluations per step"),
    "lr": SeriesInfo("Learning rate", "learning rate"),
    "epoch": SeriesInfo("Epoch", "epoch"),
}
GROUP_SERIES = ("train_loss", "test_acc", "probe_rel_error", "peak_memory_bytes", "step_time")
"""What a side-by-side group shows first: loss, accuracy, gradient error, memory, step time."""


def series_info(name: str) -> SeriesInfo:
    """The series' title and axis; a series this table does not know is named after its key, in words."""
    return SERIES.get(name) or SeriesInfo(name.replace("_", " ").capitalize(), name.replace("_", " "))


ONE_BLOCK = "one block: add blocks or checkpoints"
"""Why ANODE holds as much memory as Direct: with one ODE block it keeps that block's graph, as Direct does."""
SAME_MEMORY = 0.95
"""ANODE's peak memory at or above this multiple of Direct's counts as no saving."""


def one_block(spec: Mapping[str, Any]) -> bool:
    """Whether a training spec's network has a single ODE block differentiated by ANODE without checkpoints, so
    that ANODE saves no memory over Direct (an MLP-ODE has ``blocks`` of them, one by default)."""
    return (spec.get("model", "mlp_ode") == "mlp_ode" and (spec.get("blocks") or 1) == 1)


def run_method(run: Mapping[str, Any]) -> str:
    if run.get("kind") == "external":  # a tracked loop says which method it trains with, if it does
        return str((run.get("spec") or {}).get("gradient") or run.get("name") or f"run {run.get('id')}")
    return method_label(((run.get("spec") or {}).get("ode") or {}).get("gradient") or {})


def _values(payload: Mapping[str, Any] | None, name: str) -> list[float]:
    return [float(v) for v in points_of(payload, name)[1] if v is not None and finite(v)] if payload else []


@dataclass(frozen=True)
class _Facts:
    method: str
    status: str | None
    accuracy: float | None
    error: float | None
    memory: float | None
    time: float | None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def group_rows(runs: Sequence[Mapping[str, Any]], payloads: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: method, status, final test accuracy, gradient error at the last probe, peak memory held
    for backward and median step time, both as multiples of the Direct run's (empty without a Direct run), and a
    note saying why when ANODE holds as much memory as Direct on a network of one block."""
    facts = []
    for run in runs:
        payload = payloads.get(run["id"])
        accuracy = (run.get("summary") or {}).get("final_test_acc")
        tests, errors, memory, times = (_values(payload, name) for name in
                                        ("test_acc", "probe_rel_error", "peak_memory_bytes", "step_time"))
        facts.append(_Facts(run_method(run), run.get("status"),
                            float(accuracy) if accuracy is not None and finite(accuracy)
                            else (tests[-1] if tests else None),
                            errors[-1] if errors else None, max(memory) if memory else None,
                            statistics.median(times) if times else None))
    direct = next((f for f in facts if f.method == "direct"), None)
    rows = []
    for run, f in zip(runs, facts, strict=True):
        held = _ratio(f.memory, direct.memory if direct else None)
        same = f.method == "anode" and held is not None and held >= SAME_MEMORY
        rows.append({"method": f.method, "status": f.status, "final test accuracy": f.accuracy,
                     "gradient error at the end": f.error, "peak memory ×Direct": held,
                     "time ×Direct": _ratio(f.time, direct.time if direct else None),
                     "note": ONE_BLOCK if same and one_block(run.get("spec") or {}) else ""})
    return rows
