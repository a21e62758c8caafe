"""A user's own training loop watched by the lab (``anode_lab.track``, issue 22), against a real API and worker:
the run is ``external``, holds the loop's points and the probes of every gradient method, and ends as the
script did (succeeded, failed with its message, diverged, or lost when it was killed); another key cannot write
into it; an offline folder round-trips through ``anode-lab import``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from service_helpers import FAST_LEASES, Service, kill_tree, wait_for
from torch import nn

import anode_core as ac
import anode_lab

STEPS, PROBE_EVERY = 40, 10
METHODS = ["direct", "anode", "adjoint"]


class ReluField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(y))


class Net(nn.Module):
    """A ReLU field through ``anode_core.odeint`` (its default gradient), and a linear read-out."""

    def __init__(self) -> None:
        super().__init__()
        self.field, self.head = ReluField(), nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([0.0, 1.0], dtype=x.dtype)
        return self.head(ac.odeint(self.field, x, t, method="euler", options={"step_size": 0.25})[-1])


def problem() -> tuple[Net, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    x = torch.randn(64, 2, dtype=torch.float64)
    return Net().double(), (x, (x[:, 0] * x[:, 1] > 0).long())


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def train(run: anode_lab.TrackedRun, model: Net, batch: tuple[torch.Tensor, torch.Tensor],
          fail_at: int | None = None) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        if step == fail_at:
            raise RuntimeError(f"the user's loop broke at step {step}")
        optimizer.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        run.log(step, loss=loss.item(), accuracy=0.5)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # a lost script is noticed within seconds; the tracker's heartbeat (every 2 s) stays well inside the lease
    env = {**FAST_LEASES, "ANODE_HEARTBEAT_TIMEOUT_SECONDS": "8"}
    started = Service(tmp_path_factory.mktemp("track"), env=env).start(workers=1)
    yield started
    started.stop()


def metrics(service: Service, run_id: int) -> dict[str, dict[str, list]]:
    series: dict[str, dict[str, list]] = httpx.get(f"{service.url}/runs/{run_id}/metrics", timeout=10).json()["series"]
    return series


def test_a_tracked_loop_is_an_external_run_with_every_methods_probes(service: Service) -> None:
    model, batch = problem()
    with anode_lab.track(name="mine", url=service.url, tags=["mine"], probe=(model, batch, loss_of),
                         probe_every=PROBE_EVERY, methods=METHODS, flush_seconds=0.2) as run:
        train(run, model, batch)
    assert run.id is not None
    stored = httpx.get(f"{service.url}/runs/{run.id}", timeout=10).json()
    assert (stored["kind"], stored["status"], stored["tags"]) == ("external", "succeeded", ["mine"])
    series = metrics(service, run.id)
    assert series["train_loss"]["steps"] == list(range(STEPS))
    for method in METHODS:
        assert series[f"{method}/probe_rel_error"]["steps"] == [0, 10, 20, 30]
    # ANODE is the exact gradient of the computed network (0 up to float64 rounding: 1.3e-18 was seen at one probe,
    # 0 at the others); the adjoint of a ReLU field on 4 Euler steps is not
    assert max(series["anode/probe_rel_error"]["values"]) <= 1e-14
    assert min(series["adjoint/probe_rel_error"]["values"]) > 1e-6
    assert all(v > 0 for v in series["anode/peak_memory_bytes"]["values"])


def test_the_probe_leaves_the_users_gradients_as_they_were(tmp_path: Path) -> None:
    model, batch = problem()
    loss_of(model, batch).backward()
    before = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    with anode_lab.track(url=None, folder=tmp_path / "run", probe=(model, batch, loss_of), methods=METHODS) as run:
        run.log(0, loss=1.0)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before, strict=True))


def test_a_loop_that_raises_ends_its_run_failed_with_the_message(service: Service) -> None:
    model, batch = problem()
    with pytest.raises(RuntimeError, match="broke at step 5"):
        with anode_lab.track(name="breaks", url=service.url, flush_seconds=0.2) as run:
            train(run, model, batch, fail_at=5)
    stored = httpx.get(f"{service.url}/runs/{run.id}", timeout=10).json()
    assert stored["status"] == "failed" and stored["error"]["type"] == "RuntimeError"
    assert "the user's loop broke at step 5" in stored["error"]["message"]
    assert metrics(service, run.id)["train_loss"]["steps"] == [0, 1, 2, 3, 4]  # the points before it are kept


def test_a_loss_that_is_not_finite_ends_the_run_diverged_with_its_last_good_points(service: Service) -> None:
    with anode_lab.track(name="nan", url=service.url, flush_seconds=0.2) as run:
        for step, loss in enumerate([1.0, 0.5, float("nan"), float("inf")]):
            run.log(step, loss=loss)
    stored = httpx.get(f"{service.url}/runs/{run.id}", timeout=10).json()
    assert stored["status"] == "diverged" and "step 2" in stored["message"]
    assert metrics(service, run.id)["train_loss"]["values"] == [1.0, 0.5, None, None]


def test_an_ended_run_takes_no_more_points(service: Service) -> None:
    with anode_lab.track(name="ended", url=service.url) as run:
        run.log(0, loss=1.0)
    late = httpx.post(f"{service.url}/external/{run.id}/points", json={"points": [{"step": 1, "values": {"x": 1}}]})
    assert late.status_code == 409 and "succeeded" in late.json()["detail"]


@pytest.mark.parametrize(("point", "field"), [({"step": -1, "values": {}}, "step"),
                                              ({"step": 1, "values": {"lo ss": 1.0}}, "values"),
                                              ({"step": 1, "values": {"x": "NaN"}}, "values")])
def test_bad_points_get_422_naming_the_field(service: Service, point: dict, field: str) -> None:
    opened = httpx.post(f"{service.url}/external", json={"name": "bad"}).json()
    response = httpx.post(f"{service.url}/external/{opened['id']}/points", json={"points": [point]})
    assert response.status_code == 422 and field in response.text


def test_an_offline_run_round_trips_through_anode_lab_import(service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "offline"
    model, batch = problem()
    with anode_lab.track(name="offline", url=None, folder=folder, probe=(model, batch, loss_of),
                         probe_every=PROBE_EVERY, methods=["direct", "anode"]) as run:
        train(run, model, batch)
    assert run.id is None and json.loads((folder / "run.json").read_text())["status"] == "succeeded"
    done = subprocess.run([sys.executable, "-m", "anode_lab.cli", "import", str(folder), "--url", service.url],
                          capture_output=True, text=True, timeout=60, env=service.env)
    assert done.returncode == 0, done.stderr
    run_id = int(done.stdout.split()[-1])
    stored = httpx.get(f"{service.url}/runs/{run_id}", timeout=10).json()
    assert (stored["kind"], stored["status"], stored["name"]) == ("external", "succeeded", "offline")
    series = metrics(service, run_id)
    written = [json.loads(line) for line in (folder / "points.jsonl").read_text().splitlines()]
    assert series["train_loss"]["values"] == [p["values"]["train_loss"] for p in written]
    assert series["anode/probe_rel_error"]["steps"] == [0, 10, 20, 30]


def test_import_of_a_folder_that_is_no_run_says_so(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "anode_lab.cli", "import", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "holds no run.json" in done.stderr


KILLED_SCRIPT = """
import sys, time, anode_lab
with anode_lab.track(name="killed", url=sys.argv[1], flush_seconds=0.1, heartbeat_seconds=0.2) as run:
    print(run.id, flush=True)
    for step in range(10**6):
        run.log(step, loss=1.0 / (step + 1))
        time.sleep(0.01)
"""


def test_a_killed_script_is_reaped_as_lost(service: Service) -> None:
    script = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_SCRIPT), service.url],
                              stdout=subprocess.PIPE, text=True, env=service.env, start_new_session=True)
    try:
        assert script.stdout is not None
        run_id = int(script.stdout.readline())
        wait_for(lambda: len(metrics(service, run_id).get("train_loss", {}).get("steps", [])) > 5, 30,
                 "the script's first points")
        os.killpg(script.pid, signal.SIGKILL)
        script.wait()
        stored = wait_for(lambda: (r := httpx.get(f"{service.url}/runs/{run_id}", timeout=10).json())["status"]
                          != "running" and r, 30, "the reaper to notice the script is gone")
    finally:
        kill_tree(script)
    assert stored["status"] == "failed" and stored["error"]["type"] == "Lost"
    assert metrics(service, run_id)["train_loss"]["steps"][:5] == [0, 1, 2, 3, 4]  # its points are kept


def test_a_second_key_cannot_write_into_the_run(tmp_path: Path) -> None:
    service = Service(tmp_path, env={"ANODE_API_KEYS": "key-a,key-b"})
    service.start_api(headers={"X-API-Key": "key-a"})
    try:
        with anode_lab.track(name="a's", url=service.url, api_key="key-a") as run:
            run.log(0, loss=1.0)
            other = httpx.post(f"{service.url}/external/{run.id}/points", headers={"X-API-Key": "key-b"},
                               json={"points": [{"step": 1, "values": {"train_loss": 9.0}}]})
            ended = httpx.post(f"{service.url}/external/{run.id}/end", headers={"X-API-Key": "key-b"},
                               json={"status": "failed"})
        assert other.status_code == ended.status_code == 403
        assert "only by the key that opened it" in other.json()["detail"]
        stored = httpx.get(f"{service.url}/runs/{run.id}/metrics", headers={"X-API-Key": "key-a"}).json()
        assert stored["series"]["train_loss"]["values"] == [1.0]
    finally:
        service.stop()


def test_a_server_that_is_down_never_stops_the_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "svc").mkdir()
    service = Service(tmp_path / "svc")
    service.start_api()
    folder = tmp_path / "buffer"
    try:
        with anode_lab.track(name="down", url=service.url, folder=folder, flush_seconds=0.05) as run:
            run.log(0, loss=1.0)
            assert service.api is not None
            kill_tree(service.api)
            for step in range(1, 200):
                run.log(step, loss=1.0)
    finally:
        service.stop()
    said = capsys.readouterr().err
    assert said.count("the server did not take the points") == 1
    kept = [json.loads(line)["step"] for line in (folder / "points.jsonl").read_text().splitlines()]
    assert kept[-1] == 199 and json.loads((folder / "run.json").read_text())["status"] == "succeeded"


def readme_snippet() -> str:
    section = (Path(__file__).parent.parent / "README.md").read_text().split("## Watch your own training", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    return block


def test_the_readme_section_is_six_lines_that_run_as_printed(service: Service, tmp_path: Path) -> None:
    snippet = readme_snippet()
    assert len(snippet.strip().splitlines()) == 6
    shutil.copytree(Path(__file__).parent.parent / "examples", tmp_path / "examples")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**service.env, "ANODE_URL": service.url.removesuffix("/api/v1")})
    assert done.returncode == 0, done.stderr
    runs = httpx.get(f"{service.url}/runs", params={"kind": "external"}, timeout=10).json()["data"]
    (run,) = [r for r in runs if r["name"] == "latent-ode"]
    assert run["status"] == "succeeded" and f"run {run['id']} succeeded: 30 steps" in done.stderr
    series = metrics(service, run["id"])
    assert len(series["train_loss"]["steps"]) == 30
    assert series["adjoint/probe_rel_error"]["steps"] == [0, 10, 20]


def test_the_example_trains_offline_and_imports(service: Service, tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "examples" / "track_training.py"
    done = subprocess.run([sys.executable, str(script), "--steps", "30", "--offline"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=service.env)
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "anode-runs").iterdir()
    imported = subprocess.run([sys.executable, "-m", "anode_lab.cli", "import", str(folder), "--url", service.url],
                              capture_output=True, text=True, timeout=60, env=service.env)
    assert imported.returncode == 0, imported.stderr
    series = metrics(service, int(imported.stdout.split()[-1]))
    assert len(series["train_acc"]["steps"]) == 30 and series["anode/probe_rel_error"]["steps"] == [0, 25]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars in TensorBoard event files (TFRecord: length, its CRC, an ``Event`` protobuf, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            length = int.from_bytes(data[at:at + 8], "little")
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_tracked_and_exported_series_are_tensorboard_scalars(service: Service, tmp_path: Path) -> None:
    model, batch = problem()
    with anode_lab.track(name="tb", url=service.url, tensorboard=tmp_path / "live", probe=(model, batch, loss_of),
                         probe_every=PROBE_EVERY, methods=["direct", "anode"], flush_seconds=0.2) as run:
        train(run, model, batch)
    live = scalars(tmp_path / "live")
    assert [s for s, _ in live["train_loss"]] == list(range(STEPS))
    assert [s for s, _ in live["anode/probe_rel_error"]] == [0, 10, 20, 30]
    done = subprocess.run([sys.executable, "-m", "anode_lab.cli", "export", str(run.id), "--tensorboard",
                           str(tmp_path / "exported"), "--url", service.url], capture_output=True, text=True,
                          timeout=60, env=service.env)
    assert done.returncode == 0, done.stderr
    exported = scalars(tmp_path / "exported" / f"run-{run.id}")
    stored = metrics(service, run.id)["train_loss"]
    assert [s for s, _ in exported["train_loss"]] == stored["steps"]
    assert [v for _, v in exported["train_loss"]] == pytest.approx(stored["values"], rel=1e-6)  # float32 there
    assert set(exported) == set(live)
    missing = subprocess.run([sys.executable, "-m", "anode_lab.cli", "export", "999999", "--tensorboard",
                              str(tmp_path / "none"), "--url", service.url], capture_output=True, text=True,
                             timeout=60, env=service.env)
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr


def test_runs_tracked_with_one_group_name_are_one_side_by_side_group(service: Service) -> None:
    ids = []
    for gradient in ("direct", "anode"):
        with anode_lab.track(name=f"trio {gradient}", url=service.url, group="my trio", gradient=gradient) as run:
            run.log(0, loss=1.0)
        ids.append(run.id)
    runs = [httpx.get(f"{service.url}/runs/{i}", timeout=10).json() for i in ids]
    assert runs[0]["group_id"] is not None and runs[0]["group_id"] == runs[1]["group_id"]
    group = httpx.get(f"{service.url}/groups/{runs[0]['group_id']}", timeout=10).json()
    assert group["name"] == "my trio" and [r["id"] for r in group["runs"]] == ids
    assert [r["spec"]["gradient"] for r in group["runs"]] == ["direct", "anode"]
