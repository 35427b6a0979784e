"""Stage lines in task logs: one line when a stage starts, one when it ends, with its seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stage(log: logging.Logger, name: str, seconds: dict[str, float] | None = None) -> Iterator[None]:
    """Log `name` started, then done (or failed) with its seconds; also store them in `seconds[name]` when given."""
    log.info("stage %s: started", name)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        log.error("stage %s: failed after %.2f s", name, time.monotonic() - started)
        raise
    took = time.monotonic() - started
    if seconds is not None:
        seconds[name] = took
    log.info("stage %s: done in %.2f s", name, took)
