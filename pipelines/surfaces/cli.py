"""The product's command line (`nightly-ml -h`, or `python -m pipelines.surfaces.cli -h`): store initialisation and
sealing the audit log's head. Sample and example data come from the harness (`python -m harness.data -h`)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pipelines.core.config import CONFIG_ENV_VAR, PipelineConfig, load_config
from pipelines.core.errors import PipelineError


def _init_mlflow(config: PipelineConfig, _: argparse.Namespace) -> None:
    from pipelines.governance.registry import init_store

    print(f"MLflow store ready: {init_store(config)}")


def _seal_audit(config: PipelineConfig, _: argparse.Namespace) -> None:
    from pipelines.governance.audit import seal_head

    print(f"audit log head of {config.model.registered_name} sealed with the key at {seal_head(config)} entries")


def command_line(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """A parser with the `--config` option and its subcommand parsers (each sets `handler(config, args)`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=f"pipeline YAML (default: ${CONFIG_ENV_VAR} or the bundled default)")
    return parser, parser.add_subparsers(dest="command", required=True)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse `argv`, load the config and run the chosen command's handler; return the process exit code."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        args.handler(config, args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one command; return the process exit code."""
    parser, sub = command_line("nightly-ml", __doc__)
    sub.add_parser("init-mlflow", help="create the MLflow store once").set_defaults(handler=_init_mlflow)
    sub.add_parser(
        "seal-audit",
        help="after checking the audit log, key its head record (once, after upgrading from unkeyed heads)",
    ).set_defaults(handler=_seal_audit)
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
