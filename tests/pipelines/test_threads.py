"""Threads on a shared worker: OpenMP's passive wait policy before scikit-learn loads it, and per-task caps."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import json, os, sys
{first}
import pipelines.flows.scoring
import sklearn.ensemble
from pipelines.core.threads import openmp_loaded
import pyarrow
print(json.dumps({{"policy": os.environ.get("OMP_WAIT_POLICY"), "openmp": openmp_loaded(),
                  "arrow_pool": pyarrow.default_memory_pool().backend_name}}))
"""


def _probe(first: str = "", **env: str) -> tuple[dict, str]:
    unset = {"OMP_WAIT_POLICY", "ARROW_DEFAULT_MEMORY_POOL"}
    environ = {k: v for k, v in os.environ.items() if k not in unset} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(first=first)], env=environ, capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_importing_the_pipeline_asks_for_passive_openmp_before_scikit_learn_loads_it():
    seen, _ = _probe()
    assert seen == {"policy": "PASSIVE", "openmp": True, "arrow_pool": "system"}


def test_an_arrow_allocator_set_by_the_operator_is_kept():
    seen, _ = _probe(ARROW_DEFAULT_MEMORY_POOL="jemalloc")
    assert seen["arrow_pool"] == "jemalloc"


def test_pyarrow_loaded_before_the_pipeline_is_reported():
    seen, err = _probe(first="import logging; logging.basicConfig(); import pyarrow")
    assert seen["arrow_pool"] != "system"  # too late for this process: said so
    assert "pyarrow was loaded before ARROW_DEFAULT_MEMORY_POOL could be set" in err


def test_a_wait_policy_set_by_the_operator_is_kept():
    seen, _ = _probe(OMP_WAIT_POLICY="ACTIVE")
    assert seen["policy"] == "ACTIVE"


def test_openmp_loaded_before_the_pipeline_is_reported():
    seen, err = _probe(first="import logging; logging.basicConfig(); import sklearn.ensemble")
    assert seen["policy"] == "PASSIVE"  # set, but too late for this process: said so
    assert "OpenMP was loaded before OMP_WAIT_POLICY could be set" in err


def test_a_task_s_native_threads_are_capped_inside_the_block():
    import sklearn.ensemble  # noqa: F401  (loads OpenMP)
    from threadpoolctl import threadpool_info

    from pipelines.core.threads import thread_cap

    def openmp_threads():
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"}

    before = openmp_threads()
    with thread_cap(1, "test"):
        assert openmp_threads() == {1}
    assert openmp_threads() == before
