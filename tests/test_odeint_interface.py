"""torchdiffeq's whole interface on ``anode_core.odeint``: the six adaptive pairs, what the controller returns and
costs, tuple states, callbacks, events and ``odeint_adjoint`` (float64 unless said otherwise)."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
from torch import Tensor, nn

import anode_core as ac

T = torch.tensor([0.0, 0.4, 1.3, 2.0], dtype=torch.float64)
THEIRS = ("adaptive_heun", "fehlberg2", "bosh3", "dopri5", "dopri8")  # the installed torchdiffeq has no tsit5
ADAPTIVE = (*THEIRS, "tsit5")


class Field(nn.Module):
    """A small time-dependent MLP field that counts its evaluations."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        self.calls = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        out: Tensor = self.net(y) * torch.cos(t)
        return out


def start() -> Tensor:
    return torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("rtol", [1e-3, 1e-6])
@pytest.mark.parametrize("method", THEIRS)
def test_the_controllers_values_are_torchdiffeqs_bits_at_its_number_of_evaluations(method: str, rtol: float) -> None:
    field, y0 = Field(), start()
    with torch.no_grad():
        theirs = torchdiffeq.odeint(field, y0, T, rtol=rtol, atol=rtol / 100, method=method)
        their_calls, field.calls = field.calls, 0
        ours = ac.odeint(field, y0, T, rtol=rtol, atol=rtol / 100, method=method)
    assert torch.equal(ours, theirs)
    assert field.calls == their_calls


@pytest.mark.parametrize("method", ADAPTIVE)
def test_each_pair_reaches_the_exact_solution_within_its_tolerance(method: str) -> None:
    # dy/dt = −y·t: y = y0·exp(−t²/2)
    y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    ys = ac.odeint(lambda s, y: -y * s, y0, t, rtol=1e-8, atol=1e-10, method=method)
    exact = y0 * torch.exp(-(t**2) / 2)[:, None]
    assert (ys - exact).abs().max().item() < 1e-5  # global error: local tolerance 1e-8 accumulated over 2 s


@pytest.mark.parametrize("method", ADAPTIVE)
def test_anode_through_odeint_is_bit_identical_to_direct(method: str) -> None:
    grads = []
    for gradient in (ac.Direct(), ac.Anode()):
        field, y0 = Field(), start().requires_grad_(True)
        ac.odeint(field, y0, T, rtol=1e-5, atol=1e-7, method=method, gradient=gradient).pow(2).sum().backward()
        grads.append([y0.grad, *(p.grad for p in field.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_anodes_forward_is_the_controller_alone_and_its_backward_replays_nothing_for_one_call() -> None:
    field, y0 = Field(), start().requires_grad_(True)
    with torch.no_grad():
        torchdiffeq.odeint(field, y0, T, rtol=1e-5, atol=1e-7)
    forward, field.calls = field.calls, 0
    out = ac.odeint(field, y0, T, rtol=1e-5, atol=1e-7, gradient=ac.Anode())  # the default is checkpoints='auto'
    assert field.calls == forward
    out.sum().backward()
    assert field.calls == forward  # the kept graph of the accepted steps: no replay


def test_a_later_call_drops_the_kept_graph_and_backward_replays_the_accepted_steps_instead() -> None:
    grads, backward_calls = [], []
    for gradient in (ac.Direct(), ac.Anode()):
        field, y0 = Field(), start().requires_grad_(True)
        y1 = ac.odeint(field, y0, T, rtol=1e-5, atol=1e-7, gradient=gradient)[-1]
        y2 = ac.odeint(field, y1, T, rtol=1e-5, atol=1e-7, gradient=gradient)[-1]
        field.calls = 0
        y2.pow(2).sum().backward()
        backward_calls.append(field.calls)
        grads.append([y0.grad, *(p.grad for p in field.parameters())])
    assert backward_calls[0] == 0 < backward_calls[1]  # Direct kept both graphs; Anode replayed the first call
    for a, b in zip(*grads, strict=True):  # the replay sums in another order: equal to rounding
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-15)


TIGHT = {"adaptive_heun": (1e-7, 1e-3), "fehlberg2": (1e-7, 1e-3), "tsit5": (1e-10, 1e-6), "dopri8": (1e-10, 1e-8)}
"""rtol per method, and gradcheck's atol: the second-order pairs would take ~1e5 steps a solve at 1e-10 (minutes
under gradcheck); at 1e-7 the steps' own sensitivity, which the gradient holds fixed, is about 1e-4."""
FIRST_STEP = {"dopri8": 0.5}
"""dopri8 starts from the step torchdiffeq's initial-step rule gives (sized for low orders): there its error estimate
is ~5e-15, rounding, so the next step's size is rounding noise to the power 1/8 (0.1 % apart for inputs 1e-7 apart)
and the solve is not a smooth function of its inputs (torchdiffeq's own dopri8 the same bits): central differences
are off by 1e-2. From a first step whose error is measurable it is smooth."""


@pytest.mark.parametrize("method", list(TIGHT))
def test_gradcheck_through_each_new_pair(method: str) -> None:
    weight = torch.tensor([[-0.3, 0.8], [-0.9, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def solve(y: Tensor, w: Tensor) -> Tensor:
        rtol = TIGHT[method][0]
        out: Tensor = ac.odeint(lambda s, z: torch.tanh(z @ w.T), y, t, rtol=rtol, atol=rtol / 100, method=method,
                                options={"first_step": FIRST_STEP[method]} if method in FIRST_STEP else None,
                                gradient=ac.Anode())  # the one-pass path: the controller's own values, one graph
        return out

    # the gradient holds the accepted steps fixed while gradcheck's differences let the controller move them: the
    # two differ by the solve's sensitivity to its step sizes, small at a tight tolerance (atol 1e-6 stated)
    assert torch.autograd.gradcheck(solve, (y0, weight), eps=1e-6, atol=TIGHT[method][1], rtol=1e-4)


def test_dopri8s_gradient_is_directs() -> None:
    grads = []
    for method in (ac.Direct(), ac.Anode(), None):
        w = torch.tensor([[-0.3, 0.8], [-0.9, -0.2]], dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)
        out = ac.odeint(lambda s, z, w=w: torch.tanh(z @ w.T), y0, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64),
                        rtol=1e-10, atol=1e-12, method="dopri8", gradient=method)
        out.square().sum().backward()
        grads.append(torch.cat([y0.grad, w.grad.flatten()]))  # type: ignore[list-item]
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)  # Anode: bit for bit
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-12, atol=1e-15)  # the default: to rounding


@pytest.mark.parametrize("gradient", [ac.Anode(), ac.Anode(checkpoints=1)], ids=["anode", "anode-c1"])
def test_a_closed_over_tensor_gets_directs_gradient(gradient: ac.GradientMethod) -> None:
    grads = []
    for method in (ac.Direct(), gradient):
        weight = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
        field = lambda t, y, w=weight: torch.tanh(y @ w.T)  # noqa: E731
        out = ac.odeint(field, y0, T, rtol=1e-6, atol=1e-8, gradient=method)
        out.sum().backward()
        grads.append(weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=0.0)


def test_output_times_get_the_slope_as_their_gradient() -> None:
    t = T.clone().requires_grad_(True)
    y0 = torch.tensor([1.0], dtype=torch.float64)
    ys = ac.odeint(lambda s, y: -y, y0, t, rtol=1e-10, atol=1e-12)
    ys.sum().backward()
    assert t.grad is not None
    # y = exp(−(t − t0)): ∂/∂t_i = −y_i for i ≥ 1, ∂/∂t_0 = Σ_{i≥1} y_i
    expected = -torch.exp(-(T - T[0]))
    expected[0] = torch.exp(-(T[1:] - T[0])).sum()
    torch.testing.assert_close(t.grad, expected, rtol=1e-7, atol=1e-9)


def test_a_tuple_state_is_solved_as_its_concatenation_and_returned_as_a_tuple() -> None:
    field = Field()
    a, b = start()[:2], start()[2:, :1].clone()
    b3 = torch.cat([b, b, b], dim=1)

    def pair(t: Tensor, y: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return field(t, y[0]), -y[1]

    ya, yb = ac.odeint(pair, (a, b), T, rtol=1e-6, atol=1e-8)
    assert ya.shape == (len(T), *a.shape) and yb.shape == (len(T), *b.shape)
    alone = ac.odeint(lambda t, y: field(t, y), a, T, rtol=1e-6, atol=1e-8)
    assert (ya - alone).abs().max().item() < 1e-5  # a different error norm picks other steps
    assert (yb[-1] - b * math.exp(-2.0)).abs().max().item() < 1e-5
    del b3


def test_callbacks_see_every_trial_and_unsupported_ones_warn() -> None:
    field = Field()
    seen = {"step": 0, "accept": 0, "reject": 0}
    field.callback_step = lambda t0, y0, dt: seen.__setitem__("step", seen["step"] + 1)  # type: ignore[assignment]
    field.callback_accept_step = lambda t0, y0, dt: seen.__setitem__("accept", seen["accept"] + 1)  # type: ignore[assignment]
    field.callback_reject_step = lambda t0, y0, dt: seen.__setitem__("reject", seen["reject"] + 1)  # type: ignore[assignment]
    ac.odeint(field, start(), T, rtol=1e-3, atol=1e-5)
    assert seen["step"] > 0 and seen["accept"] + seen["reject"] == seen["step"]
    with pytest.warns(UserWarning, match=r"method 'euler' does not support callbacks \['callback_accept_step'"):
        ac.odeint(field, start(), T, method="euler")


def test_an_event_stops_the_solve_where_it_crosses_zero_and_its_time_has_a_gradient() -> None:
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.0, dtype=torch.float64)
    event_t, ys = ac.odeint_event(lambda t, y: -y, y0, t0, event_fn=lambda t, y: y.sum() - 0.5, atol=1e-10)
    assert abs(event_t.item() - math.log(4.0)) < 1e-6  # y = 2·exp(−t) = 0.5
    assert ys.shape == (2, 1) and abs(ys[-1].item() - 0.5) < 1e-6
    event_t.backward()
    assert y0.grad is not None and abs(y0.grad.item() - 0.5) < 1e-5  # t = ln(y0 / 0.5): ∂t/∂y0 = 1/y0


def test_odeint_adjoint_is_close_to_the_exact_gradient_and_takes_the_seminorm() -> None:
    field, y0 = Field(), start().requires_grad_(True)
    ac.odeint(field, y0, T, rtol=1e-9, atol=1e-11, gradient=ac.Direct()).pow(2).sum().backward()
    exact = [y0.grad.clone(), *(p.grad.clone() for p in field.parameters())]  # type: ignore[union-attr]
    y0.grad = None
    field.zero_grad()
    ys = ac.odeint_adjoint(field, y0, T, rtol=1e-9, atol=1e-11, adjoint_options={"norm": "seminorm"})
    assert ys.grad_fn.adjoint_options["norm"].__name__ == "seminorm"
    ys.pow(2).sum().backward()
    adjoint = [y0.grad, *(p.grad for p in field.parameters())]
    for a, b in zip(adjoint, exact, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_odeint_adjoint_needs_adjoint_params_for_a_plain_function() -> None:
    with pytest.raises(ValueError, match=r"`adjoint_params` must be given when `func` is not an nn.Module"):
        ac.odeint_adjoint(lambda t, y: -y, start(), T)


def test_adaptive_options_have_torchdiffeqs_meaning() -> None:
    field, y0 = Field(), start()
    options = {"first_step": 0.05, "max_step": 0.1, "step_t": torch.tensor([0.55]), "jump_t": torch.tensor([1.1])}
    with torch.no_grad():
        theirs = torchdiffeq.odeint(field, y0, T, rtol=1e-5, atol=1e-7, options=dict(options))
        ours = ac.odeint(field, y0, T, rtol=1e-5, atol=1e-7, options=dict(options))
    assert torch.equal(ours, theirs)
