"""`anode_core.check` on a model written the torchdiffeq way: Done-when numbers of issue 14."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import anode_core as ac
from anode_core.instruments.compare import compare_gradients

sys.path.insert(0, str(Path(__file__).parent / "data"))
import check_models


@pytest.fixture(scope="module", params=["odesolve", "odeint"])
def report(request: pytest.FixtureRequest) -> ac.CheckReport:
    """The model written with odesolve, and as a torchdiffeq user writes it with anode_core.odeint."""
    model, batch, loss = (check_models.build if request.param == "odesolve" else check_models.build_odeint)()
    return ac.check(model, batch, loss)


AUTO = "Anode(checkpoints='auto')"  # the default of every solve that names no gradient method


def rows(report: ac.CheckReport) -> dict[str, ac.MethodCheck]:
    return {m.method: m for m in report.methods}


def written_with_odeint(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.callspec.params["report"] == "odeint")


def test_methods_and_solves(report: ac.CheckReport, request: pytest.FixtureRequest) -> None:
    assert list(rows(report)) == [
        "Direct", "Anode", AUTO, "Anode(checkpoints=2)", "Adjoint", "Adjoint(reconstruct=False)"
    ]
    # odesolve: one solve per interval; an odeint call shows itself to the instruments once
    assert report.solves == (1 if written_with_odeint(request) else 3)
    assert list(report.skipped) == ["Reversible"]  # Euler is not algebraically reversible
    assert "a solver of kind reversible (reversible_heun, alf)" in report.skipped["Reversible"]


def test_direct_and_anode_are_exact(report: ac.CheckReport) -> None:
    """ReLU field, Euler, step 0.5, float64: Anode (with and without checkpoints) equals Direct to ≤ 1e-10."""
    for name in ("Direct", "Anode", AUTO, "Anode(checkpoints=2)"):
        row = rows(report)[name]
        assert row.rel_error <= 1e-10, name
        assert row.cosine == pytest.approx(1.0, abs=1e-10)
        assert row.sign_agreement == pytest.approx(1.0, abs=0.0)
        assert row.verdict == "exact"


def test_the_adjoint_is_visibly_off(report: ac.CheckReport) -> None:
    """Measured: rel. error 0.21 (reconstructing) and 0.22 (stored states), 8–10 % of entries of opposite sign."""
    for name in ("Adjoint", "Adjoint(reconstruct=False)"):
        row = rows(report)[name]
        assert row.rel_error > 0.05, name
        assert row.sign_agreement < 0.97, name
        assert row.verdict.startswith(("opposite sign on", "off by")), row.verdict
        assert row.worst[0].rel_error >= max(p.rel_error for p in row.worst[1:])
    assert rows(report)["Adjoint"].reconstruction_error > 1e-3  # a stiff ReLU field does not reverse exactly
    assert rows(report)["Adjoint(reconstruct=False)"].reconstruction_error is None


def test_peak_memory_direct_above_anode_above_adjoint(report: ac.CheckReport) -> None:
    r = rows(report)
    assert r["Direct"].peak_bytes > r["Anode"].peak_bytes > r["Adjoint"].peak_bytes > 0
    assert r["Anode"].peak_bytes > r["Anode(checkpoints=2)"].peak_bytes


def test_field_evaluations(report: ac.CheckReport, request: pytest.FixtureRequest) -> None:
    """3 intervals of 2 Euler steps. Through odesolve: 6 forward for all; backward none for Direct, 6 for the
    adjoint, and for Anode a recomputation of the two solves whose graph is not the last kept. Through odeint: the
    same 6 forward (the first evaluation, which finds the tensors the field reads, is the first step's own); the
    default (auto) runs the grid once and rebuilds all but its kept tail (segments of ⌈sqrt(6)⌉ = 3 steps; the
    trailing whole ones within 3/10 of the steps are kept, one at least), the first step's first slope being the
    probe's (not evaluated again); the adjoint gets the grid handed over and solves it again with its own forward
    (12 = 6 + 6)."""
    r = rows(report)
    if written_with_odeint(request):
        forward = (r["Direct"].nfe_forward, r["Anode"].nfe_forward, r[AUTO].nfe_forward, r["Adjoint"].nfe_forward)
        assert forward == (6, 6, 6, 12)
        backward = (r["Direct"].nfe_backward, r["Anode"].nfe_backward, r[AUTO].nfe_backward, r["Adjoint"].nfe_backward)
        k = math.ceil(math.sqrt(6))
        assert backward == (0, 6, 6 - max(k, k * (3 * 6 // (10 * k))) - 1, 6)
        return
    assert {m.nfe_forward for m in report.methods} == {6}
    assert (r["Direct"].nfe_backward, r["Adjoint"].nfe_backward) == (0, 6)
    assert r["Anode"].nfe_backward == 6 - 6 // report.solves  # every solve but the last kept one is recomputed


def test_check_leaves_rng_and_buffers_alone() -> None:
    model, batch, loss = check_models.build()
    before = torch.get_rng_state()
    ac.check(model, batch, loss, methods=["anode"])
    assert torch.equal(torch.get_rng_state(), before)
    assert all(p.grad is None for p in model.parameters())


def test_named_methods_are_parsed_once() -> None:
    model, batch, loss = check_models.build()
    report = ac.check(model, batch, loss, methods=["adjoint", ac.Anode(checkpoints=1)])
    assert [m.method for m in report.methods] == ["Direct", "Adjoint", "Anode(checkpoints=1)"]


class DropoutField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3))

    def forward(self, t: float, z: Tensor) -> Tensor:
        return self.net(z)


def test_every_method_sees_the_same_dropout_masks() -> None:
    """An ODEBlock built with an explicit method is switched too; dropout replays, so Anode stays exact."""
    torch.manual_seed(0)
    model = nn.Sequential(ac.ODEBlock(DropoutField(), steps=3, gradient="direct")).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    report = ac.check(model, x, lambda m, b: m(b).square().sum(), methods=["anode"])
    assert report.methods[1].rel_error <= 1e-12


def test_a_model_without_anode_core_solves_is_refused() -> None:
    model, batch, loss = check_models.no_solve()
    with pytest.raises(ac.NoSolveError, match="replace torchdiffeq.odeint with anode_core.odeint"):
        ac.check(model, batch, loss)


def test_a_loss_that_is_not_a_scalar_is_refused() -> None:
    model, batch, loss = check_models.not_scalar()
    with pytest.raises(ValueError, match=r"`loss\(model, batch\)` must return a scalar floating-point tensor; got "
                       r"shape \(4, 16, 1\)"):
        ac.check(model, batch, loss)


@pytest.mark.parametrize(
    "args,message",
    [
        pytest.param(("model", None, None), "`model` must be a torch.nn.Module; got str", id="model"),
        pytest.param((nn.Linear(1, 1), None, 3), "`loss` must be callable", id="loss"),
    ],
)
def test_bad_arguments_name_the_argument(args: tuple[object, object, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ac.check(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rel,cosine,sign,verdict",
    [
        pytest.param(1e-15, 1.0, 1.0, "exact", id="exact"),
        pytest.param(0.032, 0.998, 1.0, "off by 3.2 %, cosine 0.998", id="off"),
        pytest.param(0.5, 0.9, 0.88, "opposite sign on 12 % of entries", id="sign"),
        pytest.param(float("nan"), float("nan"), 0.0, "not finite: the gradient holds NaN or inf", id="nan"),
    ],
)
def test_verdicts(rel: float, cosine: float, sign: float, verdict: str) -> None:
    row = ac.MethodCheck("X", rel, cosine, sign, (), 0, None, 0.0, 0, 0, None, exact_below=1e-13)
    assert row.verdict == verdict


class ClosureField(nn.Module):
    """A torchdiffeq-style model whose field is a closure over ``w``: a tensor the solve is never handed."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 2, dtype=torch.float64) * 0.5)
        self.head = nn.Linear(2, 1, dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        times = torch.tensor([0.0, 1.0], dtype=torch.float64)
        z = ac.odeint(lambda t, z: torch.tanh(z @ self.w), x, times, method="rk4", options={"step_size": 0.25})[-1]
        out: Tensor = self.head(z)
        return out


def test_a_closures_tensor_reaches_every_method_through_odeint() -> None:
    """``w`` is read from outside the field (a closure, never handed to the solve): every method still sees it,
    as backprop does (issue 21 item 1), so none reports it unseen."""
    torch.manual_seed(0)
    report = ac.check(ClosureField(), torch.randn(8, 2, dtype=torch.float64), lambda m, b: m(b).pow(2).mean(),
                      ["anode", "adjoint"])
    direct, anode, adjoint = report.methods
    assert direct.unseen == anode.unseen == adjoint.unseen == ()
    assert anode.verdict == "exact" and adjoint.rel_error < 1e-2  # rk4, h = 0.25: the adjoint is off a little


def test_a_gradient_that_came_back_zero_names_the_cause() -> None:
    """A method that returns zero for ``w`` (Direct's is not) says so and why, instead of "opposite sign on 57 %"."""
    row = ac.MethodCheck("Plugin", 1.0, 0.0, 0.43, (), 0, None, 0.0, 0, 0, None, exact_below=1e-13, unseen=("w",))
    assert row.verdict.startswith("zero gradient for w (Direct's is not): the method never saw it")
    assert "closure" in row.verdict and "adjoint_params" in row.verdict


def test_a_cosine_stays_within_one_when_rounding_would_step_past_it() -> None:
    """v against itself: v·v / (‖v‖‖v‖) rounds to 1.0000000000000002 for this v; the cosine reads 1."""
    vectors = [torch.randn(7, generator=generator, dtype=torch.float64)
               for generator in [torch.Generator().manual_seed(0)] for _ in range(4)]
    v = vectors[3]
    assert (v @ v).item() / (v.norm().item() * v.norm().item()) > 1.0  # the case this test is about
    same = compare_gradients({"v": v}, {"v": v.clone()})
    assert same.cosine == 1.0 and same.per_parameter[0].cosine == 1.0
    opposite = compare_gradients({"v": v}, {"v": -v})
    assert opposite.cosine == -1.0
