"""Measured memory against the analytic model of ANODE §3, ``anode_core.MemoryModel`` (conv field, L = 4 blocks).

``MemoryMeter`` counts the bytes autograd saves for backward (and the states a method keeps outside autograd),
each storage once. A = ``saved_bytes_of_one_evaluation``, S = one block input, s = stages.
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from helpers import SOLVERS, conv_field, seeded_randn
from torch import Tensor, nn

import anode_core as ac
from anode_core.held import note_held

BLOCKS = 4
MODEL_FACTOR = 1.25


def conv_net(steps: int, solver: ac.Solver = ac.Euler()) -> tuple[nn.Sequential, Tensor]:
    fields = [conv_field(4, "relu", seed=i, dtype=torch.float32) for i in range(BLOCKS)]
    model = nn.Sequential(*(ac.ODEBlock(f, steps=steps, solver=solver) for f in fields))
    return model, seeded_randn(1, 4, 4, 4, seed=0, dtype=torch.float32)


def peak(steps: int, method: ac.GradientMethod, solver: ac.Solver = ac.Euler()) -> int:
    model, x = conv_net(steps, solver)
    return ac.measure_gradient(model, lambda m: m(x).square().mean(), method).peak_bytes


def memory_model(steps: int, solver: ac.Solver = ac.Euler()) -> ac.MemoryModel:
    model, x = conv_net(steps, solver)
    eval_bytes = ac.saved_bytes_of_one_evaluation(model[0].field, x)
    return ac.MemoryModel(BLOCKS, x.numel() * x.element_size(), solver.stages, steps, eval_bytes)


def assert_within_factor(measured: int, modelled: int, factor: float) -> None:
    assert modelled / factor <= measured <= modelled * factor, f"measured {measured} B, model {modelled} B"


@pytest.mark.parametrize("solver", SOLVERS)
def test_anode_peak_follows_its_model(solver: ac.Solver) -> None:
    """Anode holds L·S + s·N_t·A: within 1.25× either way (measured 0.97–0.99 of the model)."""
    steps = 8
    assert_within_factor(peak(steps, ac.Anode(), solver), memory_model(steps, solver).anode(), MODEL_FACTOR)


@pytest.mark.parametrize(
    "method,modelled",
    [
        pytest.param(ac.Direct(), lambda m: m.direct(), id="direct"),
        pytest.param(ac.Anode(checkpoints=2), lambda m: m.anode(2), id="anode-c2"),
        pytest.param(ac.Adjoint(), lambda m: m.adjoint(True), id="adjoint"),
        pytest.param(ac.Adjoint(reconstruct=False), lambda m: m.adjoint(False), id="adjoint-stored"),
    ],
)
def test_other_methods_follow_their_models(method: ac.GradientMethod, modelled) -> None:
    """Measured 0.86 (adjoint) to 1.01 (direct) of the model."""
    steps = 8
    assert_within_factor(peak(steps, method), modelled(memory_model(steps)), MODEL_FACTOR)


def test_direct_holds_about_L_times_more_than_anode() -> None:
    """Direct keeps every block's graph, Anode one block's: the ratio approaches L.

    At N_t = 32 it must be ≥ 0.75·L (measured 3.89 for L = 4).
    """
    steps = 32
    ratio = peak(steps, ac.Direct()) / peak(steps, ac.Anode())
    assert ratio >= 0.75 * BLOCKS
    assert ratio <= BLOCKS * 1.01  # and cannot beat L: Anode holds at least one block's graph


@pytest.mark.slow
def test_anode_with_checkpoints_does_not_grow_with_steps() -> None:
    """(L + c)·S + s·A: independent of N_t."""
    method = ac.Anode(checkpoints=4)
    assert peak(256, method) <= peak(32, method)


def test_adjoint_does_not_grow_with_steps() -> None:
    assert peak(64, ac.Adjoint()) <= peak(8, ac.Adjoint())


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(ac.Direct(), id="direct"),
        pytest.param(ac.Anode(), id="anode"),
        pytest.param(ac.Adjoint(reconstruct=False), id="adjoint-stored"),
    ],
)
def test_the_other_methods_grow_with_steps(method: ac.GradientMethod) -> None:
    """The contrast: memory linear in N_t (8 → 32 steps holds more than 3× as much)."""
    assert peak(32, method) > 3 * peak(8, method)


# --- The meter itself -------------------------------------------------------------------------------------


def test_a_storage_saved_many_times_is_counted_once() -> None:
    x = torch.randn(256, dtype=torch.float64, requires_grad=True)
    with ac.MemoryMeter() as meter:
        y = x * 2.0  # a non-leaf of 2 KiB
        z = y * y  # saves y twice
        w = y.view(16, 16).exp()  # exp saves its output: a new storage
        v = (y.view(16, 16) * y.view(16, 16)).sum()  # two views of y's storage, saved twice
        held = meter.current_bytes
        total = (z.sum() + w.sum() + v).backward()
    assert total is None
    assert held == 2 * y.numel() * y.element_size()  # y once, exp's output once
    assert meter.peak_bytes == held
    assert meter.current_bytes == 0  # all released once backward freed the graph


def test_parameters_and_leaf_inputs_are_not_counted() -> None:
    layer = nn.Linear(64, 64).double()
    x = torch.randn(8, 64, dtype=torch.float64, requires_grad=True)
    with ac.MemoryMeter() as meter:
        out = layer(x)  # saves x (a leaf) and the weight (a parameter)
        held = meter.current_bytes
    del out
    assert held == 0


def test_saved_bytes_of_one_evaluation_counts_what_the_field_saves() -> None:
    """Linear → tanh → Linear saves the input, tanh's output (the second Linear's input too), nothing else."""
    field = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 5)).double()

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = field

        def forward(self, t: float, z: Tensor) -> Tensor:
            return self.net(z)

    z = torch.randn(3, 5, dtype=torch.float64)
    assert ac.saved_bytes_of_one_evaluation(Field(), z) == (3 * 5 + 3 * 7) * 8


def test_memory_model_arithmetic() -> None:
    m = ac.MemoryModel(blocks=4, state_bytes=100, stages=2, steps=8, eval_bytes=300)
    assert m.direct() == 4 * 8 * 2 * 300
    assert m.anode() == 4 * 100 + 2 * 8 * 300
    assert m.anode(3) == (4 + 3) * 100 + 2 * 300
    assert m.adjoint() == 4 * 100 + 300
    assert m.adjoint(reconstruct=False) == 4 * 100 + 4 * 8 * 100 + 300


def test_meter_releases_graphs_kept_with_retain_graph() -> None:
    """A saved output (ReLU's) held by the meter must not tie itself to its own grad_fn: after a
    ``retain_graph=True`` backward (torchdiffeq's adjoint does this) and dropping the graph, nothing stays counted."""
    x = torch.randn(64, 64, requires_grad=True)
    with ac.MemoryMeter() as meter:
        y = torch.relu(x @ x).sum()
        (g,) = torch.autograd.grad(y, x, retain_graph=True)
        assert meter.current_bytes > 0
        del y, g
        gc.collect()
        assert meter.current_bytes == 0


def test_anode_keeps_no_graph_under_no_grad() -> None:
    """Evaluation under ``torch.no_grad`` must hold nothing for backward, even though the field's parameters
    require grad (a custom Function still reports them as needing it)."""
    torch.manual_seed(0)
    from anode_lab.experiments.fields import MLPField

    block = ac.ODEBlock(MLPField(4, 16, "tanh"), steps=8)
    with ac.MemoryMeter() as meter, torch.no_grad():
        block(torch.randn(32, 4))
        assert meter.peak_bytes == 0


def test_held_states_reach_only_the_meters_of_their_own_thread() -> None:
    """The registry of active meters is thread-local, like saved-tensor hooks: a meter in this thread does not
    count what another thread announces, and one open in that thread does."""
    held = torch.ones(1000)
    seen: dict[str, int] = {}

    def other_thread() -> None:
        with ac.MemoryMeter() as theirs:
            note_held(held)
            seen["theirs"] = theirs.current_bytes

    with ac.MemoryMeter() as mine:
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert mine.current_bytes == 0
        note_held(held)
        assert mine.current_bytes == held.numel() * held.element_size()
    assert seen["theirs"] == held.numel() * held.element_size()


def test_auto_checkpoints_halve_directs_peak_on_one_long_solve() -> None:
    """One odeint call of 128 rk4 steps (a torchdiffeq model's single block), its default gradient: ⌈√128⌉ = 12
    kept states and one 12-step segment's graph against Direct's 128 steps: at most half of Direct's peak (the
    issue's bound; measured 0.10)."""
    field, x = conv_field(4, "relu", seed=0, dtype=torch.float32), seeded_randn(2, 4, 6, 6, seed=1, dtype=torch.float32)
    t = torch.tensor([0.0, 1.0])
    peaks = {}
    for method in (ac.Direct(), None):
        with ac.MemoryMeter() as meter:
            out = ac.odeint(field, x, t, method="rk4", options={"step_size": 1 / 128}, gradient=method)
            out[-1].square().mean().backward()
        peaks[method] = meter.peak_bytes
    assert peaks[None] <= 0.5 * peaks[ac.Direct()], peaks


@pytest.mark.parametrize("blocks", [1, 3])
def test_auto_checkpoints_rebuild_every_step_once_but_the_latest_segment(blocks: int) -> None:
    """16 steps in segments of 4: backward evaluates each block's 16 steps once, except the latest block's last
    segment, whose saved tensors are kept from the forward pass (backward needs them first)."""
    model, x = conv_net(16, ac.RK4())
    model = model[:blocks]
    m = ac.measure_gradient(model, lambda net: net(x).square().mean(), ac.Anode(checkpoints="auto"))
    assert m.nfe_forward == blocks * 16 * 4
    assert m.nfe_backward == (blocks * 16 - 4) * 4
