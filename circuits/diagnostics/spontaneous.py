"""Spontaneous vs evoked activity: Berkes et al. (2011, Science 331: 83)'s test of a sampling-based brain.

If activity samples the posterior p(z | x), then averaged over the stimuli the model was fitted to, the
evoked activity samples the *aggregate posterior*  int p(z | x) p_data(x) dx,  which equals the prior p(z)
-- the spontaneous activity, sampled without input -- exactly when the model's marginal p(x) is the data
distribution.  The divergence  KL(aggregate evoked || spontaneous)  therefore measures how well the model is
adapted to its inputs (Berkes et al. saw it fall with age in ferret V1).

Estimate: the Gaussian-moment KL between the pooled evoked samples and the spontaneous law (samples, or the
prior N(0, s_p^2 I) in closed form),

    KL(N(m1, S1) || N(m2, S2)) = [ tr(S2^{-1} S1) + (m2 - m1)^T S2^{-1} (m2 - m1) - d + ln det S2 - ln det S1 ] / 2,

a lower bound on the true KL only for Gaussian laws, and biased upward by sampling noise: for n independent
samples of the reference law itself its expectation is (:func:`gaussian_kl_null_bias`)

    E[KL] = [ d / n - sum_{i=0}^{d-1} psi((n - 1 - i) / 2) - d ln 2 + d ln(n - 1) ] / 2  ~  d (d + 3) / (4 n).

Closed form for a linear-Gaussian model z ~ N(0, s_p^2 I), x | z ~ N(W z + b, sigma_x^2 I) and data
x ~ N(m_x, S_x) (:func:`aggregate_posterior_kl_linear`): with P = W^T W / sigma_x^2 + I / s_p^2 and
M = P^{-1} W^T / sigma_x^2, the aggregate posterior is N(M (m_x - b), P^{-1} + M S_x M^T); for data drawn
from the model (m_x = b, S_x = s_p^2 W W^T + sigma_x^2 I) it is exactly the prior, KL = 0.
numpy float64 out; torch accepted.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special

from .. import _checks as ck

__all__ = ["gaussian_kl", "gaussian_kl_null_bias", "SpontaneousEvoked", "spontaneous_evoked_kl",
           "aggregate_posterior_kl_linear"]


def _mean_cov(mean, cov, name: str) -> tuple[np.ndarray, np.ndarray]:
    m = ck.array(f"{name} mean", mean, 1)
    S = ck.square(f"{name} cov", cov)
    if S.shape != (len(m), len(m)):
        raise ValueError(f"{name} cov must have shape ({len(m)}, {len(m)}), got {S.shape}")
    return m, ck.symmetric(S)


def _logdet(S: np.ndarray, name: str) -> float:
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        raise ValueError(f"{name} covariance is not positive definite (singular: too few samples or a constant unit)")
    return float(logdet)


def gaussian_kl(mean1, cov1, mean2, cov2) -> float:
    """KL( N(mean1, cov1) || N(mean2, cov2) ) in nats (module docstring)."""
    m1, S1 = _mean_cov(mean1, cov1, "first")
    m2, S2 = _mean_cov(mean2, cov2, "second")
    if len(m1) != len(m2):
        raise ValueError(f"the two laws have different dimensions: {len(m1)} and {len(m2)}")
    diff = m2 - m1
    ld1, ld2 = _logdet(S1, "first"), _logdet(S2, "second")
    quad = np.linalg.solve(S2, np.column_stack([S1, diff]))
    return float(max(0.0, 0.5 * (np.trace(quad[:, :-1]) + diff @ quad[:, -1] - len(m1) + ld2 - ld1)))


def gaussian_kl_null_bias(d: int, n: float) -> float:
    """E[KL(N(m_hat, S_hat) || N(m, S))] for n independent samples of N(m, S) (S_hat with ddof = 1); needs n > d."""
    d = ck.integer("d", d, 1)
    n = ck.positive("n", n)
    if n - 1 < d:
        raise ValueError(f"the null bias needs n - 1 >= d: n = {n:g}, d = {d}")
    i = np.arange(d)
    e_logdet = special.digamma((n - 1 - i) / 2).sum() + d * np.log(2) - d * np.log(n - 1)
    return float(0.5 * (d / n - e_logdet))


class SpontaneousEvoked(NamedTuple):
    kl: float                 # Gaussian-moment KL(aggregate evoked || spontaneous), nats
    null_bias: float          # its expectation were evoked = spontaneous (n_eff samples; NaN if n_eff <= d)
    kl_marginal: float        # mean over units of the 1-D KLs of the unit marginals (small bias)
    marginal_null_bias: float
    var_ratio: float          # mean_i evoked var_i / spontaneous var_i
    evoked_mean: np.ndarray   # (d,)
    evoked_cov: np.ndarray    # (d, d)
    spontaneous_mean: np.ndarray
    spontaneous_cov: np.ndarray
    n: int                    # evoked samples pooled
    n_eff: float              # effectively independent evoked samples used for the bias


def _samples(name: str, x) -> np.ndarray:
    a = ck.array(name, x, tuple(range(1, 8)))
    a = a[:, None] if a.ndim == 1 else a
    return a.reshape(-1, a.shape[-1])


def spontaneous_evoked_kl(evoked, spontaneous=None, prior_std: float | None = None,
                          n_eff: float | None = None) -> SpontaneousEvoked:
    """Compare the aggregate evoked activity with the spontaneous one (module docstring).

    evoked (..., d): samples under input pooled over every stimulus (e.g. z (R, B, d) over chains with
    different images).  The spontaneous law: samples (..., d) without input, or ``prior_std`` (N(0, s_p^2 I)
    exactly).  ``n_eff``: effectively independent evoked samples (default all, i.e. independent samples;
    pass n / tau for autocorrelated chains) -- it sets ``null_bias``.  With spontaneous *samples* the null
    bias adds the same formula at their count (an approximation).
    """
    ev = _samples("evoked", evoked)
    n, d = ev.shape
    if n < 2:
        raise ValueError("evoked needs at least 2 samples")
    if (spontaneous is None) == (prior_std is None):
        raise ValueError("give exactly one of spontaneous (samples) and prior_std")
    if spontaneous is not None:
        sp = _samples("spontaneous", spontaneous)
        if sp.shape[1] != d or sp.shape[0] < 2:
            raise ValueError(f"spontaneous must have shape (..., d={d}) with >= 2 samples, got {sp.shape}")
        s_mean, s_cov, n_sp = sp.mean(0), np.atleast_2d(np.cov(sp, rowvar=False)), sp.shape[0]
    else:
        s = ck.positive("prior_std", prior_std)
        s_mean, s_cov, n_sp = np.zeros(d), s ** 2 * np.eye(d), None
    n_eff = float(n) if n_eff is None else ck.positive("n_eff", n_eff)
    e_mean, e_cov = ev.mean(0), np.atleast_2d(np.cov(ev, rowvar=False))
    kl = gaussian_kl(e_mean, e_cov, s_mean, s_cov)
    ev_var, sp_var = np.diag(e_cov), np.diag(s_cov)
    marg = [gaussian_kl(e_mean[i:i + 1], e_cov[i:i + 1, i:i + 1], s_mean[i:i + 1], s_cov[i:i + 1, i:i + 1])
            for i in range(d)]

    def bias(dim):
        try:
            b = gaussian_kl_null_bias(dim, n_eff)
            return b + (gaussian_kl_null_bias(dim, n_sp) if n_sp is not None else 0.0)
        except ValueError:
            return float("nan")
    return SpontaneousEvoked(kl, bias(d), float(np.mean(marg)), bias(1), float(np.mean(ev_var / sp_var)),
                             e_mean, e_cov, s_mean, s_cov, n, n_eff)


def aggregate_posterior_kl_linear(W, b, sigma_x: float, prior_std: float, data_mean, data_cov):
    """Closed-form KL(aggregate posterior || prior) of the linear-Gaussian model for Gaussian data.

    W (n, d), b (n,), data x ~ N(data_mean (n,), data_cov (n, n)).  Returns (kl, mean (d,), cov (d, d)) of the
    aggregate posterior N(M (m_x - b), P^{-1} + M S_x M^T) (module docstring).
    """
    W = ck.array("W", W, 2)
    n, d = W.shape
    b = ck.array("b", b, 1)
    m_x = ck.array("data_mean", data_mean, 1)
    S_x = ck.square("data_cov", data_cov)
    if b.shape != (n,) or m_x.shape != (n,) or S_x.shape != (n, n):
        raise ValueError(f"b and data_mean must have shape (n={n},) and data_cov ({n}, {n}); got {b.shape}, "
                         f"{m_x.shape}, {S_x.shape}")
    var_x = ck.positive("sigma_x", sigma_x) ** 2
    var_p = ck.positive("prior_std", prior_std) ** 2
    P = W.T @ W / var_x + np.eye(d) / var_p
    cov_post = np.linalg.inv(P)
    M = cov_post @ W.T / var_x
    mean = M @ (m_x - b)
    cov = ck.symmetric(cov_post + M @ S_x @ M.T)
    return gaussian_kl(mean, cov, np.zeros(d), var_p * np.eye(d)), mean, cov
