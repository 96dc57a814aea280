#!/usr/bin/env python
"""FID Inception-v3 feature throughput on CPU: the exact fp32 TorchScript path against the fast and bf16 paths.

Every variant runs the whole ``InceptionFeatures`` call (pytorch-fid preprocessing of 28x28 grey
images to 299x299, network, features to CPU) on the same batch; variants are interleaved in every
repeat, in one process, and the medians of images/s are reported with the median of the per-repeat
ratios to fp32 (a shared machine's load changes between repeats, less within one).

Variants: ``fp32`` (TorchScript reference), ``fast`` (folded batch norm, channels-last, float32) and
``bf16`` (the fast network with bfloat16 weights and activations); ``precision="auto"`` picks
``bf16`` on a CPU with native bf16 (AMX / AVX512-BF16), else ``fast`` — the header says which. With
``--all`` also the rejected ones: ``folded-nchw`` (folded BN, default memory format), ``jit-opt``
(``torch.jit.freeze`` + ``optimize_for_inference`` of the TorchScript graph), ``bf16-autocast``
(autocast of the float32 fast network), ``bf16-fpmath`` (the float32 fast network under oneDNN's
bf16 fpmath mode for convolutions) and ``int8`` (fbgemm post-training static quantisation of the fast
network, calibrated on 32 real images); each with its feature error against fp32.

``--fid N`` measures instead what the paths do to FID: N animal-mnist test images (the real set)
against N held-out training images, N blurred ones (sigma = 2 px) and N noisy ones (+ N(0, 0.3^2)),
with features from fp32 and bf16 (and fast with ``--all``); FIDs and their relative differences.

A sgemm (2048^3, float32) is timed alongside to give this machine's *achieved* GEMM rate at the
moment; Inception-v3 at 299x299 is 5.71 GMAC = 11.4 GFLOP per image, so images/s x 11.4 is the
network's achieved GFLOP/s.

Usage (the Makefile's malloc settings, as `make bench` uses them):
    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        python bench/bench_inception.py [--batch 32] [--threads 2] [--repeats 5] [--all]
    python bench/bench_inception.py --fid 500 --threads 1
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from neuro_lpc.data import load_dataset  # noqa: E402
from neuro_lpc.metrics import (FastInception, InceptionFeatures, fid_inception_path,  # noqa: E402
                               frechet_distance_features, precision_reason)

GFLOP_PER_IMAGE = 2 * 5.711  # multiply-adds of the 94 convolutions at 299x299, counted with forward hooks


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = info.get("Flags", "").split()
        isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8") if f in flags]
        return (f"{info.get('Model name', '?').strip()} (family {info.get('CPU family', '?').strip()}, model "
                f"{info.get('Model', '?').strip()}), {info.get('CPU(s)', '?').strip()} CPUs, ISA: {' '.join(isa)}")
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()


def sgemm_gflops(threads: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9


class _Wrapped(InceptionFeatures):
    """InceptionFeatures with its network replaced (for the rejected variants)."""

    def __init__(self, base: InceptionFeatures, network):
        self.__dict__.update(base.__dict__)
        self.network = network


def _bf16_autocast(fast: InceptionFeatures):
    class Autocast(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.net(x).float()

    return _Wrapped(fast, Autocast(fast.network))


def _bf16_fpmath(fast: InceptionFeatures):
    class FpMath(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            previous = torch.backends.mkldnn.conv.fp32_precision
            torch.backends.mkldnn.conv.fp32_precision = "bf16"
            try:
                return self.net(x)
            finally:
                torch.backends.mkldnn.conv.fp32_precision = previous

    return _Wrapped(fast, FpMath(fast.network))


def _int8(fast: InceptionFeatures, calibration: torch.Tensor):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "fbgemm"
    x = fast.preprocess(calibration)
    net = FastInception(torch.jit.load(str(fid_inception_path())).eval())
    prepared = prepare_fx(net.layers, get_default_qconfig_mapping("fbgemm"), example_inputs=(x[:2],))
    with torch.no_grad():
        for s in range(0, x.shape[0], 8):
            prepared(x[s : s + 8])
    quantised = convert_fx(prepared)

    class Q(torch.nn.Module):
        def forward(self, x):
            return quantised(x.contiguous(memory_format=torch.channels_last)).reshape(-1, 2048)

    return _Wrapped(fast, Q())


def _jit_opt(ref: InceptionFeatures):
    net = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(str(fid_inception_path())).eval()))
    return _Wrapped(ref, net)


def _folded_nchw(fast: InceptionFeatures):
    layers = FastInception(torch.jit.load(str(fid_inception_path())).eval()).layers.to(memory_format=torch.contiguous_format)

    class Nchw(torch.nn.Module):
        def forward(self, x):
            return layers(x.contiguous()).reshape(-1, 2048)

    return _Wrapped(fast, Nchw())


def sweep(repeats: int) -> int:
    """Fast-path images/s for batch sizes x thread counts, interleaved, 64 images per measurement."""
    warnings.filterwarnings("ignore")
    _, test, _ = load_dataset("animal-mnist")
    images = test.images[:64]
    fast = InceptionFeatures("cpu", precision="fast")
    settings = [(b, t) for t in (1, 2) for b in (8, 16, 32, 64)]
    times = {s: [] for s in settings}
    print(f"# bench_inception --sweep: {cpu_name()}; torch {torch.__version__}; 64 images per call, {repeats} repeats")
    with torch.no_grad():
        fast(images[:8])
        for _ in range(repeats):
            for b, t in settings:
                torch.set_num_threads(t)
                fast.batch_size = b
                t0 = time.perf_counter()
                fast(images)
                times[(b, t)].append(time.perf_counter() - t0)
    base = times[(32, 2)]
    print("| batch | threads | images/s (median) | x (batch 32, 2 threads), median of per-repeat ratios |")
    print("|---|---|---|---|")
    for b, t in settings:
        ratio = statistics.median(x / y for x, y in zip(base, times[(b, t)]))
        print(f"| {b} | {t} | {64 / statistics.median(times[(b, t)]):.2f} | {ratio:.2f} |")
    return 0


def fid_agreement(n: int, include_fast: bool) -> int:
    """FID of three sets against n real test images, from fp32, bf16 (and fast) features."""
    import torchvision.transforms.functional as TF

    train, test, _ = load_dataset("animal-mnist")
    if not 2 <= n <= min(len(test), len(train) // 3):
        raise SystemExit(f"--fid: n must be in [2, {min(len(test), len(train) // 3)}]")
    noisy = train.images[2 * n : 3 * n] + 0.3 * torch.randn(n, *train.images.shape[1:], generator=torch.Generator().manual_seed(0))
    sets = {"real (test)": test.images[:n], "held-out (train)": train.images[:n],
            "blurred, sigma 2": TF.gaussian_blur(train.images[n : 2 * n], kernel_size=9, sigma=2.0),
            "train + N(0, 0.3^2)": noisy.clamp(-1, 1)}
    names = ("fp32", "fast", "bf16") if include_fast else ("fp32", "bf16")
    print(f"# bench_inception --fid {n}: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# auto on cpu: {precision_reason('auto', 'cpu')}")
    features, seconds = {}, {}
    for name in names:
        net = InceptionFeatures("cpu", precision=name, progress=False)
        t = time.perf_counter()
        features[name] = {k: net(v).double().numpy() for k, v in sets.items()}
        seconds[name] = time.perf_counter() - t
    print("# feature time for all sets: " + ", ".join(f"{k} {v:.0f} s ({4 * n / v:.1f} images/s)" for k, v in seconds.items()))
    header = " | ".join(f"FID {name}" for name in names)
    print(f"| set (n = {n}) vs real (test, n = {n}) | {header} | " + " | ".join(f"{m} / fp32 - 1" for m in names[1:]) + " |")
    print("|---|" + "---|" * (2 * len(names) - 1))
    for k in list(sets)[1:]:
        fid = {name: frechet_distance_features(features[name][k], features[name]["real (test)"]) for name in names}
        cells = " | ".join(f"{fid[m]:.3f}" for m in names)
        rel = " | ".join(f"{fid[m] / fid['fp32'] - 1:+.2e}" for m in names[1:])
        print(f"| {k} | {cells} | {rel} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--all", action="store_true",
                    help="also the rejected variants (bf16-autocast, bf16-fpmath, int8, jit-opt, folded-nchw)")
    ap.add_argument("--fid", type=int, metavar="N", help="instead: FID of fp32 vs bf16 features, N images per set")
    ap.add_argument("--sweep", action="store_true", help="instead: the fast path at batch 8/16/32/64 x 1/2 threads")
    a = ap.parse_args()
    if a.sweep:
        return sweep(a.repeats)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    if a.fid is not None:
        return fid_agreement(a.fid, a.all)
    malloc = {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    print(f"# bench_inception: {cpu_name()}")
    print(f"# torch {torch.__version__}, {a.threads} threads, batch {a.batch}, {a.repeats} repeats, malloc env {malloc}")
    print(f"# auto on cpu: {precision_reason('auto', 'cpu')}")
    train, test, _ = load_dataset("animal-mnist")
    images = test.images[: a.batch]
    ref = InceptionFeatures("cpu", batch_size=a.batch, precision="fp32")
    fast = InceptionFeatures("cpu", batch_size=a.batch, precision="fast")
    variants = {"fp32": ref, "fast": fast, "bf16": InceptionFeatures("cpu", batch_size=a.batch, precision="bf16")}
    if a.all:
        variants.update({"folded-nchw": _folded_nchw(fast), "jit-opt": _jit_opt(ref), "bf16-autocast": _bf16_autocast(fast),
                         "bf16-fpmath": _bf16_fpmath(fast), "int8": _int8(fast, train.images[:32])})
    with torch.no_grad():
        reference = ref(images)
        errors = {}
        for name, v in variants.items():
            f = v(images)  # also the warm-up
            errors[name] = ((f - reference).norm(dim=1) / reference.norm(dim=1)).max().item()
        times = {name: [] for name in variants}
        gemm = []
        for _ in range(a.repeats):
            gemm.append(sgemm_gflops(a.threads))
            for name, v in variants.items():
                t = time.perf_counter()
                v(images)
                times[name].append(time.perf_counter() - t)
    rate = {name: [a.batch / t for t in ts] for name, ts in times.items()}
    g = statistics.median(gemm)
    print(f"# sgemm 2048^3 achieved now: {g:.1f} GFLOP/s (median of {a.repeats})")
    print("| variant | images/s (median) | x fp32 (median of per-repeat ratios) | network GFLOP/s | of sgemm rate | max per-image rel. feature error |")
    print("|---|---|---|---|---|---|")
    for name in variants:
        med = statistics.median(rate[name])
        ratio = statistics.median(r / f for r, f in zip(rate[name], rate["fp32"]))
        print(f"| {name} | {med:.2f} | {ratio:.2f} | {med * GFLOP_PER_IMAGE:.1f} | {med * GFLOP_PER_IMAGE / g:.0%} | {errors[name]:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
