#!/usr/bin/env python
"""Cost of a circuit step per value-unit family (issue 16; docs/circuits_dynamics.md): overdamped vs nonreversible
vs underdamped on the built-in 28x28 decoder (``ConvDecoder(28, 1, 40)``, the paper's), batch 64, adiabatic error
units (the training default) and finite tau_e.  Goal: a non-overdamped step <= 1.2x an overdamped one.

Per-step time from the difference of runs of 2S and S steps (fixed per-run costs cancel), the runs interleaved and
repeated, medians reported.  Usage (one CPU thread, as in bench/RESULTS.md):
    OMP_NUM_THREADS=1 python bench/bench_dynamics_circuit.py [--steps 100] [--repeats 5] [--device cpu]
"""
import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

from _common import timed  # noqa: E402
from circuits import Circuit, CircuitConfig  # noqa: E402
from neuro_lpc import GaussianLikelihood, GenerativeModel  # noqa: E402
from neuro_lpc.networks import ConvDecoder  # noqa: E402

D, B = 40, 64
FAMILIES = {"overdamped": {}, "nonreversible": {"dynamics": "nonreversible", "skew": "random", "skew_scale": 1.0},
            "underdamped": {"dynamics": "underdamped", "friction": 1.0, "mass": 1.0}}


def circuit_step_seconds(device: str = "cpu", steps: int = 100, repeats: int = 5, tau_e: float = 0.0) -> dict:
    """{family: median seconds per circuit step} on the built-in decoder (module docstring)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = GenerativeModel(ConvDecoder(28, 1, D), GaussianLikelihood(0.1)).to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand((B, 1, 28, 28), generator=g, device=dev)
    z0 = torch.randn((B, D), generator=g, device=dev)
    circuits = {f: Circuit(model, CircuitConfig(dt=1e-5, tau_z=1e-2, tau_e=tau_e, **kw)) for f, kw in FAMILIES.items()}
    for c in circuits.values():   # warm-up
        c.simulate(x, z0=z0, steps=5, record_every=5)
    out = {f: [] for f in circuits}
    for _ in range(repeats):
        for f, c in circuits.items():
            t1 = timed(lambda: c.simulate(x, z0=z0, steps=steps, record_every=steps), dev)
            t2 = timed(lambda: c.simulate(x, z0=z0, steps=2 * steps, record_every=2 * steps), dev)
            out[f].append((t2 - t1) / steps)
    return {f: statistics.median(v) for f, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"# circuit step per family: ConvDecoder(28, 1, {D}), batch {B}, {args.device}, "
          f"{torch.get_num_threads()} thread(s)")
    for tau_e in (0.0, 2e-3):
        res = circuit_step_seconds(args.device, args.steps, args.repeats, tau_e)
        base = res["overdamped"]
        print(f"tau_e = {tau_e:g} s:")
        for f, s in res.items():
            print(f"  {f:14s} {s * 1e3:8.3f} ms/step   {s / base:5.2f}x overdamped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
