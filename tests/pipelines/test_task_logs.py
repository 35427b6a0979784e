"""Task logs that read: no library floods, a start and end line per stage with its seconds."""

import logging
import sys
import types
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipelines.core.timing import stage
from pipelines.governance.registry import quiet_module_scan, trusted_types


@pytest.fixture
def deprecating_module():
    """A loaded module that warns on every attribute it does not have, as Airflow's deprecated modules do."""
    module = types.ModuleType("lazily_deprecating")

    def __getattr__(name):
        warnings.warn(f"lazily_deprecating.{name} is deprecated", FutureWarning, stacklevel=2)
        raise AttributeError(name)

    module.__getattr__ = __getattr__
    # first in import order, as Airflow's modules are in a worker: skops stops looking at the first module that
    # holds the function, so only modules loaded before scipy's are read
    loaded = list(sys.modules.items())
    sys.modules.clear()
    sys.modules[module.__name__] = module
    sys.modules.update(loaded)
    yield module
    del sys.modules[module.__name__]


def _import_skops_afresh() -> None:
    for name in [n for n in sys.modules if n == "skops" or n.startswith("skops.")]:
        del sys.modules[name]
    import skops.io  # noqa: F401  (skops looks up scipy's ufuncs in every loaded module when imported)


def test_skops_s_module_scan_no_longer_floods_the_log_and_other_warnings_still_show(deprecating_module):
    saved = {n: m for n, m in sys.modules.items() if n == "skops" or n.startswith("skops.")}
    try:
        with warnings.catch_warnings(record=True) as unfiltered:
            warnings.simplefilter("always")
            _import_skops_afresh()
        assert sum("lazily_deprecating" in str(w.message) for w in unfiltered) > 100  # the flood, unfiltered
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_module_scan():
                _import_skops_afresh()
                warnings.warn("a warning of our own", UserWarning, stacklevel=1)
            model = LogisticRegression().fit(np.random.default_rng(0).random((20, 2)), np.arange(20) % 2)
            assert "sklearn.linear_model._logistic.LogisticRegression" not in trusted_types(model)
        assert not [w for w in caught if "lazily_deprecating" in str(w.message)]
        assert [str(w.message) for w in caught] == ["a warning of our own"]  # only skops's lookup is silenced
    finally:
        sys.modules.update(saved)


def test_a_stage_logs_its_start_and_its_end_with_seconds(caplog):
    log = logging.getLogger("tests.stage")
    caplog.set_level("INFO", logger="tests.stage")
    seconds: dict[str, float] = {}
    with stage(log, "drift report", seconds):
        pass
    with pytest.raises(ValueError), stage(log, "data summary report"):
        raise ValueError("broken")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "stage drift report: started"
    assert lines[1] == f"stage drift report: done in {seconds['drift report']:.2f} s"
    assert lines[2] == "stage data summary report: started"
    assert lines[3].startswith("stage data summary report: failed after ") and caplog.records[3].levelname == "ERROR"
