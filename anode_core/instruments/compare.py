"""Compare a gradient with the exact (Direct) gradient of the same computed network."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParameterComparison:
    name: str
    numel: int
    rel_error: float
    cosine: float
    sign_agreement: float


@dataclass(frozen=True)
class GradientComparison:
    """Over all parameters at once; ``per_parameter`` breaks it down. Non-finite gradients give ``nan``/``inf``."""

    rel_error: float
    cosine: float
    sign_agreement: float
    per_parameter: tuple[ParameterComparison, ...]


def compare_gradients(reference: Mapping[str, Tensor], candidate: Mapping[str, Tensor]) -> GradientComparison:
    """Relative error ``‖g − g_ref‖/‖g_ref‖``, cosine, and the fraction of entries whose sign agrees."""
    if reference.keys() != candidate.keys():
        raise ValueError(
            f"`candidate` must hold the same parameters as `reference`; differ in "
            f"{sorted(reference.keys() ^ candidate.keys())}"
        )
    parts = [
        _compare(name, reference[name].detach().double().flatten(), candidate[name].detach().double().flatten())
        for name in reference
    ]
    ref = torch.cat([reference[n].detach().double().flatten() for n in reference])
    cand = torch.cat([candidate[n].detach().double().flatten() for n in reference])
    whole = _compare("all", ref, cand)
    return GradientComparison(whole.rel_error, whole.cosine, whole.sign_agreement, tuple(parts))


def _compare(name: str, ref: Tensor, cand: Tensor) -> ParameterComparison:
    ref_norm = ref.norm().item()
    diff = (cand - ref).norm().item()
    rel = diff / ref_norm if ref_norm > 0 else (0.0 if diff == 0 else float("inf"))
    denom = ref_norm * cand.norm().item()
    cosine = (ref @ cand).item() / denom if denom > 0 else float("nan")
    cosine = cosine if math.isnan(cosine) else min(1.0, max(-1.0, cosine))  # rounding may step past ±1
    sign = (torch.sign(ref) == torch.sign(cand)).double().mean().item() if ref.numel() else 1.0
    return ParameterComparison(name, ref.numel(), rel, cosine, sign)
