"""The stationary bias of Algorithm 1's preconditioner, measured on linear-Gaussian posteriors.

Algorithm 1 adapts G = 1 / (m_hat + delta) from the current score at every step (eq. 18-19 with the
curvature term Gamma of eq. 20 dropped).  G then depends on the state and the chain is not invariant for
the posterior, even as gamma -> 0 (the diffusion z' = G(z) s dt + sqrt(2 G(z)) dW without Gamma has the
wrong invariant law).  :func:`preconditioner_bias` measures how wrong, where the answer is known in closed
form: the posterior of a linear decoder with a Gaussian likelihood is N(mu, P^-1)
(:func:`neuro_lpc.theory.gaussian_posterior`), and ULA with a *fixed* diagonal G settles at N(mu, C) with
C = F C F^T + 2 gamma G, F = I - gamma G P (:func:`neuro_lpc.theory.ula_stationary`).

Measured quantity: chains start at exact posterior draws, run past a burn-in of several relaxation times,
and the second moment about the posterior mean is compared with the posterior along each eigenvector u_k
of P (eigenvalue lambda_k):

    r_k = E[ (u_k . (z - mu))^2 ] / (1 / lambda_k),       variance_ratio = (1/d) sum_k r_k = tr(P C) / d.

(The chain's law is symmetric about mu -- its update depends on s only through s and s^2 -- so this is
its variance.)  Standard errors come from the spread over independent chains of each chain's time average
(no autocorrelation model needed).  ``fixed_gain_ratio`` is the same ratio in closed form for ULA with
each chain's last G held fixed, averaged over the chains: for ``preconditioner="frozen"`` that is the
chain's exact stationary law, for ``"adam"`` it is the law the visited G's would give without adaptation,
so variance_ratio / fixed_gain_ratio isolates the bias from adapting G.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from .errors import DivergenceError
from .langevin import DEFAULT_MAX_GAIN, LangevinSampler
from .likelihoods import GaussianLikelihood
from .model import GenerativeModel
from .theory import gaussian_posterior, ula_stationary

__all__ = ["linear_gaussian_problem", "preconditioner_bias"]


def linear_gaussian_problem(dim: int = 4, kappa: float = 10.0, lam_min: float = 2.0, sigma: float = 0.5,
                            obs_dim: int | None = None, seed: int = 0):
    """A linear-Gaussian model whose posterior precision has eigenvalues geomspace(lam_min, kappa lam_min, dim).

    z ~ N(0, I), x | z ~ N(W z + b, sigma^2 I) with W = U diag(sv) V^T (U (n, d) orthonormal columns,
    V a random rotation, so P is not diagonal and a diagonal G cannot whiten it), sv_k = sigma
    sqrt(lambda_k - 1): P = W^T W / sigma^2 + I = V diag(lambda) V^T.  float64.
    Returns ``(model, x)`` with model = GenerativeModel(nn.Linear(d, n), GaussianLikelihood(sigma)) and
    x of shape (1, n); the closed forms come from W = decoder.weight, b = decoder.bias.
    """
    if not (isinstance(dim, int) and dim >= 1):
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not (kappa >= 1 and lam_min > 1):
        raise ValueError(f"need kappa >= 1 and lam_min > 1 (the prior alone gives 1), got {kappa}, {lam_min}")
    n = obs_dim or 2 * dim
    if n < dim:
        raise ValueError(f"obs_dim must be >= dim={dim}, got {n}")
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(math.log10(lam_min), math.log10(kappa * lam_min), dim, dtype=torch.float64)
    V, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    U, _ = torch.linalg.qr(torch.randn(n, dim, generator=g, dtype=torch.float64))
    W = (U * (sigma * (lam - 1).sqrt())) @ V.T
    dec = nn.Linear(dim, n).double()
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.copy_(0.1 * torch.randn(n, generator=g, dtype=torch.float64))
    model = GenerativeModel(dec, GaussianLikelihood(sigma).double(), prior_std=1.0)
    x = torch.randn(1, n, generator=g, dtype=torch.float64)
    return model, x


def preconditioner_bias(beta: float, step_size: float, preconditioner: str = "adam", dim: int = 4,
                        kappa: float = 10.0, steps: int | None = None, chains: int = 1000, seed: int = 0,
                        warmup: int | None = None, max_gain: float | None = DEFAULT_MAX_GAIN) -> dict:
    """Variance ratio (chain / exact posterior) of preconditioned ULA on a linear-Gaussian posterior.

    The model is :func:`linear_gaussian_problem` (dim, kappa, problem seed 0, so every call sees the same
    posterior); ``chains`` chains start at exact posterior draws (``seed``) and run
    ``LangevinSampler(step_size, steps, precondition=beta, preconditioner=...)``.  Only the second half
    of the chain is measured; the default ``steps`` is twice the longer of 8 relaxation times of the
    slowest mode for the smallest gain Algorithm 1 would pick (tau = 1 / (gamma lambda_min g_min),
    g_min = 1 / sqrt(max_i P_ii), G ~ 1 / RMS score) and 5 memories 1 / (1 - beta) of the preconditioner,
    at least 400.  About a second at gamma = 0.1 (1000 chains, one thread).

    Returns a dict: variance_ratio (mean over P's eigendirections of r_k, see the module docstring) and
    its standard error se; per_direction and per_direction_se (r_k, eigenvalues ascending);
    fixed_gain_ratio (closed form of ULA with each chain's last G held fixed, mean over the chains for
    which that fixed-G chain is stable) and unstable_fraction (the others: gamma G P has an eigenvalue
    >= 2); gain_median; eigenvalues; steps, burn, chains, beta, step_size, preconditioner, warmup, seconds;
    diverged (None, or why not: a DivergenceError's step, or for "frozen" the fraction of chains that froze
    an unstable G -- those chains grow geometrically and the ratios are meaningless).
    """
    if not (isinstance(chains, int) and chains >= 2):
        raise ValueError(f"chains must be an integer >= 2 (the standard error is their spread), got {chains!r}")
    model, x1 = linear_gaussian_problem(dim, kappa)
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    mean, cov, P = gaussian_posterior(W, b, x1[0], float(model.likelihood.sigma), model.prior_std)
    lam, U = np.linalg.eigh(P)
    if steps is None:
        g_min = 1.0 / math.sqrt(float(np.max(np.diag(P))))
        memory = 1.0 / (1.0 - beta) if beta else 1.0                     # the EMA's memory, in steps
        steps = max(400, 2 * math.ceil(8.0 / (step_size * lam[0] * g_min)), 2 * math.ceil(5 * memory))
    sampler = LangevinSampler(step_size, steps, precondition=beta, preconditioner=preconditioner,
                              warmup=warmup, max_gain=max_gain)
    burn = steps // 2
    record_every = max(1, (steps - burn) // 200)
    gen = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(torch.as_tensor(cov))
    mu = torch.as_tensor(mean)
    z0 = mu + torch.randn(chains, dim, generator=gen, dtype=torch.float64) @ L.T
    out = dict(beta=beta, step_size=step_size, preconditioner=preconditioner, warmup=sampler.warmup_steps(),
               steps=steps, burn=burn, chains=chains, eigenvalues=lam, diverged=None)
    t0 = time.perf_counter()
    try:
        res = sampler.sample(model, x1.expand(chains, -1), z0, record_every=record_every, generator=gen)
    except DivergenceError as e:
        inf = float("inf")
        out.update(variance_ratio=inf, se=float("nan"), per_direction=np.full(dim, inf),
                   per_direction_se=np.full(dim, np.nan), fixed_gain_ratio=float("nan"), unstable_fraction=float("nan"),
                   gain_median=float("nan"),
                   diverged=f"DivergenceError at step {e.step}", seconds=time.perf_counter() - t0)
        return out
    seconds = time.perf_counter() - t0
    keep = res.t > burn
    proj = ((res.z_trace[keep] - mu) @ torch.as_tensor(U)).numpy()      # (R, chains, d) in P's eigenbasis
    with np.errstate(over="ignore", invalid="ignore"):                   # chains that froze an unstable G
        per_chain = (proj ** 2 * lam).mean(0)                            # (chains, d): each chain's r_k
    r, r_se = per_chain.mean(0), per_chain.std(0, ddof=1) / math.sqrt(chains)
    overall = per_chain.mean(1)
    gains = res.gain.numpy()
    fixed = []
    for g in gains:
        try:
            fixed.append(lam @ np.diag(U.T @ ula_stationary(P, mean, step_size, G=g)[1] @ U) / dim)
        except ValueError:  # gamma G P has an eigenvalue >= 2: ULA with this G held fixed diverges
            fixed.append(np.inf)
    fixed = np.asarray(fixed)
    stable = np.isfinite(fixed)
    if preconditioner == "frozen" and not stable.all():  # those chains grow geometrically (maybe still finite)
        out["diverged"] = f"{1 - stable.mean():.1%} of the chains froze an unstable gain (gamma G P has an eigenvalue >= 2)"
    out.update(variance_ratio=float(overall.mean()), se=float(overall.std(ddof=1) / math.sqrt(chains)),
               per_direction=r, per_direction_se=r_se,
               fixed_gain_ratio=float(fixed[stable].mean()) if stable.any() else float("inf"),
               unstable_fraction=float(1 - stable.mean()), gain_median=float(np.median(gains)), seconds=seconds)
    return out
