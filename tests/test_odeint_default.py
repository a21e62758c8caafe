"""``odeint``'s default gradient, ``Anode(checkpoints="auto")``, at the solver's own cost (issue 21, items 4 and 5).

The forward pass is the solver alone (the adaptive controller, or the fixed grid), run once with its graph but
nothing saved in it besides about sqrt(N) step starts; backward rebuilds one segment at a time from them. So the
forward makes exactly ``Direct``'s field evaluations, backward one more pass over the accepted steps (but the tail's
on a fixed grid, kept from the forward: the trailing whole segments within 3/10 of the steps), and the gradient is
``Direct``'s: bit-identical for the tensors the field reads (float64, CPU), to 1e-14 for ``y0`` (the adaptive first
slope is grafted onto ``y0``, summed in another order).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from helpers import seeded_randn
from torch import Tensor, nn

import anode_core as ac

T = torch.tensor([0.0, 0.35, 1.0], dtype=torch.float64)
SOLVES = [
    pytest.param("rk4", {"step_size": 0.05}, id="rk4"),
    pytest.param("euler", {"step_size": 0.1}, id="euler"),
    pytest.param("dopri5", {}, id="dopri5"),
    pytest.param("tsit5", {}, id="tsit5"),
    pytest.param("dopri8", {}, id="dopri8"),
]


class Field(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.8 * seeded_randn(3, 3, seed=1))
        self.bias = nn.Parameter(0.1 * seeded_randn(3, seed=2))
        self.dropout = nn.Dropout(dropout)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        noise = 1e-3 * self.dropout(torch.ones_like(y))  # a small random term: the controller still settles
        return torch.tanh(y @ self.weight + self.bias + noise) * torch.cos(t)


@contextmanager
def counting(field: nn.Module) -> Iterator[list[int]]:
    calls = [0]
    handle = field.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def kept_tail_steps(n: int) -> int:
    """Steps whose saved tensors a fixed grid of ``n`` steps keeps from the forward: segments of ``k = ⌈sqrt(n)⌉``
    steps are counted from the end, and the trailing whole ones within 3/10 of the steps are kept, one at least."""
    k = math.ceil(math.sqrt(n))
    return max(k, k * (3 * n // (10 * k)))


def run(
    field: Field, method: str, options: dict[str, float], gradient: ac.GradientMethod | None, rtol: float = 1e-6
) -> tuple[list[Tensor], int, int]:
    """Gradients of (weight, bias, y0) and the field evaluations of forward and backward."""
    torch.manual_seed(7)
    y0 = seeded_randn(4, 3, seed=3).requires_grad_(True)
    with counting(field) as calls:
        out = ac.odeint(field, y0, T, method=method, options=options, rtol=rtol, atol=rtol / 100, gradient=gradient)
        forward = calls[0]
        grads = torch.autograd.grad(out.square().sum(), (field.weight, field.bias, y0))
    return list(grads), forward, calls[0] - forward


@pytest.mark.parametrize(("method", "options"), SOLVES)
def test_default_equals_direct_and_costs_one_replay(method: str, options: dict[str, float]) -> None:
    field = Field()
    expected, direct_forward, direct_backward = run(field, method, options, ac.Direct())
    got, forward, backward = run(field, method, options, None)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    torch.testing.assert_close(got[2], expected[2], rtol=1e-14, atol=0.0)
    assert (forward, direct_backward) == (direct_forward, 0)  # no replay in forward: Direct's evaluations
    stages = {"rk4": 4, "euler": 1, "dopri5": 6, "tsit5": 6, "dopri8": 13}[method]  # per step, FSAL pairs share one
    if "step_size" in options:
        n = round(1 / options["step_size"])
        # every step once but the kept tail's, and the first step's first slope (the probe's) not again
        assert backward == stages * (n - kept_tail_steps(n)) - 1
    else:
        assert backward % stages == 0 and 0 < backward < forward  # each accepted step once, no rejected trial


@pytest.mark.parametrize(("method", "options"), [SOLVES[0], pytest.param("dopri5", {"first_step": 0.9}, id="dopri5")])
def test_dropout_is_replayed_with_the_forwards_random_numbers(method: str, options: dict[str, float]) -> None:
    """The field draws a dropout mask per evaluation; rejected trials draw too, between the accepted steps: each
    rebuilt step starts from the RNG state its forward step started from (a first step of 0.9 gets rejected)."""
    field = Field(dropout=0.3)
    rejected = [0]
    if method == "dopri5":
        field.callback_reject_step = lambda *_: rejected.__setitem__(0, rejected[0] + 1)  # type: ignore[assignment]
    expected = run(field, method, options, ac.Direct())[0]
    got = run(field, method, options, None)[0]
    assert rejected[0] > 0 or method == "rk4"  # the adaptive case replays across rejected trials
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize(("method", "options"), SOLVES[:2])
def test_double_backward_equals_directs(method: str, options: dict[str, float]) -> None:
    """A gradient penalty through the default, as Direct gives it (on a fixed grid: odeint's Direct on an adaptive
    pair differentiates once)."""

    def penalty(gradient: ac.GradientMethod | None) -> Tensor:
        field = Field()
        y0 = seeded_randn(4, 3, seed=3).requires_grad_(True)
        out = ac.odeint(field, y0, T, method=method, options=options, gradient=gradient)
        (g,) = torch.autograd.grad(out.square().sum(), y0, create_graph=True)
        (gw,) = torch.autograd.grad(g.square().sum(), field.weight)
        return gw

    expected = penalty(ac.Direct())
    assert expected.abs().sum() > 0
    torch.testing.assert_close(penalty(None), expected, rtol=1e-12, atol=0.0)


def test_a_chain_of_calls_drops_the_kept_segment_and_stays_exact() -> None:
    """Three odeint calls in a row: each keeps its tail's saved tensors (two segments of 8 steps) until the next
    call starts; the earlier calls' tails are then rebuilt like every other segment."""
    field = Field()

    def chain(gradient: ac.GradientMethod | None) -> tuple[list[Tensor], int]:
        y = seeded_randn(4, 3, seed=3).requires_grad_(True)
        z = y
        with counting(field) as calls:
            for _ in range(3):
                z = ac.odeint(field, z, T, method="rk4", options={"step_size": 1 / 64}, gradient=gradient)[-1]
            forward = calls[0]
            grads = torch.autograd.grad(z.square().sum(), (field.weight, y))
        return list(grads), calls[0] - forward

    expected, _ = chain(ac.Direct())
    got, backward = chain(None)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    # the latest call's kept tail alone is not rebuilt; each call's first slope is its probe's
    assert backward == 4 * (3 * 64 - kept_tail_steps(64)) - 3


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_a_field_that_reads_only_t_gets_directs_gradient(method: str) -> None:
    """``y' = w·exp(t)`` reads neither ``y`` nor (for ``w`` frozen) anything wanting a gradient: the first slope
    the default reuses has no graph to ``y0``, and ``y0``'s gradient is the identity's (rtol 1e-12)."""
    options = {"step_size": 0.25} if method == "rk4" else None
    for frozen in (True, False):
        w = torch.tensor(0.5, dtype=torch.float64, requires_grad=not frozen)
        grads = []
        for gradient in (ac.Direct(), None):
            y0 = seeded_randn(3, seed=1).requires_grad_(True)
            out = ac.odeint(lambda t, y: w * torch.exp(t) * torch.ones_like(y), y0, T, method=method,  # noqa: B023
                            options=options, gradient=gradient)
            grads.append(torch.autograd.grad(out.square().sum(), [y0] if frozen else [y0, w]))
        for got, expected in zip(grads[1], grads[0], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=0.0)


def test_inference_makes_the_controllers_evaluations() -> None:
    field = Field()
    y0 = seeded_randn(4, 3, seed=3)
    with torch.no_grad(), counting(field) as calls:
        ac.odeint(field, y0, T, method="dopri5", rtol=1e-6, atol=1e-8)
    with counting(field) as graph_calls:
        ac.odeint(field, y0, T, method="dopri5", rtol=1e-6, atol=1e-8)  # weight requires grad: a graph is built
    assert graph_calls[0] == calls[0]  # the probe that finds the tensors the field reads is the first slope
