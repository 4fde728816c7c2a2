"""The score of `make mutation`: mutmut's results per file, and every survivor not explained.

mutmut keeps one ``mutants/<path>.meta`` (JSON) per mutated file. The pure domain is
gateway/patch; gateway/edge/headers.py is counted on its own line. A survivor is explained
when docs/testing.md lists it (a table row starting with the mutant's name in backquotes)
as an equivalent mutant; the exit status is 1 while any survivor is unexplained, or any
listed one no longer survives (the list must say what is true now).

    python -m testing.mutation_score [--mutants DIR] [--docs FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from testing.paths import REPO

# mutmut's exit codes (mutmut/stats.py): what each says about a mutant.
KILLED = {1: "killed", 3: "killed", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 36: "timeout", 37: "killed"}
SURVIVED = 0
PURE_DOMAIN = "gateway/patch/"
_LISTED = re.compile(r"^\|\s*`(?P<name>[^`]+__mutmut_\d+)`")


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """source path -> {mutant name: exit code} for every file mutmut mutated."""
    found = {}
    for meta in sorted(mutants.glob("**/*.py.meta")):
        source = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        found[source] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    return found


def verdict(code: int | None) -> str:
    if code == SURVIVED:
        return "survived"
    if code is None:
        return "not run"
    if code in (5, 33):
        return "no tests"
    return KILLED.get(code, "suspicious")


def listed_equivalents(docs: Path) -> set[str]:
    return {match["name"] for line in docs.read_text("utf-8").splitlines() if (match := _LISTED.match(line))}


def _row(label: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    caught = counts["killed"] + counts["timeout"]
    score = f"{100 * caught / total:.1f}%" if total else "-"
    others = total - caught - counts["survived"]
    return f"{label:<34} {total:>7} {caught:>7} {counts['survived']:>8} {others:>6} {score:>7}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=REPO / "mutants")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "testing.md")
    args = parser.parse_args(argv)
    found = results(args.mutants)
    if not found:
        print(f"no mutmut results under {args.mutants}: run `make mutation` first", file=sys.stderr)
        return 2
    print(f"{'file':<34} {'mutants':>7} {'killed':>7} {'survived':>8} {'other':>6} {'score':>7}")
    pure: Counter[str] = Counter()
    everything: Counter[str] = Counter()
    survivors = []
    for source, codes in found.items():
        counts = Counter(verdict(code) for code in codes.values())
        print(_row(source, counts))
        everything += counts
        if source.startswith(PURE_DOMAIN):
            pure += counts
        survivors += [name for name, code in codes.items() if verdict(code) != "killed" and verdict(code) != "timeout"]
    print(_row("pure domain (gateway/patch)", pure))
    print(_row("all", everything))
    equivalents = listed_equivalents(args.docs)
    unexplained = sorted(set(survivors) - equivalents)
    stale = sorted(equivalents - set(survivors))
    print(f"\n{len(survivors)} not killed, {len(set(survivors) & equivalents)} listed as equivalent in {args.docs.name}")
    for name in unexplained:
        print(f"  unexplained: {name}   (mutmut show {name})")
    for name in stale:
        print(f"  listed but killed now (or gone): {name}")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
