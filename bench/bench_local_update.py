#!/usr/bin/env python
"""Cost of the local in-memory training step (learning mode ``in-memory-local``) against the ideal circuit's (issue 17).

The main job's setting of ``bench_circuit_training.py`` (batch 64, T = 10, step size 0.1, preconditioning, Jeffreys
warm start, the built-in decoder ``--arch``). Rows, each one whole optimiser step (``train_step``):

    ideal               the circuit under preset ``ideal`` (Adam): the reference of every ratio
    local expected      in-memory-local, the BL -> inf counts (``pulse_update={"expected": True}``)
    local poisson       in-memory-local, Poisson coincidence counts (``trains="poisson"``)
    local drawn         in-memory-local, every slot of every pulse train drawn (aihwkit's default semantics)
    local drawn, all grads   the same with the array weights' autograd gradients computed as well
                        (``CircuitTrainer.skip_local_weight_grads = False``: what the skip saves)

aihwkit's default ``pulsed`` device in each local row; the study's rates (Adam 2e-3; the local rows' decoder rate
``--local-lr`` 2e-4, which sets how many pulses a row sends). Rows interleaved, medians over ``--repeats``. Target
(issue 17): local <= 1.3x ideal. Usage:

    python bench/bench_local_update.py [--arch mlp conv] [--repeats 5] [--steps 1] [--rows ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from bench_circuit_training import BATCH, T, _config_kw, batch  # noqa: E402

import torch  # noqa: E402

from circuits.study.config import LOCAL_LR  # noqa: E402  (the study's in-memory-local decoder rate)

LR = 2e-3     # the study's Adam rate (StudyConfig.lr)
ROWS = {"ideal": None, "local expected": {"expected": True}, "local poisson": {"trains": "poisson"},
        "local drawn": {}, "local drawn, all grads": {}}


def make(arch: str, rows) -> dict:
    from circuits.learn import CircuitTrainConfig, CircuitTrainer
    from neuro_lpc.train import build_model

    out = {}
    for name in rows:
        pu = ROWS[name]
        extra = {} if pu is None else dict(learning="in-memory-local", pulse_update=pu or None, decoder_lr=LOCAL_LR,
                                           noise={"preset": "ideal", "sources": [{"type": "pulsed"}]})
        cfg = CircuitTrainConfig(**_config_kw(arch), tau_e=0.0, lr=LR, **({"noise": "ideal"} | extra))
        torch.manual_seed(0)
        out[name] = CircuitTrainer(*build_model(cfg, 28, 1), cfg)
        out[name].skip_local_weight_grads = name != "local drawn, all grads"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["mlp"], choices=["mlp", "conv"])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cpu = machine()["cpu"]
    print(f"# {cpu.get('model')} ({cpu.get('cpus')} CPUs), {torch.get_num_threads()} torch thread(s); batch {BATCH}, "
          f"T = {T}; medians of {a.repeats} interleaved repeats of {a.steps} optimiser steps")
    x = batch()
    for arch in a.arch:
        trainers = make(arch, ["ideal"] + [r for r in a.rows if r != "ideal"])
        raw = {k: [] for k in trainers}
        for tr in trainers.values():
            tr.train_step(x)
        for _ in range(a.repeats):
            for k, tr in trainers.items():
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    tr.train_step(x)
                raw[k].append(1e3 * (time.perf_counter() - t0) / a.steps)
        ref = statistics.median(raw["ideal"])
        print(f"\n## decoder {arch}\n| row | ms / optimiser step | ratio to ideal |\n|---|---|---|")
        for k, v in raw.items():
            print(f"| {k} | {statistics.median(v):,.1f} | {statistics.median(v) / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
