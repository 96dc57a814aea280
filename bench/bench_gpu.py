#!/usr/bin/env python
"""The GPU goals of issue 10, measured eager against the fast paths (docs/scale.md). One process, medians.

1. A full LPC training batch (``LPCTrainer.train_step``): batch 64, T = 300, Jeffreys warm start,
   Adam-preconditioned chain (beta 0.25, step 0.1), the paper's CIFAR-10 decoder/encoder (ConvDecoder(32, 3)),
   discretised-Gaussian likelihood. Goal <= 60 ms per batch (>= 9x the paper's 533 ms, Table 4).
   Rows: eager, fast="fused" (compiled preconditioner), fast="graphs" (CUDA graphs of 50 steps).
2. The circuit on the same decoder at batch 64 (adiabatic error units, ideal noise), eager ``Circuit.simulate``
   against ``circuits.fast.simulate_graphed``: Euler-Maruyama steps/s. Goal >= 1e4 steps/s.
3. The linear benchmark of bench_circuit.py (nn.Linear(40, 784), batch 64, finite tau_e, a record every 10
   steps): the circuit (eager and graphed) against torchsde.sdeint(euler) and a hand-written loop.
   Goal: circuit >= 15x torchsde.
4. Preconditioned sampling at 28x28 (ConvDecoder(28, 1), beta 0.99) against its floor (decoder forward +
   backward for z, bench_langevin.floor_loop): the issue measured 1.15x on an H100.

Usage:  python bench/bench_gpu.py [--device cuda] [--quick] [--repeats 5] [--out bench/out/gpu.json]
Off CUDA it runs the same rows (``--device cpu --quick`` checks the script; "graphs" then falls back to eager).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from _common import interleaved, machine, median, sync  # noqa: E402  (puts the repo root on sys.path)

import torch  # noqa: E402

GOALS = {"lpc_batch_ms": 60.0, "circuit_conv_steps_per_s": 1e4, "linear_vs_torchsde": 15.0}
MODES = (None, "fused", "graphs")


def _x(batch, channels, size, dev, seed=0):
    g = torch.Generator(device=dev).manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=g, device=dev).float() / 127.5 - 1


def lpc_batch(dev, T, repeats, batch=64):
    """ms per full training batch for each sampler mode (row 1)."""
    from neuro_lpc import TrainConfig
    from neuro_lpc.train import LPCTrainer, build_model

    cfg = TrainConfig(batch_size=batch, langevin_steps=T, step_size=0.1, precondition=0.25, warm_start="jeffreys",
                      prior_init_batches=0, sample_grid=0, device=dev.type, seed=0)
    x = _x(batch, 3, 32, dev)
    trainers = {}
    for mode in MODES:
        model, enc = build_model(cfg, 32, 3)
        tr = LPCTrainer(model, enc, cfg)
        tr.sampler = dataclasses.replace(tr.sampler, fast=mode)
        for _ in range(2):                     # warm-up: compile / graph capture, cuDNN autotune
            tr.train_step(x)
        trainers[str(mode)] = tr
    times = interleaved({k: (lambda tr=tr: tr.train_step(x)) for k, tr in trainers.items()}, dev, repeats)
    return {k: 1e3 * median(v) for k, v in times.items()}


def circuit_conv(dev, steps, repeats, batch=64):
    """Euler-Maruyama steps/s on the CIFAR-10 decoder (row 2)."""
    from circuits import Circuit, CircuitConfig
    from circuits.fast import simulate_graphed
    from neuro_lpc import TrainConfig
    from neuro_lpc.train import build_model

    cfg = TrainConfig(latent_dim=40, device=dev.type, seed=0)
    model, _ = build_model(cfg, 32, 3)
    model = model.to(dev)
    c = Circuit(model, CircuitConfig(dt=1e-3, tau_z=1e-2, tau_e=0.0, noise="ideal"))
    x = _x(batch, 3, 32, dev)
    z0 = torch.randn(batch, 40, device=dev)
    rec = max(1, steps // 10)
    fns = {"eager": lambda: c.simulate(x, z0, steps=steps, record_every=rec),
           "graphs": lambda: simulate_graphed(c, x, z0, steps=steps, record_every=rec)}
    for fn in fns.values():
        fn()
    times = interleaved(fns, dev, repeats, per={k: steps for k in fns})
    out = {k: 1.0 / median(v) for k, v in times.items()}
    out["graphs_path"] = simulate_graphed(c, x, z0, steps=rec, record_every=rec).attrs["fast"]
    return out


def linear_vs_torchsde(dev, steps, sde_steps, repeats):
    """Row 3: us per step of the circuit (eager, graphs), the hand loop and torchsde (bench_circuit's set-up)."""
    import bench_circuit as bc
    from circuits import Circuit, CircuitConfig
    from circuits.fast import simulate_graphed

    model, x, z0 = bc.linear_setup(dev)
    c = Circuit(model, CircuitConfig(dt=bc.DT, tau_z=bc.TAU_Z, tau_e=bc.TAU_E, noise="ideal"))
    fns = {"circuit eager": lambda: c.simulate(x, z0, steps=steps, record_every=bc.REC),
           "circuit graphs": lambda: simulate_graphed(c, x, z0, steps=steps, record_every=bc.REC),
           "hand loop": lambda: bc.hand_loop(model, x, z0, steps, torch.Generator(device=dev).manual_seed(0))}
    per = {k: steps for k in fns}
    try:
        import torchsde  # noqa: F401
        fns["torchsde"] = lambda: bc.torchsde_run(model, x, z0, sde_steps)
        per["torchsde"] = sde_steps
    except ImportError:
        pass
    for k, fn in fns.items():
        fn()
    t = {k: median(v) for k, v in interleaved(fns, dev, repeats, per).items()}
    out = {f"{k} us/step": 1e6 * v for k, v in t.items()}
    if "torchsde" in t:
        out["speed-up eager vs torchsde"] = t["torchsde"] / t["circuit eager"]
        out["speed-up graphs vs torchsde"] = t["torchsde"] / t["circuit graphs"]
    else:
        out["torchsde"] = "not installed (pip install torchsde; it is in the [test] extra)"
    return out


def precond_sampling(dev, steps, repeats, batch=64):
    """Row 4: preconditioned sampling step / floor at 28x28, per mode."""
    from bench_langevin import floor_loop
    from neuro_lpc import DiscretizedGaussianLikelihood, GenerativeModel, LangevinSampler
    from neuro_lpc.networks import ConvDecoder

    torch.manual_seed(0)
    model = GenerativeModel(ConvDecoder(28, 1), DiscretizedGaussianLikelihood(0.1)).to(dev)
    x = _x(batch, 1, 28, dev)
    z0 = torch.randn(batch, 40, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    fns = {"floor": lambda: floor_loop(model, x, z0, steps, [])}
    for mode in MODES:
        s = LangevinSampler(step_size=0.01, steps=steps, precondition=0.99, fast=mode)
        fns[str(mode)] = lambda s=s: s.sample(model, x, z0, generator=g)
    for fn in fns.values():
        fn()
    t = {k: median(v) for k, v in interleaved(fns, dev, repeats, per={k: steps for k in fns}).items()}
    return {**{f"{k} ms/step": 1e3 * v for k, v in t.items()},
            **{f"{k} / floor": v / t["floor"] for k, v in t.items() if k != "floor"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="short chains (script check; not the goals' settings)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "gpu.json"))
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    T = 20 if a.quick else 300
    res = {"machine": machine(), "device": str(dev), "quick": a.quick, "repeats": a.repeats, "goals": GOALS}
    res["lpc_batch_ms"] = lpc_batch(dev, T, a.repeats)
    res["lpc_batch_T"] = T
    res["circuit_conv_steps_per_s"] = circuit_conv(dev, 50 if a.quick else 1000, a.repeats)
    res["linear"] = linear_vs_torchsde(dev, 200 if a.quick else 5000, 50 if a.quick else 1000, a.repeats)
    res["precond_sampling_28"] = precond_sampling(dev, 10 if a.quick else 100, a.repeats)
    sync(dev)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2, default=str))
    print(f"# bench_gpu on {res['machine'].get('cuda') or res['machine']['cpu'].get('model')}, device {dev}, "
          f"T = {T}{' (quick: not the goal settings)' if a.quick else ''}")
    print("| measurement | eager | fused | graphs | goal |")
    print("|---|---|---|---|---|")
    b = res["lpc_batch_ms"]
    print(f"| LPC training batch, ms (batch 64, CIFAR-10 decoder) | {b['None']:.1f} | {b['fused']:.1f} | "
          f"{b['graphs']:.1f} | <= 60 |")
    c = res["circuit_conv_steps_per_s"]
    print(f"| circuit EM steps/s, CIFAR-10 decoder, batch 64 | {c['eager']:,.0f} | | {c['graphs']:,.0f} "
          f"({c['graphs_path']}) | >= 10,000 |")
    ln = res["linear"]
    print(f"| linear circuit vs torchsde (x) | {ln.get('speed-up eager vs torchsde', float('nan')):.1f} | | "
          f"{ln.get('speed-up graphs vs torchsde', float('nan')):.1f} | >= 15 |")
    p = res["precond_sampling_28"]
    print(f"| preconditioned sampling / floor, 28x28 | {p['None / floor']:.2f} | {p['fused / floor']:.2f} | "
          f"{p['graphs / floor']:.2f} | (was 1.15 on an H100) |")
    print(f"# full results: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
