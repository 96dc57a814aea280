#!/usr/bin/env python
"""One benchmark suite: every benchmark the issues name, one table, ``bench/results.json``.

    python bench/run.py [--quick] [--device cpu|cuda] [--repeats N] [--only NAME ...] [--out bench/results.json]

Benchmarks (each a function below; the measuring code is the bench_*.py scripts' own, imported):

  langevin     a Langevin step (training: forward + one backward for z and theta; sampling: for z) against the
               decoder forward + backward it cannot beat (bench_langevin.floor_loop), 28x28, batch 64
  lpc_vs_vae   a full training batch of LPC (T Langevin steps, Jeffreys, preconditioned) against the VAE's, same
               networks (28x28, batch 64; T = 300 as the paper, 20 with --quick)
  circuit      the linear circuit of bench_circuit.py (nn.Linear(40, 784), batch 64, finite tau_e): Circuit.simulate
               against torchsde.sdeint(euler), a hand-written in-place loop and Brian2 (numpy target), us per step
  memory       peak memory against duration (a streamed circuit run of N and 10 N steps, fresh process each) and
               against chain length (a training chain of T and 10 T steps: constant, one backward per step)
  inception    FID Inception-v3 feature throughput (images/s), the fast CPU path and the fp32 reference
  circuit_training  a circuit optimiser step under ``ideal`` and ``analog`` (hardware-aware) against discrete LPC's,
               the main job's setting (batch 64, T = 10), MLP and conv decoders (bench_circuit_training.py; CPU)
  gpu          with CUDA only: the fast paths against eager (bench_gpu.py rows; the issue-10 goals)

Every figure is the median of ``--repeats`` interleaved repeats (all variants of a benchmark run once per repeat,
so a drift in machine load hits them alike); raw repeats are kept in results.json with the machine (CPU model and
ISA flags, GPU, threads, load average), package versions and the git commit. Missing optional pieces (no GPU,
torchsde or Brian2 or the Inception weights not installed) are skipped with a note, never an error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

from _common import interleaved, machine, median, sync, vmhwm_mib  # noqa: E402  (puts the repo root on sys.path)

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROWS: list[tuple] = []          # (benchmark, quantity, value, unit, note) for the printed table


def row(bench, quantity, value, unit="", note=""):
    ROWS.append((bench, quantity, value, unit, note))


def _x(batch, channels, size, dev, seed=0):
    g = torch.Generator(device=dev).manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=g, device=dev).float() / 127.5 - 1


# ------------------------------------------------------------------------------ benchmarks ----

def bench_langevin(dev, a):
    from bench_langevin import floor_loop
    from neuro_lpc import DiscretizedGaussianLikelihood, GenerativeModel, LangevinSampler
    from neuro_lpc.networks import ConvDecoder

    torch.manual_seed(0)
    model = GenerativeModel(ConvDecoder(28, 1), DiscretizedGaussianLikelihood(0.1)).to(dev)
    x, z0 = _x(64, 1, 28, dev), torch.randn(64, 40, device=dev)
    params = list(model.parameters())
    S = 5 if a.quick else 30
    out = {"steps": S, "batch": 64, "image": "28x28x1"}
    for beta in (None, 0.99):
        s = LangevinSampler(step_size=0.01, steps=S, precondition=beta)
        g = torch.Generator(device=dev).manual_seed(0)
        fns = {"train": lambda: s.sample(model, x, z0, generator=g, accumulate_grad=True),
               "floor_train": lambda: floor_loop(model, x, z0, S, params),
               "sample": lambda: s.sample(model, x, z0, generator=g),
               "floor_sample": lambda: floor_loop(model, x, z0, S, [])}
        for fn in fns.values():
            fn()
        raw = interleaved(fns, dev, a.repeats, per={k: S for k in fns})
        med = {k: 1e3 * median(v) for k, v in raw.items()}
        for p in params:
            p.grad = None
        tag = "plain" if beta is None else f"precond {beta}"
        out[tag] = {"ms_per_step": med, "raw_s": raw, "train_over_floor": med["train"] / med["floor_train"],
                    "sample_over_floor": med["sample"] / med["floor_sample"]}
        row("langevin", f"training step / floor ({tag})", med["train"] / med["floor_train"], "x",
            f"{med['train']:.2f} ms vs {med['floor_train']:.2f} ms")
        row("langevin", f"sampling step / floor ({tag})", med["sample"] / med["floor_sample"], "x",
            f"{med['sample']:.2f} ms vs {med['floor_sample']:.2f} ms")
    return out


def bench_lpc_vs_vae(dev, a):
    from neuro_lpc import TrainConfig
    from neuro_lpc.train import LPCTrainer, VAETrainer, build_model

    T = 20 if a.quick else 300
    cfg = TrainConfig(batch_size=64, langevin_steps=T, step_size=0.1, precondition=0.25, warm_start="jeffreys",
                      prior_init_batches=0, sample_grid=0, device=dev.type, seed=0)
    x = _x(64, 1, 28, dev)
    trainers = {}
    for name, cls in (("lpc", LPCTrainer), ("vae", VAETrainer)):
        model, enc = build_model(cfg, 28, 1)
        trainers[name] = cls(model, enc, TrainConfig(**{**cfg.to_dict(), "method": name}))
        trainers[name].train_step(x)
    raw = interleaved({k: (lambda t=t: t.train_step(x)) for k, t in trainers.items()}, dev, a.repeats)
    med = {k: 1e3 * median(v) for k, v in raw.items()}
    row("lpc_vs_vae", f"LPC batch (T = {T})", med["lpc"], "ms", "batch 64, 28x28, Jeffreys, beta 0.25")
    row("lpc_vs_vae", "VAE batch", med["vae"], "ms")
    row("lpc_vs_vae", "LPC / VAE per batch", med["lpc"] / med["vae"], "x")
    return {"T": T, "ms_per_batch": med, "raw_s": raw, "lpc_over_vae": med["lpc"] / med["vae"]}


def _brian2_per_step(model, x, z0, cfg, S):
    from circuits.brian import simulate_brian2

    t1 = time.perf_counter()
    simulate_brian2(model, x.cpu(), cfg, z0=z0.cpu(), steps=S, record_every=10, target="numpy")
    t2 = time.perf_counter()
    simulate_brian2(model, x.cpu(), cfg, z0=z0.cpu(), steps=2 * S, record_every=10, target="numpy")
    t3 = time.perf_counter()
    return ((t3 - t2) - (t2 - t1)) / S    # per step: the fixed set-up cost cancels


def bench_circuit(dev, a):
    import bench_circuit as bc
    from circuits import Circuit, CircuitConfig

    model, x, z0 = bc.linear_setup(dev)
    cfg = CircuitConfig(dt=bc.DT, tau_z=bc.TAU_Z, tau_e=bc.TAU_E, noise="ideal")
    c = Circuit(model, cfg)
    steps, sde_steps = (500, 100) if a.quick else (2000, 500)
    fns = {"circuit": lambda: c.simulate(x, z0, steps=steps, record_every=bc.REC),
           "hand loop": lambda: bc.hand_loop(model, x, z0, steps, torch.Generator(device=dev).manual_seed(0))}
    per = {"circuit": steps, "hand loop": steps}
    notes = {}
    try:
        import torchsde  # noqa: F401
        fns["torchsde"] = lambda: bc.torchsde_run(model, x, z0, sde_steps)
        per["torchsde"] = sde_steps
    except ImportError:
        notes["torchsde"] = "skipped: torchsde not installed (it is in the [test] extra)"
    for fn in fns.values():
        fn()
    raw = interleaved(fns, dev, a.repeats, per)
    us = {k: 1e6 * median(v) for k, v in raw.items()}
    try:
        # the per-step time is a difference of a 2S- and an S-step run: S must make S steps (~10 ms each here) large
        # against the spread of Brian2's network build (seconds for the 40 x 784 circuit's synapses), or the
        # difference is noise (20 steps gave negative times)
        S = 200 if a.quick else 500
        b = [_brian2_per_step(model.cpu(), x, z0, cfg, S) for _ in range(max(1, a.repeats // 2))]
        model.to(dev)
        raw["brian2 (numpy)"] = b
        if median(b) > 0:
            us["brian2 (numpy)"] = 1e6 * median(b)
        else:
            notes["brian2"] = f"unreliable: the 2S - S difference was not positive at S = {S} (build-time noise)"
    except Exception as e:  # noqa: BLE001 - brian2 missing or unsupported: a note, not a failure
        model.to(dev)
        notes["brian2"] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    for k, v in us.items():
        note = (f"{v / us['circuit']:.2f}x the circuit's time" if k != "circuit"
                else f"kernel {c.state['kernel'] if c.state else '?'}, batch 64, nn.Linear(40, 784)")
        row("circuit", f"{k} us/step", v, "us", note)
    for k, v in notes.items():
        row("circuit", k, float("nan"), "", v)
    return {"us_per_step": us, "raw_s": raw, "notes": notes, "steps": steps, "sde_steps": sde_steps,
            "speedup": {k: v / us["circuit"] for k, v in us.items() if k != "circuit"}}


def _langevin_memory_probe(T: int, device: str) -> None:
    """Child process: peak memory of one training chain of T steps (printed as JSON)."""
    from neuro_lpc import DiscretizedGaussianLikelihood, GenerativeModel, LangevinSampler
    from neuro_lpc.networks import ConvDecoder

    dev = torch.device(device)
    torch.manual_seed(0)
    model = GenerativeModel(ConvDecoder(28, 1), DiscretizedGaussianLikelihood(0.1)).to(dev)
    x, z0 = _x(64, 1, 28, dev), torch.randn(64, 40, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    LangevinSampler(step_size=0.01, steps=T, precondition=0.25).sample(model, x, z0, accumulate_grad=True,
                                                                      track_moments=True)
    out = {"T": T, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vmhwm_mib": vmhwm_mib()}
    if dev.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(out))


def bench_memory(dev, a):
    import bench_circuit as bc

    N = 500 if a.quick else 2000
    circ = [bc.measure_memory(s, str(dev)) for s in (N, 10 * N)]
    T = 10 if a.quick else 30
    lang = []
    for t in (T, 10 * T):
        res = subprocess.run([sys.executable, __file__, "--_langevin-memory", str(t), "--device", str(dev)],
                             capture_output=True, text=True, check=True, env=dict(os.environ))
        lang.append(json.loads(res.stdout.strip().splitlines()[-1]))
    key = "cuda_peak_mib" if dev.type == "cuda" else "vmhwm_mib"   # not ru_maxrss: see _common.vmhwm_mib
    for m in circ:
        row("memory", f"circuit streamed to HDF5, {m['steps']} steps", m.get(key, float("nan")), "MiB",
            f"{key}; file {m['file_mib']:.2f} MiB")
    for m in lang:
        row("memory", f"LPC training chain, T = {m['T']}", m.get(key, float("nan")), "MiB", key)
    return {"circuit_duration": circ, "langevin_chain_length": lang, "measure": key}


def bench_inception(dev, a):
    import warnings

    from neuro_lpc.data import load_dataset
    from neuro_lpc.metrics import InceptionFeatures

    warnings.filterwarnings("ignore")
    try:
        _, test, _ = load_dataset("animal-mnist")
        n = 16 if a.quick else 32
        images = test.images[:n]
        variants = {"fast": InceptionFeatures(str(dev), batch_size=n, precision="fast")}
        if not a.quick:
            variants["fp32"] = InceptionFeatures(str(dev), batch_size=n, precision="fp32")
    except Exception as e:  # noqa: BLE001 - weights or data set not installed
        note = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        row("inception", "images/s", float("nan"), "", note)
        return {"skipped": note}
    with torch.no_grad():
        for v in variants.values():
            v(images)
        raw = interleaved({k: (lambda v=v: v(images)) for k, v in variants.items()}, dev, a.repeats)
    ips = {k: n / median(v) for k, v in raw.items()}
    for k, v in ips.items():
        row("inception", f"{k} images/s", v, "images/s", f"28x28 grey -> 299x299, batch {n}")
    return {"images_per_s": ips, "raw_s": raw, "images": n}


def bench_gpu(dev, a):
    if dev.type != "cuda":
        row("gpu", "fast paths", float("nan"), "", "skipped: no CUDA device (run bench/bench_gpu.py on a GPU)")
        return {"skipped": "no CUDA device"}
    import bench_gpu as bg

    T = 20 if a.quick else 300
    out = {"lpc_batch_ms": bg.lpc_batch(dev, T, a.repeats), "T": T,
           "circuit_conv_steps_per_s": bg.circuit_conv(dev, 50 if a.quick else 1000, a.repeats)}
    out["linear"] = bg.linear_vs_torchsde(dev, 500 if a.quick else 5000, 100 if a.quick else 1000, a.repeats)
    for k in ("speed-up eager vs torchsde", "speed-up graphs vs torchsde"):
        if k in out["linear"]:
            row("gpu", f"linear circuit {k}", out["linear"][k], "x", "goal >= 15")
    for k, v in out["lpc_batch_ms"].items():
        row("gpu", f"LPC batch CIFAR-10 decoder, T = {T}, fast={k}", v, "ms", "goal <= 60 ms at T = 300")
    c = out["circuit_conv_steps_per_s"]
    row("gpu", "circuit EM steps/s, CIFAR-10 decoder (eager)", c["eager"], "steps/s", "goal >= 1e4")
    row("gpu", "circuit EM steps/s, CIFAR-10 decoder (graphs)", c["graphs"], "steps/s", c["graphs_path"])
    return out


def bench_circuit_training(dev, a):
    if dev.type != "cpu":
        row("circuit_training", "analog / LPC", float("nan"), "", "skipped: a CPU benchmark (the main job's rows)")
        return {"skipped": "CPU only"}
    import bench_circuit_training as bct

    out = {}
    for arch in (("mlp",) if a.quick else ("mlp", "conv")):
        res = bct.measure(arch, a.repeats, 1 if a.quick else 2, sources=False)
        out[arch] = res
        for k in ("ideal", "analog"):
            row("circuit_training", f"{k} circuit / LPC optimiser step ({arch})", res[k]["ratio"], "x",
                f"{res[k]['ms']:,.0f} vs {res['lpc']['ms']:,.0f} ms; batch 64, T = 10" +
                ("; goal <= 1.5 (issue 14)" if k == "analog" else ""))
    return out


BENCHMARKS = {"langevin": bench_langevin, "lpc_vs_vae": bench_lpc_vs_vae, "circuit": bench_circuit,
              "memory": bench_memory, "inception": bench_inception, "gpu": bench_gpu,
              "circuit_training": bench_circuit_training}


def _fmt(v):
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark; print one table; write bench/results.json.")
    ap.add_argument("--quick", action="store_true", help="short runs and 3 repeats (a check, not a measurement)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per benchmark (default 5; 3 quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--_langevin-memory", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._langevin_memory is not None:
        _langevin_memory_probe(a._langevin_memory, a.device)
        return 0
    if a.repeats is not None and a.repeats < 1:
        print("error: --repeats must be >= 1", file=sys.stderr)
        return 2
    a.repeats = a.repeats or (3 if a.quick else 5)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               "device": str(dev), "quick": a.quick, "repeats": a.repeats, "benchmarks": {}}
    for name, fn in BENCHMARKS.items():
        if a.only and name not in a.only:
            continue
        t0 = time.perf_counter()
        try:
            results["benchmarks"][name] = fn(dev, a)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not lose the others
            results["benchmarks"][name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            row(name, "failed", float("nan"), "", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        sync(dev)
        results["benchmarks"].setdefault(name, {})["wall_s"] = time.perf_counter() - t0
    results["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2, default=str))
    m = results["machine"]
    print(f"# bench/run.py on {m['cpu'].get('model')} ({m['cpu'].get('cpus')} CPUs, {m['torch_threads']} torch threads)"
          f"{', ' + m['cuda']['device'] if m['cuda'] else ''}; device {dev}; torch {m['versions'].get('torch')}; "
          f"medians of {a.repeats} interleaved repeats{' (--quick)' if a.quick else ''}; load {m.get('load_average')}")
    print("| benchmark | quantity | median | unit | note |")
    print("|---|---|---|---|---|")
    for b, q, v, u, n in ROWS:
        print(f"| {b} | {q} | {_fmt(v)} | {u} | {n} |")
    print(f"# written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
