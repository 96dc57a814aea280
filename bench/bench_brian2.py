#!/usr/bin/env python
"""Brian2 vs the torch circuit on the same linear circuit at batch 64: Euler-Maruyama steps/s, in one process.

The circuit: decoder nn.Linear(D, N), Gaussian likelihood, finite tau_e, ideal noise (T = 1), a record every 10
steps, float64 (``circuits.brian.simulate_brian2`` and ``Circuit.simulate`` with the same CircuitConfig). Per-step
time from the difference of runs of 2S and S steps, so fixed costs (building the network, code generation,
cython compilation, torch set-up) cancel; the median over repeats, runs interleaved. Brian2's target: cython
when it compiles here (say so), else numpy; ``--target numpy`` forces it. Usage:

    nice -n 10 python bench/bench_brian2.py [--steps 1000] [--repeats 3] [--target cython|numpy] [--d 8 --n 32]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from circuits import Circuit, CircuitConfig  # noqa: E402
from circuits.brian import simulate_brian2  # noqa: E402
from circuits.brian.compare import demo_model  # noqa: E402

B, REC = 64, 10


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="S: runs of S and 2S steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--target", choices=["auto", "cython", "numpy"], default="auto")
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--n", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = demo_model(args.d, args.n, "linear", seed=0)
    x = model.sample(1, generator=torch.Generator().manual_seed(1), mean=False).repeat(B, 1)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="ideal")
    circuit = Circuit(model, cfg)
    target = args.target
    if target == "auto":
        try:                                    # compiles once (cached in ~/.cython/brian_extensions)
            simulate_brian2(model, x[:2], cfg, steps=REC, record_every=REC, target="cython")
            target = "cython"
        except Exception as err:  # noqa: BLE001 - any compiler failure means: fall back
            print(f"cython unavailable ({type(err).__name__}: {str(err).splitlines()[0][:80]}); using numpy")
            target = "numpy"

    def run_torch(steps):
        t = time.perf_counter()
        circuit.simulate(x, steps=steps, record_every=REC)
        return time.perf_counter() - t

    def run_brian(steps):
        t = time.perf_counter()
        simulate_brian2(model, x, cfg, steps=steps, record_every=REC, target=target)
        return time.perf_counter() - t

    run_brian(args.steps)                        # warm-up: code generation / compilation
    run_torch(args.steps)
    per = {"torch": [], "brian2": []}
    fixed = {"torch": [], "brian2": []}
    S = args.steps
    for _ in range(args.repeats):
        for name, fn in (("torch", run_torch), ("brian2", run_brian)):
            t1, t2 = fn(S), fn(2 * S)
            per[name].append((t2 - t1) / S)
            fixed[name].append(t1 - (t2 - t1))
    med = {k: statistics.median(v) for k, v in per.items()}
    fix = {k: statistics.median(v) for k, v in fixed.items()}
    print(f"linear circuit d={args.d} n={args.n}, batch {B}, float64, record every {REC}; torch {torch.__version__} "
          f"(1 thread, kernel {circuit.state['kernel'] if circuit.state else '?'}), Brian2 target {target}; "
          f"{os.cpu_count()} CPUs; median of {args.repeats}")
    for k in ("torch", "brian2"):
        print(f"  {k:7s} {1 / med[k]:10.0f} steps/s  ({1e6 * med[k]:8.1f} us/step; fixed cost per run {fix[k]:.2f} s)")
    print(f"  torch / Brian2 ({target}) speed ratio: {med['brian2'] / med['torch']:.1f}x")


if __name__ == "__main__":
    main()
