"""Exact theory of linear (Ornstein-Uhlenbeck) processes and of their sampled / Euler-Maruyama chains.

Conventions.  The SDE is dX = A X dt + B dW (Ito; A stable, B of shape (N, m)), with stationary
covariance Sigma solving the Lyapunov equation  A Sigma + Sigma A^T + B B^T = 0.  Its stationary
lagged covariance is

    C(t) = E[ X(s + t) X(s)^T ] = e^{A t} Sigma        (t >= 0),     C(-t) = C(t)^T,

so for a read-out y = v . X (a unit, v = e_i, or any projection) the autocorrelation is
rho_v(t) = v e^{A t} Sigma v^T / (v Sigma v^T), and since  int_0^inf e^{A t} dt = -A^{-1},

    tau_int(v) = int_{-inf}^{inf} rho_v(t) dt = 2 v (-A^{-1}) Sigma v^T / (v Sigma v^T)     (units of time).

A series recorded every Delta is the AR(1) chain X' = F X + n, n ~ N(0, Q), with F = e^{A Delta} and
Q = Sigma - F Sigma F^T (:func:`ou_exact_ar1`); an Euler-Maruyama chain with step dt recorded every m
steps is the AR(1) chain of :func:`euler_maruyama_ar1`.  For any stable AR(1) chain, C(k) = F^k Sigma and
the integrated autocorrelation time in records -- the quantity ``circuits.analysis.integrated_autocorr_time``
estimates -- is

    tau(v) = 1 + 2 sum_{k>=1} rho_v(k) = 1 + 2 v F (I - F)^{-1} Sigma v^T / (v Sigma v^T).

:func:`ou_transient` gives the law at time t of the OU started from N(m0, S0) (onset transients).
All functions: numpy float64 out; torch tensors accepted.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import _checks as ck

__all__ = ["ou_stationary_cov", "ou_lagged_cov", "ou_autocorrelation", "ou_integrated_autocorr_time",
           "ou_exact_ar1", "euler_maruyama_ar1", "ar1_stationary_cov", "ar1_lagged_cov",
           "ar1_integrated_autocorr_time", "ou_transient"]


def _drift_noise(A, B) -> tuple[np.ndarray, np.ndarray]:
    A = ck.square("A", A)
    B = ck.array("B", B, 2)
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have shape (N={A.shape[0]}, m), got {B.shape}")
    ck.stable("drift matrix A", A)
    return A, B


def ou_stationary_cov(A, B) -> np.ndarray:
    """Sigma solving A Sigma + Sigma A^T + B B^T = 0 (A stable)."""
    A, B = _drift_noise(A, B)
    return ck.symmetric(scipy.linalg.solve_continuous_lyapunov(A, -B @ B.T))


def _lags(lags) -> np.ndarray:
    return ck.array("lags", lags, 1)


def ou_lagged_cov(A, B, lags) -> np.ndarray:
    """C(t) = E[X(s+t) X(s)^T] = e^{A t} Sigma for each t in ``lags`` (negative t: C(|t|)^T). -> (L, N, N)."""
    A, B = _drift_noise(A, B)
    t = _lags(lags)
    sigma = ou_stationary_cov(A, B)
    C = scipy.linalg.expm(np.abs(t)[:, None, None] * A) @ sigma
    return np.where((t < 0)[:, None, None], np.swapaxes(C, 1, 2), C)


def ou_autocorrelation(A, B, lags, projection=None) -> np.ndarray:
    """rho_v(t) = v C(t) v^T / (v Sigma v^T) for each row v of ``projection`` (None: every coordinate). -> (L, k)."""
    A, B = _drift_noise(A, B)
    V = ck.projection(projection, A.shape[0])
    C = ou_lagged_cov(A, B, lags)
    num = np.einsum("kn,lnm,km->lk", V, C, V)
    sigma = ou_stationary_cov(A, B)
    return num / np.einsum("kn,nm,km->k", V, sigma, V)


def ou_integrated_autocorr_time(A, B, projection=None, dt_record: float | None = None) -> np.ndarray:
    """Integrated autocorrelation time of v . X for each row v of ``projection`` (None: each coordinate). -> (k,).

    ``dt_record=None``: the continuous-time tau_int = 2 v (-A^{-1}) Sigma v^T / (v Sigma v^T), in units of time.
    A number: the series recorded every ``dt_record`` (exactly, F = e^{A dt_record}), in records -- what
    ``integrated_autocorr_time`` estimates; it tends to tau_int / dt_record as dt_record -> 0.
    """
    A, B = _drift_noise(A, B)
    V = ck.projection(projection, A.shape[0])
    if dt_record is not None:
        F, Q = ou_exact_ar1(A, B, dt_record)
        return ar1_integrated_autocorr_time(F, Q, V)
    sigma = ou_stationary_cov(A, B)
    integral = -np.linalg.solve(A, sigma)
    return 2 * np.einsum("kn,nm,km->k", V, integral, V) / np.einsum("kn,nm,km->k", V, sigma, V)


def ou_exact_ar1(A, B, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """The OU sampled every dt as an AR(1) chain: F = e^{A dt}, Q = Sigma - F Sigma F^T (exact for any start)."""
    A, B = _drift_noise(A, B)
    dt = ck.positive("dt", dt)
    F = scipy.linalg.expm(dt * A)
    sigma = ou_stationary_cov(A, B)
    return F, ck.symmetric(sigma - F @ sigma @ F.T)


def euler_maruyama_ar1(A, B, dt: float, record_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The Euler-Maruyama chain X' = (I + dt A) X + sqrt(dt) B n recorded every m steps, as an AR(1) chain.

    F = (I + dt A)^m,  Q = sum_{j<m} F_1^j (dt B B^T) F_1^{jT}.  (A need not be stable here.)
    """
    A = ck.square("A", A)
    B = ck.array("B", B, 2)
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have shape (N={A.shape[0]}, m), got {B.shape}")
    dt = ck.positive("dt", dt)
    m = ck.integer("record_every", record_every, 1)
    F1 = np.eye(A.shape[0]) + dt * A
    Q1 = dt * B @ B.T
    F, Q = np.eye(A.shape[0]), np.zeros_like(Q1)
    for _ in range(m):
        Q = F1 @ Q @ F1.T + Q1
        F = F1 @ F
    return F, ck.symmetric(Q)


def _ar1(F, Q) -> tuple[np.ndarray, np.ndarray]:
    F = ck.square("F", F)
    Q = ck.square("Q", Q)
    if Q.shape != F.shape:
        raise ValueError(f"Q must have the shape of F {F.shape}, got {Q.shape}")
    rho = float(np.max(np.abs(np.linalg.eigvals(F))))
    if rho >= 1:
        raise ValueError(f"F is not stable: spectral radius {rho:.4g} >= 1 (no stationary law)")
    return F, Q


def ar1_stationary_cov(F, Q) -> np.ndarray:
    """Sigma = F Sigma F^T + Q (spectral radius of F below 1)."""
    F, Q = _ar1(F, Q)
    return ck.symmetric(scipy.linalg.solve_discrete_lyapunov(F, Q))


def ar1_lagged_cov(F, Q, max_lag: int) -> np.ndarray:
    """C(k) = E[X_{r+k} X_r^T] = F^k Sigma for k = 0..max_lag. -> (max_lag + 1, N, N)."""
    F, Q = _ar1(F, Q)
    K = ck.integer("max_lag", max_lag, 0)
    out = [ar1_stationary_cov(F, Q)]
    for _ in range(K):
        out.append(F @ out[-1])
    return np.stack(out)


def ar1_integrated_autocorr_time(F, Q, projection=None) -> np.ndarray:
    """tau(v) = 1 + 2 v F (I - F)^{-1} Sigma v^T / (v Sigma v^T), in records, per row v of ``projection``. -> (k,)."""
    F, Q = _ar1(F, Q)
    V = ck.projection(projection, F.shape[0])
    sigma = ar1_stationary_cov(F, Q)
    tail = F @ np.linalg.solve(np.eye(F.shape[0]) - F, sigma)
    return 1 + 2 * np.einsum("kn,nm,km->k", V, tail, V) / np.einsum("kn,nm,km->k", V, sigma, V)


def ou_transient(A, B, times, m0, S0=None, c=None) -> tuple[np.ndarray, np.ndarray]:
    """Law of dX = (A X + c) dt + B dW at each time t >= 0 after starting from N(m0, S0).

        mean(t) = mu + e^{A t} (m0 - mu),          mu = -A^{-1} c,
        cov(t)  = Sigma + e^{A t} (S0 - Sigma) e^{A^T t}.

    times (L,) >= 0; m0 (N,); S0 (N, N) (None: a point start); c (N,) or None. -> means (L, N), covs (L, N, N).
    """
    A, B = _drift_noise(A, B)
    N = A.shape[0]
    t = _lags(times)
    if np.any(t < 0):
        raise ValueError("times must be >= 0")
    m0 = ck.array("m0", m0, 1)
    if m0.shape != (N,):
        raise ValueError(f"m0 must have shape (N={N},), got {m0.shape}")
    S0 = np.zeros((N, N)) if S0 is None else ck.square("S0", S0)
    if S0.shape != (N, N):
        raise ValueError(f"S0 must have shape ({N}, {N}), got {S0.shape}")
    mu = np.zeros(N)
    if c is not None:
        c = ck.array("c", c, 1)
        if c.shape != (N,):
            raise ValueError(f"c must have shape (N={N},), got {c.shape}")
        mu = -np.linalg.solve(A, c)
    sigma = ou_stationary_cov(A, B)
    E = scipy.linalg.expm(t[:, None, None] * A)
    means = mu + np.einsum("lnm,m->ln", E, m0 - mu)
    covs = sigma + E @ (S0 - sigma) @ np.swapaxes(E, 1, 2)
    return means, ck.symmetric(covs)
