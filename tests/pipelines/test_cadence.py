"""Partition time: counts and steps in partitions of the configured cadence."""

from datetime import date

import pytest

from pipelines.core.cadence import partitions_between, shift, unit
from pipelines.core.config import load_config
from tests.conftest import write_config


@pytest.mark.parametrize(
    ("cadence", "first", "later", "steps", "word"),
    [
        ("daily", date(2026, 1, 1), date(2026, 1, 4), 3, "day"),
        ("weekly", date(2026, 11, 2), date(2026, 11, 23), 3, "week"),
        ("monthly", date(2026, 1, 1), date(2026, 4, 1), 3, "month"),
        ("yearly", date(2015, 1, 1), date(2018, 1, 1), 3, "year"),
        ("0 6 * * 0", date(2026, 11, 1), date(2026, 11, 22), 3, "partition"),  # Sundays
    ],
)
def test_counts_and_steps_are_in_partitions(tmp_path, cadence, first, later, steps, word):
    config = load_config(write_config(tmp_path, cadence=cadence))
    assert shift(config, first, steps) == later
    assert shift(config, later, -steps) == first
    assert partitions_between(config, first, later) == steps
    assert partitions_between(config, later, first) == 0
    assert unit(config) == word
