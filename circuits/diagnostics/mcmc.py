"""MCMC diagnostics of sampler chains: autocorrelation, integrated autocorrelation time, ESS, R-hat, burn-in.

Torch or numpy in, the same type out; float64; vectorised over chains; time is axis 0 throughout.

* :func:`autocorrelation` - rho(k) by FFT.
* :func:`integrated_autocorr_time` - tau with Sokal's automatic window; :func:`effective_sample_size`
  and :func:`ess_per_unit_time` from it.
* :func:`ess_summary` - tau and ESS with Madras-Sokal standard errors, reported as reliable only with
  >= 50 records per tau.
* :func:`split_rhat` - split R-hat across chains.
* :func:`time_to_typical_set` - a burn-in estimate from the log-joint trace.

Their exact counterparts for linear (OU / AR(1)) processes are in :mod:`circuits.diagnostics.ou`.
"""
from __future__ import annotations

import warnings

import torch

from .._checks import positive
from ._tensors import float64_tensor, like_input

__all__ = ["autocorrelation", "integrated_autocorr_time", "effective_sample_size", "ess_per_unit_time",
           "ess_summary", "split_rhat", "time_to_typical_set"]


def autocorrelation(x, max_lag: int | None = None):
    """Normalised autocorrelation rho(k), k = 0..max_lag, of each series along axis 0, by FFT.

    x (R, ...) -> (max_lag + 1, ...). Uses the standard biased estimator
    rho(k) = sum_{r < R-k} (x_r - xbar)(x_{r+k} - xbar) / sum_r (x_r - xbar)^2, computed in
    O(R log R) with zero padding to at least 2R (no circular wrap-around). rho(0) = 1; a constant
    series gives NaN. max_lag defaults to R - 1.
    """
    xt, as_numpy = float64_tensor("x", x, 1)
    R = xt.shape[0]
    max_lag = R - 1 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < R:
        raise ValueError(f"max_lag must be in [0, R-1={R - 1}], got {max_lag}")
    centred = xt - xt.mean(0, keepdim=True)
    n_fft = 1 << (2 * R - 1).bit_length()
    spectrum = torch.fft.rfft(centred, n=n_fft, dim=0)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=n_fft, dim=0)[: max_lag + 1]
    return like_input(acov / acov[:1], as_numpy)


def _sokal_tau(xt: torch.Tensor, c: float, chain_axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sokal's windowed tau and its window M (both (...), M in records) of a float64 tensor (R, ...)."""
    c = positive("c", c)
    rho = autocorrelation(xt)
    if chain_axis is not None:
        if not 1 <= chain_axis < xt.ndim and not -xt.ndim < chain_axis < 0:
            raise ValueError(f"chain_axis must name an axis of x other than time (0), got {chain_axis} for ndim {xt.ndim}")
        rho = rho.mean(dim=chain_axis)
    taus = 2 * torch.cumsum(rho, dim=0) - 1
    window = torch.arange(rho.shape[0], dtype=torch.float64, device=rho.device).reshape((-1,) + (1,) * (rho.ndim - 1))
    reached = window >= c * taus
    first = torch.argmax(reached.to(torch.uint8), dim=0, keepdim=True)
    found = reached.any(dim=0, keepdim=True)  # always true in exact arithmetic: tau(R-1) = 0
    first = torch.where(found, first, torch.full_like(first, rho.shape[0] - 1))
    return taus.gather(0, first).squeeze(0), first.squeeze(0).to(torch.float64)


def integrated_autocorr_time(x, c: float = 5.0, chain_axis: int | None = None, min_length: float = 50.0):
    """Integrated autocorrelation time tau = 1 + 2 sum_{k>=1} rho(k) of each series along axis 0.

    The sum is truncated with Sokal's automatic window (as in emcee): tau(M) = 1 + 2 sum_{k=1}^M rho(k)
    with the smallest M such that M >= c tau(M) (c = 5 by default). Chosen over Geyer's initial
    positive sequence because it is a one-pass, fully vectorised rule that is accurate for the
    near-exponential decay of Langevin chains; its bias is O(exp(-c)) for such decay. As in emcee,
    a series shorter than ``min_length`` x tau (50 by default) gets a warning: its tau (and ESS) is
    unreliable, typically underestimated.

    ``chain_axis`` (an axis of x other than 0): average rho over the chains on that axis before
    windowing (one less noisy tau for all of them; that axis is removed). x (R, ...) -> (...).
    """
    xt, as_numpy = float64_tensor("x", x, 1, min_len=3)
    tau, _ = _sokal_tau(xt, c, chain_axis)
    if bool((min_length * tau > xt.shape[0]).any()):
        warnings.warn(f"integrated_autocorr_time: series of length {xt.shape[0]} is shorter than {min_length:g} x tau "
                      f"(largest tau {float(tau.max()):.4g}); the estimate is unreliable", RuntimeWarning, stacklevel=2)
    return like_input(tau, as_numpy)


def effective_sample_size(x, c: float = 5.0, chain_axis: int | None = None):
    """ESS = R / tau per series (tau from :func:`integrated_autocorr_time`).

    With ``chain_axis`` the ESS is the total over those chains, n_chains R / tau, using the
    chain-averaged tau.
    """
    xt, as_numpy = float64_tensor("x", x, 1, min_len=3)
    tau = integrated_autocorr_time(xt, c=c, chain_axis=chain_axis)
    n = xt.shape[0] * (1 if chain_axis is None else xt.shape[chain_axis])
    return like_input(n / tau, as_numpy)


def ess_per_unit_time(x, dt_record: float, c: float = 5.0, chain_axis: int | None = None):
    """Effective samples per unit of (simulated) time: ESS / (R dt_record) = 1 / (tau dt_record) per chain.

    ``dt_record`` is the time between consecutive records (simulation dt times the decimation).
    """
    dt_record = positive("dt_record", dt_record)
    xt, as_numpy = float64_tensor("x", x, 1, min_len=3)
    return like_input(effective_sample_size(xt, c=c, chain_axis=chain_axis) / (xt.shape[0] * dt_record), as_numpy)


def ess_summary(x, dt_record: float = 1.0, c: float = 5.0, chain_axis: int | None = None,
                min_records_per_tau: float = 50.0) -> dict:
    """Integrated autocorrelation time and ESS with their standard errors, and whether to trust them.

    tau is Sokal's windowed estimate (:func:`integrated_autocorr_time`, window M = the smallest with
    M >= c tau(M)).  Its standard error is Madras & Sokal's (1988) large-R variance of the windowed
    estimator,

        var(tau) ~= 2 (2M + 1) / N  tau^2,    N = R records (R x n_chains with ``chain_axis``, whose
                                                averaged autocorrelation is n_chains times less noisy),

    and ESS = N / tau, ESS per unit time = ESS / (R dt_record), with the same relative error
    (delta method: se(ESS) / ESS = se(tau) / tau).

    Reliability rule (Sokal 1997; emcee): an estimate is *reliable* when the series has at least
    ``min_records_per_tau`` (50) records per autocorrelation time, R >= 50 tau, and tau is finite.
    Shorter series cannot contain the window's c tau lags many times over: the autocorrelation is
    then estimated from few effectively independent blocks, the windowed sum is truncated early and
    tau (hence the ESS) is typically *under*estimated -- and the Madras-Sokal error, a large-R
    formula, is too small.  The rule uses the estimated tau, so a grossly underestimated tau can pass
    it; a series that fails it is certainly too short.  No warning is raised: the verdict is returned.

    x: (R, ...) with time first (any further axes are separate series, or chains pooled with
    ``chain_axis``).  Returns a dict with, per series (shape (...), the input's type): ``tau``,
    ``tau_se``, ``window`` (M, records), ``ess``, ``ess_se``, ``ess_per_unit_time``,
    ``ess_per_unit_time_se``, ``records_per_tau`` (R / tau), ``reliable_series`` (bool); and
    ``reliable`` (bool: every series reliable) and ``reason`` (None when reliable, else a sentence
    saying which series fail and why).
    """
    dt_record = positive("dt_record", dt_record)
    min_records_per_tau = positive("min_records_per_tau", min_records_per_tau)
    xt, as_numpy = float64_tensor("x", x, 1, min_len=3)
    tau, window = _sokal_tau(xt, c, chain_axis)
    R = xt.shape[0]
    N = R * (1 if chain_axis is None else xt.shape[chain_axis])
    tau_se = tau * torch.sqrt(2 * (2 * window + 1) / N)
    ess = N / tau
    ess_se = ess * tau_se / tau
    records_per_tau = R / tau
    finite = torch.isfinite(tau) & (tau > 0)
    ok = finite & (records_per_tau >= min_records_per_tau)
    n_series, n_bad = ok.numel(), int((~ok).sum())
    reason = None
    if n_bad:
        parts = []
        if bool((~finite).any()):
            parts.append(f"{int((~finite).sum())} with no finite positive tau (a constant or degenerate series)")
        short = finite & (records_per_tau < min_records_per_tau)
        if bool(short.any()):
            parts.append(f"{int(short.sum())} with fewer than {min_records_per_tau:g} records per autocorrelation time "
                         f"(R = {R} records, as few as {float(records_per_tau[short].min()):.3g} per tau, "
                         f"tau up to {float(tau[short].max()):.3g} records): tau and ESS are likely underestimated; "
                         f"record a longer chain")
        reason = f"{n_bad} of {n_series} series unreliable: " + "; ".join(parts)
    out = dict(tau=tau, tau_se=tau_se, window=window, ess=ess, ess_se=ess_se,
               ess_per_unit_time=ess / (R * dt_record), ess_per_unit_time_se=ess_se / (R * dt_record),
               records_per_tau=records_per_tau, reliable_series=ok)
    out = {k: like_input(v, as_numpy) for k, v in out.items()}
    out.update(reliable=n_bad == 0, reason=reason)
    return out


def split_rhat(x):
    """Split R-hat (Gelman et al., BDA3 section 11.4) of x (R, chains, ...) -> (...).

    Each chain is cut into halves (dropping the first record when R is odd), giving m = 2 chains'
    worth of sequences of length n. With W the mean within-sequence variance and B/n the variance
    of the sequence means (both with ddof=1),

        var+ = (n - 1)/n W + B/n,     R-hat = sqrt(var+ / W).

    R-hat ~ 1 for mixed chains; > 1.01-1.1 flags chains that disagree (or drift within themselves).
    The classic (not rank-normalised) version.
    """
    xt, as_numpy = float64_tensor("x", x, 2, min_len=4)
    n = xt.shape[0] // 2
    xt = xt[xt.shape[0] - 2 * n:]
    halves = torch.cat([xt[:n], xt[n:]], dim=1)
    within = halves.var(dim=0, unbiased=True).mean(dim=0)
    between_over_n = halves.mean(dim=0).var(dim=0, unbiased=True)
    var_plus = (n - 1) / n * within + between_over_n
    return like_input(torch.sqrt(var_plus / within), as_numpy)


def time_to_typical_set(log_joint_trace, t, n_std: float = 2.0, stationary_fraction: float = 0.5):
    """First time each chain's log joint enters its stationary band (a burn-in estimate).

    log_joint_trace (R, B), t (R,). The band of chain b is m_b +- n_std s_b, with m_b and s_b the
    mean and standard deviation of its last ``stationary_fraction`` of records (the second half by
    default). Returns t[r_b] for the first record r_b inside the band, shape (B,) (NaN if never).
    """
    lj, as_numpy = float64_tensor("log_joint_trace", log_joint_trace, 2)
    tt, _ = float64_tensor("t", t, 1)
    if lj.ndim != 2:
        raise ValueError(f"log_joint_trace must have shape (R, B), got {tuple(lj.shape)}")
    if tt.shape != lj.shape[:1]:
        raise ValueError(f"t must have shape (R={lj.shape[0]},), got {tuple(tt.shape)}")
    if not 0 < stationary_fraction <= 1:
        raise ValueError(f"stationary_fraction must be in (0, 1], got {stationary_fraction}")
    n_std = positive("n_std", n_std)
    tail = lj[lj.shape[0] - max(2, int(round(stationary_fraction * lj.shape[0]))):]
    centre, spread = tail.mean(0), tail.std(0)
    inside = (lj - centre).abs() <= n_std * spread
    first = torch.argmax(inside.to(torch.uint8), dim=0)
    times = tt.to(lj.device)[first]
    times = torch.where(inside.any(dim=0), times, torch.full_like(times, float("nan")))
    return like_input(times, as_numpy)
