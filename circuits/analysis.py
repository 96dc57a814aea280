"""Linear-Gaussian theory and sampling diagnostics for LPC chains and circuits.

Theory (numpy / scipy, float64; torch tensors are accepted and converted)
-------------------------------------------------------------------------
Model: z ~ N(0, s_p^2 I), x | z ~ N(W z + b, sigma_x^2 I), W of shape (n, d).

* :func:`gaussian_posterior` - the exact posterior N(mu, P^-1).
* :func:`ula_stationary`, :func:`ula_stationary_eigen` - where (preconditioned) ULA on that
  posterior settles: the discretisation bias of discrete LPC (paper eq. 5).
* :func:`linear_sde_stationary`, :func:`euler_maruyama_stationary` - stationary law of any
  affine linear SDE dX = (A X + c) dt + B dW and of its Euler-Maruyama chain.
* :func:`linear_circuit_matrices`, :func:`linear_circuit_z_stationary` - the LPC circuit with a
  linear decoder written as such an SDE, with error units of finite time constant tau_e.

Finding (see ``docs/analysis.md``): with finite tau_e the circuit's z-marginal keeps the exact
posterior *mean* but not its *covariance*; the covariance tends to T P^-1 only as tau_e -> 0.

Diagnostics (torch or numpy in, the same type out; float64; vectorised over chains)
---------------------------------------------------------------------------------
Time is axis 0 throughout. :func:`autocorrelation`, :func:`integrated_autocorr_time` (Sokal's
automatic window), :func:`effective_sample_size`, :func:`ess_per_unit_time`, :func:`ess_summary` (tau
and ESS with Madras-Sokal standard errors, reported as reliable only with >= 50 records per tau),
:func:`split_rhat`, :func:`time_to_typical_set`, :func:`fano_factor`,
:func:`across_chain_spread`, :func:`pca_projection` (paper Appendix A.2) and
:func:`pca_landscape_grid`.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from .diagnostics._checks import positive as _positive

__all__ = [
    "gaussian_posterior", "ula_stationary", "ula_stationary_eigen",
    "linear_sde_stationary", "euler_maruyama_stationary",
    "linear_circuit_matrices", "linear_circuit_z_stationary",
    "autocorrelation", "integrated_autocorr_time", "effective_sample_size", "ess_per_unit_time", "ess_summary",
    "split_rhat", "time_to_typical_set", "fano_factor", "across_chain_spread",
    "PCAProjection", "pca_projection", "pca_landscape_grid",
]


# =============================================================================== helpers ====

def _array(name: str, value, ndim: int | tuple[int, ...]) -> np.ndarray:
    """float64 numpy copy of a torch tensor / array-like, with its number of dimensions checked."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {array.shape}")
    return array


def _square(name: str, value) -> np.ndarray:
    matrix = _array(name, value, 2)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be square, got shape {matrix.shape}")
    return matrix


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + matrix.T)


def _noise_matrix(A: np.ndarray, B) -> np.ndarray:
    B = _array("B", B, 2)
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have shape (N={A.shape[0]}, m), got {B.shape}")
    return B


def _affine_mean(A: np.ndarray, c) -> np.ndarray:
    """Fixed point of the drift A X + c: mean = -A^-1 c (c of shape (..., N); zeros when None)."""
    N = A.shape[0]
    if c is None:
        return np.zeros(N)
    c = _array("c", c, (1, 2))
    if c.shape[-1] != N:
        raise ValueError(f"c must have shape (..., N={N}), got {c.shape}")
    return -np.linalg.solve(A, c.T).T


def _stable_euler_dt(A: np.ndarray) -> float:
    """Largest dt with spectral radius of I + dt A below 1: min over eigenvalues mu of 2 |Re mu| / |mu|^2.

    |1 + dt mu|^2 < 1  <=>  2 dt Re(mu) + dt^2 |mu|^2 < 0  <=>  dt < -2 Re(mu) / |mu|^2.
    Zero when A has an eigenvalue with non-negative real part (then no dt is stable).
    """
    mu = np.linalg.eigvals(A)
    if np.any(mu.real >= 0):
        return 0.0
    return float(np.min(-2 * mu.real / np.abs(mu) ** 2))


def _check_continuous_stable(A: np.ndarray) -> None:
    max_real = float(np.max(np.linalg.eigvals(A).real))
    if max_real >= 0:
        raise ValueError(f"drift matrix A is not stable: an eigenvalue has real part {max_real:.4g} >= 0, "
                         "so the SDE has no stationary distribution")


def _discrete_stationary_cov(A: np.ndarray, Q: np.ndarray, dt: float, step_name: str) -> np.ndarray:
    """Solve C = F C F^T + Q with F = I + dt A, after checking the spectral radius of F is below 1."""
    F = np.eye(A.shape[0]) + dt * A
    rho = float(np.max(np.abs(np.linalg.eigvals(F))))
    if rho >= 1:
        dt_max = _stable_euler_dt(A)
        hint = (f"{step_name} < {dt_max:.4g} would be stable" if dt_max > 0
                else "the drift itself is unstable, so no step is stable")
        raise ValueError(f"{step_name}={dt:g} is unstable: spectral radius of I + {step_name}*A is {rho:.4g} >= 1; "
                         f"{hint}")
    return _symmetric(scipy.linalg.solve_discrete_lyapunov(F, Q))


# ================================================================= linear-Gaussian theory ====

def gaussian_posterior(W, b, x, sigma_x: float, prior_std: float = 1.0):
    """Exact posterior of z ~ N(0, s_p^2 I), x | z ~ N(W z + b, sigma_x^2 I).

    P = W^T W / sigma_x^2 + I / s_p^2,  cov = P^-1,  mean = P^-1 W^T (x - b) / sigma_x^2.

    W (n, d), b (n,), x (B, n) or (n,). Returns ``(mean, cov, precision)`` with mean of shape
    (B, d) (or (d,) for a single x), cov and precision (d, d); numpy float64.
    """
    W = _array("W", W, 2)
    n, d = W.shape
    b = _array("b", b, 1)
    x = _array("x", x, (1, 2))
    if b.shape != (n,):
        raise ValueError(f"b must have shape (n={n},), got {b.shape}")
    if x.shape[-1] != n:
        raise ValueError(f"x must have shape (B, n={n}) or (n,), got {x.shape}")
    var_x = _positive("sigma_x", sigma_x) ** 2
    var_p = _positive("prior_std", prior_std) ** 2
    precision = _symmetric(W.T @ W / var_x + np.eye(d) / var_p)
    cov = _symmetric(scipy.linalg.cho_solve(scipy.linalg.cho_factor(precision), np.eye(d)))
    mean = ((x - b) @ W / var_x) @ cov
    return mean, cov, precision


def _preconditioner(G, d: int) -> np.ndarray:
    """Diagonal of G: None -> ones; (d,) vector or a diagonal (d, d) matrix; entries > 0."""
    if G is None:
        return np.ones(d)
    G = _array("G", G, (1, 2))
    if G.ndim == 2:
        if G.shape != (d, d) or np.any(G != np.diag(np.diag(G))):
            raise ValueError(f"G must be diagonal: pass its diagonal of shape (d={d},)")
        G = np.diag(G)
    if G.shape != (d,) or np.any(G <= 0) or not np.all(np.isfinite(G)):
        raise ValueError(f"G must be a positive vector of shape (d={d},), got shape {G.shape}")
    return G


def ula_stationary(P, mean, step_size: float, G=None):
    """Stationary law of (preconditioned) ULA on N(mean, P^-1), by the discrete Lyapunov equation.

    z' = z + gamma G (-P (z - mu)) + sqrt(2 gamma G) n,  n ~ N(0, I),  G diagonal (None = I).

    This is Euler-Maruyama with dt = gamma for dz = -G P (z - mu) dt + sqrt(2 G) dW, so the chain
    is Gaussian with stationary mean mu and covariance C solving

        C = F C F^T + 2 gamma G,   F = I - gamma G P.

    Stable iff gamma < 2 / lambda_max(G P) (the eigenvalues of G P are real and positive); otherwise
    a ValueError names the largest stable step. Returns ``(mean, cov)`` (mean as given, float64).
    """
    P = _square("P", P)
    d = P.shape[0]
    mean = _array("mean", mean, (1, 2))
    if mean.shape[-1] != d:
        raise ValueError(f"mean must have shape (..., d={d}), got {mean.shape}")
    gamma = _positive("step_size", step_size)
    g = _preconditioner(G, d)
    A = -g[:, None] * P
    cov = _discrete_stationary_cov(A, 2 * gamma * np.diag(g), gamma, "step_size")
    return mean, cov


def ula_stationary_eigen(P, mean, step_size: float):
    """Stationary law of plain ULA (G = I) on N(mean, P^-1) in closed form.

    With P = U diag(lambda) U^T, F = I - gamma P shares U and the Lyapunov equation decouples:
    c = (1 - gamma lambda)^2 c + 2 gamma, i.e.

        cov = U diag( 1 / (lambda (1 - gamma lambda / 2)) ) U^T,

    which exceeds the target P^-1 by the factor 1 / (1 - gamma lambda / 2) along each eigenvector.
    Requires gamma lambda_max < 2. Returns ``(mean, cov)``.
    """
    P = _square("P", P)
    d = P.shape[0]
    mean = _array("mean", mean, (1, 2))
    if mean.shape[-1] != d:
        raise ValueError(f"mean must have shape (..., d={d}), got {mean.shape}")
    gamma = _positive("step_size", step_size)
    lam, U = np.linalg.eigh(_symmetric(P))
    if lam[0] <= 0:
        raise ValueError(f"P must be positive definite, smallest eigenvalue {lam[0]:.4g}")
    if gamma * lam[-1] >= 2:
        raise ValueError(f"step_size={gamma:g} is unstable: step_size * lambda_max(P) = {gamma * lam[-1]:.4g} >= 2; "
                         f"step_size < {2 / lam[-1]:.4g} would be stable")
    cov = (U / (lam * (1 - gamma * lam / 2))) @ U.T
    return mean, _symmetric(cov)


def linear_sde_stationary(A, B, c=None):
    """Stationary law of the affine linear SDE dX = (A X + c) dt + B dW (Ito).

    mean = -A^-1 c,  and the covariance C solves the continuous Lyapunov equation

        A C + C A^T + B B^T = 0

    (scipy.linalg.solve_continuous_lyapunov). A (N, N) must be stable (every eigenvalue with negative
    real part), B (N, m), c None or (..., N). Returns ``(mean, cov)``.
    """
    A = _square("A", A)
    B = _noise_matrix(A, B)
    _check_continuous_stable(A)
    cov = _symmetric(scipy.linalg.solve_continuous_lyapunov(A, -B @ B.T))
    return _affine_mean(A, c), cov


def euler_maruyama_stationary(A, B, dt: float, c=None):
    """Stationary law of the Euler-Maruyama chain X' = X + dt (A X + c) + sqrt(dt) B n, n ~ N(0, I).

    mean = -A^-1 c (the same fixed point as the SDE), and the covariance solves the discrete
    Lyapunov equation

        C = F C F^T + dt B B^T,   F = I + dt A,

    which differs from the continuous solution by O(dt). Requires the spectral radius of F below 1;
    otherwise a ValueError names the largest stable dt (min over eigenvalues mu of A of
    2 |Re mu| / |mu|^2). Returns ``(mean, cov)``.
    """
    A = _square("A", A)
    B = _noise_matrix(A, B)
    dt = _positive("dt", dt)
    cov = _discrete_stationary_cov(A, dt * B @ B.T, dt, "dt")
    return _affine_mean(A, c), cov


def linear_circuit_matrices(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                            temperature: float = 1.0, form: str = "error"):
    """The LPC circuit with a linear decoder as an affine linear SDE dX = (A X + c) dt + B dW.

    State X = [z (d), eps (n)] (z first). Equations (DESIGN.md section 3, Ito form)::

        tau_e d eps = [ (x - W z - b) / sigma_x^2 - eps ] dt          (form "error")
        tau_e d eps = [ (x - W z - b) - sigma_x^2 eps ] dt           (form "bogacz")
        tau_z d z   = [ W^T eps - z / s_p^2 ] dt + sqrt(2 T tau_z) dW

    so, with a = 1 / (s_p^2 tau_z),

        A = [[ -a I,                 W^T / tau_z ],        c = [ 0                          ]
             [ -W / (k tau_e),       -(l / tau_e) I ]],        [ (x - b) / (k tau_e)        ]
        B = [[ sqrt(2 T / tau_z) I_d ], [ 0 ]]              (shape (d + n, d))

    with (k, l) = (sigma_x^2, 1) for "error" and (1, sigma_x^2) for "bogacz". Both forms settle at
    the precision-weighted error eps* = (x - W z - b) / sigma_x^2; "bogacz" relaxes with time
    constant tau_e / sigma_x^2 instead of tau_e.

    ``tau_e = 0`` (adiabatic error units) returns the reduced z-only SDE

        A = -P / tau_z,   c = W^T (x - b) / (sigma_x^2 tau_z),   B = sqrt(2 T / tau_z) I_d,

    whose stationary law is N(mu, T P^-1): the exact posterior at T = 1 (whatever ``form``).

    For any tau_e the stationary mean of z is the posterior mean mu (the drift's fixed point does
    not depend on tau_e), but for tau_e > 0 the stationary covariance of z is *not* P^-1 (see
    ``docs/analysis.md``). x: (n,) or (B_x, n); c then has shape (..., N). Returns ``(A, c, B)``.
    """
    W = _array("W", W, 2)
    n, d = W.shape
    b = _array("b", b, 1)
    x = _array("x", x, (1, 2))
    if b.shape != (n,):
        raise ValueError(f"b must have shape (n={n},), got {b.shape}")
    if x.shape[-1] != n:
        raise ValueError(f"x must have shape (n={n},) or (B, n={n}), got {x.shape}")
    if form not in ("error", "bogacz"):
        raise ValueError(f"form must be 'error' or 'bogacz', got {form!r}")
    var_x = _positive("sigma_x", sigma_x) ** 2
    var_p = _positive("prior_std", prior_std) ** 2
    tau_z = _positive("tau_z", tau_z)
    tau_e = _positive("tau_e", tau_e, allow_zero=True)
    T = _positive("temperature", temperature, allow_zero=True)
    noise = np.sqrt(2 * T / tau_z)
    if tau_e == 0:
        P = W.T @ W / var_x + np.eye(d) / var_p
        return -P / tau_z, (x - b) @ W / (var_x * tau_z), noise * np.eye(d)
    k, leak = (var_x, 1.0) if form == "error" else (1.0, var_x)
    A = np.block([[-np.eye(d) / (var_p * tau_z), W.T / tau_z],
                  [-W / (k * tau_e), -(leak / tau_e) * np.eye(n)]])
    c = np.concatenate([np.zeros(x.shape[:-1] + (d,)), (x - b) / (k * tau_e)], axis=-1)
    B = np.concatenate([noise * np.eye(d), np.zeros((n, d))], axis=0)
    return A, c, B


def linear_circuit_z_stationary(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                                temperature: float = 1.0, form: str = "error", dt: float | None = None):
    """Stationary (mean, cov) of the circuit's value units z: the z-block of the joint solution.

    ``dt=None`` gives the continuous-time SDE (:func:`linear_sde_stationary`); a number gives its
    Euler-Maruyama chain with that step (:func:`euler_maruyama_stationary`). mean (..., d), cov (d, d).
    """
    A, c, B = linear_circuit_matrices(W, b, x, sigma_x, prior_std, tau_z, tau_e, temperature, form)
    mean, cov = linear_sde_stationary(A, B, c) if dt is None else euler_maruyama_stationary(A, B, dt, c)
    d = _array("W", W, 2).shape[1]
    return mean[..., :d], cov[:d, :d]


# ============================================================================ diagnostics ====

def _tensor(name: str, x, min_ndim: int, min_len: int = 2) -> tuple[torch.Tensor, bool]:
    """float64 torch view of x (numpy or torch) and whether to hand back numpy."""
    was_numpy = not isinstance(x, torch.Tensor)
    tensor = torch.as_tensor(np.asarray(x)) if was_numpy else x.detach()
    if tensor.ndim < min_ndim:
        raise ValueError(f"{name} needs at least {min_ndim} dimensions (time first), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] < min_len:
        raise ValueError(f"{name} needs at least {min_len} records along axis 0, got {tensor.shape[0]}")
    return tensor.to(torch.float64), was_numpy


def _out(tensor: torch.Tensor, as_numpy: bool):
    return tensor.cpu().numpy() if as_numpy else tensor


def autocorrelation(x, max_lag: int | None = None):
    """Normalised autocorrelation rho(k), k = 0..max_lag, of each series along axis 0, by FFT.

    x (R, ...) -> (max_lag + 1, ...). Uses the standard biased estimator
    rho(k) = sum_{r < R-k} (x_r - xbar)(x_{r+k} - xbar) / sum_r (x_r - xbar)^2, computed in
    O(R log R) with zero padding to at least 2R (no circular wrap-around). rho(0) = 1; a constant
    series gives NaN. max_lag defaults to R - 1.
    """
    xt, as_numpy = _tensor("x", x, 1)
    R = xt.shape[0]
    max_lag = R - 1 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < R:
        raise ValueError(f"max_lag must be in [0, R-1={R - 1}], got {max_lag}")
    centred = xt - xt.mean(0, keepdim=True)
    n_fft = 1 << (2 * R - 1).bit_length()
    spectrum = torch.fft.rfft(centred, n=n_fft, dim=0)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=n_fft, dim=0)[: max_lag + 1]
    return _out(acov / acov[:1], as_numpy)


def _sokal_tau(xt: torch.Tensor, c: float, chain_axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sokal's windowed tau and its window M (both (...), M in records) of a float64 tensor (R, ...)."""
    c = _positive("c", c)
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
    xt, as_numpy = _tensor("x", x, 1, min_len=3)
    tau, _ = _sokal_tau(xt, c, chain_axis)
    if bool((min_length * tau > xt.shape[0]).any()):
        warnings.warn(f"integrated_autocorr_time: series of length {xt.shape[0]} is shorter than {min_length:g} x tau "
                      f"(largest tau {float(tau.max()):.4g}); the estimate is unreliable", RuntimeWarning, stacklevel=2)
    return _out(tau, as_numpy)


def effective_sample_size(x, c: float = 5.0, chain_axis: int | None = None):
    """ESS = R / tau per series (tau from :func:`integrated_autocorr_time`).

    With ``chain_axis`` the ESS is the total over those chains, n_chains R / tau, using the
    chain-averaged tau.
    """
    xt, as_numpy = _tensor("x", x, 1, min_len=3)
    tau = integrated_autocorr_time(xt, c=c, chain_axis=chain_axis)
    n = xt.shape[0] * (1 if chain_axis is None else xt.shape[chain_axis])
    return _out(n / tau, as_numpy)


def ess_per_unit_time(x, dt_record: float, c: float = 5.0, chain_axis: int | None = None):
    """Effective samples per unit of (simulated) time: ESS / (R dt_record) = 1 / (tau dt_record) per chain.

    ``dt_record`` is the time between consecutive records (simulation dt times the decimation).
    """
    dt_record = _positive("dt_record", dt_record)
    xt, as_numpy = _tensor("x", x, 1, min_len=3)
    return _out(effective_sample_size(xt, c=c, chain_axis=chain_axis) / (xt.shape[0] * dt_record), as_numpy)


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
    dt_record = _positive("dt_record", dt_record)
    min_records_per_tau = _positive("min_records_per_tau", min_records_per_tau)
    xt, as_numpy = _tensor("x", x, 1, min_len=3)
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
    out = {k: _out(v, as_numpy) for k, v in out.items()}
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
    xt, as_numpy = _tensor("x", x, 2, min_len=4)
    n = xt.shape[0] // 2
    xt = xt[xt.shape[0] - 2 * n:]
    halves = torch.cat([xt[:n], xt[n:]], dim=1)
    within = halves.var(dim=0, unbiased=True).mean(dim=0)
    between_over_n = halves.mean(dim=0).var(dim=0, unbiased=True)
    var_plus = (n - 1) / n * within + between_over_n
    return _out(torch.sqrt(var_plus / within), as_numpy)


def time_to_typical_set(log_joint_trace, t, n_std: float = 2.0, stationary_fraction: float = 0.5):
    """First time each chain's log joint enters its stationary band (a burn-in estimate).

    log_joint_trace (R, B), t (R,). The band of chain b is m_b +- n_std s_b, with m_b and s_b the
    mean and standard deviation of its last ``stationary_fraction`` of records (the second half by
    default). Returns t[r_b] for the first record r_b inside the band, shape (B,) (NaN if never).
    """
    lj, as_numpy = _tensor("log_joint_trace", log_joint_trace, 2)
    tt, _ = _tensor("t", t, 1)
    if lj.ndim != 2:
        raise ValueError(f"log_joint_trace must have shape (R, B), got {tuple(lj.shape)}")
    if tt.shape != lj.shape[:1]:
        raise ValueError(f"t must have shape (R={lj.shape[0]},), got {tuple(tt.shape)}")
    if not 0 < stationary_fraction <= 1:
        raise ValueError(f"stationary_fraction must be in (0, 1], got {stationary_fraction}")
    n_std = _positive("n_std", n_std)
    tail = lj[lj.shape[0] - max(2, int(round(stationary_fraction * lj.shape[0]))):]
    centre, spread = tail.mean(0), tail.std(0)
    inside = (lj - centre).abs() <= n_std * spread
    first = torch.argmax(inside.to(torch.uint8), dim=0)
    times = tt.to(lj.device)[first]
    times = torch.where(inside.any(dim=0), times, torch.full_like(times, float("nan")))
    return _out(times, as_numpy)


def fano_factor(x, axis: int = 0):
    """Fano factor var / mean along ``axis`` (ddof=1): 1 for Poisson counts.

    Meaningful for non-negative quantities (rates, counts); axis 0 is time, axis 1 across trials/chains.
    """
    xt, as_numpy = _tensor("x", x, 1)
    if xt.shape[axis] < 2:
        raise ValueError(f"fano_factor needs at least 2 entries along axis {axis}, got shape {tuple(xt.shape)}")
    return _out(xt.var(dim=axis, unbiased=True) / xt.mean(dim=axis), as_numpy)


def across_chain_spread(z_trace):
    """Across-chain standard deviation at each time, averaged over units: z (R, B, d) -> (R,).

    spread(t) = (1/d) sum_i std_b z_{b,i}(t) (ddof=1): the across-trial variability whose drop after
    stimulus onset is variability quenching.
    """
    zt, as_numpy = _tensor("z_trace", z_trace, 3, min_len=1)
    if zt.ndim != 3 or zt.shape[1] < 2:
        raise ValueError(f"z_trace must have shape (R, B>=2, d), got {tuple(zt.shape)}")
    return _out(zt.std(dim=1, unbiased=True).mean(dim=-1), as_numpy)


class PCAProjection(NamedTuple):
    """Result of :func:`pca_projection` (arrays of the input's type)."""

    coords: object            # (R, B, 2): (z(t) - z(T)) . u_k, the final state at the origin
    directions: object        # (B, 2, d): orthonormal principal directions u_1, u_2 per chain
    explained_variance: object  # (B, 2): fraction of the displacement variance on u_1, u_2
    final_state: object       # (B, d): z(T), the origin of the projection


def pca_projection(z_trace, center: bool = True) -> PCAProjection:
    """Two-dimensional projection of each chain's trajectory (paper Appendix A.2, after Li et al. 2017).

    For chain b, PCA of the displacements D = [z(1) - z(T), ..., z(T-1) - z(T)] from the final state
    (records 0..R-2 here); every state is then projected as coords(t) = (z(t) - z(T)) . u_k, so the
    final state sits at the origin. ``center=True`` removes the mean displacement before the PCA
    (as sklearn's PCA in Li et al.'s code); ``center=False`` takes the directions of largest second
    moment about z(T). Signs are fixed so the start z(0) has non-negative coordinates. Batched SVD,
    no loop over chains. z_trace (R >= 3, B, d >= 2).
    """
    zt, as_numpy = _tensor("z_trace", z_trace, 3, min_len=3)
    if zt.ndim != 3 or zt.shape[2] < 2:
        raise ValueError(f"z_trace must have shape (R>=3, B, d>=2), got {tuple(zt.shape)}")
    final = zt[-1]
    displacements = (zt[:-1] - final).transpose(0, 1)              # (B, R-1, d)
    data = displacements - displacements.mean(1, keepdim=True) if center else displacements
    _, singular, vh = torch.linalg.svd(data, full_matrices=False)  # vh (B, k, d)
    directions = vh[:, :2]
    coords = torch.einsum("rbd,bkd->rbk", zt - final, directions)
    sign = torch.where(coords[0] < 0, -1.0, 1.0).to(coords.dtype)  # (B, 2)
    coords, directions = coords * sign, directions * sign[..., None]
    power = singular ** 2
    explained = power[:, :2] / power.sum(1, keepdim=True).clamp_min(torch.finfo(power.dtype).tiny)
    return PCAProjection(*(_out(v, as_numpy) for v in (coords, directions, explained, final)))


def pca_landscape_grid(projection: PCAProjection, resolution: int = 25, extent: float | None = None):
    """Latent points on a grid in each chain's PCA plane, to evaluate the log joint for contour plots.

    points[i, j, b] = z_b(T) + a_i u_{b,1} + c_j u_{b,2} with a, c on ``linspace(-extent, extent,
    resolution)``; extent defaults to 1.1 x the largest |coordinate| of the projected trajectories.
    Returns ``(grid (resolution,), points (resolution, resolution, B, d))``.
    """
    as_numpy = not isinstance(projection.coords, torch.Tensor)
    coords, directions, _, final = (torch.as_tensor(v).to(torch.float64) for v in projection)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    extent = 1.1 * float(coords.abs().max()) if extent is None else _positive("extent", extent)
    grid = torch.linspace(-extent, extent, resolution, dtype=torch.float64, device=coords.device)
    points = (final[None, None] + grid[:, None, None, None] * directions[None, None, :, 0]
              + grid[None, :, None, None] * directions[None, None, :, 1])
    return _out(grid, as_numpy), _out(points, as_numpy)


# the diagnostics package (OU theory, flux, quenching, noise correlations, spontaneous vs evoked), re-exported
from .diagnostics import *  # noqa: E402,F401,F403
