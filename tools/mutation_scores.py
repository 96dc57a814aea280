#!/usr/bin/env python
"""Mutation scores per core module from mutmut's results (``make mutate``; docs/mutation.md).

    python tools/mutation_scores.py [--write docs/mutation.md] [--survivors]
    python tools/mutation_scores.py --sample K [PATTERN ...]     # print the mutants of a sampled run (``make mutate``)

Reads ``mutmut results --all true`` (run in the repository root after ``mutmut run``) and the list of equivalent
mutants in ``docs/mutation_equivalent.txt`` (one ``<mutant name>  # <one-line reason>`` per line: a mutant no test can
kill because the program's behaviour does not change; a reason starting "CUDA-only" marks a mutant that changes
behaviour only on a CUDA device, left out of the score where CUDA is absent).  Score per module = killed / (checked
mutants - equivalent);
timeouts count as killed (the mutant hangs: a test notices), "no tests" and "survived" do not; mutants not run yet
(an interrupted run: ``make mutate`` resumes) are counted apart.  ``--write`` replaces the table
between the ``<!-- scores -->`` markers of the given file; ``--survivors`` lists the non-equivalent survivors.

Sampling (``make mutate``, ``MUTATION_SAMPLE=K``): a run of all ~8,600 core mutants takes 3-8 hours on 2 cores, so by
default ``make mutate`` runs a fixed random sample of K mutants per module (uniform without replacement; the order is
the SHA-256 of the mutant's name, so the sample is the same on every machine and a larger K contains a smaller one).
Random mutant sampling estimates the mutation score without bias (Acree 1980; Wong & Mathur 1995, "Reducing the cost
of mutation testing: an empirical study", J. Syst. Softw. 31: a 10% sample kept the score within a few points); the
table then gives each module's score over its sampled, checked mutants with a Wilson 95% interval, so a module whose
sample is small says so.  ``MUTATION_SAMPLE=all`` runs every mutant (the interval closes to the point).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import math
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


def sample(names, k: int | None, patterns=()) -> list[str]:
    """K mutants per module (all of them for k None), by the SHA-256 order of their names; fnmatch ``patterns``
    (if any) restrict the modules / mutants first."""
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    by_module = defaultdict(list)
    for n in names:
        by_module[module_of(n)].append(n)
    picked = []
    for mod in sorted(by_module):
        ranked = sorted(by_module[mod], key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        picked += ranked if k is None else ranked[:k]
    return picked


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (Wilson 1927), 95% for z = 1.96."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


CUDA_ONLY = "CUDA-only"     # a reason starting so: the mutant changes behaviour only on a CUDA device


def cuda_available() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:          # no torch here: no CUDA either
        return False


def table(results: dict[str, str], equivalent: dict[str, str], cuda: bool = False) -> tuple[str, list[str]]:
    """The per-module table and the survivors. Mutants listed with a reason starting "CUDA-only" (a device argument
    dropped, a branch taken only on CUDA: on a CPU the program is the same) are left out of the score where
    ``cuda`` is False (counted in the "CUDA-only" column) and scored like any other mutant where it is True."""
    counts = defaultdict(lambda: defaultdict(int))
    survivors = []
    for name, status in results.items():
        mod = module_of(name)
        if name in equivalent and not (cuda and equivalent[name].startswith(CUDA_ONLY)):
            counts[mod]["cuda-only" if equivalent[name].startswith(CUDA_ONLY) else "equivalent"] += 1
            continue
        key = {"killed": "killed", "timeout": "killed", "survived": "survived", "no tests": "no tests"}.get(status, status)
        counts[mod][key] += 1
        counts[mod]["timeouts"] += status == "timeout"
        if key in ("survived", "no tests"):
            survivors.append(f"{name}: {status}")
    lines = ["| module | mutants | checked | killed (timeouts) | survived | no tests | equivalent | CUDA-only | score | "
             "95% interval |", "|---|---|---|---|---|---|---|---|---|---|"]
    for mod in sorted(counts):
        c = counts[mod]
        total = sum(v for key, v in c.items() if key != "timeouts")
        live = c["killed"] + c["survived"] + c["no tests"]          # checked, not equivalent
        if not live:
            continue
        score = c["killed"] / live
        lo, hi = wilson(c["killed"], live)
        flag = "" if score >= GOAL else " (below 90%)"
        lines.append(f"| `{mod}` | {total} | {live + c['equivalent'] + c['cuda-only']} | {c['killed']} ({c['timeouts']}) | "
                     f"{c['survived']} | {c['no tests']} | {c['equivalent']} | {c['cuda-only']} | {score:.0%}{flag} | "
                     f"{lo:.0%}-{hi:.0%} |")
    return "\n".join(lines), sorted(survivors)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="replace the table between <!-- scores --> markers of this file")
    ap.add_argument("--survivors", action="store_true", help="list the non-equivalent survivors")
    ap.add_argument("--sample", metavar="K", help="print K mutants per module (or 'all') to run, one per line, and exit")
    ap.add_argument("patterns", nargs="*", help="with --sample: fnmatch patterns restricting the mutants")
    a = ap.parse_args(argv)
    results = read_results()
    if a.sample is not None:
        if a.sample != "all" and not (a.sample.isdigit() and int(a.sample) > 0):
            ap.error(f"--sample must be a positive integer or 'all', got {a.sample!r}")
        if not results:
            print("no mutants generated: run `mutmut run` once first", file=sys.stderr)
            return 2
        print("\n".join(sample(results, None if a.sample == "all" else int(a.sample), a.patterns)))
        return 0
    if not results:
        print("no mutmut results: run `mutmut run` (make mutate) first", file=sys.stderr)
        return 2
    text, survivors = table(results, read_equivalent(), cuda_available())
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
