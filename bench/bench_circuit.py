#!/usr/bin/env python
"""Speed and memory of the circuit simulator, measured as ratios in one process (writes nothing to git).

1. Linear circuit (decoder nn.Linear(40, 784), batch 64, finite tau_e, ideal noise, a record every 10 steps):
   Euler-Maruyama steps/s of ``Circuit.simulate`` against
     - ``torchsde.sdeint(method="euler")`` on the same SDE (target: circuit >= 15x faster), and
     - a minimal hand-written in-place torch loop doing the same work, recording included
       (target: circuit >= 0.8x its speed).
2. The paper's conv decoder (``ConvDecoder(28, 1)``, batch 64): a circuit step (finite tau_e: forward +
   one vector-Jacobian product) against a discrete LPC step (``LangevinSampler``: forward + backward),
   per step from the difference of runs of 2S and S steps (fixed per-run costs cancel).
3. Peak memory of a run that streams its records to HDF5 (keep_records=False) for N and 10 N steps,
   each in a fresh subprocess (max RSS on CPU, torch.cuda.max_memory_allocated on CUDA): flat in N.

Runs are interleaved and repeated; the median time of each is reported. Usage:
    python bench/bench_circuit.py [--device cpu|cuda] [--steps 2000] [--repeats 5] [--quick]
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from torch import nn  # noqa: E402

from circuits import Circuit, CircuitConfig  # noqa: E402
from neuro_lpc import GaussianLikelihood, GenerativeModel, LangevinSampler  # noqa: E402
from neuro_lpc.likelihoods import LOG_2PI  # noqa: E402
from neuro_lpc.networks import ConvDecoder  # noqa: E402

D, N, B = 40, 784, 64
DT, TAU_Z, TAU_E, SIGMA, REC = 1e-4, 1e-2, 2e-3, 0.5, 10


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev):
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def linear_setup(dev, seed=0):
    torch.manual_seed(seed)
    model = GenerativeModel(nn.Linear(D, N), GaussianLikelihood(SIGMA)).to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.rand((B, N), generator=g, device=dev) * 2 - 1
    z0 = torch.randn((B, D), generator=g, device=dev)
    return model, x, z0


# --------------------------------------------------------------------------- hand-written loop ----

def hand_loop(model, x, z0, steps, gen):
    """The same circuit and records written directly: the floor the simulator is held to."""
    W = model.decoder.weight.detach()
    b = model.decoder.bias.detach()
    Wt = W.t()
    prec = 1.0 / SIGMA**2
    az, ae = DT / TAU_Z, DT / TAU_E
    bz, cz = 1 - az, math.sqrt(2 * DT / TAU_Z)
    z, zn, n = z0.clone(), torch.empty_like(z0), torch.empty_like(z0)
    xmb = x - b
    eps = xmb.addmm(z, Wt, alpha=-1).mul_(prec)
    xb = xmb * (ae * prec)
    R = steps // REC
    zr = torch.empty((R, B, D), device=x.device)
    ljr = torch.empty((R, B), device=x.device)
    enr = torch.empty((R, B), device=x.device)
    const = -N * (math.log(SIGMA) + 0.5 * LOG_2PI) - D * 0.5 * LOG_2PI
    for k in range(1, steps + 1):
        torch.randn(z.shape, generator=gen, out=n)
        torch.addmm(z, eps, W, beta=bz, alpha=az, out=zn)
        zn.add_(n, alpha=cz)
        eps.addmm_(z, Wt, beta=1 - ae, alpha=-ae * prec).add_(xb)
        z, zn = zn, z
        if k % REC == 0:
            i = k // REC - 1
            zr[i].copy_(z)
            r = torch.addmm(xmb, z, Wt, alpha=-1)
            rn = torch.linalg.vector_norm(r, dim=1)
            znorm = torch.linalg.vector_norm(z, dim=1)
            ljr[i].copy_(rn.square_().mul_(-0.5 * prec).add_(znorm.square_(), alpha=-0.5).add_(const))
            torch.linalg.vector_norm(eps, dim=1, out=enr[i])
    return zr, ljr, enr


# ----------------------------------------------------------------------------------- torchsde ----

class LinearCircuitSDE(nn.Module):
    """The same linear circuit for torchsde: state y = [z, eps] (B, d + n), diagonal Ito noise."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model, x):
        super().__init__()
        self.W = model.decoder.weight.detach()
        self.xmb = x - model.decoder.bias.detach()
        self.prec = 1.0 / SIGMA**2
        g = torch.zeros(x.shape[0], D + N, device=x.device)
        g[:, :D] = math.sqrt(2 / TAU_Z)
        self.gdiag = g

    def f(self, t, y):
        z, eps = y[:, :D], y[:, D:]
        dz = (eps @ self.W - z) / TAU_Z
        deps = (self.prec * (self.xmb - z @ self.W.t()) - eps) / TAU_E
        return torch.cat([dz, deps], 1)

    def g(self, t, y):
        return self.gdiag


def torchsde_run(model, x, z0, steps):
    import torchsde
    sde = LinearCircuitSDE(model, x)
    with torch.no_grad():
        eps0 = model.error(x, model.decoder(z0))
        y0 = torch.cat([z0, eps0], 1)
        ts = torch.arange(0, steps + 1, REC, device=x.device, dtype=torch.float32) * DT
        return torchsde.sdeint(sde, y0, ts, method="euler", dt=DT)


# ------------------------------------------------------------------------------------ memory ----

def memory_probe(steps, device):
    """Run one streamed circuit and print its peak memory (child process)."""
    dev = torch.device(device)
    model, x, z0 = linear_setup(dev)
    with tempfile.TemporaryDirectory() as tmp:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        circuit = Circuit(model, CircuitConfig(dt=DT, tau_z=TAU_Z, tau_e=TAU_E, noise="ideal"))
        traj = circuit.simulate(x, z0, steps=steps, record_every=REC, record_path=Path(tmp) / "run.h5",
                                keep_records=False)
        assert traj.z.shape[0] == 1
        import resource
        out = {"steps": steps, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        try:  # the process's own peak (ru_maxrss inherits a large parent's peak over fork/exec): bench/_common.py
            from _common import vmhwm_mib
            out["vmhwm_mib"] = vmhwm_mib()
        except ImportError:
            pass
        if dev.type == "cuda":
            out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        size = (Path(tmp) / "run.h5").stat().st_size / 2**20
        out["file_mib"] = size
    print(json.dumps(out))


def measure_memory(steps, device):
    env = dict(os.environ)
    res = subprocess.run([sys.executable, __file__, "--_memory-probe", str(steps), "--device", device],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------- main ----

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2000, help="EM steps per timed circuit / hand-loop run")
    ap.add_argument("--sde-steps", type=int, default=500, help="steps per timed torchsde run (it is slow)")
    ap.add_argument("--conv-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mem-steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--_memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a._memory_probe is not None:
        memory_probe(a._memory_probe, a.device)
        return
    if a.quick:
        a.steps, a.sde_steps, a.conv_steps, a.repeats, a.mem_steps = 500, 200, 5, 3, 500
    dev = torch.device(a.device)
    name = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    print(f"# bench_circuit on {name}, torch {torch.__version__}; medians of {a.repeats} interleaved repeats")

    # 1. linear circuit ------------------------------------------------------------------------
    model, x, z0 = linear_setup(dev)
    cfg = CircuitConfig(dt=DT, tau_z=TAU_Z, tau_e=TAU_E, noise="ideal")
    circuit = Circuit(model, cfg)
    circuit.simulate(x, z0, steps=50, record_every=REC)  # warm-up
    hand_loop(model, x, z0, 50, torch.Generator(device=dev).manual_seed(0))
    torchsde_run(model, x, z0, 20)
    t_c, t_h, t_s = [], [], []
    for r in range(a.repeats):
        t_c.append(timed(lambda: circuit.simulate(x, z0, steps=a.steps, record_every=REC), dev) / a.steps)
        t_h.append(timed(lambda: hand_loop(model, x, z0, a.steps, torch.Generator(device=dev).manual_seed(r)), dev)
                   / a.steps)
        t_s.append(timed(lambda: torchsde_run(model, x, z0, a.sde_steps), dev) / a.sde_steps)
    c, h, s = (statistics.median(t) for t in (t_c, t_h, t_s))
    kernel = circuit.state["kernel"]
    print(f"\n## linear circuit: nn.Linear({D}, {N}), batch {B}, tau_e = {TAU_E:g} s, dt = {DT:g} s, record every {REC} "
          f"steps (kernel {kernel})\n")
    print("| method | us / step | steps / s | circuit speed-up | target |")
    print("|---|---|---|---|---|")
    print(f"| Circuit.simulate | {c * 1e6:.1f} | {1 / c:,.0f} | 1.00 | |")
    print(f"| hand-written in-place loop | {h * 1e6:.1f} | {1 / h:,.0f} | {h / c:.2f} | >= 0.8 |")
    print(f"| torchsde.sdeint(euler) | {s * 1e6:.1f} | {1 / s:,.0f} | {s / c:.1f} | >= 15 |")

    # 2. conv decoder ----------------------------------------------------------------------------
    torch.manual_seed(0)
    conv = GenerativeModel(ConvDecoder(28, 1, D), GaussianLikelihood(0.1)).to(dev)
    xc = torch.rand((B, 1, 28, 28), device=dev) * 2 - 1
    zc = torch.randn((B, D), device=dev)
    sampler = LangevinSampler(step_size=0.01, steps=a.conv_steps)
    ccirc = Circuit(conv, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="ideal"))
    sampler.sample(conv, xc, zc)
    ccirc.simulate(xc, zc, steps=a.conv_steps, record_every=a.conv_steps)
    # per-step cost = (time of 2S steps - time of S steps) / S: the fixed per-run costs (the circuit's
    # initial error units and final record, one forward each) cancel
    S = a.conv_steps
    sampler2 = LangevinSampler(step_size=0.01, steps=2 * S)
    t_d, t_cc = [], []
    for _ in range(a.repeats):
        t_d.append((timed(lambda: sampler2.sample(conv, xc, zc), dev) - timed(lambda: sampler.sample(conv, xc, zc), dev))
                   / S)
        t_cc.append((timed(lambda: ccirc.simulate(xc, zc, steps=2 * S, record_every=2 * S), dev)
                     - timed(lambda: ccirc.simulate(xc, zc, steps=S, record_every=S), dev)) / S)
    d_, cc = statistics.median(t_d), statistics.median(t_cc)
    print(f"\n## paper conv decoder ConvDecoder(28, 1), latent {D}, batch {B} (kernel {ccirc.state['kernel']})\n")
    print("| method | ms / step | relative |")
    print("|---|---|---|")
    print(f"| LangevinSampler step (forward + backward) | {d_ * 1e3:.2f} | 1.00 |")
    print(f"| circuit step, finite tau_e (forward + VJP) | {cc * 1e3:.2f} | {cc / d_:.2f} |")

    # 3. memory ----------------------------------------------------------------------------------
    print(f"\n## peak memory streaming to HDF5 (keep_records=False), linear circuit, fresh process each\n")
    print("| steps | records | max RSS MiB | CUDA peak MiB | file MiB |")
    print("|---|---|---|---|---|")
    for steps in (a.mem_steps, 10 * a.mem_steps):
        m = measure_memory(steps, a.device)
        print(f"| {steps} | {steps // REC} | {m['maxrss_mib']:.1f} | {m.get('cuda_peak_mib', float('nan')):.1f} | "
              f"{m['file_mib']:.2f} |")


if __name__ == "__main__":
    main()
