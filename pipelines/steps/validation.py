"""The validation gate: a Great Expectations suite built from the config and the champion's training profile.

The suite is evaluated in one of two ways (`validation.engine`). `streamed` (the default) reads the partition
record batch by record batch and adds up each expectation's counts (rows, nulls, values out of range or outside
the known set, ids seen more than once), so memory stays flat at any partition size; `great_expectations` hands
the whole partition to Great Expectations' pandas engine. Both give the same verdicts and the same reasons
(tests/pipelines/test_validation.py compares them).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.config import PipelineConfig
from pipelines.core.errors import PartitionQuarantinedError, PartitionSchemaError
from pipelines.core.paths import QUARANTINE, QUARANTINE_RECORD
from pipelines.core.threads import return_freed_memory
from pipelines.storage import report_store
from pipelines.storage.atomic import write_json_atomic
from pipelines.storage.partitions import partition_dir
from pipelines.storage.schema import PartitionSchema, ReadTally, incoming_partition, iter_batches, read_table

log = logging.getLogger(__name__)

# Checks that say the data is broken always quarantine; these may be set to `warn` (validation.severity).
CONFIGURABLE_CHECKS = ("row_count", "range", "unknown_categories", "null_rate", "long_values")


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
    # the failures no operator may accept: files not readable as configured, null, duplicate or overlong ids
    broken: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # failures an operator accepted (now among the warnings)

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def acceptable(self) -> bool:
        """Whether an operator may accept the night (accept_quarantine): it failed only checks that may warn."""
        return bool(self.failures) and not self.broken


# how many unexpected values a result keeps as examples (Great Expectations' partial_unexpected_list)
EXAMPLES = 20


@dataclass
class CheckResult:
    """One expectation's verdict and the counts behind it, from either engine, for the messages and the record."""

    expectation: Any  # the suite's ExpectationConfiguration: type, kwargs, meta
    success: bool
    rows: int = 0  # element_count
    missing: int = 0  # nulls left out of the check (NaN counts as null, as in Great Expectations' pandas engine)
    unexpected: int = 0
    examples: list[Any] = field(default_factory=list)  # the first unexpected values, in row order
    present_min: float | None = None  # of the non-null values (range checks)
    present_max: float | None = None
    error: str | None = None

    @property
    def check(self) -> str:
        return str((self.expectation.meta or {}).get("check", self.expectation.type))

    @property
    def unexpected_percent(self) -> float:
        """Unexpected values as a share of the values considered (the non-null ones; all rows for a null check)."""
        considered = self.rows - self.missing
        return 100 * self.unexpected / considered if considered else 0.0

    def as_record(self) -> dict[str, Any]:
        """The result as the quarantine record keeps it (the shape of a Great Expectations result, SUMMARY)."""
        return {
            "expectation_config": {
                "type": self.expectation.type,
                "kwargs": dict(self.expectation.kwargs),
                "meta": self.expectation.meta or {},
            },
            "success": self.success,
            "result": {
                "element_count": self.rows,
                "missing_count": self.missing,
                "unexpected_count": self.unexpected,
                "unexpected_percent": self.unexpected_percent,
                "partial_unexpected_list": [_plain(v) for v in self.examples],
            },
            "exception_info": {"raised_exception": self.error is not None, "exception_message": self.error},
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _mostly(considered: int, unexpected: int, mostly: float | None) -> bool:
    """Great Expectations' rule: vacuously true with nothing to consider, else the passing share >= mostly."""
    if considered == 0:
        return True
    return (considered - unexpected) / considered >= (1.0 if mostly is None else mostly)


def _exception_message(info: dict[str, Any]) -> str | None:
    """Return the message of an expectation's exception; GE nests it per metric for some expectations."""
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    return next((c.get("exception_message") for c in candidates if c.get("raised_exception")), None)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _short(value: str, limit: int = 60) -> str:
    """A value shown in a message: long ones cut (the record keeps the examples as read)."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} characters)"


def _describe_failure(config: PipelineConfig, result: CheckResult) -> str:
    """Say what the check expected and what the partition holds."""
    kwargs, meta = result.expectation.kwargs, result.expectation.meta or {}
    column, check = kwargs.get("column"), result.check
    if result.error:
        return f"{check} check of column {column!r} could not be evaluated: {result.error}"
    allowed = 100 * (1 - (kwargs.get("mostly") or 1.0))
    found = result.unexpected_percent
    sample = [_short(v) for v in sorted({str(v) for v in result.examples})[:5]]
    if check == "row_count":
        return f"row count: expected at least {kwargs['min_value']:,} rows (validation.min_rows), found {result.rows:,}"
    if check == "id_not_null":
        return f"id column {column!r}: expected no null ids, found {found:.2f}% null"
    if check == "id_unique":
        return (
            f"id column {column!r}: expected unique ids, found {found:.2f}% of rows sharing an id, for example {sample}"
        )
    if check == "null_rate":
        return (
            f"column {column!r}: expected at most {allowed:.2f}% nulls (training {100 * meta['training_null_rate']:.2f}% "
            f"+ validation.null_rate_tolerance), found {found:.2f}%"
        )
    if check == "range":
        seen = (
            f"; found min {_num(result.present_min)}, max {_num(result.present_max)}"
            if result.present_min is not None and result.present_max is not None
            else ""
        )
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
    return f"{result.expectation.type}({column}): {result.unexpected} unexpected of {result.rows}"


def describe_results(config: PipelineConfig, results: list[CheckResult]) -> tuple[list[str], list[str], list[str]]:
    """Return (quarantine failures, warnings, warned feature columns) for the failed expectations, in words."""
    failures, warnings, warned = [], [], []
    for result in results:
        if result.success:
            continue
        text = _describe_failure(config, result)
        if severity(config, result.check) == "warn":
            warnings.append(text)
            column = result.expectation.kwargs.get("column")
            if column in config.features.all and column not in warned:
                warned.append(column)
        else:
            failures.append(text)
    return failures, warnings, warned


def lying_footers(partition: PartitionSchema, seen: ReadTally, ds: str) -> list[str]:
    """The files whose footer claims another row count than the rows read from them, in words (broken data)."""
    return [
        f"file incoming/ds={ds}/{file.name} is damaged: its footer claims {claimed:,} rows but it holds "
        f"{seen.rows.get(file.name, 0):,}; rewrite the file"
        for file, claimed in zip(partition.files, partition.footer_rows)
        if seen.rows.get(file.name, 0) != claimed
    ]


def describe_long_values(config: PipelineConfig, ds: str, seen: ReadTally) -> tuple[list[str], list[str], list[str]]:
    """Return (failures, warnings, broken ids) for text values above `validation.max_value_chars`, naming column, file
    and size. A long id always quarantines and can never be accepted (an id is a key, not a text); a long category
    follows `severity.long_values`."""
    limit = config.validation.max_value_chars
    failures, warnings, broken = [], [], []
    for column, file, longest in seen.over(limit):
        text = (
            f"column {column!r} holds a value of {longest:,} characters in file incoming/ds={ds}/{file} (the "
            f"longest allowed is {limit:,}, validation.max_value_chars)"
        )
        if column == config.id_column:
            failures.append(f"{text}: an id that long is broken data")
            broken.append(failures[-1])
        elif severity(config, "long_values") == "warn":
            warnings.append(f"{text}: such values are cut to {limit:,} characters for scoring and reports")
        else:
            failures.append(text)
    return failures, warnings, broken


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


def check_with_great_expectations(
    partition: PartitionSchema, suite: Any, batch_rows: int, seen: ReadTally | None = None
) -> list[CheckResult]:
    """Evaluate the suite with Great Expectations' pandas engine on the whole partition (held in memory)."""
    frame = read_table(partition, batch_rows, seen).to_pandas()
    outcome = run_suite(frame, suite)
    results = []
    for ge in outcome.results:
        details, column = ge.result or {}, ge.expectation_config.kwargs.get("column")
        ranged = ge.expectation_config.type == "expect_column_values_to_be_between"
        present = frame[column].dropna() if ranged and column in frame else None
        results.append(
            CheckResult(
                expectation=ge.expectation_config,
                success=bool(ge.success),
                rows=int(details.get("element_count", details.get("observed_value", len(frame))) or 0),
                missing=int(details.get("missing_count") or 0),
                unexpected=int(details.get("unexpected_count") or 0),
                examples=list(details.get("partial_unexpected_list") or []),
                present_min=float(present.min()) if present is not None and len(present) else None,
                present_max=float(present.max()) if present is not None and len(present) else None,
                error=_exception_message(ge.exception_info or {}),
            )
        )
    return results


COLUMN_BLOCK = 128  # columns read at once by the streamed engine


class _Tally:
    """The running counts of one column expectation over the record batches."""

    def __init__(self, expectation: Any) -> None:
        self.expectation, self.rows, self.missing, self.unexpected = expectation, 0, 0, 0
        self.examples: list[Any] = []
        self.low: float | None = None
        self.high: float | None = None

    def add(self, column: pa.Array) -> None:
        kind, kwargs = self.expectation.type, self.expectation.kwargs
        null = pc.is_null(column, nan_is_null=True)
        nulls = pc.sum(null).as_py() or 0
        self.rows += len(column)
        if kind == "expect_column_values_to_not_be_null":  # every row is considered; a null is unexpected
            self.unexpected += nulls
            return
        self.missing += nulls
        present = pc.invert(null)
        if kind == "expect_column_values_to_be_between":
            inside = pc.and_kleene(
                pc.greater_equal(column, kwargs["min_value"]), pc.less_equal(column, kwargs["max_value"])
            )
            values = pc.filter(column, present)
            if len(values):
                low, high = pc.min_max(values).values()
                self.low = low.as_py() if self.low is None else min(self.low, low.as_py())
                self.high = high.as_py() if self.high is None else max(self.high, high.as_py())
        elif kind == "expect_column_values_to_be_in_set":
            inside = pc.is_in(column, value_set=pa.array(kwargs["value_set"], column.type))
        else:
            raise ValueError(f"the streamed engine cannot evaluate {kind}: set validation.engine great_expectations")
        bad = pc.and_(present, pc.invert(pc.fill_null(inside, False)))
        count = pc.sum(bad).as_py() or 0
        self.unexpected += count
        if count and len(self.examples) < EXAMPLES:
            self.examples += pc.filter(column, bad).slice(0, EXAMPLES - len(self.examples)).to_pylist()

    def result(self) -> CheckResult:
        success = _mostly(self.rows - self.missing, self.unexpected, self.expectation.kwargs.get("mostly"))
        return CheckResult(
            self.expectation,
            success,
            self.rows,
            self.missing,
            self.unexpected,
            self.examples,
            self.low,
            self.high,
        )


def _id_keys(column: pa.Array) -> np.ndarray:
    """Return one 64-bit key per non-null id: the integer itself, or a hash of the text (collisions ~1e-7 at 5M)."""
    present = pc.drop_null(column)
    if pa.types.is_integer(present.type):
        return present.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pd.util.hash_array(np.asarray(present.to_numpy(zero_copy_only=False), dtype=object)).view(np.int64)


def check_streamed(
    partition: PartitionSchema, suite: Any, batch_rows: int, id_column: str, seen: ReadTally | None = None
) -> list[CheckResult]:
    """Evaluate the suite record batch by record batch; ids are checked for uniqueness across the whole partition.

    Memory: one record batch of at most COLUMN_BLOCK columns (a wider partition is read again for each block of
    columns), plus 8 bytes per id for the uniqueness pass (a second pass, only when ids repeat, collects the first
    examples in row order).
    """
    tallies: dict[int, _Tally] = {}
    row_count, unique = None, None
    for position, expectation in enumerate(e.configuration for e in suite.expectations):
        kind = expectation.type
        if kind == "expect_table_row_count_to_be_between":
            row_count = (position, expectation)
        elif kind == "expect_column_values_to_be_unique":
            unique = (position, expectation)
        else:
            tallies[position] = _Tally(expectation)
    by_column: dict[str, list[_Tally]] = {}
    for tally in tallies.values():
        by_column.setdefault(tally.expectation.kwargs["column"], []).append(tally)
    columns = [id_column, *sorted(set(by_column) - {id_column})]
    rows, keys = 0, []
    # a block of columns per pass: a reader holds buffers per column read at once, so a wide partition is read in
    # slices of COLUMN_BLOCK columns (the rows and the ids counted on the first pass)
    for start in range(0, len(columns), COLUMN_BLOCK):
        block = columns[start : start + COLUMN_BLOCK]
        first = start == 0
        tally_here: ReadTally | None = seen if first else ReadTally()
        for batch in iter_batches(partition.project(block), batch_rows, tally_here):
            if first:
                rows += batch.num_rows
                if unique is not None:
                    keys.append(_id_keys(batch.column(id_column)))
            for column in block:
                for tally in by_column.get(column, []):
                    tally.add(batch.column(column))
        if not first and seen is not None and tally_here is not None:
            for (column, file), longest in tally_here.longest.items():
                seen.add(column, file, longest)
    return_freed_memory()  # the reader's buffers of a wide partition, before scoring reads it again
    results: dict[int, CheckResult] = {position: tally.result() for position, tally in tallies.items()}
    if row_count is not None:
        position, expectation = row_count
        low, high = expectation.kwargs.get("min_value"), expectation.kwargs.get("max_value")
        success = (low is None or rows >= low) and (high is None or rows <= high)
        results[position] = CheckResult(expectation, success, rows=rows)
    if unique is not None:
        position, expectation = unique
        results[position] = _uniqueness(partition, expectation, keys, rows, batch_rows)
    return [results[position] for position in sorted(results)]


def _uniqueness(
    partition: PartitionSchema, expectation: Any, keys: list[np.ndarray], rows: int, batch_rows: int
) -> CheckResult:
    column = expectation.kwargs["column"]
    every = np.concatenate(keys) if keys else np.empty(0, np.int64)
    values, counts = np.unique(every, return_counts=True)
    repeated = values[counts > 1]
    unexpected = int(counts[counts > 1].sum())
    examples: list[Any] = []
    if unexpected:
        for batch in iter_batches(partition.project([column]), batch_rows):
            ids = pc.drop_null(batch.column(column))
            mask = np.isin(_id_keys(ids), repeated)
            examples += pc.filter(ids, pa.array(mask)).slice(0, EXAMPLES - len(examples)).to_pylist()
            if len(examples) >= EXAMPLES:
                break
    considered = len(every)
    return CheckResult(
        expectation,
        _mostly(considered, unexpected, expectation.kwargs.get("mostly")),
        rows,
        rows - considered,
        unexpected,
        examples,
    )


def check_partition(config: PipelineConfig, ds: str, profile: dict[str, Any]) -> ValidationOutcome:
    """Validate `incoming/ds=<ds>` and return the outcome (no side effects; see `validate_against_profile`)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    try:
        partition = incoming_partition(config, ds)
        suite = build_suite(config, profile)
        seen = ReadTally()
        if config.validation.engine == "great_expectations":
            results = check_with_great_expectations(partition, suite, config.scoring.batch_rows, seen)
        else:
            results = check_streamed(partition, suite, config.scoring.batch_rows, config.id_column, seen)
    except PartitionSchemaError as exc:
        return ValidationOutcome(ds, rows=exc.rows, evaluated=0, failures=exc.failures, broken=exc.failures)
    failures, warnings, warned = describe_results(config, results)
    broken = [_describe_failure(config, r) for r in results if not r.success and r.check not in CONFIGURABLE_CHECKS]
    long_failures, long_warnings, long_ids = describe_long_values(config, ds, seen)
    lying = lying_footers(partition, seen, ds)
    failures, warnings = lying + failures + long_failures, warnings + long_warnings
    broken = lying + broken + long_ids
    rows = next((r.rows for r in results if r.check == "row_count"), results[0].rows if results else 0)
    return ValidationOutcome(
        ds,
        rows,
        len(results),
        failures,
        {
            "engine": config.validation.engine,
            "success": not failures,
            "results": [r.as_record() for r in results],
        },
        files=[f.name for f in partition.files],
        warnings=warnings,
        warned_columns=warned,
        broken=broken,
    )


def validate_against_profile(
    config: PipelineConfig, ds: str, profile: dict[str, Any], accepted_by: str | None = None
) -> ValidationOutcome:
    """Validate a partition; on failure write `quarantine/ds=<ds>/validation.json` and raise.

    Findings of checks set to `warn` are returned as warnings and the partition passes. `accepted_by` (an operator
    who accepted the night from the UI) turns the failures of the checks that may warn into warnings too; broken
    data (files not readable as configured, null, duplicate or overlong ids) can never be accepted. A partition that
    passes clears any quarantine record left by an earlier run of the same date, so it is then scored and usable for
    training.
    """
    outcome = check_partition(config, ds, profile)
    folder = partition_dir(config.work_root, QUARANTINE, ds)
    if accepted_by and outcome.acceptable:
        log.warning("partition %s failed validation but was accepted by %s: %s", ds, accepted_by, outcome.failures)
        outcome.warnings = [f"accepted by {accepted_by}: {f}" for f in outcome.failures] + outcome.warnings
        outcome.accepted, outcome.failures = outcome.failures, []
    if outcome.success:
        shutil.rmtree(folder, ignore_errors=True)
        report_store.withdraw(config, folder)
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
            "acceptable": outcome.acceptable,
            "great_expectations_result": outcome.ge_result,
        },
    )
    report_store.publish(config, folder)
    log.error("%s (details in %s)", reason, folder / QUARANTINE_RECORD)
    accept = (
        " If the data is right after all, accept the night: trigger batch_scoring with ds and accept_quarantine set."
        if outcome.acceptable
        else " Broken data (files not readable as configured, null, duplicate or overlong ids) can never be accepted."
    )
    raise PartitionQuarantinedError(
        f"{reason}. The partition was quarantined in {folder} and not scored: fix the upstream data, "
        f"then rerun this date.{accept}",
        failures=outcome.failures,
        rows=outcome.rows,
        ds=ds,
        acceptable=outcome.acceptable,
    )
