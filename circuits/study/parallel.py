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


def _stop_and_clean(running: dict, tmp: Path) -> None:
    """Terminate workers still running (an error in the parent) and remove their scratch folder."""
    for p, _ in running.values():
        p.terminate()
    for f in tmp.glob("*"):
        f.unlink()
    tmp.rmdir()


def _child(ctx, by_name: dict, name: str, result: Path, threads: int, post=None) -> None:
    """A worker: load the row's ``after`` rows from their caches, train the row, then ``post(ctx, name, trained)``
    (the row's sample features, say) into ``result.pt``, write the outcome, exit."""
    from . import train as train_mod

    torch.set_num_threads(threads)
    train_mod.PROGRESS = False         # two progress bars on one terminal would interleave
    if ctx.progress is not None:       # the parent's board polls this file (circuits.study.progress)
        from .progress import file_sink
        ctx.progress = file_sink(result.with_name(f"progress-{result.stem}.json"))
    t0, c0 = time.perf_counter(), time.process_time()
    m = by_name[name]
    tr = None
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
    out["wall_s"], out["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    if post is not None and out["status"] == "ok":
        t1 = time.perf_counter()
        try:
            torch.save(post(ctx, name, tr), result.with_suffix(".pt"))
            out["post"] = str(result.with_suffix(".pt"))
        except BaseException as e:  # noqa: BLE001 - the parent then does the post work itself
            out["post_error"] = f"{type(e).__name__}: {e}"
        out["post_wall_s"] = time.perf_counter() - t1
    result.write_text(json.dumps(out))


def _job_child(fn, ctx, result: Path, threads: int) -> None:
    """A worker running one extra job ``fn(ctx)`` (e.g. the real set's features, cached on disk); a value it
    returns (not None) comes back through ``result.pt``."""
    from . import train as train_mod

    torch.set_num_threads(threads)
    train_mod.PROGRESS = False
    t0 = time.perf_counter()
    try:
        value = fn(ctx)
        out = {"status": "ok"}
        if value is not None:
            torch.save(value, result.with_suffix(".pt"))
            out["value"] = str(result.with_suffix(".pt"))
    except BaseException as e:  # noqa: BLE001 - the parent does the job itself later
        out = {"status": "error", "message": f"{type(e).__name__}: {e}"}
    out["wall_s"] = time.perf_counter() - t0
    result.write_text(json.dumps(out))


def pretrain(ctx, methods, workers: int, threads: int, skip=(), post=None, jobs=()) -> dict:
    """Train the ``pretrain`` rows in up to ``workers`` forked processes; returns name -> outcome dict.

    Rows start in table order, except that a row whose ``after`` rows have finished goes first (so the
    same-wall-time VAE trains while the other worker is still busy, like discrete LPC did) and circuit rows
    (the longest) go before the others (longest first: the two workers finish closer together).  After a row
    trains, its worker runs ``post(ctx, name, trained)`` (the row's samples and their features: the metric
    work overlaps the other rows' training) and the outcome's ``"post"`` is what it returned.  ``jobs``:
    ``(label, fn(ctx), after)`` run in a free worker when no row is ready to start and the rows named in
    ``after`` have trained (the real set's features; a row trained in the parent, whose samples a worker can
    draw once discrete LPC is done); their outcomes are under ``"job:" + label`` (``"value"``: what ``fn``
    returned).  A job whose ``after`` rows are not pre-trained, or failed, is dropped.
    """
    if workers < 2 or "fork" not in mp.get_all_start_methods():
        return {}
    by_name = {m.name: m for m in methods}
    todo = [m.name for m in methods if m.pretrain and m.name not in skip]
    if len(todo) < 2:
        return {}
    fork = mp.get_context("fork")
    tmp = Path(tempfile.mkdtemp(prefix="pretrain-", dir=ctx.out))
    running, outcomes, extra = {}, {}, list(jobs)

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
                if cands:
                    # a row whose `after` rows are done first (the same-wall-time VAE), then the circuit rows (the
                    # longest: longest-first keeps the two workers' queues even), then table order
                    name = next((n for n in cands if by_name[n].after),
                                next((n for n in cands if by_name[n].kind == "circuit"), cands[0]))
                    todo.remove(name)
                    p = fork.Process(target=_child, daemon=True,
                                     args=(ctx, by_name, name, tmp / f"{ctx.slug(name)}.json", threads, post))
                    ctx.log(f"[train, worker] {by_name[name].label}")
                elif any(all(outcomes.get(d, {}).get("status") == "ok" for d in j[2]) for j in extra):
                    job = next(j for j in extra if all(outcomes.get(d, {}).get("status") == "ok" for d in j[2]))
                    extra.remove(job)
                    label, fn, _ = job
                    name = "job:" + label
                    p = fork.Process(target=_job_child, args=(fn, ctx, tmp / f"{ctx.slug(name)}.json", threads),
                                     daemon=True)
                    ctx.log(f"[worker] {label}")
                else:
                    break
                p.start()
                running[p.sentinel] = (p, name)
            # jobs waiting on rows that will never train here (not pre-trained, or failed) are dropped
            extra = [j for j in extra if all(d in scheduled and outcomes.get(d, {}).get("status", "ok") == "ok"
                                             for d in j[2])]
            if not running:
                break
            board = getattr(ctx, "board", None)
            ready_now = wait(list(running), timeout=1.0 if board is not None else None)
            if board is not None:
                board.poll(tmp)
            for s in ready_now:
                p, name = running.pop(s)
                p.join()
                f = tmp / f"{ctx.slug(name)}.json"
                outcomes[name] = json.loads(f.read_text()) if f.is_file() else \
                    {"status": "error", "message": f"worker exited with code {p.exitcode}"}
                for key in ("post", "value"):
                    if key in outcomes[name]:
                        outcomes[name][key] = torch.load(outcomes[name][key], weights_only=False)
    finally:
        _stop_and_clean(running, tmp)
    return outcomes


def _map_child(fn, item, result: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.save({"ok": True, "value": fn(item)}, result)
    except BaseException as e:  # noqa: BLE001 - the parent runs the item itself and raises the real error
        torch.save({"ok": False, "error": f"{type(e).__name__}: {e}"}, result)


def fork_map(fn, items: list, workers: int, threads: int, scratch: Path) -> list:
    """[fn(item) for item in items], up to ``workers`` items at a time in forked processes (results come back
    through ``torch.save`` files in ``scratch``).  An item whose worker fails is run again here, so its real
    exception surfaces; with fewer than 2 workers or items, or without fork, everything runs here."""
    if workers < 2 or len(items) < 2 or "fork" not in mp.get_all_start_methods():
        return [fn(it) for it in items]
    fork = mp.get_context("fork")
    tmp = Path(tempfile.mkdtemp(prefix="fork-map-", dir=scratch))
    results, running, queue = {}, {}, list(range(len(items)))
    try:
        while queue or running:
            while queue and len(running) < workers:
                i = queue.pop(0)
                p = fork.Process(target=_map_child, args=(fn, items[i], tmp / f"{i}.pt", threads), daemon=True)
                p.start()
                running[p.sentinel] = (p, i)
            for s in wait(list(running)):
                p, i = running.pop(s)
                p.join()
                f = tmp / f"{i}.pt"
                out = torch.load(f, weights_only=False) if f.is_file() else {"ok": False}
                results[i] = out["value"] if out.get("ok") else None
                if not out.get("ok"):
                    results[i] = fn(items[i])           # again here: a real failure raises with its traceback
    finally:
        _stop_and_clean(running, tmp)
    return [results[i] for i in range(len(items))]
