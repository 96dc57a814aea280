"""Stationary bias of Algorithm 1's preconditioner ("adam") and of its frozen form, on a linear-Gaussian posterior.

    python sims/preconditioner_bias.py                        # the table of docs/preconditioner.md
    python sims/preconditioner_bias.py --betas 0.25 --step-sizes 0.1 --chains 400

Each row is ``neuro_lpc.preconditioning.preconditioner_bias``: chains started at exact posterior draws,
variance ratio chain / posterior averaged over the posterior precision's eigendirections (+- one standard
error over chains), its range over the directions, and the closed form of ULA with the chains' last G held
fixed (for "frozen" the exact prediction; for "adam" what the visited G's would give without adaptation).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from neuro_lpc.preconditioning import preconditioner_bias


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.9, 0.99])
    ap.add_argument("--step-sizes", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.2])
    ap.add_argument("--preconditioners", nargs="+", default=["adam", "frozen"], choices=["adam", "frozen"])
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=4)
    ap.add_argument("--kappa", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny steps)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    print(f"# {' '.join(['python', 'sims/preconditioner_bias.py'] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"# {_cpu()}, torch {torch.__version__}, {a.threads} thread(s); dim={a.dim}, kappa={a.kappa}, "
          f"chains={a.chains}, seed={a.seed}")
    print("| preconditioner | beta | gamma | variance ratio (mean over directions) | range over directions | "
          "fixed-G closed form | ratio / fixed-G | median G | steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    eig = None
    for pc in a.preconditioners:
        for beta in a.betas:
            for gamma in a.step_sizes:
                r = preconditioner_bias(beta, gamma, preconditioner=pc, dim=a.dim, kappa=a.kappa,
                                        chains=a.chains, seed=a.seed)
                eig = r["eigenvalues"]
                if r["diverged"] is not None:
                    print(f"| {pc} | {beta:g} | {gamma:g} | diverges: {r['diverged']} | | "
                          f"{r['fixed_gain_ratio']:.3f} | | {r['gain_median']:.3f} | {r['steps']} |", flush=True)
                    continue
                lo, hi = r["per_direction"].min(), r["per_direction"].max()
                print(f"| {pc} | {beta:g} | {gamma:g} | {r['variance_ratio']:.3f} ± {r['se']:.3f} | {lo:.2f}–{hi:.2f} | "
                      f"{r['fixed_gain_ratio']:.3f} | {r['variance_ratio'] / r['fixed_gain_ratio']:.2f} | "
                      f"{r['gain_median']:.3f} | {r['steps']} |", flush=True)
    print(f"# posterior precision eigenvalues {', '.join(f'{v:.3g}' for v in eig)}; "
          f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
