"""`anode-lab`: subcommands import what they need when they run, so `--help` stays instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _info(_: argparse.Namespace) -> int:
    import torch

    import anode_core as ac

    print(f"anode-lab {ac.__version__}  torch {torch.__version__}")
    print(f"solvers:   {', '.join(ac.ALL_SOLVERS)}")
    print(f"gradients: {', '.join(ac.GRADIENTS)}")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"cuda:      {cuda}")
    return 0


def _api(args: argparse.Namespace) -> int:
    from backend.app import serve
    from backend.settings import Settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return serve(Settings(**overrides), access_log=args.access_log)


def _worker(args: argparse.Namespace) -> int:
    from backend.workers.process import run_worker

    return run_worker(device=args.device)


def _health(args: argparse.Namespace) -> int:
    from backend.health.probe import probe

    return probe(worker=args.worker)


def _up(args: argparse.Namespace) -> int:
    from backend.launcher import up

    return up(access_log=args.access_log)


def _run(args: argparse.Namespace) -> int:
    from anode_lab.run import run_command

    return run_command(args)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run", help="run one experiment from a spec file in the terminal and write its results to a folder",
        epilog="exit codes: 0 succeeded, 1 diverged or could not start, 2 invalid spec, 130 cancelled (Ctrl-C)",
    )
    run.add_argument("spec", type=Path, help="YAML or JSON with `kind:` and `spec:` (see `anode-lab specs`), "
                     "or a bare spec with --kind")
    run.add_argument("--out", type=Path, help="output folder (default ./runs/<kind>-<timestamp>); "
                     "the folder of an interrupted run resumes it")
    run.add_argument("--kind", choices=("train", "compare", "demo"), help="experiment kind of a bare spec")
    run.set_defaults(run=_run)


def _specs(args: argparse.Namespace) -> int:
    from anode_lab.specfile import specs_command

    return specs_command(args)


def _add_specs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    specs = sub.add_parser("specs", help="print example specs (YAML), e.g. `anode-lab specs digits-anode > d.yaml`")
    specs.add_argument("name", nargs="?", help="one preset (default: all of them)")
    specs.set_defaults(run=_specs)


def _demo(args: argparse.Namespace) -> int:
    import time

    from anode_lab.run import run_loaded
    from anode_lab.specfile import SpecFile
    from anode_lab.specs.demo import DEMOS, DemoSpec

    if args.name not in DEMOS:
        print(f"error: NAME must be one of {', '.join(DEMOS)}; got {args.name!r}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / f"demo-{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    code = run_loaded(SpecFile("demo", DemoSpec(name=args.name)), out)
    print(f"pictures and tables in {(out / 'artifacts').resolve()}; start with explanation.md")
    return code


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run a teaching demo of the adjoint's failure modes, e.g. `anode-lab demo "
                          "wrong-sign`")
    demo.add_argument("name", metavar="NAME", help="adjoint-order, wrong-sign, reconstruction-blowup, "
                      "non-invertible, memory, training, adaptive-adjoint or reversible-exact")
    demo.add_argument("--out", type=Path, help="output folder (default ./runs/demo-NAME-<timestamp>)")
    demo.set_defaults(run=_demo)


def _check(args: argparse.Namespace) -> int:
    from anode_lab.check import check_command

    return check_command(args)


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check", help="every gradient method against the exact one on your own model, e.g. `anode-lab check "
        "my_model.py:build`", epilog="exit codes: 0 checked, 2 bad input (file, factory, method, device, loss, "
        "or a model that solved no ODE through anode_core)",
    )
    check.add_argument("target", metavar="FILE.py:FACTORY", help="FACTORY() returns (model, batch, loss); "
                       "loss(model, batch) returns a scalar tensor")
    check.add_argument("--methods", nargs="+", metavar="METHOD", help="e.g. anode 'anode(checkpoints=2)' adjoint "
                       "'adjoint(reconstruct=False)' (default: all; Direct always runs as the reference)")
    check.add_argument("--device", help="cpu, cuda or cuda:N (default: where the model is)")
    check.add_argument("--json", action="store_true",
                       help="print a JSON array, one object per method, instead of the table")
    check.add_argument("--out", type=Path, help="folder for check.csv and check.svg (default ./runs/check-<timestamp>)")
    check.set_defaults(run=_check)


def _import(args: argparse.Namespace) -> int:
    from anode_lab.tracking import import_folder

    try:
        run_id = import_folder(args.folder, url=args.url)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"anode-lab import: {error}", file=sys.stderr)
        return 2
    print(f"imported {args.folder} as run {run_id}")
    return 0


def _add_import(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = sub.add_parser("import", help="upload a run that anode_lab.track wrote offline, e.g. `anode-lab import "
                         "anode-runs/latent-ode-20261207-101500`", epilog="exit codes: 0 imported, 2 not a run "
                         "folder or refused by the API")
    imp.add_argument("folder", type=Path, help="the folder with run.json and points.jsonl")
    imp.add_argument("--url", help="the API (default ANODE_URL or http://127.0.0.1:8000); the key is ANODE_API_KEY")
    imp.set_defaults(run=_import)


def _export(args: argparse.Namespace) -> int:
    from anode_lab.tensorboard import export_run

    try:
        written = export_run(args.run_id, args.tensorboard, url=args.url)
    except RuntimeError as error:
        print(f"anode-lab export: {error}", file=sys.stderr)
        return 2
    print(f"run {args.run_id}: {written} scalars in {args.tensorboard / f'run-{args.run_id}'} (tensorboard --logdir "
          f"{args.tensorboard})")
    return 0


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser("export", help="a run's series as TensorBoard scalars, e.g. `anode-lab export 12 "
                            "--tensorboard tb/`", epilog="exit codes: 0 written, 2 no such run, API refused, or "
                            "tensorboardX missing")
    export.add_argument("run_id", metavar="RUN", type=int, help="the run's id")
    export.add_argument("--tensorboard", type=Path, required=True, metavar="DIR", help="folder for the event files")
    export.add_argument("--url", help="the API (default ANODE_URL or http://127.0.0.1:8000); the key is ANODE_API_KEY")
    export.set_defaults(run=_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anode-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions, solvers, gradient methods and devices")
    info.set_defaults(run=_info)
    api = sub.add_parser("api", help="serve the REST API (ANODE_* settings; loopback unless API keys are set)")
    api.add_argument("--host", help="bind address (default ANODE_HOST or 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default ANODE_PORT or 8000)")
    api.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                     help="one line per request (default on; `anode-lab up` turns it off)")
    api.set_defaults(run=_api)
    worker = sub.add_parser("worker", help="run queued experiments of one device class")
    worker.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="which queue to consume")
    worker.set_defaults(run=_worker)
    health = sub.add_parser("health", help="exit 0 if this host's API answers /health ok (container health checks)")
    health.add_argument("--worker", action="store_true",
                        help="instead: a worker on this host renewed its heartbeat in the store lately")
    health.set_defaults(run=_health)
    up = sub.add_parser("up", help="API, workers and dashboard in one terminal; Ctrl-C stops all")
    up.add_argument("--access-log", action="store_true",
                    help="print a line for every API request (off by default: the dashboard polls often)")
    up.set_defaults(run=_up)
    _add_run(sub)
    _add_specs(sub)
    _add_demo(sub)
    _add_check(sub)
    _add_import(sub)
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
