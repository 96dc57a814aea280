"""Simulators of linear processes with known answers, for the diagnostics tests (numpy, exact transitions)."""
from __future__ import annotations

import numpy as np


def simulate_ar1(F, Q, R: int, chains: int, seed: int, x0=None, burn: int = 0) -> np.ndarray:
    """x_{r+1} = F x_r + n, n ~ N(0, Q): (R, chains, N); x0 (chains, N) or None (a stationary start)."""
    import scipy.linalg

    rng = np.random.default_rng(seed)
    N = F.shape[0]
    L = np.linalg.cholesky(Q + 1e-300 * np.eye(N)) if np.all(np.linalg.eigvalsh(Q) > 0) else _psd_root(Q)
    if x0 is None:
        sigma = scipy.linalg.solve_discrete_lyapunov(F, Q)
        x0 = rng.standard_normal((chains, N)) @ _psd_root(sigma).T
    out = np.empty((R, chains, N))
    x = np.array(x0, dtype=float)
    for _ in range(burn):
        x = x @ F.T + rng.standard_normal((chains, N)) @ L.T
    for r in range(R):
        out[r] = x
        x = x @ F.T + rng.standard_normal((chains, N)) @ L.T
    return out


def _psd_root(S):
    lam, U = np.linalg.eigh(0.5 * (S + S.T))
    return U * np.sqrt(np.clip(lam, 0, None))


def rotational_ou(gamma: float, omega: float):
    """dX = (-gamma I + omega J) X dt + sqrt(2 gamma) dW: Sigma = I, Q = omega J, e_p = 2 omega^2 / gamma."""
    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    return -gamma * np.eye(2) + omega * J, np.sqrt(2 * gamma) * np.eye(2)


def reversible_ou(seed: int = 0, N: int = 2):
    """dX = -D P X dt + sqrt(2 D) dW with D, P symmetric positive definite and D = diag: detailed balance."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(N, N))
    P = M @ M.T + 0.5 * np.eye(N)
    D = np.diag(rng.uniform(0.5, 2.0, N))
    return -D @ P, np.sqrt(2 * D)
