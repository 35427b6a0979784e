"""Summarise a `mutmut run` (what `make mutate` prints): kill rate per module and the surviving mutants.

Reads mutmut's result files under mutants/ (`<module>.py.meta`); run from the repository root.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code


def main() -> int:
    metas = sorted(Path("mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `make mutate` first")
        return 1
    total: Counter[str] = Counter()
    survivors = []
    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'survived':>8} {'other':>6} {'kill rate':>9}")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = Counter(status_by_exit_code[code] for code in codes.values())
        killed = statuses["killed"] + statuses["timeout"] + statuses["caught by type check"]
        other = sum(statuses.values()) - killed - statuses["survived"]
        total.update({"mutants": len(codes), "killed": killed, "survived": statuses["survived"], "other": other})
        survivors += sorted(key for key, code in codes.items() if status_by_exit_code[code] == "survived")
        rate = killed / max(killed + statuses["survived"], 1)
        name = str(meta.relative_to("mutants")).removesuffix(".meta")
        print(f"{name:<28} {len(codes):>7} {killed:>7} {statuses['survived']:>8} {other:>6} {rate:>9.1%}")
    rate = total["killed"] / max(total["killed"] + total["survived"], 1)
    print(
        f"{'all':<28} {total['mutants']:>7} {total['killed']:>7} {total['survived']:>8} {total['other']:>6} {rate:>9.1%}"
    )
    print("\nsurvivors (mutmut show <name> prints the change):")
    for name in survivors:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
