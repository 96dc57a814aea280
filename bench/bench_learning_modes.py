#!/usr/bin/env python
"""Cost of a circuit training step per analog learning mode, as ratios to the ideal circuit's (one process).

The built-in 28x28 decoder/encoder (``neuro_lpc.train.build_model``), batch 64, T = 20 Euler-Maruyama steps per
presentation (the study's budget), adiabatic error units, the study's preconditioning. Rows:

    ideal                 preset "ideal" (no device): the reference
    in-memory (pulsed)    preset "ideal" + a pulsed device: the array is read every step, written by pulses once per batch
    in-memory (analog)    preset "analog" + pulsed writes (programming, drift, read noise per product, units' noise)
    hardware-aware        preset "analog", a fresh programming per batch
    deploy                preset "analog" while learning digitally (weight devices off during training)

Each training step (``CircuitTrainer.train_step``) is timed in interleaved rounds; medians are reported.
Target (issue 7): in-memory learning <= 1.3x the ideal circuit's training step. Usage:
    python bench/bench_learning_modes.py [--steps 8] [--repeats 3]
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from circuits.learn import CircuitTrainConfig, CircuitTrainer  # noqa: E402
from neuro_lpc.data import dataset_tensor, load_dataset  # noqa: E402
from neuro_lpc.train import build_model  # noqa: E402

ROWS = {
    "ideal": ("ideal", "hardware-aware"),
    "in-memory (pulsed)": ({"preset": "ideal", "sources": [{"type": "pulsed"}]}, "in-memory"),
    "in-memory (analog)": ("analog", "in-memory"),
    "hardware-aware": ("analog", "hardware-aware"),
    "deploy": ("analog", "deploy"),
}


def trainer(noise, mode):
    cfg = CircuitTrainConfig(batch_size=64, langevin_steps=20, step_size=0.1, precondition=0.25, prior_init_batches=0,
                             sample_grid=0, seed=0, device="cpu", tau_e=0.0, noise=noise, learning=mode)
    torch.manual_seed(0)
    m, e = build_model(cfg, 28, 1)
    return CircuitTrainer(m, e, cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    train, _, _ = load_dataset("animal-mnist")
    x, _ = dataset_tensor(train, 64)
    trainers = {k: trainer(*v) for k, v in ROWS.items()}
    for tr in trainers.values():                  # warm-up
        tr.train_step(x)
    times = {k: [] for k in trainers}
    for _ in range(a.repeats):
        for k, tr in trainers.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                tr.train_step(x)
                tr.global_step += 1
            times[k].append((time.perf_counter() - t0) / a.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["ideal"]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"{'row':22s} {'ms / training step':>18s} {'ratio to ideal':>15s}")
    for k, v in med.items():
        print(f"{k:22s} {1e3 * v:18.1f} {v / ref:15.2f}")
    print(json.dumps({k: {"ms": 1e3 * v, "ratio": v / ref} for k, v in med.items()}))


if __name__ == "__main__":
    main()
