"""Where ``odeint`` evaluates the field on fixed grids: torchdiffeq's times, no more, ``perturb``'s sides kept in
every recomputed step, and an event found by a multistep method solved again on the search's own steps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchdiffeq
from torch import Tensor

import anode_core as ac

W = ((-0.3, 0.8), (-0.9, -0.2))


def recorded(times: list[float], weight: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """A field closing over ``weight`` (so a graph is wanted) that records the times it is evaluated at."""

    def field(t: Tensor, y: Tensor) -> Tensor:
        times.append(t.item())
        return torch.tanh(y @ weight.T)

    return field


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("perturb", [False, True])
@pytest.mark.parametrize("method", ["euler", "rk4", "explicit_adams", "implicit_adams", "midpoint"])
@pytest.mark.parametrize("gradient", [ac.Direct(), ac.Anode()], ids=["direct", "anode"])
def test_a_fixed_grid_evaluates_the_field_at_torchdiffeqs_times_and_no_more(
    method: str, perturb: bool, interp: str, gradient: ac.GradientMethod
) -> None:
    t = torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64)
    options = {"step_size": 0.25, "perturb": perturb, "interp": interp}  # cubic: each step's own f(t_n, y_n)
    results = []
    for solve in (torchdiffeq.odeint, ac.odeint):
        weight = torch.tensor(W, dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)
        times: list[float] = []
        extra = {"gradient": gradient} if solve is ac.odeint else {}
        out = solve(recorded(times, weight), y0, t, method=method, options=options, **extra)
        forward = list(times)
        out.square().sum().backward()
        results.append((forward, out.detach(), y0.grad, weight.grad))
    (theirs, *expected), (ours, *got) = results
    assert ours == theirs  # the first evaluation, which finds `weight`, is the first step's own
    for a, b in zip(got, expected, strict=True):  # the first slope's graph included (1e-13 stated)
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "gradient", [ac.Anode(checkpoints=1), ac.Anode(checkpoints="auto"), None], ids=["c1", "auto", "default"]
)
def test_perturbs_sides_hold_in_the_recomputed_steps(gradient: ac.GradientMethod | None) -> None:
    grads = []
    for method in (ac.Direct(), gradient):
        scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)
        times: list[float] = []

        def field(t: Tensor, y: Tensor, scale: Tensor = scale, times: list[float] = times) -> Tensor:
            times.append(t.item())
            return torch.where(t < 0.5, -1.0, 2.0) * torch.sin(y) * scale

        out = ac.odeint(field, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk4",
                        options={"step_size": 0.25, "perturb": True}, gradient=method)
        out.square().sum().backward()
        assert 0.5 not in times and 0.0 not in times  # forward and backward: each side one ulp inside its step
        grads.append(torch.cat([y0.grad, scale.grad.reshape(1)]))  # type: ignore[list-item]
    # rk4's last stage of the step ending at 0.5 sees the left branch: recomputing it at 0.5 itself would flip
    # it to the right one (a gradient off by O(1)); the recomputation sums in its own order (1e-12 stated)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_multistep_event_is_solved_again_on_the_searchs_own_steps(dtype: torch.dtype) -> None:
    # dy/dt = cos(t): y = sin(t); the event y = 0.9 at t = asin(0.9) ≈ 1.1198
    states = []
    for wants_grad in (False, True):
        y0 = torch.tensor([0.0], dtype=dtype, requires_grad=wants_grad)
        event_t, ys = ac.odeint(
            lambda t, y: torch.cos(t).expand_as(y), y0, torch.tensor([0.0, 1.0], dtype=dtype), method="explicit_adams",
            event_fn=lambda t, y: y.sum() - 0.9, options={"step_size": 0.01, "interp": "cubic"},
        )
        states.append(ys[-1].detach())
    # the solve with a graph takes the search's steps, the last one past the event, and interpolates as it did;
    # a grid cut at the event would end on a short step the Adams history does not know (an error of ~1e-4)
    torch.testing.assert_close(states[1], states[0], rtol=0, atol=0)
    assert abs(states[1].item() - 0.9) < (1e-5 if dtype == torch.float32 else 1e-8)
