"""`python -m etchat.toy.synthetic`: generate the synthetic data set (see `etchat.toy.synthetic`)."""

from __future__ import annotations

import argparse
import dataclasses

from etchat.cli import add_old_spelling, setup_logging
from etchat.toy.synthetic import __doc__ as PACKAGE_DOC
from etchat.toy.synthetic.dataset import SyntheticConfig, generate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.toy.synthetic", description=PACKAGE_DOC, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output_dir", default="data/synthetic", help="folder the data set is written to")
    add_old_spelling(parser, "--out", "output_dir")
    for spec in dataclasses.fields(SyntheticConfig):
        if spec.name == "tasks":
            parser.add_argument("--tasks", default=",".join(spec.default), help=f"comma-separated, from {spec.default}")
        else:
            parser.add_argument(f"--{spec.name}", type=int, default=spec.default, help=spec.metadata["help"])
    parser.add_argument("--workers", type=int, default=None, help="encoding processes (default: number of cores)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if the folder already matches")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> dict:
    setup_logging(force=True)
    args = parse_args(argv)
    fields = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(SyntheticConfig)}
    fields["tasks"] = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
    return generate(args.output_dir, SyntheticConfig(**fields), workers=args.workers, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
