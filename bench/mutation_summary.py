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
    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'unrun':>6} {'kill rate':>9}")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = Counter(status_by_exit_code[code] for code in codes.values())
        killed, timeout = statuses["killed"] + statuses["caught by type check"], statuses["timeout"]
        other = sum(statuses.values()) - killed - timeout - statuses["survived"]
        total.update(
            {
                "mutants": len(codes),
                "killed": killed,
                "timeout": timeout,
                "survived": statuses["survived"],
                "other": other,
            }
        )
        survivors += sorted(key for key, code in codes.items() if status_by_exit_code[code] == "survived")
        rate = (killed + timeout) / max(killed + timeout + statuses["survived"], 1)
        name = str(meta.relative_to("mutants")).removesuffix(".meta")
        print(f"{name:<28} {len(codes):>7} {killed:>7} {timeout:>7} {statuses['survived']:>8} {other:>6} {rate:>9.1%}")
    done = total["killed"] + total["timeout"] + total["survived"]
    rate, strict = (total["killed"] + total["timeout"]) / max(done, 1), total["killed"] / max(done, 1)
    print(
        f"{'all':<28} {total['mutants']:>7} {total['killed']:>7} {total['timeout']:>7} {total['survived']:>8} "
        f"{total['other']:>6} {rate:>9.1%}"
    )
    print(
        f"kill rate of the {done} mutants run: {rate:.1%} (a timeout counts as caught: the tests ran past 15x their "
        f"time); {strict:.1%} counting failed tests only. unrun: no test covers the line, or not run yet"
    )
    print("\nsurvivors (mutmut show <name> prints the change):")
    sys.stdout.writelines(f"  {name}\n" for name in survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
