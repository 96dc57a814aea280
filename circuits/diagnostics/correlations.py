"""Noise correlations between units and Fano factors through a Poisson rate read-out.

Noise correlations: the correlation of the *fluctuations* of units at a fixed stimulus.  Trajectories
z (R, B, d) are centred either on each chain's own time mean (``center="chain"``: chain b is one stimulus,
its stationary fluctuations are the trial-to-trial noise, by ergodicity) or on the across-trial mean at each
record (``center="time"``: the B trials share one stimulus, as in an onset experiment); the covariance of
the residuals r is pooled and normalised, rho_ij = S_ij / sqrt(S_ii S_jj).  For a sampling-based circuit
at stationarity this is the posterior correlation matrix (averaged over stimuli).

Rate read-out (a spiking interpretation of the rate units): each unit fires as an inhomogeneous Poisson
process of rate  lambda_i(t) = gain [z_i(t) - threshold]^+  (Hz per unit of activity); its spike count in a
window of w records is Poisson with mean Lambda = sum_{r in window} lambda_i(t_r) dt_record.  For a
constant rate the count Fano factor var/mean is 1; for a rate that varies between windows (a doubly
stochastic process) it is 1 + var(Lambda) / E[Lambda] (law of total variance) -- the excess measures the
sampling variability of the underlying activity.  :func:`poisson_fano_theory` gives it in closed form when
the activity is Gaussian N(mu, s^2) and constant within a window, from the rectified-Gaussian moments

    E[a^+] = mu Phi(mu/s) + s phi(mu/s),    E[(a^+)^2] = (mu^2 + s^2) Phi(mu/s) + mu s phi(mu/s).

numpy float64 out (counts: int64); torch accepted.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from .. import _checks as ck

__all__ = ["NoiseCorrelations", "noise_correlations", "poisson_counts", "spike_count_fano", "poisson_fano_theory"]

CENTERS = ("chain", "time", "pooled")


class NoiseCorrelations(NamedTuple):
    corr: np.ndarray          # (d, d) correlation of the residuals (unit diagonal)
    cov: np.ndarray           # (d, d) their covariance
    mean_offdiag: float       # mean of rho_ij over i < j
    mean_abs_offdiag: float   # mean of |rho_ij| over i < j
    n: int                    # residual samples pooled (not effectively independent for autocorrelated chains)
    null_se: float            # 1 / sqrt(n - 3): the spread of one rho_ij from n independent samples of rho = 0


def noise_correlations(z_trace, center: str = "chain") -> NoiseCorrelations:
    """Noise correlation matrix of z_trace (R, B, d) (time, chains or trials, units); (n, d) = one chain.

    ``center``: "chain" (each chain its own stimulus), "time" (all chains one stimulus: remove the
    across-trial mean at each record), "pooled" (one mean for everything: samples of one distribution).
    """
    z = ck.array("z_trace", z_trace, (2, 3), min_len=2)
    z = z[:, None, :] if z.ndim == 2 else z
    R, B, d = z.shape
    if d < 2:
        raise ValueError(f"z_trace needs at least 2 units (last axis) for correlations, got shape {z.shape}")
    if center not in CENTERS:
        raise ValueError(f"center must be one of {', '.join(CENTERS)}, got {center!r}")
    if center == "time" and B < 2:
        raise ValueError("center='time' needs at least 2 trials (axis 1)")
    axis = {"chain": 0, "time": 1, "pooled": (0, 1)}[center]
    r = (z - z.mean(axis, keepdims=True)).reshape(-1, d)
    dof = r.shape[0] - {"chain": B, "time": R, "pooled": 1}[center]
    if dof < 1:
        raise ValueError(f"too few samples for a covariance: shape {z.shape} with center={center!r}")
    cov = ck.symmetric(r.T @ r / dof)
    sd = np.sqrt(np.diag(cov))
    if np.any(sd == 0):
        raise ValueError("a unit does not fluctuate (zero variance): its correlations are undefined")
    corr = cov / np.outer(sd, sd)
    iu = np.triu_indices(d, 1)
    n = int(r.shape[0])
    return NoiseCorrelations(corr, cov, float(corr[iu].mean()), float(np.abs(corr[iu]).mean()), n,
                             float(1 / np.sqrt(max(n - 3, 1))))


def _window_records(window: float, dt_record: float, R: int) -> int:
    w = int(round(ck.positive("window", window) / ck.positive("dt_record", dt_record)))
    if w < 1:
        raise ValueError(f"window={window:g} s is shorter than one record ({dt_record:g} s)")
    if w > R:
        raise ValueError(f"window={window:g} s is longer than the trace ({R} records of {dt_record:g} s)")
    return w


def poisson_counts(activity, dt_record: float, window: float, gain: float = 50.0, threshold: float = 0.0,
                   seed: int = 0) -> np.ndarray:
    """Poisson spike counts in consecutive non-overlapping windows of a rectified rate read-out.

    activity (R, ...) with time first; rate = gain [activity - threshold]^+ (Hz); ``window`` and
    ``dt_record`` in seconds (window = w records, rounded; a trailing partial window is dropped).
    Returns int64 counts (R // w, ...), drawn with ``numpy.random.default_rng(seed)``.
    """
    a = ck.array("activity", activity, tuple(range(1, 8)), min_len=1)
    gain = ck.positive("gain", gain)
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    w = _window_records(window, dt_record, a.shape[0])
    n = a.shape[0] // w
    rate = gain * np.clip(a[: n * w] - threshold, 0, None)
    expected = rate.reshape((n, w) + a.shape[1:]).sum(1) * dt_record
    return np.random.default_rng(seed).poisson(expected)


def spike_count_fano(activity, dt_record: float, window: float, gain: float = 50.0, threshold: float = 0.0,
                     seed: int = 0, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fano factor var/mean (ddof = 1) of :func:`poisson_counts` along ``axis`` of the counts.

    axis 0: across the windows of each chain (stationary trials of one stimulus); 1: across chains/trials at
    each window (the onset experiment's Fano(t)).  NaN where a unit never fires.  Returns (fano, counts).
    """
    counts = poisson_counts(activity, dt_record, window, gain, threshold, seed)
    if not -counts.ndim <= axis < counts.ndim or counts.shape[axis] < 2:
        raise ValueError(f"the counts {counts.shape} need at least 2 entries along axis {axis}: "
                         "a longer trace or a shorter window")
    c = counts.astype(np.float64)
    mean = c.mean(axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        fano = np.where(mean > 0, c.var(axis, ddof=1) / mean, np.nan)
    return fano, counts


def poisson_fano_theory(mu, sigma, gain: float, window: float, threshold: float = 0.0):
    """Count Fano factor 1 + var(Lambda)/E[Lambda] for activity a ~ N(mu, sigma^2) constant over each window.

    Lambda = gain window [a - threshold]^+; rectified-Gaussian moments (module docstring).  sigma = 0: a
    constant rate, Fano 1.  mu, sigma: numbers or arrays of one shape.
    """
    mu = ck.array("mu", mu, tuple(range(0, 8))) - float(threshold)
    sigma = ck.array("sigma", sigma, tuple(range(0, 8)))
    if np.any(sigma < 0):
        raise ValueError("sigma must be >= 0")
    scale = ck.positive("gain", gain) * ck.positive("window", window)
    s = np.where(sigma > 0, sigma, 1.0)
    u = np.where(sigma > 0, mu / s, 0.0)
    m1 = np.where(sigma > 0, mu * stats.norm.cdf(u) + s * stats.norm.pdf(u), np.clip(mu, 0, None))
    m2 = np.where(sigma > 0, (mu ** 2 + s ** 2) * stats.norm.cdf(u) + mu * s * stats.norm.pdf(u),
                  np.clip(mu, 0, None) ** 2)
    mean, var = scale * m1, scale ** 2 * np.clip(m2 - m1 ** 2, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, 1 + var / mean, np.nan)
