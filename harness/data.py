"""Sample and example data for the demo, the tests and a first look (`python -m harness.data -h`).

Not part of the product: the product's own command line is `nightly-ml` (pipelines.surfaces.cli)."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

from pipelines.core.config import PipelineConfig
from pipelines.surfaces.cli import command_line, run_command

SAMPLE_ROWS = 5000  # rows per generated daily partition, as in the demo


def _generate(config: PipelineConfig, args: argparse.Namespace) -> None:
    from harness.sample_data import DriftSpec, generate

    drift = DriftSpec(
        start=date.fromisoformat(args.drift_start) if args.drift_start else None,
        covariate=args.drift in ("covariate", "both"),
        concept=args.drift in ("concept", "both"),
    )
    dates = generate(
        config.data_root,
        start=date.fromisoformat(args.start),
        days=args.days,
        rows_per_day=args.rows,
        label_delay_days=config.label_delay_partitions if args.label_delay is None else args.label_delay,
        as_of=date.fromisoformat(args.as_of) if args.as_of else None,
        seed=args.seed,
        drift=drift,
    )
    print(f"wrote {len(dates)} partitions of {args.rows:,} rows under {config.data_root}")


def _break(config: PipelineConfig, args: argparse.Namespace) -> None:
    from harness.sample_data import break_partition

    break_partition(config.data_root, date.fromisoformat(args.ds), args.defect)
    print(f"damaged incoming/ds={args.ds} ({args.defect})")


def _example(config: PipelineConfig, args: argparse.Namespace) -> None:
    """Write the weekly churn example (data unlike the demo) and its config into a folder."""
    import yaml

    from harness import example_data
    from pipelines.core.cadence import shift
    from pipelines.core.config import load_config

    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(example_data.example_config("data", "mlflow", args.cadence), sort_keys=False))
    example = load_config(path)
    first = shift(example, date.fromisoformat(args.first) - timedelta(days=1), 1)  # the first partition on or after
    dates = [shift(example, first, i) for i in range(args.partitions)]
    shape = example_data.Shape(shift_at=args.shift_at, break_at=args.shift_at)
    example_data.generate(
        example.data_root, dates, args.rows, shape=shape, labelled=args.partitions - example.label_delay_partitions
    )
    print(
        f"wrote {len(dates)} {args.cadence} partitions ({dates[0]} .. {dates[-1]}, about {args.rows} rows each) "
        f"under {example.data_root}\nconfig: {path}\nnext: export PIPELINE_CONFIG={path}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one command; return the process exit code."""
    parser, sub = command_line("python -m harness.data", __doc__)
    gen = sub.add_parser("generate", help="write deterministic sample partitions")
    gen.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    gen.add_argument("--days", type=int, default=1)
    gen.add_argument("--rows", type=int, default=SAMPLE_ROWS, help="rows per daily partition")
    gen.add_argument("--as-of", help="labels exist for days at least label_delay_partitions before this date")
    gen.add_argument(
        "--label-delay", type=int, help="override label_delay_partitions of the config (the sample data is daily)"
    )
    gen.add_argument("--drift-start", help="date from which drift is injected")
    gen.add_argument("--drift", choices=["covariate", "concept", "both"], default="both")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(handler=_generate)
    brk = sub.add_parser("break-partition", help="damage an incoming partition (demos and tests)")
    brk.add_argument("--ds", required=True)
    brk.add_argument(
        "--defect", choices=["truncated", "missing_column", "unknown_category", "lying_footer"], required=True
    )
    brk.set_defaults(handler=_break)
    ex = sub.add_parser(
        "example", help="write a dataset unlike the demo (weekly churn, every column type) and its config"
    )
    ex.add_argument("--folder", required=True, help="where pipeline.yaml, data/ and mlflow/ go")
    ex.add_argument("--first", default="2024-01-01", help="first partition on or after this date")
    ex.add_argument("--partitions", type=int, default=30)
    ex.add_argument("--rows", type=int, default=300, help="rows per partition (sizes vary 60-140%%)")
    ex.add_argument("--cadence", default="weekly")
    ex.add_argument("--shift-at", type=int, default=20, help="partition index where the data moves and churn changes")
    ex.set_defaults(handler=_example)
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
