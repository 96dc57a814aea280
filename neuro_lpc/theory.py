"""Linear-Gaussian theory: exact posteriors and the stationary laws of linear SDEs and their discretisations.

numpy / scipy, float64; torch tensors are accepted and converted.  Model: z ~ N(0, s_p^2 I),
x | z ~ N(W z + b, sigma_x^2 I), W of shape (n, d).

* :func:`gaussian_posterior` - the exact posterior N(mu, P^-1).
* :func:`ula_stationary`, :func:`ula_stationary_eigen` - where (preconditioned) ULA on that
  posterior settles: the discretisation bias of discrete LPC (paper eq. 5).
* :func:`linear_sde_stationary`, :func:`euler_maruyama_stationary` - stationary law of any
  affine linear SDE dX = (A X + c) dt + B dW and of its Euler-Maruyama chain.
* :func:`euler_stable_dt` - the largest stable Euler(-Maruyama) step for a drift's eigenvalues.

The LPC *circuit* written as such an SDE lives one layer up, in :mod:`circuits.theory`; the public
facade of both is ``circuits.analysis``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from .validation import check_positive

__all__ = [
    "gaussian_posterior", "ula_stationary", "ula_stationary_eigen",
    "linear_sde_stationary", "euler_maruyama_stationary", "euler_stable_dt",
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


def euler_stable_dt(eigenvalues) -> float:
    """Largest stable Euler(-Maruyama) step for drift eigenvalues mu: the dt below which |1 + dt mu| < 1 for all mu.

    |1 + dt mu|^2 < 1  <=>  2 dt Re(mu) + dt^2 |mu|^2 < 0  <=>  dt < -2 Re(mu) / |mu|^2,

    so the bound is min over mu of -2 Re(mu) / |mu|^2 (the spectral radius of I + dt A crosses 1
    there, A having eigenvalues mu).  ``inf`` when there are no eigenvalues; 0.0 when any has
    Re(mu) >= 0 (then no dt is stable).  numpy (any shape, real or complex) in, python float out.
    For a matrix A pass ``np.linalg.eigvals(A)``.
    """
    mu = np.asarray(eigenvalues, dtype=np.complex128).ravel()
    if mu.size == 0:
        return math.inf
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
        dt_max = euler_stable_dt(np.linalg.eigvals(A))
        hint = (f"{step_name} < {dt_max:.4g} would be stable" if dt_max > 0
                else "the drift itself is unstable, so no step is stable")
        raise ValueError(f"{step_name}={dt:g} is unstable: spectral radius of I + {step_name}*A is {rho:.4g} >= 1; "
                         f"{hint}")
    return _symmetric(scipy.linalg.solve_discrete_lyapunov(F, Q))


# ================================================================= linear-Gaussian theory ====

def linear_gaussian_inputs(W, b, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W (n, d), b (n,), x (n,) or (B, n)) as float64 arrays with their shapes checked (one-line errors)."""
    W = _array("W", W, 2)
    n = W.shape[0]
    b = _array("b", b, 1)
    x = _array("x", x, (1, 2))
    if b.shape != (n,):
        raise ValueError(f"b must have shape (n={n},), got {b.shape}")
    if x.shape[-1] != n:
        raise ValueError(f"x must have shape (B, n={n}) or (n,), got {x.shape}")
    return W, b, x


def gaussian_posterior(W, b, x, sigma_x: float, prior_std: float = 1.0):
    """Exact posterior of z ~ N(0, s_p^2 I), x | z ~ N(W z + b, sigma_x^2 I).

    P = W^T W / sigma_x^2 + I / s_p^2,  cov = P^-1,  mean = P^-1 W^T (x - b) / sigma_x^2.

    W (n, d), b (n,), x (B, n) or (n,). Returns ``(mean, cov, precision)`` with mean of shape
    (B, d) (or (d,) for a single x), cov and precision (d, d); numpy float64.
    """
    W, b, x = linear_gaussian_inputs(W, b, x)
    n, d = W.shape
    var_x = check_positive("sigma_x", sigma_x) ** 2
    var_p = check_positive("prior_std", prior_std) ** 2
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


def _ula_inputs(P, mean, step_size):
    """(P (d, d), mean (..., d), gamma > 0) checked, for the ULA stationary laws."""
    P = _square("P", P)
    mean = _array("mean", mean, (1, 2))
    if mean.shape[-1] != P.shape[0]:
        raise ValueError(f"mean must have shape (..., d={P.shape[0]}), got {mean.shape}")
    return P, mean, check_positive("step_size", step_size)


def ula_stationary(P, mean, step_size: float, G=None):
    """Stationary law of (preconditioned) ULA on N(mean, P^-1), by the discrete Lyapunov equation.

    z' = z + gamma G (-P (z - mu)) + sqrt(2 gamma G) n,  n ~ N(0, I),  G diagonal (None = I).

    This is Euler-Maruyama with dt = gamma for dz = -G P (z - mu) dt + sqrt(2 G) dW, so the chain
    is Gaussian with stationary mean mu and covariance C solving

        C = F C F^T + 2 gamma G,   F = I - gamma G P.

    Stable iff gamma < 2 / lambda_max(G P) (the eigenvalues of G P are real and positive); otherwise
    a ValueError names the largest stable step. Returns ``(mean, cov)`` (mean as given, float64).
    """
    P, mean, gamma = _ula_inputs(P, mean, step_size)
    g = _preconditioner(G, P.shape[0])
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
    P, mean, gamma = _ula_inputs(P, mean, step_size)
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
    dt = check_positive("dt", dt)
    cov = _discrete_stationary_cov(A, dt * B @ B.T, dt, "dt")
    return _affine_mean(A, c), cov
