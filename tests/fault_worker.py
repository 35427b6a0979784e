"""A pipeline step in its own process, for fault tests that kill it, starve its disk or race it with another.

Usage: fault_worker.py CONFIG STEP [ARGS...]; STEP is score DS RUN_ID [FILE_SIZE_LIMIT_BYTES], monitor DS RUN_ID
SCORED_JSON, promote VERSION RUN_ID, or rollback RUN_ID. Prints the step's result as JSON, or `error: <type>: <message>`
and exits 3 on a PipelineError.
"""

import json
import resource
import signal
import sys
from dataclasses import asdict

from pipelines import monitoring, promotion, registry, scoring
from pipelines.config import load_config
from pipelines.errors import PipelineError

config = load_config(sys.argv[1])
step, args = sys.argv[2], sys.argv[3:]
try:
    if step == "score":
        if len(args) > 2:  # a full disk, as the kernel reports it: writes past the limit fail with EFBIG
            registry.load_model(config, registry.champion(config))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(args[2]), int(args[2])))
        result = asdict(scoring.score_partition(config, args[0], args[1]))
    elif step == "monitor":
        result = monitoring.monitor_night(config, args[0], json.loads(args[2]), args[1])
    elif step == "promote":
        mv = registry.client(config).get_model_version(config.model.registered_name, args[0])
        ref = registry.ModelRef(config.model.registered_name, args[0], mv.run_id)
        result = promotion.promote(config, ref, "fault test", "tester", args[1], None)
    elif step == "rollback":
        result = promotion.rollback(config, None, "fault test", "tester", args[0])
    else:
        raise SystemExit(f"unknown step {step}")
except PipelineError as exc:
    print(f"error: {type(exc).__name__}: {exc}")
    sys.exit(3)
print(json.dumps(result, default=str))
