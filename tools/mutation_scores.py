#!/usr/bin/env python
"""Mutation scores per core module from mutmut's results (``make mutate``; docs/mutation.md).

    python tools/mutation_scores.py [--write docs/mutation.md] [--survivors]

Reads ``mutmut results --all true`` (run in the repository root after ``mutmut run``) and the list of equivalent
mutants in ``docs/mutation_equivalent.txt`` (one ``<mutant name>  # <one-line reason>`` per line: a mutant no test can
kill because the program's behaviour does not change).  Score per module = killed / (checked mutants - equivalent);
timeouts count as killed (the mutant hangs: a test notices), "no tests" and "survived" do not; mutants not run yet
(an interrupted run: ``make mutate`` resumes) are counted apart.  ``--write`` replaces the table
between the ``<!-- scores -->`` markers of the given file; ``--survivors`` lists the non-equivalent survivors.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "docs" / "mutation_equivalent.txt"
GOAL = 0.90


def read_results() -> dict[str, str]:
    exe = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(exe), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    res = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m:
            res[m.group(1)] = m.group(2).strip()
    return res


def read_equivalent() -> dict[str, str]:
    eq = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition("#")
                eq[name.strip()] = reason.strip()
    return eq


def module_of(mutant: str) -> str:
    return mutant.split(".x_")[0].split(".xǁ")[0]


def table(results: dict[str, str], equivalent: dict[str, str]) -> tuple[str, list[str]]:
    counts = defaultdict(lambda: defaultdict(int))
    survivors = []
    for name, status in results.items():
        mod = module_of(name)
        if name in equivalent:
            counts[mod]["equivalent"] += 1
            continue
        key = {"killed": "killed", "timeout": "killed", "survived": "survived", "no tests": "no tests"}.get(status, status)
        counts[mod][key] += 1
        if key in ("survived", "no tests"):
            survivors.append(f"{name}: {status}")
    lines = ["| module | mutants | killed | survived | no tests | equivalent | not run yet | score |",
             "|---|---|---|---|---|---|---|---|"]
    for mod in sorted(counts):
        c = counts[mod]
        total = sum(c.values())
        live = c["killed"] + c["survived"] + c["no tests"]          # checked, not equivalent
        score = c["killed"] / live if live else float("nan")
        flag = "" if score >= GOAL else " (below 90%)"
        lines.append(f"| `{mod}` | {total} | {c['killed']} | {c['survived']} | {c['no tests']} | {c['equivalent']} | "
                     f"{c['not checked']} | {score:.0%}{flag} |")
    return "\n".join(lines), sorted(survivors)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="replace the table between <!-- scores --> markers of this file")
    ap.add_argument("--survivors", action="store_true", help="list the non-equivalent survivors")
    a = ap.parse_args(argv)
    results = read_results()
    if not results:
        print("no mutmut results: run `mutmut run` (make mutate) first", file=sys.stderr)
        return 2
    text, survivors = table(results, read_equivalent())
    print(text)
    if a.survivors:
        print("\n".join(survivors))
    if a.write:
        doc = a.write.read_text()
        new = re.sub(r"<!-- scores -->.*?<!-- /scores -->", f"<!-- scores -->\n{text}\n<!-- /scores -->", doc, flags=re.S)
        a.write.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
