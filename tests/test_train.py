"""The training loop: every model and data set trains, runs end diverged or cancelled when they should, a resumed
run reports exactly what an uninterrupted one does, and ANODE trains with the exact gradient of DTO."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import (  # noqa: F401  (fixture)
    Recorder,
    make_spec,
    respec,
    stand_ins,
    write_cifar,
    write_mnist,
)

from anode_lab.experiments import run_experiment
from anode_lab.experiments.train import run_train
from anode_lab.specs.train import PRESETS
from dashboard.side_by_side import ONE_BLOCK, group_rows

pytestmark = pytest.mark.usefixtures("stand_ins")  # the files these tests write are stand-ins

EXACT_RTOL = 1e-12  # ANODE vs Direct in float64: the same ops in the same order, so rounding at most
PER_STEP = {"train_loss", "train_acc", "grad_norm", "step_time", "lr"}
PER_EPOCH = {"test_loss", "test_acc", "epoch"}
MEASURED = {"peak_memory_bytes", "nfe_forward", "nfe_backward"}


class Killed(Exception):
    """Stands for the process dying mid-run."""


def _data(tmp_path: Path, dataset: str) -> str | None:
    if dataset == "mnist":
        write_mnist(tmp_path / "data", n_train=12, n_test=4)
    elif dataset in ("cifar10", "cifar100"):
        write_cifar(tmp_path / "data", dataset, per_batch=3, n_test=4)
    else:
        return None
    return str(tmp_path / "data")


ONE_STEP = [
    pytest.param("mlp_ode", "moons", {"width": 4, "hidden": 8}, id="mlp-moons"),
    pytest.param("mlp_ode", "circles", {"width": 4, "hidden": 8}, id="mlp-circles"),
    pytest.param("mlp_ode", "spirals", {"width": 4, "hidden": 8}, id="mlp-spirals"),
    pytest.param("conv_ode", "digits", {"width": 4}, id="conv-digits"),
    pytest.param("conv_ode", "mnist", {"width": 4}, id="conv-mnist"),
    pytest.param("resnet_ode", "cifar10", {"width": 4, "augment": True}, id="resnet-cifar10"),
    pytest.param("squeezenext_ode", "cifar100", {"width": 8}, id="squeezenext-cifar100"),
]


@pytest.mark.parametrize(("model", "dataset", "knobs"), ONE_STEP)
def test_one_step_of_every_model_and_data_set(tmp_path: Path, model: str, dataset: str, knobs: dict) -> None:
    spec = make_spec(model=model, dataset=dataset, root=_data(tmp_path, dataset), batch_size=8, max_steps=1,
                     n_samples=40 if model == "mlp_ode" else None, **knobs)
    rec = Recorder()
    result = run_train(spec, rec.context(tmp_path / "run"))
    assert result.status == "succeeded", result.message
    probed = {"probe_rel_error", "probe_cosine", "probe_sign_agreement"}  # the default probe: steps 1, 11, …
    assert {s for (_, s) in rec.metrics} == PER_STEP | PER_EPOCH | MEASURED | probed
    blocks = 1 if model == "mlp_ode" else (2 if model == "conv_ode" else 4)
    assert rec.metrics[(1, "nfe_forward")] == blocks * spec.ode.steps  # Euler: one evaluation per step
    assert rec.metrics[(1, "peak_memory_bytes")] > 0
    assert result.summary["steps"] == 1 and 0.0 <= result.summary["final_test_acc"] <= 1.0
    assert rec.progress[-1][:2] == (1, 1)
    assert (tmp_path / "run" / "artifacts" / "model.pt").is_file()


@pytest.mark.parametrize("name", ["cifar10-resnet-anode", "cifar10-squeezenext-anode"])
def test_paper_scale_preset_runs_one_step(tmp_path: Path, name: str) -> None:
    """The paper's networks at full width on CIFAR-format data; batch 4 instead of 256 to keep the CPU test short."""
    spec = respec(PRESETS[name], root=_data(tmp_path, "cifar10"), batch_size=4, max_steps=1, device="cpu",
                  threads=1, checkpoint_every=0)
    rec = Recorder()
    result = run_train(spec, rec.context(tmp_path / "run"))
    assert result.status == "succeeded", result.message
    assert torch.isfinite(torch.tensor(rec.series("train_loss"))).all()
    assert rec.metrics[(1, "nfe_forward")] == 4 * 2  # four ODE blocks, Euler with N_t = 2
    assert rec.metrics[(1, "lr")] == pytest.approx(0.1, rel=1e-12)


def test_training_learns_two_moons(tmp_path: Path) -> None:
    spec = make_spec(n_samples=400, epochs=10, batch_size=32, optimizer="adam", lr=0.01, weight_decay=0.0)
    rec = Recorder()
    result = run_train(spec, rec.context(tmp_path))
    losses = rec.series("train_loss")
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert result.summary["best_test_acc"] >= 0.8
    assert result.summary["best_test_acc"] == max(rec.series("test_acc"))
    assert len(rec.series("test_acc")) == 10 and rec.series("epoch") == list(range(1, 11))


def test_step_schedule_divides_lr_by_ten(tmp_path: Path) -> None:
    spec = make_spec(n_samples=32, batch_size=24, epochs=7, lr=0.5)  # one step per epoch, milestones 3 and 5
    rec = Recorder()
    run_train(spec, rec.context(tmp_path))
    torch.testing.assert_close(torch.tensor(rec.series("lr"), dtype=torch.float64),
                               torch.tensor([0.5] * 3 + [0.05] * 2 + [0.005] * 2, dtype=torch.float64),
                               rtol=1e-12, atol=0)


def test_huge_lr_diverges_keeping_the_metrics(tmp_path: Path) -> None:
    spec = make_spec(n_samples=400, batch_size=32, epochs=10, lr=10.0)
    rec = Recorder()
    result = run_train(spec, rec.context(tmp_path))
    assert result.status == "diverged"
    last = result.summary["diverged_at_step"] - 1
    assert last >= 1 and max(step for step, _ in rec.metrics) == last
    assert result.summary["final_loss"] == rec.metrics[(last, "train_loss")]
    assert "lower `lr`" in result.message


def test_should_stop_cancels_within_one_step(tmp_path: Path) -> None:
    spec = make_spec(n_samples=200, batch_size=16, epochs=5)
    rec = Recorder()
    result = run_train(spec, rec.context(tmp_path, should_stop=lambda: len(rec.series("train_loss")) >= 3))
    assert result.status == "cancelled"
    assert result.summary["steps"] == 3 and max(step for step, _ in rec.metrics) == 3


RESUMABLE = [
    pytest.param({"ode": {"steps": 2, "gradient": {"method": "adjoint"}}, "n_samples": 120, "batch_size": 16,
                  "epochs": 3, "probe_every": 2}, id="mlp-adjoint-probe"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "width": 4, "batch_size": 128, "epochs": 2,
                  "max_steps": 17}, id="conv-batchnorm-digits"),
    pytest.param({"ode": {"solver": "dopri5", "rtol": 1e-3, "gradient": {"method": "adjoint"}}, "n_samples": 120,
                  "batch_size": 16, "epochs": 2, "probe_every": 2}, id="mlp-dopri5-adjoint-probe"),
    pytest.param({"ode": {"solver": "reversible_heun", "steps": 3, "gradient": {"method": "reversible"}},
                  "n_samples": 120, "batch_size": 16, "epochs": 3, "probe_every": 2}, id="mlp-reversible-probe"),
    pytest.param({"model": "conv_ode", "dataset": "cifar10", "width": 4, "batch_size": 4, "epochs": 3,
                  "augment": True, "optimizer": "adam", "lr": 0.01}, id="conv-augment-cifar"),
]
KILLS = [pytest.param("raise", id="killed"), pytest.param("stop", id="cancelled")]


@pytest.mark.parametrize("fields", RESUMABLE)
@pytest.mark.parametrize("kill", KILLS)
def test_resumed_run_equals_uninterrupted(tmp_path: Path, fields: dict, kill: str) -> None:
    spec = make_spec(dtype="float64", checkpoint_every=4, root=_data(tmp_path, fields.get("dataset", "")), **fields)
    whole = Recorder()
    expected = run_train(spec, whole.context(tmp_path / "whole"))
    assert expected.status == "succeeded"

    broken = Recorder()
    stop_at = 6  # two steps after the checkpoint at step 4: they are reported again after the resume

    def on_metrics(step: int, values: dict) -> None:
        broken.on_metrics(step, values)
        if kill == "raise" and step == stop_at and "train_loss" in values:
            raise Killed

    ctx = broken.context(tmp_path / "broken", on_metrics=on_metrics,
                         should_stop=lambda: len(broken.series("train_loss")) >= stop_at)
    if kill == "raise":
        with pytest.raises(Killed):
            run_train(spec, ctx)
    else:
        assert run_train(spec, ctx).status == "cancelled"
    result = run_train(spec, broken.context(tmp_path / "broken"))

    assert result.status == "succeeded"
    assert broken.deterministic() == whole.deterministic()  # exact, float64 on the CPU
    drop = {"seconds"}
    assert {k: v for k, v in result.summary.items() if k not in drop} == {
        k: v for k, v in expected.summary.items() if k not in drop}
    assert not any((tmp_path / "broken" / "checkpoints").glob("*.pt"))


def test_a_checkpoint_never_runs_ahead_of_the_stored_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a worker, reports travel up a pipe and are stored when the child next asks ``should_stop`` (the answer
    comes after them). A checkpoint saved before that question could outlive the reports of its last steps when
    the worker is killed, and the resumed run would skip them: every save must follow a question that came after
    every report so far."""
    from anode_lab.experiments.checkpoints import Checkpoints

    reported: list[int] = []
    stored_up_to = [0]

    def on_metrics(step: int, values: object) -> None:
        reported.append(step)

    def should_stop() -> bool:  # the worker's answer: every report sent before the question is stored
        stored_up_to[0] = max(reported, default=0)
        return False

    saves: list[tuple[int, int]] = []
    original = Checkpoints.save

    def save(self: Checkpoints, spec: object, model: object, optimizer: object, pos: object) -> None:
        saves.append((pos.step, stored_up_to[0]))  # type: ignore[attr-defined]
        original(self, spec, model, optimizer, pos)  # type: ignore[arg-type]

    monkeypatch.setattr(Checkpoints, "save", save)
    spec = make_spec(n_samples=64, batch_size=8, epochs=2, checkpoint_every=2, probe_every=3)
    run_train(spec, Recorder().context(tmp_path, on_metrics=on_metrics, should_stop=should_stop))
    assert len(saves) >= 4
    assert all(stored >= step for step, stored in saves), saves


def test_resume_refuses_a_checkpoint_of_another_spec(tmp_path: Path) -> None:
    spec = make_spec(n_samples=64, batch_size=8, epochs=2, checkpoint_every=2)
    rec = Recorder()
    run_train(spec, rec.context(tmp_path, should_stop=lambda: len(rec.series("train_loss")) >= 3))
    with pytest.raises(ValueError, match="differs in lr"):
        run_train(respec(spec, lr=0.2), Recorder().context(tmp_path))


GRADIENTS = [
    pytest.param({"method": "anode"}, id="anode"),
    pytest.param({"method": "anode", "checkpoints": 1}, id="anode-revolve"),
]


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_anode_trains_with_the_exact_dto_gradient(tmp_path: Path, gradient: dict) -> None:
    """ANODE's probe error against Direct stays at rounding level, and its training run is Direct's."""
    fields = {"model": "conv_ode", "dataset": "digits", "width": 4, "batch_size": 64, "max_steps": 4,
              "dtype": "float64", "probe_every": 1}
    anode, direct = Recorder(), Recorder()
    run_train(make_spec(**fields, ode={"steps": 3, "gradient": gradient}), anode.context(tmp_path / "anode"))
    run_train(make_spec(**fields, ode={"steps": 3, "gradient": {"method": "direct"}}),
              direct.context(tmp_path / "direct"))
    assert len(anode.series("probe_rel_error")) == 4
    assert max(anode.series("probe_rel_error")) <= EXACT_RTOL
    assert min(anode.series("probe_cosine")) >= 1 - EXACT_RTOL
    torch.testing.assert_close(torch.tensor(anode.series("train_loss")), torch.tensor(direct.series("train_loss")),
                               rtol=EXACT_RTOL, atol=0)


def test_adjoint_probe_shows_its_gradient_error(tmp_path: Path) -> None:
    """Chen et al.'s adjoint with ReLU, Euler, N_t = 2 is not the gradient of the computed network (ANODE §2)."""
    spec = make_spec(n_samples=64, batch_size=16, max_steps=2, dtype="float64", probe_every=1,
                     ode={"steps": 2, "gradient": {"method": "adjoint"}})
    rec = Recorder()
    run_train(spec, rec.context(tmp_path))
    assert min(rec.series("probe_rel_error")) > 1e-6
    assert len(rec.series("probe_recon_error")) == 2 and all(e >= 0 for e in rec.series("probe_recon_error"))


def test_probe_leaves_training_untouched(tmp_path: Path) -> None:
    fields = {"model": "conv_ode", "dataset": "digits", "width": 4, "batch_size": 64, "max_steps": 3,
              "dtype": "float64"}
    probed, plain = Recorder(), Recorder()
    run_train(make_spec(**fields, probe_every=1), probed.context(tmp_path / "probed"))
    run_train(make_spec(**fields), plain.context(tmp_path / "plain"))
    assert probed.series("train_loss") == plain.series("train_loss")
    assert probed.series("test_acc") == plain.series("test_acc")


def test_run_experiment_dispatches_train(tmp_path: Path) -> None:
    result = run_experiment("train", make_spec(n_samples=32, batch_size=8, max_steps=2), Recorder().context(tmp_path))
    assert result.status == "succeeded" and result.summary["steps"] == 2


def test_cuda_request_without_gpu_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the edge: a machine without a GPU
    with pytest.raises(ValueError, match="set `device` to 'cpu' or 'auto'"):
        run_train(make_spec(device="cuda"), Recorder().context(tmp_path))


NEW_SOLVERS = [
    pytest.param("dopri5", "anode", id="dopri5-anode"),
    pytest.param("dopri5", "direct", id="dopri5-direct"),
    pytest.param("dopri5", "adjoint", id="dopri5-adjoint"),
    pytest.param("bosh3", "anode", id="bosh3-anode"),
    pytest.param("bosh3", "adjoint", id="bosh3-adjoint"),
    pytest.param("reversible_heun", "reversible", id="reversible_heun-reversible"),
    pytest.param("reversible_heun", "anode", id="reversible_heun-anode"),
    pytest.param("reversible_heun", "direct", id="reversible_heun-direct"),
    pytest.param("alf", "reversible", id="alf-reversible"),
]
EXACT_ADAPTIVE_RTOL = 1e-10
"""Exact methods on adaptive and reversible solves, against Direct in float64: the replay of the accepted steps
(or Reversible's algebraic reconstruction) differs from Direct's by rounding only."""


@pytest.mark.parametrize(("solver", "method"), NEW_SOLVERS)
def test_adaptive_and_reversible_solvers_train_with_probes(tmp_path: Path, solver: str, method: str) -> None:
    knobs = {"steps": 4} if solver in ("reversible_heun", "alf") else {"rtol": 1e-5, "atol": 1e-7, "step_limit": 1000}
    spec = make_spec(n_samples=64, batch_size=16, max_steps=3, dtype="float64", probe_every=1,
                     ode={"solver": solver, "gradient": {"method": method}, **knobs})
    rec = Recorder()
    result = run_train(spec, rec.context(tmp_path))
    assert result.status == "succeeded", result.message
    assert result.summary["steps"] == 3 and 0.0 <= result.summary["final_test_acc"] <= 1.0
    probed = {"probe_rel_error", "probe_cosine", "probe_sign_agreement"}  # no reverse grid to rebuild: no recon
    assert {s for (_, s) in rec.metrics} == PER_STEP | PER_EPOCH | MEASURED | probed
    errors = rec.series("probe_rel_error")
    assert len(errors) == 3
    if method == "adjoint":  # off by an amount of the order of the tolerance, not zero
        assert 1e-9 < min(errors) and max(errors) < 1e-2, errors
    else:
        assert max(errors) <= EXACT_ADAPTIVE_RTOL, errors
    if solver in ("reversible_heun", "alf"):  # f(t_0, z_0), then one evaluation per step
        assert rec.metrics[(1, "nfe_forward")] == 4 + 1
    else:
        assert rec.metrics[(1, "nfe_forward")] > 0 and rec.metrics[(1, "peak_memory_bytes")] > 0


def test_adaptive_step_limit_fails_naming_the_fix_and_may_be_raised_on_resume(tmp_path: Path) -> None:
    spec = make_spec(n_samples=64, batch_size=16, epochs=2, dtype="float64", checkpoint_every=2,
                     ode={"solver": "dopri5", "rtol": 1e-6, "atol": 1e-8, "step_limit": 50})
    rec = Recorder()
    assert run_train(spec, rec.context(tmp_path, should_stop=lambda: len(rec.series("train_loss")) >= 3)).status \
        == "cancelled"
    limited = respec(spec, ode={**spec.ode.model_dump(), "step_limit": 1})
    with pytest.raises(ValueError, match=r"dopri5 reached max_steps=1 trial steps at t=.*In the spec, raise "
                       r"`ode.step_limit` \(now 1; the run then resumes from its latest checkpoint\) or loosen "
                       r"`ode.rtol` \(now 1e-06\)"):
        run_train(limited, Recorder().context(tmp_path))  # resumes: only the step limit differs
    with pytest.raises(ValueError, match=r"differs in ode"):
        run_train(respec(spec, ode={**spec.ode.model_dump(), "rtol": 1e-4}), Recorder().context(tmp_path))
    result = run_train(spec, Recorder().context(tmp_path))
    assert result.status == "succeeded" and result.summary["steps"] == 6  # 48 training points, 16 a batch


@pytest.mark.parametrize(("blocks", "low", "high", "note"), [
    pytest.param(3, 0.0, 0.6, "", id="preset-three-blocks"),
    pytest.param(1, 0.95, 1.05, ONE_BLOCK, id="one-block"),
])
def test_the_side_by_side_preset_shows_what_anode_saves(tmp_path: Path, blocks: int, low: float, high: float,
                                                        note: str) -> None:
    """The spirals preset, one step per method as a side-by-side group runs it, through the Compare table: with
    its three blocks ANODE holds well under Direct's memory (measured 0.34×); with one block it holds as much,
    and the table says why."""
    preset = PRESETS["spirals-anode"]
    runs, payloads = [], {}
    for run_id, method in enumerate(("direct", "anode")):
        ode = {**preset.ode.model_dump(), "gradient": {"method": method}}
        spec = respec(preset, max_steps=1, blocks=blocks, ode=ode)
        recorder = Recorder()
        run_train(spec, recorder.context(tmp_path / method))
        runs.append({"id": run_id, "status": "succeeded", "spec": spec.model_dump(mode="json")})
        memory = [(step, value) for (step, series), value in recorder.metrics.items() if series == "peak_memory_bytes"]
        payloads[run_id] = {"series": {"peak_memory_bytes": {"steps": [s for s, _ in memory],
                                                             "values": [v for _, v in memory]}}}
    direct, anode = group_rows(runs, payloads)
    assert direct["peak memory ×Direct"] == 1.0 and direct["note"] == ""
    assert low <= anode["peak memory ×Direct"] <= high, anode
    assert anode["note"] == note
