"""Your own training loop, watched by the lab: `python examples/track_training.py` (with `anode-lab up` running).

A small neural ODE classifier of its own (two moons, a ReLU field through ``anode_core.odeint`` with torchdiffeq's
signature) trained in a plain PyTorch loop. ``anode_lab.track`` sends the loop's numbers to the lab (``ANODE_URL``,
default below) and, every 25 steps, probes the gradient with Direct, ANODE and the adjoint: Run detail draws the
loss and each method's gradient error, memory and field evaluations. Without a lab (``--offline``) the run goes to
a folder that `anode-lab import FOLDER` uploads later.
"""

from __future__ import annotations

import argparse
import os

import torch
from sklearn.datasets import make_moons
from torch import Tensor, nn

import anode_core as ac
import anode_lab


class Field(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.field, self.head = Field(), nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        t = torch.tensor([0.0, 1.0], dtype=x.dtype)
        return self.head(ac.odeint(self.field, x, t, method="rk4", options={"step_size": 0.125})[-1])


def loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--offline", action="store_true", help="write the run to ./anode-runs instead")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = make_moons(512, noise=0.1, random_state=0)
    batch = (torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    url = None if args.offline else os.environ.get("ANODE_URL", "http://127.0.0.1:8000")
    with anode_lab.track(name="moons-own-loop", url=url, tags=["example"], probe=(model, batch, loss),
                         probe_every=25, methods=["direct", "anode", "adjoint"], steps=args.steps) as run:
        for step in range(args.steps):
            optimizer.zero_grad()
            value = loss(model, batch)
            value.backward()
            optimizer.step()
            accuracy = (model(batch[0]).argmax(1) == batch[1]).float().mean().item()
            run.log(step, loss=value.item(), accuracy=accuracy)


if __name__ == "__main__":
    main()
