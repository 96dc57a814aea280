"""Linear-Gaussian theory: exact posteriors and the stationary laws of linear SDEs and their discretisations.

numpy / scipy, float64; torch tensors are accepted and converted.  Model: z ~ N(0, s_p^2 I),
x | z ~ N(W z + b, sigma_x^2 I), W of shape (n, d).

* :func:`gaussian_posterior` - the exact posterior N(mu, P^-1).
* :func:`ula_stationary`, :func:`ula_stationary_eigen` - where (preconditioned) ULA on that
  posterior settles: the discretisation bias of discrete LPC (paper eq. 5).
* :func:`linear_sde_stationary`, :func:`euler_maruyama_stationary` - stationary law of any
  affine linear SDE dX = (A X + c) dt + B dW and of its Euler-Maruyama chain.
* :func:`euler_stable_dt` - the largest stable Euler(-Maruyama) step for a drift's eigenvalues.

* :func:`dynamics_sde`, :func:`dynamics_stationary`, :func:`dynamics_decay_rate` - the three sampler families
  of issue 16 (overdamped, non-reversible, underdamped; neuro_lpc.dynamics) on a Gaussian posterior as linear
  SDEs: drift, stationary covariance (continuous Lyapunov) and slowest-mode decay rate.
* :func:`dynamics_recursion`, :func:`dynamics_discrete_stationary` - the same families' discrete chains
  (Euler for overdamped / non-reversible, BAOAB for underdamped) as the linear recursion x' = F x + Q^(1/2) n,
  and its exact stationary covariance (discrete Lyapunov).

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
    "dynamics_sde", "dynamics_stationary", "dynamics_decay_rate", "dynamics_recursion",
    "dynamics_discrete_stationary",
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


# ======================================================= sampler families (issue 16) ====

_FAMILIES = ("overdamped", "nonreversible", "underdamped")


def _family_inputs(family, P, G, J, friction, mass, temperature):
    """Checked (P (d, d), g (d,), J (d, d), gamma_f, m (d,), T) for the family functions (one-line errors)."""
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {_FAMILIES}, got {family!r}")
    P = _square("P", P)
    d = P.shape[0]
    g = _preconditioner(G, d)
    Jm = np.zeros((d, d)) if J is None else _square("J", J)
    if Jm.shape != (d, d) or np.abs(Jm + Jm.T).max(initial=0.0) > 1e-9 * max(1.0, np.abs(Jm).max(initial=0.0)):
        raise ValueError(f"J must be an antisymmetric ({d}, {d}) matrix, got shape {Jm.shape}")
    if J is not None and family != "nonreversible":
        raise ValueError(f"J applies only to family='nonreversible', got {family!r}")
    if family == "underdamped" and G is not None:
        raise ValueError("G (a preconditioner) is not supported with family='underdamped'")
    m = np.broadcast_to(_array("mass", mass, (0, 1)), (d,)).astype(np.float64)
    if np.any(m <= 0) or not np.all(np.isfinite(m)):
        raise ValueError("mass must be positive and finite")
    temp = check_positive("temperature", temperature, allow_zero=True)
    return P, g, Jm, check_positive("friction", friction), m, temp


def dynamics_sde(family: str, P, *, G=None, J=None, friction: float = 1.0, mass=1.0, temperature: float = 1.0):
    """(A, D) of the family's SDE dX = A X dt + D^(1/2) dW on the centred Gaussian posterior N(0, P^-1).

    overdamped / nonreversible, X = z:  A = -(G + J) P,  D = 2 T G          (J = 0 for overdamped)
    underdamped, X = (z, v):            A = [[0, M^-1], [-P, -gamma_f M^-1]],  D = [[0, 0], [0, 2 gamma_f T I]]
    G diagonal (None = I, a (d,) vector), J antisymmetric, M = diag(mass).  numpy float64.
    """
    P, g, Jm, fr, m, temp = _family_inputs(family, P, G, J, friction, mass, temperature)
    d = P.shape[0]
    if family != "underdamped":
        return -(np.diag(g) + Jm) @ P, 2 * temp * np.diag(g)
    A = np.block([[np.zeros((d, d)), np.diag(1 / m)], [-P, -fr * np.diag(1 / m)]])
    D = np.zeros((2 * d, 2 * d))
    D[d:, d:] = 2 * fr * temp * np.eye(d)
    return A, D


def dynamics_stationary(family: str, P, **kw) -> np.ndarray:
    """Stationary covariance of the family's SDE (:func:`dynamics_sde`): A C + C A^T + D = 0
    (scipy.linalg.solve_continuous_lyapunov).  Equals T P^-1 for every family (and blockdiag(T P^-1, T M) for
    underdamped) whatever G, J, gamma_f, M: the families share their stationary law."""
    A, D = dynamics_sde(family, P, **kw)
    _check_continuous_stable(A)
    return _symmetric(scipy.linalg.solve_continuous_lyapunov(A, -D))


def dynamics_decay_rate(family: str, P, **kw) -> float:
    """Slowest-mode decay rate min over eigenvalues mu of A of -Re(mu) (:func:`dynamics_sde`):
    overdamped lambda_min(G P); nonreversible min Re eig((G + J) P) (= tr(P)/d for LNP 2013's optimal J and
    G = I); underdamped min -Re eig([[0, M^-1], [-P, -gamma_f M^-1]]) (per mode lambda with M = m I:
    (gamma_f - sqrt(gamma_f^2 - 4 lambda m)) / (2 m), largest at critical damping gamma_f = 2 sqrt(lambda m))."""
    A, _ = dynamics_sde(family, P, **kw)
    return float(np.min(-np.linalg.eigvals(A).real))


def dynamics_recursion(family: str, P, step_size: float, *, G=None, J=None, friction: float = 1.0, mass=1.0,
                       temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(F, Q) of the family's discrete chain on N(0, P^-1) as x' = F x + Q^(1/2) n (neuro_lpc.langevin).

    overdamped / nonreversible (Euler, step h):  F = I - h (G + J) P,  Q = 2 h T G.
    underdamped (BAOAB, Leimkuhler & Matthews 2013), X = (z, v), c = exp(-gamma_f h / M):
        F = K_B K_A K_O K_A K_B,  K_B = [[I, 0], [-h/2 P, I]],  K_A = [[I, h/2 M^-1], [0, I]],  K_O = diag(I, c),
        Q = (K_B K_A) diag(0, T (1 - c^2) M) (K_B K_A)^T   (the O step's noise, carried through A and B).
    """
    P, g, Jm, fr, m, temp = _family_inputs(family, P, G, J, friction, mass, temperature)
    h = check_positive("step_size", step_size)
    d = P.shape[0]
    if family != "underdamped":
        return np.eye(d) - h * (np.diag(g) + Jm) @ P, 2 * h * temp * np.diag(g)
    I, Z = np.eye(d), np.zeros((d, d))
    c = np.exp(-fr * h / m)
    KB = np.block([[I, Z], [-0.5 * h * P, I]])
    KA = np.block([[I, 0.5 * h * np.diag(1 / m)], [Z, I]])
    KO = np.block([[I, Z], [Z, np.diag(c)]])
    BA = KB @ KA
    noise = np.zeros((2 * d, 2 * d))
    noise[d:, d:] = np.diag(temp * (1 - c * c) * m)
    return BA @ KO @ KA @ KB, _symmetric(BA @ noise @ BA.T)


def dynamics_discrete_stationary(family: str, P, step_size: float, **kw) -> np.ndarray:
    """Exact stationary covariance of the family's discrete chain (:func:`dynamics_recursion`): C = F C F^T + Q
    (scipy.linalg.solve_discrete_lyapunov); (d, d), or (2d, 2d) over (z, v) for underdamped.  A ValueError when
    the spectral radius of F is >= 1 (unstable step).  -> :func:`dynamics_stationary` as step_size -> 0."""
    F, Q = dynamics_recursion(family, P, step_size, **kw)
    rho = float(np.max(np.abs(np.linalg.eigvals(F))))
    if rho >= 1:
        raise ValueError(f"step_size={step_size:g} is unstable for family={family!r}: spectral radius of F is "
                         f"{rho:.4g} >= 1")
    return _symmetric(scipy.linalg.solve_discrete_lyapunov(F, Q))
