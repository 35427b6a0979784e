"""A pipeline step in its own process, for fault tests that kill it, starve its disk or race it with another.

Usage: fault_worker.py CONFIG STEP [ARGS...]; STEP is score DS RUN_ID [FILE_SIZE_LIMIT_BYTES], monitor DS RUN_ID
VALIDATED_JSON SCORED_JSON, promote VERSION RUN_ID, or rollback RUN_ID. Prints the step's result as JSON, or `error: <type>: <message>`
and exits 3 on a PipelineError.
"""

import resource
import signal
import sys

from pipelines.core.config import load_config
from pipelines.core.contracts import ScoringSummary, ValidatedPartition
from pipelines.core.errors import PipelineError
from pipelines.flows import nightly
from pipelines.governance import promotion
from pipelines.governance.registry import Registry
from tests.conftest import score_with_champion

config = load_config(sys.argv[1])
step, args = sys.argv[2], sys.argv[3:]
try:
    if step == "score":
        if len(args) > 2:  # a full disk, as the kernel reports it: writes past the limit fail with EFBIG
            Registry.open(config).load_model(Registry.open(config).champion())
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(args[2]), int(args[2])))
        result = score_with_champion(config, args[0], args[1])
    elif step == "monitor":
        validated, scored = ValidatedPartition.model_validate_json(args[2]), ScoringSummary.model_validate_json(args[3])
        result = nightly.monitor_night(config, validated, scored, args[1])
    elif step == "promote":
        ref = Registry.open(config).version(args[0])
        result = promotion.promote(config, ref, "fault test", "tester", args[1], None)
    elif step == "rollback":
        result = promotion.rollback(config, None, "fault test", "tester", args[0])
    else:
        raise SystemExit(f"unknown step {step}")
except PipelineError as exc:
    print(f"error: {type(exc).__name__}: {exc}")
    sys.exit(3)
print(result.model_dump_json())
