"""Torch Euler-Maruyama vs Brian2 vs the Lyapunov solution: statistics, a two-sample test and the agreement table.

Used by ``sims/compare_brian2.py`` (:func:`main`) and the tests.

* :func:`linear_reference`: stationary mean / covariance of z for a linear circuit without noise sources and
  with uniform time constants -- the discrete Lyapunov solution of the EM chain at the run's dt
  (``circuits.analysis.linear_circuit_z_stationary``) -- and the exact integrated autocorrelation time of each
  z_i, tau_int = 2 int_0^inf rho_i(s) ds = 2 [(-A)^-1 Sigma]_ii / Sigma_ii (seconds) of the OU process
  dX = (A X + c) dt + B dW with stationary covariance Sigma (C(s) = exp(A s) Sigma).
* :func:`chain_statistics`: mean, covariance (pooled over chains after a burn-in) and the chain-averaged
  integrated autocorrelation time (``circuits.analysis.integrated_autocorr_time``) of a record.
* :func:`two_sample_test`: do two sets of (nearly) independent samples come from the same law?
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch
from scipy import stats as sps

__all__ = ["linear_reference", "chain_statistics", "two_sample_test", "agreement", "format_table", "main",
           "demo_model"]


# ------------------------------------------------------------------------------------------- statistics
def linear_reference(model, x, config) -> dict | None:
    """{"mean" (d,), "cov" (d, d), "tau_int" (d,) s} of a linear circuit's stationary z; None when it does not apply
    (a nonlinear decoder, noise sources, per-unit time constants, preconditioning, or chains with different x)."""
    from torch import nn

    from ..analysis import linear_circuit_matrices, linear_circuit_z_stationary, linear_sde_stationary
    from ..circuit import Circuit

    circuit = Circuit(model, config)
    if type(model.decoder) is not nn.Linear or circuit.sources or not circuit.uniform_timescales \
            or circuit.preconditioned:
        return None
    x = np.asarray(torch.as_tensor(x).detach().double().cpu())
    if not np.allclose(x, x[:1]):
        return None
    W = model.decoder.weight.detach().double().numpy()
    b = model.decoder.bias.detach().double().numpy() if model.decoder.bias is not None else np.zeros(W.shape[0])
    args = (W, b, x[0], float(model.likelihood.sigma), circuit.prior_std, float(circuit.timescales.tau_z),
            float(circuit.timescales.tau_e), circuit.temperature, config.error_form)
    mean, cov = linear_circuit_z_stationary(*args, dt=float(config.dt))
    A, _, Bn = linear_circuit_matrices(*args)
    _, joint = linear_sde_stationary(A, Bn)
    d = W.shape[1]
    integral = np.linalg.solve(-A, joint)               # int_0^inf exp(A s) Sigma ds
    tau = 2 * np.diag(integral)[:d] / np.diag(joint)[:d]
    return {"mean": mean, "cov": cov, "tau_int": tau}


def chain_statistics(z, record_dt: float, burn_fraction: float = 0.5) -> dict:
    """{"mean" (d,), "cov" (d, d), "tau_int" (d,) s, "n_eff" (d,), "tau_se", "tau_bias" (d,) s} of a record z (R, B, d)
    after the burn-in (the last two: the expected standard error and bias of the tau_int estimate)."""
    from ..analysis import integrated_autocorr_time

    z = np.asarray(torch.as_tensor(z).detach().double().cpu())
    kept = z[int(burn_fraction * z.shape[0]):]
    flat = kept.reshape(-1, z.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tau_rec = np.asarray(integrated_autocorr_time(kept, chain_axis=1), float).reshape(-1)
    # Sokal's variance of the windowed estimate (window M ~ 5 tau): var(tau) ~ 2 (2 M + 1) tau^2 / (R B); the
    # per-chain mean removal biases it by about -2 M tau / R (R records per chain), both in records
    M = 5 * tau_rec
    return {"mean": flat.mean(0), "cov": np.atleast_2d(np.cov(flat.T)), "tau_int": tau_rec * record_dt,
            "n_eff": flat.shape[0] / np.maximum(tau_rec, 1.0),
            "tau_se": tau_rec * np.sqrt(2 * (2 * M + 1) / flat.shape[0]) * record_dt,
            "tau_bias": -2 * M * tau_rec / kept.shape[0] * record_dt}


def two_sample_test(a, b, alpha: float = 0.01) -> dict:
    """Two-sample test of "a and b (N_a, d), (N_b, d) of independent samples have the same law".

    Per coordinate three tests, Bonferroni-combined at level ``alpha`` over the 3 d of them:
    the means (Welch z), the variances (z of log(s_a^2 / s_b^2), standard error sqrt((k_a - 1) / N_a +
    (k_b - 1) / N_b) with the sample kurtoses k, so it holds for non-Gaussian laws) and the whole marginal
    (Kolmogorov-Smirnov). Power: a variance ratio r is rejected with probability ~ Phi(|log r| / se - z_{1 -
    alpha / 6d}); with N = 1000 per side and Gaussian kurtosis (se = 0.063), d = 2: r = 1.35 at 90 %, r = 2 (a
    doubled temperature) with probability 1 - 1e-20. Returns {"p": {name: p}, "p_min", "reject"}.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 10:
        raise ValueError(f"two_sample_test needs (N, d) samples with the same d and N >= 10, got {a.shape}, {b.shape}")
    p = {}
    for i in range(a.shape[1]):
        x, y = a[:, i], b[:, i]
        se_m = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
        p[f"mean z{i}"] = 2 * sps.norm.sf(abs(x.mean() - y.mean()) / se_m)
        kx, ky = sps.kurtosis(x, fisher=False), sps.kurtosis(y, fisher=False)
        se_v = np.sqrt((kx - 1) / len(x) + (ky - 1) / len(y))
        p[f"var z{i}"] = 2 * sps.norm.sf(abs(np.log(x.var(ddof=1) / y.var(ddof=1))) / se_v)
        p[f"KS z{i}"] = sps.ks_2samp(x, y).pvalue
    p_min = min(p.values())
    return {"p": p, "p_min": p_min, "reject": bool(p_min < alpha / len(p)), "alpha": alpha, "tests": len(p)}


# --------------------------------------------------------------------------------------------- the table
def demo_model(d: int = 3, n: int = 8, decoder: str = "linear", hidden: int = 16, sigma_x: float = 0.5,
               seed: int = 0):
    """A small float64 GenerativeModel with seeded weights (W ~ N(0, 1 / d)): linear, or one tanh hidden layer."""
    from torch import nn

    from neuro_lpc import GaussianLikelihood, GenerativeModel

    torch.manual_seed(seed)
    if decoder == "linear":
        dec = nn.Linear(d, n)
    elif decoder == "mlp":
        dec = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, n))
    else:
        raise ValueError(f"decoder must be 'linear' or 'mlp', got {decoder!r}")
    with torch.no_grad():
        for m in dec.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0 / np.sqrt(m.in_features))
                m.bias.normal_(0.0, 0.1)
    return GenerativeModel(dec.double(), GaussianLikelihood(sigma_x), prior_std=1.0).double()


def agreement(model, x, config, steps: int, record_every: int = 10, target: str = "numpy", burn: float = 0.5,
              z0=None) -> dict:
    """Run both simulators on the same circuit; {"torch", "brian2", "lyapunov" (or None): statistics, "wall": {...}}."""
    from ..circuit import Circuit
    from .simulate import simulate_brian2

    circuit = Circuit(model, config)
    t0 = time.perf_counter()
    tr = circuit.simulate(x, z0, steps=steps, record_every=record_every)
    wall_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    br = simulate_brian2(model, x, config, z0=z0, steps=steps, record_every=record_every, target=target)
    wall_brian = time.perf_counter() - t0
    rdt = record_every * float(config.dt)
    return {"torch": chain_statistics(tr.z, rdt, burn), "brian2": chain_statistics(br.z, rdt, burn),
            "lyapunov": linear_reference(model, x, config),
            "wall": {"torch": wall_torch, "brian2": wall_brian, "brian2_run": br.attrs["wall_s"]},
            "target": target, "steps": steps, "batch": x.shape[0]}


def format_table(res: dict) -> str:
    """Markdown table: each statistic for torch EM, Brian2 and Lyapunov, with the Monte Carlo standard error."""
    t, b, ly = res["torch"], res["brian2"], res["lyapunov"]
    d = len(t["mean"])
    n_eff = np.minimum(t["n_eff"], b["n_eff"])
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    rows = ["| statistic | torch EM | Brian2 | Lyapunov | MC s.e. (bias) |", "|---|---|---|---|---|"]
    for i in range(d):
        var = t["cov"][i, i]
        rows.append(f"| mean z{i} | {fmt(t['mean'][i])} | {fmt(b['mean'][i])} | "
                    f"{fmt(ly['mean'][i]) if ly else '-'} | {fmt(np.sqrt(var / n_eff[i]))} |")
    for i in range(d):
        for j in range(i, d):
            se = np.sqrt((t["cov"][i, i] * t["cov"][j, j] + t["cov"][i, j] ** 2) / min(n_eff[i], n_eff[j]))
            rows.append(f"| cov z{i} z{j} | {fmt(t['cov'][i, j])} | {fmt(b['cov'][i, j])} | "
                        f"{fmt(ly['cov'][i, j]) if ly else '-'} | {fmt(se)} |")
    for i in range(d):
        rows.append(f"| tau_int z{i} (ms) | {fmt(1e3 * t['tau_int'][i])} | {fmt(1e3 * b['tau_int'][i])} | "
                    f"{fmt(1e3 * ly['tau_int'][i]) if ly else '-'} | {fmt(1e3 * t['tau_se'][i])} "
                    f"({fmt(1e3 * t['tau_bias'][i])}) |")
    w = res["wall"]
    rows.append("")
    rows.append(f"wall time, {res['steps']} steps x batch {res['batch']}: torch EM {w['torch']:.2f} s, Brian2 "
                f"({res['target']}) {w['brian2']:.2f} s ({w['brian2_run']:.2f} s of it in net.run; the rest builds "
                f"the network)")
    return "\n".join(rows)


def main(argv=None) -> int:
    """``sims/compare_brian2.py``: the agreement table, or ``--export DIR`` (a standalone Brian2 script)."""
    from pathlib import Path

    from neuro_lpc.validation import OneLineParser

    from ..config import CircuitConfig
    from .export import export_brian2
    from .simulate import TARGETS

    p = OneLineParser(prog="compare_brian2", description="Torch EM vs Brian2 vs Lyapunov on one small circuit.")
    p.add_argument("--decoder", choices=["linear", "mlp"], default="linear")
    p.add_argument("--d", type=int, default=3, help="latent units")
    p.add_argument("--n", type=int, default=8, help="observation (error) units")
    p.add_argument("--hidden", type=int, default=16, help="hidden units of --decoder mlp")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--record-every", type=int, default=10)
    p.add_argument("--dt", type=float, default=1e-4)
    p.add_argument("--tau-z", type=float, default=1e-2)
    p.add_argument("--tau-e", type=float, default=2e-3, help="0: adiabatic error units")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--noise", default="ideal", help="preset or JSON file (sources Brian2 can express)")
    p.add_argument("--target", choices=TARGETS, default="numpy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="DIR", default=None, help="write DIR/circuit.py + circuit.npz and stop")
    args = p.parse_args(argv)
    for name in ("d", "n", "hidden", "batch", "steps", "record_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.record_every > args.steps:
        p.error(f"--record-every ({args.record_every}) must not exceed --steps ({args.steps})")
    if args.steps // args.record_every < 20:
        p.error("need at least 20 records (--steps / --record-every) for the statistics")
    try:
        cfg = CircuitConfig(dt=args.dt, tau_z=args.tau_z, tau_e=args.tau_e, temperature=args.temperature,
                            noise=args.noise, seed=args.seed).validate()
        model = demo_model(args.d, args.n, args.decoder, args.hidden, seed=args.seed)
        x = model.sample(1, generator=torch.Generator().manual_seed(args.seed + 1), mean=False).repeat(args.batch, 1)
        if args.export is not None:
            out = Path(args.export)
            if out.exists() and not out.is_dir():
                raise ValueError(f"--export {out} exists and is not a folder")
            path = export_brian2(model, x, cfg, out / "circuit.py", steps=args.steps, record_every=args.record_every)
            print(f"wrote {path} and {path.with_suffix('.npz')}; run: python {path} [--device cpp_standalone]")
            return 0
        res = agreement(model, x, cfg, args.steps, args.record_every, args.target)
    except (ValueError, TypeError) as err:
        print(f"error: compare_brian2: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{args.decoder} decoder d={args.d} n={args.n}, batch {args.batch}, dt={args.dt:g} s, tau_z={args.tau_z:g} s, "
          f"tau_e={args.tau_e:g} s, T={args.temperature:g}, noise {args.noise}; statistics over the second half\n")
    print(format_table(res))
    return 0
