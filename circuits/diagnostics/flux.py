"""Detailed-balance violation: probability flux and time-reversal asymmetry.

Theory (linear SDE dX = A X dt + B dW, A stable, D = B B^T / 2, stationary Sigma).  Since the symmetric
part of A Sigma is -D (Lyapunov equation), the drift splits as

    A X = (-D + Q) Sigma^{-1} X,        Q = (A Sigma - Sigma A^T) / 2   (antisymmetric),

where -D Sigma^{-1} X is the reversible (gradient) part and v(X) = Q Sigma^{-1} X the irreversible drift:
the stationary probability current is J(x) = v(x) p(x).  The process obeys detailed balance iff Q = 0,
equivalently iff every lagged covariance C(t) = e^{A t} Sigma is symmetric.  Measures of the violation:

* the circulation Q itself, read off trajectories as Q_hat = (C(Delta) - C(Delta)^T) / (2 Delta)
  (-> Q as Delta -> 0; exactly (e^{A Delta} Sigma - Sigma e^{A^T Delta}) / (2 Delta) for a series recorded
  every Delta).  Q_ij is minus the mean rate at which the (i, j) projection encloses area;
* the rotation rate  omega = || Sigma^{-1/2} Q Sigma^{-1/2} ||_F / sqrt(2)  (1/time; inverses taken on the
  support of Sigma, which is singular when noiseless units are slaved to others): for the 2-D OU
  dX = (-gamma I + w J) X dt + sqrt(2 gamma) dW (J the 90-degree rotation) it is |w|;
* the entropy production rate  e_p = E[v^T D^{-1} v] = tr(Q^T D^{-1} Q Sigma^{-1})  (nats per unit time;
  2 w^2 / gamma for that OU); infinite when v leaves the range of D (noiseless coordinates, e.g. error units);
* the time-reversal KL of the recorded chain, KL( p(x_r, x_{r+1}) || p(x_{r+1}, x_r) ) per record: for a
  Gaussian pair with Cov = [[Sigma, C^T], [C, Sigma]], C = C(Delta), the reversed pair swaps C and C^T, the
  log-determinants cancel and KL = (tr(S_rev^{-1} S_fwd) - 2N) / 2.  For an exactly Markov chain this is its
  entropy production per record (finite even where e_p is not); for a projection it is a lower bound.

Estimators take trajectories x (R, B, N): time first, B independent chains (each one stimulus); by default
each chain is centred on its own time mean (``center="chain"``), and standard errors come from the spread
of the per-chain estimates.  numpy float64 out; torch accepted.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

from .. import _checks as ck
from .ou import ou_exact_ar1, ou_stationary_cov

__all__ = ["LinearFlux", "linear_flux_theory", "sampled_circulation", "pair_reversal_kl",
           "ReversalAsymmetry", "lagged_covariance", "time_reversal_asymmetry", "FluxField", "probability_flux_field"]

CENTERS = ("chain", "pooled", "none")


class LinearFlux(NamedTuple):
    sigma: np.ndarray            # (N, N) stationary covariance
    diffusion: np.ndarray        # (N, N) D = B B^T / 2
    circulation: np.ndarray      # (N, N) Q = (A Sigma - Sigma A^T) / 2
    rotation_rate: float         # || Sigma^{-1/2} Q Sigma^{-1/2} ||_F / sqrt(2)
    entropy_production: float    # tr(Q^T D^+ Q Sigma^{-1}); inf when Q Sigma^{-1} leaves range(D)


def _inverse_root(sigma: np.ndarray) -> np.ndarray:
    """Sigma^{-1/2} on the support of Sigma (eigenvalues below 1e-12 of the largest are dropped)."""
    lam, U = np.linalg.eigh(ck.symmetric(sigma))
    if lam[-1] <= 0:
        raise ValueError("the covariance is zero: no fluctuations to measure")
    keep = lam > 1e-12 * lam[-1]
    return (U[:, keep] / np.sqrt(lam[keep])) @ U[:, keep].T


def _whitened_norm(Q: np.ndarray, sigma: np.ndarray) -> float:
    W = _inverse_root(sigma)
    return float(np.linalg.norm(W @ Q @ W) / np.sqrt(2))


def linear_flux_theory(A, B) -> LinearFlux:
    """Circulation, rotation rate and entropy production of dX = A X dt + B dW in closed form (module docstring)."""
    sigma = ou_stationary_cov(A, B)
    A, B = ck.array("A", A, 2), ck.array("B", B, 2)
    D = B @ B.T / 2
    Q = (A @ sigma - sigma @ A.T) / 2
    root = _inverse_root(sigma)
    v = Q @ root @ root                                         # Q Sigma^{-1} (on its support): irreversible drift
    D_pinv = np.linalg.pinv(D, rcond=1e-12, hermitian=True)
    scale = max(np.linalg.norm(v), 1e-300)
    outside = np.linalg.norm(v - D @ D_pinv @ v) > 1e-9 * scale
    ep = float("inf") if outside else float(np.trace(v.T @ D_pinv @ v @ sigma))
    return LinearFlux(sigma, D, Q, _whitened_norm(Q, sigma), max(ep, 0.0))


def sampled_circulation(A, B, dt_record: float) -> np.ndarray:
    """What :func:`time_reversal_asymmetry` estimates for the OU recorded every dt: (F Sigma - Sigma F^T)/(2 dt)."""
    F, _ = ou_exact_ar1(A, B, dt_record)
    sigma = ou_stationary_cov(A, B)
    return (F @ sigma - sigma @ F.T) / (2 * ck.positive("dt_record", dt_record))


def pair_reversal_kl(sigma, lagged) -> float:
    """KL( N(0, [[S, C^T], [C, S]]) || N(0, [[S, C], [C^T, S]]) ) for S = Sigma, C = C(lag) (nats per pair)."""
    S = ck.square("sigma", sigma)
    C = ck.square("lagged", lagged)
    if C.shape != S.shape:
        raise ValueError(f"lagged must have the shape of sigma {S.shape}, got {C.shape}")
    fwd = np.block([[S, C.T], [C, S]])
    rev = np.block([[S, C], [C.T, S]])
    try:
        factor = scipy.linalg.cho_factor(ck.symmetric(rev))
    except np.linalg.LinAlgError:
        raise ValueError("the pair covariance is not positive definite (lag too short for a deterministic "
                         "coordinate, or too few samples)") from None
    return float(max(0.0, 0.5 * (np.trace(scipy.linalg.cho_solve(factor, fwd)) - 2 * S.shape[0])))


def _trajectories(x, min_len: int = 3) -> np.ndarray:
    x = ck.array("x", x, (2, 3), min_len=min_len)
    return x[:, :, None] if x.ndim == 2 else x


def _centred(x: np.ndarray, center: str) -> np.ndarray:
    if center not in CENTERS:
        raise ValueError(f"center must be one of {', '.join(CENTERS)}, got {center!r}")
    if center == "chain":
        return x - x.mean(0, keepdims=True)
    if center == "pooled":
        return x - x.mean((0, 1), keepdims=True)
    return x


def lagged_covariance(x, lag: int = 1, center: str = "chain", per_chain: bool = False) -> np.ndarray:
    """C(lag) = mean_r x_{r+lag} x_r^T of trajectories x (R, B, N) (or (R, B) for one unit).

    Pooled over chains -> (N, N); ``per_chain=True`` -> (B, N, N).  ``center``: "chain" (each chain's own
    time mean: each chain one stimulus), "pooled" (one mean for all chains), "none" (known zero mean).
    """
    x = _trajectories(x)
    lag = ck.integer("lag", lag, 0)
    if lag >= x.shape[0] - 1:
        raise ValueError(f"lag must be below R - 1 = {x.shape[0] - 1}, got {lag}")
    xc = _centred(x, center)
    per = np.einsum("rbi,rbj->bij", xc[lag:], xc[: x.shape[0] - lag]) / (x.shape[0] - lag)
    return per if per_chain else per.mean(0)


class ReversalAsymmetry(NamedTuple):
    circulation: np.ndarray      # (N, N) Q_hat = (C(lag) - C(lag)^T) / (2 lag dt)
    circulation_se: np.ndarray   # (N, N) standard error from the spread across chains (NaN for B = 1)
    sigma: np.ndarray            # (N, N) pooled covariance C(0)
    rotation_rate: float         # || Sigma^{-1/2} Q_hat Sigma^{-1/2} ||_F / sqrt(2), 1/time
    max_abs_z: float             # max_{i<j} |Q_hat_ij| / se_ij: > ~4 is a significant violation
    pair_kl_per_record: float    # Gaussian-moment time-reversal KL of (x_r, x_{r+lag}) pairs (biased up by noise)
    pair_kl_rate: float          # the same per unit time


def time_reversal_asymmetry(x, dt_record: float = 1.0, lag: int = 1, center: str = "chain") -> ReversalAsymmetry:
    """Detailed-balance violation measured on trajectories x (R, B, N) (module docstring).

    For the OU recorded every dt the circulation estimates :func:`sampled_circulation` (-> Q of
    :func:`linear_flux_theory` as dt -> 0) and the pair KL estimates :func:`pair_reversal_kl` of the exact
    sampled law.  Needs N >= 2 (one coordinate is always reversible).
    """
    x = _trajectories(x)
    if x.shape[2] < 2:
        raise ValueError(f"x needs at least 2 units (axis 2) to show circulation, got shape {x.shape}")
    dt = ck.positive("dt_record", dt_record)
    per = lagged_covariance(x, lag, center, per_chain=True)           # (B, N, N)
    q_per = (per - np.swapaxes(per, 1, 2)) / (2 * lag * dt)
    Q = q_per.mean(0)
    B = x.shape[1]
    se = q_per.std(0, ddof=1) / np.sqrt(B) if B > 1 else np.full_like(Q, np.nan)
    sigma = ck.symmetric(lagged_covariance(x, 0, center))
    iu = np.triu_indices(Q.shape[0], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(Q[iu]) / se[iu]
    max_z = float(np.nanmax(z)) if B > 1 and np.any(np.isfinite(z)) else float("nan")
    C = per.mean(0)
    try:
        kl = pair_reversal_kl(sigma, C)
    except ValueError:
        kl = float("nan")
    return ReversalAsymmetry(Q, se, sigma, _whitened_norm(Q, sigma), max_z, kl, kl / (lag * dt))


class FluxField(NamedTuple):
    edges: np.ndarray        # (bins + 1,) bin edges, the same on both axes
    density: np.ndarray      # (bins, bins) p per unit area (axis 0: first coordinate)
    position: np.ndarray     # (bins, bins, 2) mean position of the visits to each bin (NaN where none)
    velocity: np.ndarray     # (bins, bins, 2) mean (x_{r+1} - x_{r-1}) / (2 dt) at the visits (NaN where none)
    velocity_se: np.ndarray  # (bins, bins, 2) its standard error (visits treated as independent)
    flux: np.ndarray         # (bins, bins, 2) J = density * velocity (0 where no visit)
    counts: np.ndarray       # (bins, bins) visits


def probability_flux_field(coords, dt_record: float = 1.0, bins: int = 8, extent: float | None = None) -> FluxField:
    """Coarse-grained probability current of 2-D trajectories (Battle et al. 2016, Science 352: 604).

    coords (R, B, 2): time first, B chains.  At each interior record the midpoint velocity
    (x_{r+1} - x_{r-1}) / (2 dt) is binned by x_r; J(bin) = p(bin) mean velocity.  For the OU its
    conditional mean is exactly (F Sigma - Sigma F^T) Sigma^{-1} x / (2 dt) (= Q Sigma^{-1} x as dt -> 0),
    so the field vanishes in expectation iff detailed balance holds.  ``extent``: half-width of the square
    grid (default the 99th percentile of |coords|).
    """
    c = ck.array("coords", coords, 3, min_len=3)
    if c.shape[2] != 2:
        raise ValueError(f"coords must have shape (R, B, 2), got {c.shape}")
    dt = ck.positive("dt_record", dt_record)
    bins = ck.integer("bins", bins, 1)
    ext = float(np.percentile(np.abs(c), 99)) if extent is None else ck.positive("extent", extent)
    ext = max(ext, 1e-12)
    edges = np.linspace(-ext, ext, bins + 1)
    pos = c[1:-1].reshape(-1, 2)
    vel = ((c[2:] - c[:-2]) / (2 * dt)).reshape(-1, 2)
    idx = np.clip(np.floor((pos + ext) / (2 * ext) * bins).astype(int), 0, bins - 1)
    inside = np.all(np.abs(pos) <= ext, axis=1)
    flat = idx[inside, 0] * bins + idx[inside, 1]
    counts = np.bincount(flat, minlength=bins * bins).astype(float)
    def per_bin(values):
        return np.stack([np.bincount(flat, weights=values[inside, k], minlength=bins * bins) for k in range(2)], -1)
    s_pos, s_vel, s_vel2 = per_bin(pos), per_bin(vel), per_bin(vel ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = counts[:, None]
        mean_pos, mean_vel = s_pos / n, s_vel / n
        var = (s_vel2 / n - mean_vel ** 2) * n / np.maximum(n - 1, 1)
        se = np.sqrt(np.maximum(var, 0) / n)
    area = (2 * ext / bins) ** 2
    density = counts / (len(pos) * area)
    flux = np.where(counts[:, None] > 0, density[:, None] * mean_vel, 0.0)
    shape = (bins, bins)
    return FluxField(edges, density.reshape(shape), mean_pos.reshape(shape + (2,)), mean_vel.reshape(shape + (2,)),
                     se.reshape(shape + (2,)), flux.reshape(shape + (2,)), counts.reshape(shape))
