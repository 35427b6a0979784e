"""The validation gate: a Great Expectations suite built from the config and the champion's training profile."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.errors import PartitionQuarantinedError, PartitionSchemaError
from pipelines.lake import QUARANTINE, partition_dir, write_json_atomic
from pipelines.schema import incoming_partition, read_table

log = logging.getLogger(__name__)

NUMERIC_DTYPES = ["float64", "float32", "int64", "int32", "int16", "int8", "Int64", "Int32", "Float64", "bool"]
STRING_DTYPES = ["object", "str", "string", "category"]


def data_profile(frame: pd.DataFrame, config: PipelineConfig) -> dict[str, Any]:
    """Return what validation needs to know of the training data: ranges, null rates, category domains."""
    numeric = {
        c: {
            "min": float(frame[c].min()),
            "max": float(frame[c].max()),
            "null_rate": float(frame[c].isna().mean()),
        }
        for c in config.features.numeric
    }
    categorical = {
        c: {"domain": sorted(str(v) for v in frame[c].dropna().unique()), "null_rate": float(frame[c].isna().mean())}
        for c in config.features.categorical
    }
    return {"rows": len(frame), "numeric": numeric, "categorical": categorical}


def build_suite(config: PipelineConfig, profile: dict[str, Any]) -> Any:
    """Return the GE expectation suite for a partition, from the config and a training profile."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    rules = config.validation
    expectations: list[Any] = []
    required = [config.id_column, *config.features.all]
    if config.timestamp_column:
        required.append(config.timestamp_column)
    for column in required:
        expectations.append(gxe.ExpectColumnToExist(column=column))
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows))
    expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=config.id_column))
    expectations.append(gxe.ExpectColumnValuesToBeUnique(column=config.id_column))
    for column, stats in profile["numeric"].items():
        span = stats["max"] - stats["min"]
        expectations.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_DTYPES))
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=column, mostly=max(0.0, 1.0 - stats["null_rate"] - rules.null_rate_tolerance)
            )
        )
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=stats["min"] - rules.range_margin * span,
                max_value=stats["max"] + rules.range_margin * span,
                mostly=1.0 - rules.range_tolerance,
            )
        )
    for column, stats in profile["categorical"].items():
        expectations.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=STRING_DTYPES))
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=column, mostly=max(0.0, 1.0 - stats["null_rate"] - rules.null_rate_tolerance)
            )
        )
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=column, value_set=stats["domain"], mostly=1.0 - rules.categorical_unknown_tolerance
            )
        )
    return gx.ExpectationSuite(name=f"{config.model.registered_name}_partition", expectations=expectations)


@dataclass
class ValidationOutcome:
    """The verdict on one partition: rows seen, expectations run and the failures in words."""

    ds: str
    rows: int
    evaluated: int
    failures: list[str] = field(default_factory=list)
    ge_result: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures


def _exception_message(info: dict[str, Any]) -> str | None:
    """Return the message of an expectation's exception; GE nests it per metric for some expectations."""
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    return next((c.get("exception_message") for c in candidates if c.get("raised_exception")), None)


def _describe_failure(result: Any) -> str:
    config = result.expectation_config
    column = config.kwargs.get("column")
    name = f"{config.type}({column})" if column else config.type
    if config.type == "expect_column_to_exist":
        return f"required column {column!r} is missing"
    error = _exception_message(result.exception_info or {})
    if error:
        return f"{name}: could not be evaluated: {error}"
    details = result.result or {}
    if details.get("unexpected_percent") is not None:
        mostly = config.kwargs.get("mostly") or 1.0
        sample = sorted({str(v) for v in details.get("partial_unexpected_list") or []})[:5]
        return (
            f"{name}: {details['unexpected_percent']:.2f}% of values unexpected "
            f"(allowed {100 * (1 - mostly):.2f}%), for example {sample}"
        )
    return f"{name}: observed {details.get('observed_value')!r}"


def describe_failures(results: list[Any]) -> list[str]:
    """Return one sentence per failed expectation; checks on a missing column collapse into 'column missing'."""
    failed = [r for r in results if not r.success]
    missing = {
        r.expectation_config.kwargs.get("column") for r in failed if r.expectation_config.type == "expect_column_to_exist"
    }
    kept = [
        r
        for r in failed
        if r.expectation_config.type == "expect_column_to_exist" or r.expectation_config.kwargs.get("column") not in missing
    ]
    kept.sort(key=lambda r: r.expectation_config.type != "expect_column_to_exist")
    return [_describe_failure(r) for r in kept]


def run_suite(frame: pd.DataFrame, suite: Any) -> Any:
    """Validate a DataFrame against a suite in an ephemeral GE context (writes no files)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("partitions")
        .add_dataframe_asset(name="partition")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    return batch.validate(suite, result_format="SUMMARY")


def check_partition(config: PipelineConfig, ds: str, profile: dict[str, Any]) -> ValidationOutcome:
    """Validate `incoming/ds=<ds>` and return the outcome (no side effects; see `validate_partition`)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    try:
        partition = incoming_partition(config, ds)
        frame = read_table(partition, config.scoring.batch_rows).to_pandas()
    except PartitionSchemaError as exc:
        return ValidationOutcome(ds, rows=exc.rows, evaluated=0, failures=exc.failures)
    result = run_suite(frame, build_suite(config, profile))
    failures = describe_failures(result.results)
    return ValidationOutcome(ds, len(frame), len(result.results), failures, result.to_json_dict(),
                             files=[f.name for f in partition.files])


def validate_partition(config: PipelineConfig, ds: str, profile: dict[str, Any]) -> ValidationOutcome:
    """Validate a partition; on failure write `quarantine/ds=<ds>/validation.json` and raise.

    A partition that passes clears any quarantine record left by an earlier run of the same date.
    """
    outcome = check_partition(config, ds, profile)
    folder = partition_dir(config.data_root, QUARANTINE, ds)
    if outcome.success:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("partition %s passed %d expectations on %s rows", ds, outcome.evaluated, f"{outcome.rows:,}")
        return outcome
    where = f"incoming/ds={ds}" + (f" (files: {', '.join(outcome.files[:10])})" if outcome.files else "")
    reason = f"partition {where} failed validation: " + "; ".join(outcome.failures)
    write_json_atomic(
        folder / "validation.json",
        {
            "ds": ds,
            "quarantined_at": datetime.now(UTC).isoformat(),
            "rows": outcome.rows,
            "reason": reason,
            "failures": outcome.failures,
            "files": outcome.files,
            "great_expectations_result": outcome.ge_result,
        },
    )
    log.error("%s (details in %s)", reason, folder / "validation.json")
    raise PartitionQuarantinedError(
        f"{reason}. The partition was quarantined in {folder} and not scored: fix the upstream data, "
        "then rerun this date.",
        failures=outcome.failures,
        rows=outcome.rows,
    )
