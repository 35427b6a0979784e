"""Partition time: every window, delay and age in the config counts partitions of the configured cadence."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from croniter import croniter

from pipelines.core.config import PipelineConfig

# Further than this many partitions is "very old" for every rule that counts them (keeps a count bounded).
_MAX_COUNT = 100_000


def _at(day: date, moment: time = time(0, 0)) -> datetime:
    return datetime.combine(day, moment, tzinfo=UTC)


_LAST_MINUTE = time(23, 59)


def partitions_between(config: PipelineConfig, first: date, last: date) -> int:
    """Return how many partition periods separate two partition dates (0 when `last` is not after `first`).

    Counted in ticks of the cadence, so a missing partition still counts: the age of data is time, not files.
    """
    if last <= first:
        return 0
    ticks = croniter(config.schedule, _at(first, _LAST_MINUTE))
    count = 0
    end = _at(last, _LAST_MINUTE)
    while count < _MAX_COUNT and ticks.get_next(datetime) <= end:
        count += 1
    return count


def shift(config: PipelineConfig, day: date, partitions: int) -> date:
    """Return the partition date `partitions` periods after `day` (before it when negative)."""
    # ticks strictly after the partition's day going forward, strictly before it going back
    ticks = croniter(config.schedule, _at(day, _LAST_MINUTE) if partitions > 0 else _at(day))
    moment = _at(day)
    for _ in range(abs(partitions)):
        moment = ticks.get_next(datetime) if partitions > 0 else ticks.get_prev(datetime)
    return moment.date()


def unit(config: PipelineConfig) -> str:
    """Return the word for one partition period, for messages (day, week, month, year or partition)."""
    return {"daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}.get(config.cadence, "partition")
