"""Several runs side by side: each path's ratio to the floor of its own run, low–median–high.

    python -m benchmarks.spread bench-results/2026-11-28T0938* bench-results/2026-11-28T0945*
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.report import FLOOR, Result, find, ratio


def load(run: Path) -> list[Result]:
    return [Result(**row) for row in json.loads((run / "results.json").read_text())]


def spread_table(runs: list[list[Result]]) -> list[str]:
    lines = [
        f"| workload | path | × floor, median of {len(runs)} | low–high | req/s or MB/s, median |",
        "|---|---|--:|--:|--:|",
    ]
    keys = [(r.workload, r.path) for r in runs[0] if r.path != FLOOR]
    for workload, path in keys:
        ratios, rates = [], []
        for results in runs:
            result = find(results, workload, path)
            if result is not None and (value := ratio(results, result)) is not None:
                ratios.append(value)
                rates.append(result.rate)
        if ratios:
            lines.append(
                f"| {workload} | {path} | **{statistics.median(ratios):.2f}** | {min(ratios):.2f}–{max(ratios):.2f} "
                f"| {statistics.median(rates):,.0f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="result directories of `python -m benchmarks`")
    args = parser.parse_args()
    print("\n".join(spread_table([load(run) for run in args.runs])))


if __name__ == "__main__":
    main()
