"""`anode-lab`: subcommands import what they need when they run, so `--help` stays instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _info(_: argparse.Namespace) -> int:
    import torch

    import anode_core as ac

    print(f"anode-lab {ac.__version__}  torch {torch.__version__}")
    print(f"solvers:   {', '.join(ac.SOLVERS)}")
    print(f"gradients: {', '.join(ac.GRADIENTS)}")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"cuda:      {cuda}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anode-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions, solvers, gradient methods and devices")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
