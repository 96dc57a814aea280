"""Training rows in parallel worker processes (one torch thread each), before the study's sequential pass.

A batch-64 training step is many small ops: one thread per process is the efficient setting on a 2-core
CPU (bench/RESULTS.md), which leaves the second core idle during a sequential run.  ``pretrain`` forks up
to ``workers`` processes, each running one row's ``train(ctx)`` -- which trains into the row's model cache
(``OUT/models/<row>-<hash>/``, marked done with its wall time) -- and reporting its outcome (ok, not run,
diverged, error) in a small JSON file.  The parent's sequential pass then loads each cached model (no
second training) and records the outcomes.  Only rows marked ``Method.pretrain`` run in a worker; a
row's ``after`` rows are loaded (from their caches) in the worker before it trains (the same-wall-time
VAE needs discrete LPC's wall time).  Each row's training wall time is its own worker's: rows train side
by side, one core each, so their wall times stay comparable (discrete LPC and the same-wall-time VAE
both train next to another row).

Workers are forked (the row callables need no pickling; DataLoader workers fork the same way).  Where
fork is unavailable, or with one worker, nothing happens here and the sequential pass trains every row.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path

import torch

from neuro_lpc.errors import DivergenceError

from .train import NotRun


def default_workers(threads: int | None) -> int:
    """Processes that fit the machine's cores at ``threads`` torch threads each (at most 2: the target is 2 cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores // max(1, threads or cores)))


def _child(ctx, by_name: dict, name: str, result: Path, threads: int) -> None:
    """A worker: load the row's ``after`` rows from their caches, train the row, write the outcome, exit."""
    from . import train as train_mod

    torch.set_num_threads(threads)
    train_mod.PROGRESS = False         # two progress bars on one terminal would interleave
    t0 = time.perf_counter()
    m = by_name[name]
    try:
        for dep in m.after:
            ctx.trained[dep] = by_name[dep].train(ctx)
        tr = m.train(ctx)
        out = {"status": "ok", "cached": bool((getattr(tr, "training", None) or {}).get("cached"))}
    except NotRun as e:
        out = {"status": "not_run", "message": str(e)}
    except DivergenceError as e:
        out = {"status": "diverged", "message": str(e), "step": e.step, "chain": e.chain,
               "unit": e.unit if isinstance(e.unit, (int, str)) or e.unit is None else str(e.unit)}
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which trains the row itself and raises
        out = {"status": "error", "message": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    out["wall_s"] = time.perf_counter() - t0
    result.write_text(json.dumps(out))


def pretrain(ctx, methods, workers: int, threads: int, skip=()) -> dict:
    """Train the ``pretrain`` rows in up to ``workers`` forked processes; returns name -> outcome dict.

    Rows start in table order, except that a row whose ``after`` rows have finished goes first (so the
    same-wall-time VAE trains while the other worker is still busy, like discrete LPC did).
    """
    if workers < 2 or "fork" not in mp.get_all_start_methods():
        return {}
    by_name = {m.name: m for m in methods}
    todo = [m.name for m in methods if m.pretrain and m.name not in skip]
    if len(todo) < 2:
        return {}
    fork = mp.get_context("fork")
    tmp = Path(tempfile.mkdtemp(prefix="pretrain-", dir=ctx.out))
    running, outcomes = {}, {}

    def ready(name):
        return all(d in outcomes and outcomes[d]["status"] == "ok" for d in by_name[name].after)

    scheduled = set(todo)

    def blocked(name):  # an `after` row failed or is not pre-trained: left to the sequential pass
        return any(d not in scheduled or (d in outcomes and outcomes[d]["status"] != "ok") for d in by_name[name].after)

    try:
        while todo or running:
            todo = [n for n in todo if not blocked(n)]
            while len(running) < workers:
                cands = [n for n in todo if ready(n)]
                if not cands:
                    break
                name = next((n for n in cands if by_name[n].after), cands[0])
                todo.remove(name)
                p = fork.Process(target=_child, args=(ctx, by_name, name, tmp / f"{ctx.slug(name)}.json", threads),
                                 daemon=True)
                p.start()
                running[p.sentinel] = (p, name)
                ctx.log(f"[train, worker] {by_name[name].label}")
            if not running:
                break
            for s in wait(list(running)):
                p, name = running.pop(s)
                p.join()
                f = tmp / f"{ctx.slug(name)}.json"
                outcomes[name] = json.loads(f.read_text()) if f.is_file() else \
                    {"status": "error", "message": f"worker exited with code {p.exitcode}"}
    finally:
        for p, _ in running.values():
            p.terminate()
        for f in tmp.glob("*"):
            f.unlink()
        tmp.rmdir()
    return outcomes
