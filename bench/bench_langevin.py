#!/usr/bin/env python
"""Cost of one discrete-LPC Langevin step against its floor, measured in one process.

  training step  / (decoder forward + ONE backward giving z- and parameter-gradients together)
  sampling step  / (decoder forward + backward for z alone)

The floor includes the likelihood and prior (log p(x, z) is the forward).  Runs are interleaved and
repeated; the median of per-step times is reported.  Usage:
    python bench/bench_langevin.py [--device cpu|cuda] [--sizes 28 32] [--steps 30] [--repeats 5]
"""
import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from neuro_lpc import DiscretizedGaussianLikelihood, GenerativeModel, LangevinSampler  # noqa: E402
from neuro_lpc.networks import ConvDecoder  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def floor_loop(model, x, z0, steps, params):
    z = z0.clone().requires_grad_(True)
    for _ in range(steps):
        lj = model.log_joint(x, z)
        if params:
            torch.autograd.backward(lj.sum(), inputs=[z, *params])
        else:
            torch.autograd.grad(lj.sum(), z)


def timed(fn, dev, steps):
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[28, 32])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"# bench_langevin on {name}, torch {torch.__version__}, batch {a.batch}, {a.steps} steps x {a.repeats} repeats")
    print("| image | precond | train step ms | floor (z+theta) ms | ratio | sample step ms | floor (z) ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for size in a.sizes:
        channels = 1 if size == 28 else 3
        torch.manual_seed(0)
        model = GenerativeModel(ConvDecoder(size, channels), DiscretizedGaussianLikelihood(0.1)).to(dev)
        x = (torch.randint(0, 256, (a.batch, channels, size, size), device=dev).float() / 127.5 - 1)
        z0 = torch.randn(a.batch, 40, device=dev)
        params = [p for p in model.parameters()]
        for beta in (None, 0.99):
            sampler = LangevinSampler(step_size=0.01, steps=a.steps, precondition=beta)
            g = torch.Generator(device=dev).manual_seed(0)
            runs = {
                "train": lambda: sampler.sample(model, x, z0, generator=g, accumulate_grad=True),
                "floor_train": lambda: floor_loop(model, x, z0, a.steps, params),
                "sample": lambda: sampler.sample(model, x, z0, generator=g),
                "floor_sample": lambda: floor_loop(model, x, z0, a.steps, []),
            }
            for fn in runs.values():  # warm-up
                fn()
            times = {k: [] for k in runs}
            for _ in range(a.repeats):
                for k, fn in runs.items():
                    times[k].append(timed(fn, dev, a.steps))
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            for p in params:
                p.grad = None
            print(f"| {size}x{size}x{channels} | {beta} | {med['train']:.2f} | {med['floor_train']:.2f} | "
                  f"{med['train'] / med['floor_train']:.3f} | {med['sample']:.2f} | {med['floor_sample']:.2f} | "
                  f"{med['sample'] / med['floor_sample']:.3f} |")


if __name__ == "__main__":
    main()
