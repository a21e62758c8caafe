"""Train a classifier with ODE blocks, reporting what each gradient method does to training.

Series reported through ``ctx.on_metrics`` (step = optimizer steps done):

* every step: ``train_loss``, ``train_acc`` (of the batch), ``grad_norm``, ``step_time`` (seconds), ``lr``;
* the first step of every epoch, measured on that step: ``peak_memory_bytes`` (what autograd and the gradient
  method hold for backward, :class:`~anode_core.MemoryMeter`), ``cuda_peak_bytes`` on a GPU, ``nfe_forward`` and
  ``nfe_backward`` (field evaluations);
* every epoch: ``test_loss``, ``test_acc``, ``epoch``;
* every ``probe_every`` steps, on that step's batch before it is trained on: ``probe_rel_error``,
  ``probe_cosine`` and ``probe_sign_agreement`` of the run's gradient against the exact Direct gradient of the
  same network (ANODE §2, arXiv:1902.10298), and ``probe_recon_error`` (worst block) for the adjoint on a
  fixed-step solver (an adaptive adjoint picks its reverse steps on the augmented state: no fixed grid to rebuild).

The optimizer is created once and its learning rate set at the start of every epoch from the step schedule
(:meth:`TrainSpec.lr_at`); the run checkpoints and resumes (see
:mod:`anode_lab.experiments.checkpoints`), ends *diverged* at a non-finite loss or gradient and *cancelled*
when ``ctx.should_stop()``. An adaptive solve that passes ``ode.step_limit`` ends the run with a ``ValueError``
naming the fix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anode_core.block import use_gradient
from anode_core.gradients import Direct
from anode_core.instruments.compare import compare_gradients
from anode_core.instruments.counting import EvaluationCounter
from anode_core.instruments.measure import measure_gradient
from anode_core.instruments.memory import MemoryMeter
from anode_core.instruments.reconstruction import block_reconstruction_errors
from anode_core.registry import gradient_named
from anode_core.replay import frozen_buffers
from anode_lab.experiments.checkpoints import Checkpoints, Position
from anode_lab.experiments.context import RunContext, RunResult, Status
from anode_lab.experiments.data import Data, augment, epoch_batches, load_data
from anode_lab.experiments.models import build_model
from anode_lab.experiments.threads import torch_threads
from anode_lab.specs.common import SOLVERS
from anode_lab.specs.train import TrainSpec
from anode_lab.status import RunStatus

DTYPES = {"float32": torch.float32, "float64": torch.float64}
EVAL_BATCH = 500


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when one is visible, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` is 'cuda' but no CUDA device is visible; set `device` to 'cpu' or 'auto'")
    return torch.device(name)


def make_optimizer(spec: TrainSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.sgd_momentum, weight_decay=spec.weight_decay)


def run_train(spec: TrainSpec, ctx: RunContext) -> RunResult:
    """Train as ``spec`` says, resuming from the latest checkpoint in ``ctx.workdir`` when there is one.

    The caller's RNG state and thread count are left as they were. Solves that name no gradient method (those of
    model plugins) are differentiated with the spec's."""
    device = resolve_device(spec.device)
    method = gradient_named(spec.ode.gradient.method, **spec.ode.gradient.knobs())
    with torch_threads(spec.threads), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            use_gradient(method):
        try:
            return _Trainer(spec, ctx, device).run()
        except RuntimeError as exc:  # the adaptive controller's step limit, underflow or a non-finite state
            if not spec.ode.adaptive:
                raise
            what = str(exc).partition(": raise")[0]  # the library's hint names its arguments, not the spec's
            raise ValueError(f"{what}. In the spec, raise `ode.step_limit` (now {spec.ode.step_limit}; the run then "
                             f"resumes from its latest checkpoint) or loosen `ode.rtol` (now {spec.ode.rtol:g}) and "
                             f"`ode.atol` (now {spec.ode.atol:g}) in a fresh folder") from exc


class _Trainer:
    def __init__(self, spec: TrainSpec, ctx: RunContext, device: torch.device) -> None:
        self.started = time.perf_counter()
        self.spec, self.ctx, self.device = spec, ctx, device
        self.dtype = DTYPES[spec.dtype]
        self.data: Data = load_data(spec)
        torch.manual_seed(spec.seed)
        self.model = build_model(spec).to(device=device, dtype=self.dtype)
        self.optimizer = make_optimizer(spec, self.model)
        self.method = gradient_named(spec.ode.gradient.method, **spec.ode.gradient.knobs())
        self.checkpoints = Checkpoints(ctx.workdir / "checkpoints")
        latest = self.checkpoints.latest()
        self.pos = self.checkpoints.restore(latest, spec, self.model, self.optimizer) if latest else Position()
        self.earlier_seconds = self.pos.seconds  # spent before the checkpoint this run resumed from
        self.per_epoch = len(epoch_batches(len(self.data.train), spec.batch_size, seed=spec.seed, epoch=0))
        planned = spec.epochs * self.per_epoch
        self.total = planned if spec.max_steps is None else min(planned, spec.max_steps)

    def run(self) -> RunResult:
        spec = self.spec
        self.model.train()
        saved = self.pos.step  # the checkpoint this run resumed from, or none at step 0
        while self.pos.epoch < spec.epochs:
            batches = epoch_batches(len(self.data.train), spec.batch_size, seed=spec.seed, epoch=self.pos.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = spec.lr_at(self.pos.epoch)
            while self.pos.batch < len(batches) and self.pos.step < self.total:
                if self.ctx.should_stop():
                    self._save()
                    return self._result(RunStatus.CANCELLED, f"cancelled before step {self.pos.step + 1}")
                if spec.checkpoint_every and self.pos.step % spec.checkpoint_every == 0 and self.pos.step > saved:
                    self._save()
                    saved = self.pos.step
                failure = self._train_step(batches[self.pos.batch])
                if failure:
                    return self._result(RunStatus.DIVERGED, failure, diverged_at_step=self.pos.step + 1)
            if self.pos.batch == len(batches):
                self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
                self._evaluate()
            if self.pos.step >= self.total:
                break
        if self.pos.batch:  # stopped by `max_steps` inside an epoch
            self._evaluate()
        torch.save(self.model.state_dict(), self.ctx.artifact_path("model.pt"))
        self.checkpoints.clear()
        return self._result(RunStatus.SUCCEEDED, f"trained {self.pos.step} steps")

    def _inputs(self, index: Tensor) -> tuple[Tensor, Tensor]:
        x = self.data.train.x[index]
        if self.spec.augment:
            x = augment(x, seed=self.spec.seed, epoch=self.pos.epoch, batch=self.pos.batch)
        return self.data.inputs(x, dtype=self.dtype, device=self.device), self.data.train.y[index].to(self.device)

    def _train_step(self, index: Tensor) -> str | None:
        """One optimizer step on the batch ``index``; returns why the run diverged, if it did."""
        x, y = self._inputs(index)
        step = self.pos.step + 1
        values: dict[str, float] = {}
        if self.spec.probe_every and (step - 1) % self.spec.probe_every == 0:
            values.update(self._probe(x, y))
        optimizer = self.optimizer
        lr = optimizer.param_groups[0]["lr"]
        instrument = self.pos.batch == 0
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        meter = MemoryMeter(self.device)
        with EvaluationCounter(self.model) as nfe, meter if instrument else nullcontext():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            nfe_forward = nfe.calls
            if not math.isfinite(loss.item()):
                return f"the loss became {loss.item()} at step {step} (lr {lr:g}); lower `lr`"
            torch.autograd.backward(loss)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if not math.isfinite(grad_norm.item()):
            return f"the gradient norm became {grad_norm.item()} at step {step} (lr {lr:g}); lower `lr`"
        optimizer.step()
        _sync(self.device)
        values.update(
            train_loss=loss.item(),
            train_acc=(logits.argmax(1) == y).double().mean().item(),
            grad_norm=grad_norm.item(),
            step_time=time.perf_counter() - start,
            lr=lr,
        )
        if instrument:
            values.update(peak_memory_bytes=meter.peak_bytes, nfe_forward=nfe_forward,
                          nfe_backward=nfe.calls - nfe_forward)
            if meter.cuda_peak_bytes is not None:
                values["cuda_peak_bytes"] = meter.cuda_peak_bytes
        self.pos.step, self.pos.batch = step, self.pos.batch + 1
        self._report(values)
        last = self.pos.last
        self.ctx.on_progress(step, self.total, f"epoch {self.pos.epoch + 1}/{self.spec.epochs} "
                             f"loss {last['train_loss']:.4f} test acc {last.get('test_acc', float('nan')):.4f}")
        return None

    def _probe(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """The run's gradient on ``(x, y)`` against Direct's; model, buffers and RNG are left as they were."""
        def loss_fn(model: nn.Module) -> Tensor:
            return F.cross_entropy(model(x), y)

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), frozen_buffers(self.model):
            exact = measure_gradient(self.model, loss_fn, Direct(), device=self.device)
            run = measure_gradient(self.model, loss_fn, self.method, device=self.device)
        cmp = compare_gradients(exact.grads, run.grads)
        out = {"probe_rel_error": cmp.rel_error, "probe_cosine": cmp.cosine, "probe_sign_agreement": cmp.sign_agreement}
        if self.method.name == "adjoint" and SOLVERS[self.spec.ode.solver].kind in ("fixed", "implicit"):
            with torch.random.fork_rng(devices=devices):
                errors = block_reconstruction_errors(self.model, x)
            out["probe_recon_error"] = torch.tensor(errors, dtype=torch.float64).max().item()  # nan stays nan
        return out

    @torch.no_grad()
    def _evaluate(self) -> None:
        self.model.eval()
        loss, correct, test = 0.0, 0, self.data.test
        for index in torch.split(torch.arange(len(test)), EVAL_BATCH):
            x = self.data.inputs(test.x[index], dtype=self.dtype, device=self.device)
            y = test.y[index].to(self.device)
            logits = self.model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum().item())
        self.model.train()
        acc = correct / len(test)
        best = self.pos.best_test_acc
        self.pos.best_test_acc = acc if best is None or acc > best else best
        self._report({"test_loss": loss / len(test), "test_acc": acc, "epoch": self.pos.epoch})

    def _report(self, values: Mapping[str, float]) -> None:
        self.pos.last.update(values)
        self.ctx.on_metrics(self.pos.step, dict(values))

    def _save(self) -> None:
        if self.spec.checkpoint_every:
            # never ahead of the metrics: a run killed after saving would otherwise resume after steps whose
            # reports it lost
            self.ctx.before_checkpoint()
            self.pos.seconds = self._seconds()
            self.ctx.on_checkpoint(self.checkpoints.save(self.spec, self.model, self.optimizer, self.pos))

    def _seconds(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.started

    def _result(self, status: Status, message: str, **extra: float | int | str) -> RunResult:
        """Status and summary; a diverged run's summary holds the last good values."""
        last = self.pos.last
        summary: dict[str, float | int | str] = {"steps": self.pos.step, "epochs": self.pos.epoch,
                                                 "seconds": round(self._seconds(), 3), **extra}
        for key, name in (("train_loss", "final_loss"), ("train_acc", "final_train_acc"),
                          ("test_acc", "final_test_acc"), ("test_loss", "final_test_loss")):
            if key in last:
                summary[name] = last[key]
        if self.pos.best_test_acc is not None:
            summary["best_test_acc"] = self.pos.best_test_acc
        return RunResult(status, summary, message)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
