#!/usr/bin/env python
"""Circuit training step under ``analog`` (hardware-aware) against discrete LPC's optimiser step (issue 14).

The main job's setting (``circuits.study.train``): batch 64, T = 10 Langevin steps = presentation steps
(dt = step_size tau_z), step size 0.1, preconditioning beta = 0.25, Jeffreys warm start, the discretised-Gaussian
likelihood with learned sigma, adiabatic error units; the built-in decoder/encoder pair of ``--arch`` (``mlp``:
``MLPDecoder`` 40-512-512-784, the main job's default; ``conv``: the paper's Table-2 pair). Rows, each one whole
optimiser step (``train_step``: warm start, chain or presentation, encoder objective, Adam):

    lpc                discrete LPC (``neuro_lpc.train.LPCTrainer``): the reference of every ratio
    ideal              the circuit under preset ``ideal`` (no device; the discrete chain exactly)
    analog             the circuit under preset ``analog``, learning mode ``hardware-aware`` (the default): the target
    + <source>         (``--sources``) preset ``ideal`` plus one source of ``analog`` (hardware-aware; the
                       ``timescales`` row adds the preset's mismatched time constants), so each source's cost shows

All rows run in one process on one thread (``--threads``), interleaved (every repeat times every row once, so a
change of machine load hits them alike); the figures are medians over ``--repeats``. Target (issue 14): analog
<= 1.5x lpc. Usage:

    python bench/bench_circuit_training.py [--arch mlp conv] [--repeats 7] [--steps 2] [--sources] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402  (puts the repo root on sys.path)

import torch  # noqa: E402

BATCH, T = 64, 10


def _analog_parts() -> list[tuple[str, dict]]:
    """(row name, noise config) of preset ``ideal`` plus one part of ``analog`` each."""
    from circuits.noise.presets import PRESETS

    analog = copy.deepcopy(PRESETS["analog"])
    rows, seen = [], {}
    for src in analog["sources"]:
        name = src["type"] + (f" ({src['site']})" if "site" in src else "")
        seen[name] = seen.get(name, 0) + 1
        rows.append((f"+ {name}", {"temperature": 1.0, "sources": [src]}))
    rows.append(("+ timescales (mismatch)", {"temperature": 1.0, "timescales": analog["timescales"], "sources": []}))
    return rows


def _config_kw(arch: str) -> dict:
    return dict(batch_size=BATCH, langevin_steps=T, step_size=0.1, precondition=0.25, warm_start="jeffreys",
                prior_init_batches=0, sample_grid=0, seed=0, device="cpu", architecture=arch)


def make_trainers(arch: str, sources: bool) -> dict:
    from circuits.learn import CircuitTrainConfig, CircuitTrainer
    from neuro_lpc.config import TrainConfig
    from neuro_lpc.train import LPCTrainer, build_model

    kw = _config_kw(arch)

    def lpc():
        cfg = TrainConfig(**kw)
        torch.manual_seed(0)
        return LPCTrainer(*build_model(cfg, 28, 1), cfg)

    def circuit(noise, learning="hardware-aware"):
        cfg = CircuitTrainConfig(**kw, tau_e=0.0, noise=noise, learning=learning)
        torch.manual_seed(0)
        return CircuitTrainer(*build_model(cfg, 28, 1), cfg)

    trainers = {"lpc": lpc(), "ideal": circuit("ideal"), "analog": circuit("analog")}
    if sources:
        for name, noise in _analog_parts():
            trainers[name] = circuit(noise)
    return trainers


def batch() -> torch.Tensor:
    """A batch of the main job's data (animal-mnist) when installed, else random pixels on the 256 bin centres."""
    try:
        from neuro_lpc.data import dataset_tensor, load_dataset

        train, _, _ = load_dataset("animal-mnist")
        return dataset_tensor(train, BATCH)[0]
    except Exception:  # noqa: BLE001 - data set not installed: timing does not depend on the pixels
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (BATCH, 1, 28, 28), generator=g).float() / 127.5 - 1


def measure(arch: str, repeats: int, steps: int, sources: bool) -> dict:
    """{row: {"ms": median ms per optimiser step, "ratio": to lpc, "raw_ms": [...]}} for one decoder."""
    x = batch()
    trainers = make_trainers(arch, sources)

    def run(tr):
        for _ in range(steps):
            tr.train_step(x)
            tr.global_step += 1   # a fresh programming per batch (hardware-aware), as in training

    for tr in trainers.values():   # warm-up
        run(tr)
    raw = {k: [] for k in trainers}
    for _ in range(repeats):
        for k, tr in trainers.items():
            t0 = time.perf_counter()
            run(tr)
            raw[k].append(1e3 * (time.perf_counter() - t0) / steps)
    ref = statistics.median(raw["lpc"])
    return {k: {"ms": statistics.median(v), "ratio": statistics.median(v) / ref, "raw_ms": v} for k, v in raw.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2, help="optimiser steps per timing")
    ap.add_argument("--sources", action="store_true", help="also one row per source of the analog preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the figures (and the machine) to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    m = machine()
    cpu = m["cpu"]
    print(f"# {cpu.get('model')} ({cpu.get('cpus')} CPUs, {', '.join(cpu.get('isa') or [])}), {torch.get_num_threads()} "
          f"torch thread(s), torch {torch.__version__}; load at start {m.get('load_average')}; batch {BATCH}, T = {T}; "
          f"medians of {a.repeats} interleaved repeats of {a.steps} optimiser steps")
    out = {"machine": m, "batch": BATCH, "T": T, "repeats": a.repeats, "steps": a.steps, "arch": {}}
    for arch in a.arch:
        res = measure(arch, a.repeats, a.steps, a.sources)
        out["arch"][arch] = res
        print(f"\n## decoder {arch}\n| row | ms / optimiser step | ratio to discrete LPC |\n|---|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v['ms']:,.1f} | {v['ratio']:.2f} |")
    out["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({arch: {k: round(v["ratio"], 3) for k, v in r.items()} for arch, r in out["arch"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
