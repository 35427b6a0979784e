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
from pipelines.lake import QUARANTINE, QUARANTINE_RECORD, partition_dir, write_json_atomic
from pipelines.schema import incoming_partition, read_table

log = logging.getLogger(__name__)

# Checks that say the data is broken always quarantine; these may be set to `warn` (validation.severity).
CONFIGURABLE_CHECKS = ("row_count", "range", "unknown_categories", "null_rate")


def severity(config: PipelineConfig, check: str) -> str:
    """Return `quarantine` or `warn` for a check (broken-data checks always quarantine)."""
    return getattr(config.validation.severity, check) if check in CONFIGURABLE_CHECKS else "quarantine"


def build_suite(config: PipelineConfig, profile: dict[str, Any]) -> Any:
    """Return the GE expectation suite for a partition, from the config and a training profile.

    Each expectation's `meta` names its check (see `severity`) and what was expected, for the messages.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    rules = config.validation

    def null_rate(column: str, stats: dict[str, Any]) -> Any:
        return gxe.ExpectColumnValuesToNotBeNull(
            column=column,
            mostly=max(0.0, 1.0 - stats["null_rate"] - rules.null_rate_tolerance),
            meta={"check": "null_rate", "training_null_rate": stats["null_rate"]},
        )

    expectations: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows, meta={"check": "row_count"}),
        gxe.ExpectColumnValuesToNotBeNull(column=config.id_column, meta={"check": "id_not_null"}),
        gxe.ExpectColumnValuesToBeUnique(column=config.id_column, meta={"check": "id_unique"}),
    ]
    for column, stats in profile["numeric"].items():
        span = stats["max"] - stats["min"]
        low, high = stats["min"] - rules.range_margin * span, stats["max"] + rules.range_margin * span
        expectations.append(null_rate(column, stats))
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=low,
                max_value=high,
                mostly=1.0 - rules.range_tolerance,
                meta={"check": "range", "training_min": stats["min"], "training_max": stats["max"]},
            )
        )
    for column, stats in profile["categorical"].items():
        expectations.append(null_rate(column, stats))
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=column,
                value_set=stats["domain"],
                mostly=1.0 - rules.categorical_unknown_tolerance,
                meta={"check": "unknown_categories"},
            )
        )
    return gx.ExpectationSuite(name=f"{config.model.registered_name}_partition", expectations=expectations)


@dataclass
class ValidationOutcome:
    """The verdict on one partition: rows seen, expectations run, failures (quarantine) and warnings, in words."""

    ds: str
    rows: int
    evaluated: int
    failures: list[str] = field(default_factory=list)
    ge_result: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    warned_columns: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures


def _exception_message(info: dict[str, Any]) -> str | None:
    """Return the message of an expectation's exception; GE nests it per metric for some expectations."""
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    return next((c.get("exception_message") for c in candidates if c.get("raised_exception")), None)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _describe_failure(config: PipelineConfig, result: Any, frame: pd.DataFrame) -> str:
    """Say what the check expected and what the partition holds."""
    expectation = result.expectation_config
    kwargs, meta = expectation.kwargs, expectation.meta or {}
    column, check = kwargs.get("column"), meta.get("check", expectation.type)
    error = _exception_message(result.exception_info or {})
    if error:
        return f"{check} check of column {column!r} could not be evaluated: {error}"
    details = result.result or {}
    allowed = 100 * (1 - (kwargs.get("mostly") or 1.0))
    found = details.get("unexpected_percent") or 0.0
    sample = sorted({str(v) for v in details.get("partial_unexpected_list") or []})[:5]
    values = frame.get(column)
    if check == "row_count":
        return f"row count: expected at least {kwargs['min_value']:,} rows (validation.min_rows), found {len(frame):,}"
    if check == "id_not_null":
        return f"id column {column!r}: expected no null ids, found {found:.2f}% null"
    if check == "id_unique":
        return (
            f"id column {column!r}: expected unique ids, found {found:.2f}% of rows sharing an id, for example {sample}"
        )
    if check == "null_rate":
        observed = 100 * float(values.isna().mean()) if values is not None else found
        return (
            f"column {column!r}: expected at most {allowed:.2f}% nulls (training {100 * meta['training_null_rate']:.2f}% "
            f"+ validation.null_rate_tolerance), found {observed:.2f}%"
        )
    if check == "range":
        present = values.dropna() if values is not None else pd.Series(dtype=float)
        seen = f"; found min {_num(present.min())}, max {_num(present.max())}" if len(present) else ""
        return (
            f"column {column!r}: {found:.2f}% of values outside the expected range "
            f"[{_num(kwargs['min_value'])}, {_num(kwargs['max_value'])}] (training [{_num(meta['training_min'])}, "
            f"{_num(meta['training_max'])}] widened by validation.range_margin {config.validation.range_margin:g}; "
            f"allowed {allowed:.2f}%){seen}"
        )
    if check == "unknown_categories":
        known = kwargs["value_set"]
        shown = ", ".join(repr(v) for v in known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        return (
            f"column {column!r}: {found:.2f}% of values are categories unseen in training (allowed {allowed:.2f}%), "
            f"for example {sample}; known: {shown}"
        )
    return f"{expectation.type}({column}): observed {details.get('observed_value')!r}"


def describe_results(
    config: PipelineConfig, results: list[Any], frame: pd.DataFrame
) -> tuple[list[str], list[str], list[str]]:
    """Return (quarantine failures, warnings, warned feature columns) for the failed expectations, in words."""
    failures, warnings, warned = [], [], []
    for result in results:
        if result.success:
            continue
        check = (result.expectation_config.meta or {}).get("check", "")
        text = _describe_failure(config, result, frame)
        if severity(config, check) == "warn":
            warnings.append(text)
            column = result.expectation_config.kwargs.get("column")
            if column in config.features.all and column not in warned:
                warned.append(column)
        else:
            failures.append(text)
    return failures, warnings, warned


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
    """Validate `incoming/ds=<ds>` and return the outcome (no side effects; see `validate_against_profile`)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    try:
        partition = incoming_partition(config, ds)
        frame = read_table(partition, config.scoring.batch_rows).to_pandas()
    except PartitionSchemaError as exc:
        return ValidationOutcome(ds, rows=exc.rows, evaluated=0, failures=exc.failures)
    result = run_suite(frame, build_suite(config, profile))
    failures, warnings, warned = describe_results(config, result.results, frame)
    return ValidationOutcome(
        ds,
        len(frame),
        len(result.results),
        failures,
        result.to_json_dict(),
        files=[f.name for f in partition.files],
        warnings=warnings,
        warned_columns=warned,
    )


def validate_against_profile(
    config: PipelineConfig, ds: str, profile: dict[str, Any], accepted_by: str | None = None
) -> ValidationOutcome:
    """Validate a partition; on failure write `quarantine/ds=<ds>/validation.json` and raise.

    Findings of checks set to `warn` are returned as warnings and the partition passes. `accepted_by` (an operator
    who accepted the night from the UI) turns the failures of the data checks into warnings too; a partition whose
    files cannot be read as configured can never be accepted. A partition that passes clears any quarantine record
    left by an earlier run of the same date, so it is then scored and usable for training.
    """
    outcome = check_partition(config, ds, profile)
    folder = partition_dir(config.data_root, QUARANTINE, ds)
    if outcome.failures and accepted_by and outcome.evaluated:
        log.warning("partition %s failed validation but was accepted by %s: %s", ds, accepted_by, outcome.failures)
        outcome.warnings = [f"accepted by {accepted_by}: {f}" for f in outcome.failures] + outcome.warnings
        outcome.failures = []
    if outcome.success:
        shutil.rmtree(folder, ignore_errors=True)
        for warning in outcome.warnings:
            log.warning("data-quality warning for %s: %s", ds, warning)
        log.info(
            "partition %s passed %d expectations on %s rows (%d warning(s))",
            ds,
            outcome.evaluated,
            f"{outcome.rows:,}",
            len(outcome.warnings),
        )
        return outcome
    where = f"incoming/ds={ds}" + (f" (files: {', '.join(outcome.files[:10])})" if outcome.files else "")
    reason = f"partition {where} failed validation: " + "; ".join(outcome.failures)
    write_json_atomic(
        folder / QUARANTINE_RECORD,
        {
            "ds": ds,
            "quarantined_at": datetime.now(UTC).isoformat(),
            "rows": outcome.rows,
            "reason": reason,
            "failures": outcome.failures,
            "warnings": outcome.warnings,
            "files": outcome.files,
            "great_expectations_result": outcome.ge_result,
        },
    )
    log.error("%s (details in %s)", reason, folder / QUARANTINE_RECORD)
    accept = (
        ""
        if not outcome.evaluated
        else (
            " If the data is right after all, accept the night: trigger batch_scoring with ds and accept_quarantine set."
        )
    )
    raise PartitionQuarantinedError(
        f"{reason}. The partition was quarantined in {folder} and not scored: fix the upstream data, "
        f"then rerun this date.{accept}",
        failures=outcome.failures,
        rows=outcome.rows,
        ds=ds,
    )
