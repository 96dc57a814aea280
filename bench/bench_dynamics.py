#!/usr/bin/env python
"""Per-step cost of the sampler families (issue 16, docs/dynamics.md): overdamped vs nonreversible vs underdamped.

Discrete part: ``LangevinSampler`` on the built-in 28x28 decoder (ConvDecoder, latent 40), batch 64, no
preconditioning, training steps (accumulate_grad=True: one backward per step for z and theta) and sampling steps.
The families run interleaved (every repeat runs each once, so load drifts hit all alike); the median per-step time
and its ratio to overdamped are printed (goal: <= 1.2x).  Every family evaluates ONE gradient per step (the
underdamped BAOAB chain adds one at z(T) for its last half kick: T + 1 in all).  Usage:

    OMP_NUM_THREADS=1 python bench/bench_dynamics.py [--steps 30] [--repeats 7] [--threads 1]

A circuit part may be added as a separate function (``discrete()`` is this one).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_info, interleaved, median  # noqa: E402

import torch  # noqa: E402

from neuro_lpc import DiscretizedGaussianLikelihood, GenerativeModel, LangevinSampler  # noqa: E402
from neuro_lpc.networks import ConvDecoder  # noqa: E402

FAMILIES = {
    "overdamped": {},
    "nonreversible (random J)": dict(dynamics="nonreversible", skew="random", skew_scale=1.0),
    "underdamped (BAOAB)": dict(dynamics="underdamped", friction=1.0),
}


def discrete(steps: int, repeats: int, batch: int = 64) -> dict:
    """{(family, mode): [seconds per step]} on the built-in 28x28 decoder, CPU."""
    dev = torch.device("cpu")
    torch.manual_seed(0)
    model = GenerativeModel(ConvDecoder(28, 1), DiscretizedGaussianLikelihood(0.1))
    x = torch.randint(0, 256, (batch, 1, 28, 28)).float() / 127.5 - 1
    z0 = torch.randn(batch, 40)
    fns = {}
    for name, kw in FAMILIES.items():
        sampler = LangevinSampler(step_size=0.01, steps=steps, **kw)
        for mode in ("train", "sample"):
            def run(sampler=sampler, mode=mode):
                g = torch.Generator().manual_seed(0)
                sampler.sample(model, x, z0, generator=g, accumulate_grad=mode == "train")
                model.zero_grad(set_to_none=True)
            fns[(name, mode)] = run
    for fn in fns.values():   # warm-up
        fn()
    return interleaved(fns, dev, repeats, per={k: steps for k in fns})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    info = cpu_info()
    print(f"# bench_dynamics (discrete) on {info.get('model') or info['machine']}, {a.threads} thread(s), "
          f"torch {torch.__version__}, 28x28 ConvDecoder, batch {a.batch}, {a.steps} steps x {a.repeats} repeats")
    times = discrete(a.steps, a.repeats, a.batch)
    print("| family | train step ms | ratio | sample step ms | ratio |")
    print("|---|---|---|---|---|")
    base = {m: median(times[("overdamped", m)]) for m in ("train", "sample")}
    for name in FAMILIES:
        tr, sa = median(times[(name, "train")]), median(times[(name, "sample")])
        print(f"| {name} | {1e3 * tr:.2f} | {tr / base['train']:.3f} | {1e3 * sa:.2f} | {sa / base['sample']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
