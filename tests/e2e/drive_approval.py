"""Bootstrap a champion, then run retrain_model once per reason given; each run waits at the approval step until
someone answers through the api-server (or the timeout sweep answers). Usage: drive_approval.py OUT_DIR REASON...
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path

from harness.runner import run_dag

out_dir = Path(sys.argv[1])
outcomes = {"bootstrap": asdict(run_dag("retrain_model", None, {"window_end": "2026-09-08", "reason": "bootstrap"}))}
for reason in sys.argv[2:]:
    outcomes[reason] = asdict(run_dag("retrain_model", None, {"reason": reason, "window": "sliding"}))
    (out_dir / "outcomes.json").write_text(json.dumps(outcomes, default=str, indent=2))
