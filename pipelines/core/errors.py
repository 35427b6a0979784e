"""The project's own exceptions: each message says what happened and what to do."""

from __future__ import annotations

import re

_CREDENTIAL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@'\"]*):[^/\s@'\"]*@")
_QUERY = re.compile(r"(?P<url>[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"?]*)\?[^\s'\"]*")


def redact(text: str) -> str:
    """Text with the passwords and query strings of the URLs in it masked (for messages and logs)."""
    text = _CREDENTIAL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY.sub(lambda m: f"{m['url']}?***", text)


class PipelineError(Exception):
    """A problem a user can cause and fix (bad config, missing partition, missing model)."""


class ConfigError(PipelineError):
    """The pipeline YAML file is missing or invalid."""


class PartitionMissingError(PipelineError):
    """The partition for a date has not arrived."""


class PartitionQuarantinedError(PipelineError):
    """A partition failed validation and was quarantined instead of scored."""

    def __init__(
        self,
        message: str,
        failures: list[str] | None = None,
        rows: int = 0,
        ds: str | None = None,
        acceptable: bool = False,
    ) -> None:
        super().__init__(message)
        self.failures = failures or []
        self.rows = rows
        self.ds = ds  # the partition's date, so a failure alert needs nothing but the exception
        self.acceptable = acceptable  # whether an operator may accept the night (only checks that may warn failed)


class NoChampionError(PipelineError):
    """The registry has no model with the `champion` alias."""


class TrainingDataError(PipelineError):
    """There is not enough labelled data to train a model."""


class TrainingNotReady(TrainingDataError):
    """Too little labelled data yet (partitions, rows, classes, or partitions since the drift onset): the run waits.

    A retraining request that meets it is skipped with this reason, never failed; a later request retries.
    `ready_after`: the partition after which enough should exist (ISO date), when it can be worked out.
    """

    def __init__(self, message: str, ready_after: str | None = None) -> None:
        super().__init__(message)
        self.ready_after = ready_after


class InvalidDateError(PipelineError):
    """A partition date is not a calendar date in YYYY-MM-DD form."""


class DataRootError(PipelineError):
    """The configured data root (or a partition folder in it) is not a readable folder."""


class PartitionSchemaError(PipelineError):
    """A partition's files disagree with the configured columns or with each other (file and column named)."""

    def __init__(self, message: str, failures: list[str], rows: int = 0) -> None:
        super().__init__(message)
        self.failures = failures
        self.rows = rows  # rows in the files whose footers could be read


class StoreMissingError(PipelineError):
    """The MLflow store (database or artifacts) is missing; it is never recreated implicitly."""


class AuditIntegrityError(PipelineError):
    """The audit log was truncated, rewritten or cannot be verified."""


class ChampionMissingError(NoChampionError):
    """The `champion` alias is gone although a former champion is on record: re-establishing one is an operator action."""


class ReportStoreError(PipelineError):
    """The object store that reports are published to cannot be reached or refused a write or a read."""


class TriggerParamsError(PipelineError):
    """A run's trigger Params do not fit the DAG's Params model (a conf that bypassed the form's validation)."""


class TrainerError(PipelineError):
    """`model.trainer` cannot be imported, raised, or returned something that is not an estimator (no retry helps)."""
