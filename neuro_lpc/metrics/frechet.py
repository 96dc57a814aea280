"""Fréchet distance between Gaussians fitted to two feature sets, and its bootstrap standard error.

Fréchet distance (Heusel et al. 2017)::

    FD = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})

(tr (S1 S2)^{1/2} = tr (S1^{1/2} S2 S1^{1/2})^{1/2}). With Inception-v3 pool features it is the FID.

:func:`frechet_distance` takes the two Gaussians' statistics and uses ``scipy.linalg.sqrtm``, as
pytorch-fid does. :func:`frechet_distance_features` takes the features and uses exact identities
instead: with centred rows Xc (n, D), Yc (m, D) and S1 = Xc^T Xc / (n - 1), S2 = Yc^T Yc / (m - 1),
the non-zero eigenvalues of S1 S2 are those of the symmetric PSD matrices (C = Xc Yc^T)::

    Xc S2 Xc^T / (n - 1) = C C^T / ((n - 1)(m - 1))      (n x n)
    Yc S1 Yc^T / (m - 1) = C^T C / ((n - 1)(m - 1))      (m x m)
    S2^{1/2} S1 S2^{1/2}                                 (D x D)

so tr (S1 S2)^{1/2} = sum_i sqrt(lambda_i) of whichever is smallest (``torch.linalg.eigvalsh``, float64,
on one thread: see :func:`._util.torch_threads`). This
is the same number (docs/metrics.md: < 1e-6 relative on Inception features) at a fraction of the
cost: a general ``sqrtm`` of a 2048 x 2048 product takes ~2 minutes on 2 shared cores, the 500 x 500
eigenproblem well under a second. :func:`evaluate_samples` uses it.

Standard error (:func:`frechet_distance_se`): the real set is held fixed and the fake set is
resampled with replacement B times (default 10); the SE is the standard deviation (ddof=1) of the B
bootstrap distances, each computed as above.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from ._util import _as_features, _as_float64, torch_threads


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D) with N >= 2."""
    f = _as_features(features, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}), as pytorch-fid computes it.

    (S1 S2)^{1/2} comes from ``scipy.linalg.sqrtm``; if the product is singular enough that the
    root is not finite, eps * I is added to both covariances; an imaginary part from round-off is
    dropped when the diagonal's is below 1e-3 (a larger one raises ValueError).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: singular covariance product; adding {eps} to the diagonals")
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(np.diagonal(covmean).imag))
        if largest > 1e-3:
            raise ValueError(f"Fréchet distance: (S1 S2)^(1/2) has an imaginary part {largest:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (negative round-off eigenvalues clipped to 0)."""
    with torch_threads(1):
        w, v = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy((s + s.T) / 2)))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _sum_sqrt_eig(gram: np.ndarray) -> float:
    """sum_i sqrt(lambda_i) of a symmetric PSD matrix (round-off negatives clipped to 0); one thread."""
    with torch_threads(1):
        eig = torch.linalg.eigvalsh(torch.from_numpy((gram + gram.T) / 2)).numpy()
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def trace_sqrt_product(xc: np.ndarray, yc: np.ndarray, sigma_y_sqrt: np.ndarray | None = None) -> float:
    """tr (S_x S_y)^{1/2} for centred rows xc (n, D) and yc (m, D), S = c^T c / (rows - 1).

    If min(n, m) <= D, with C = xc yc^T (n, m): the eigenvalues of C C^T (n x n) or C^T C (m x m),
    whichever is smaller, over (n - 1)(m - 1) — these are xc S_y xc^T / (n-1) and yc S_x yc^T / (m-1).
    Else the D x D matrix S_y^{1/2} S_x S_y^{1/2} (``sigma_y_sqrt`` reused when given).
    """
    n, d = xc.shape
    m = yc.shape[0]
    if min(n, m) <= d:
        cross = xc @ yc.T
        gram = cross @ cross.T if n <= m else cross.T @ cross
        return _sum_sqrt_eig(gram / ((n - 1) * (m - 1)))
    root = _psd_sqrt(yc.T @ yc / (m - 1)) if sigma_y_sqrt is None else sigma_y_sqrt
    return _sum_sqrt_eig(root @ (xc.T @ xc / (n - 1)) @ root)


def _centred(features, what: str) -> tuple[np.ndarray, np.ndarray]:
    f = _as_features(features, what)
    mu = f.mean(axis=0)
    return f - mu, mu


def frechet_distance_features(fake_features, real_features) -> float:
    """The Fréchet distance of the Gaussians fitted to two feature sets, from the features themselves.

    Equal to ``frechet_distance(*feature_statistics(fake), *feature_statistics(real))`` up to round-off
    (measured < 1e-6 relative on Inception features, docs/metrics.md), but it solves a symmetric
    eigenproblem of size min(n_fake, n_real, D) instead of ``sqrtm`` of a D x D product: for 500 and
    500 Inception features (D = 2048) well under a second instead of ~2 minutes on 2 cores.
    """
    xc, mu_x = _centred(fake_features, "fake_features")
    yc, mu_y = _centred(real_features, "real_features")
    if xc.shape[1] != yc.shape[1]:
        raise ValueError(f"feature dims differ: real {yc.shape[1]}, fake {xc.shape[1]}")
    return _fd_centred(xc, mu_x, yc, mu_y)


def _fd_centred(xc, mu_x, yc, mu_y, sigma_y_sqrt=None) -> float:
    """||mu_x - mu_y||^2 + tr S_x + tr S_y - 2 tr (S_x S_y)^{1/2} from centred rows."""
    diff = mu_x - mu_y
    trace_x = np.einsum("ij,ij->", xc, xc) / (xc.shape[0] - 1)
    trace_y = np.einsum("ij,ij->", yc, yc) / (yc.shape[0] - 1)
    return float(diff @ diff + trace_x + trace_y - 2.0 * trace_sqrt_product(xc, yc, sigma_y_sqrt))


def frechet_distance_se(fake_features, real_features, n_boot: int = 10, seed: int = 0) -> float:
    """Bootstrap standard error of the FD over the fake set (the real set fixed).

    Draws ``n_boot`` resamples of the n fake rows with replacement (``numpy.random.default_rng(seed)``:
    ``integers(0, n, n)`` per resample), computes :func:`frechet_distance_features` of each against
    the real features and returns their standard deviation (ddof=1). With B resamples the SE is itself
    uncertain by about 1/sqrt(2 (B - 1)) (24% for B = 10).
    """
    x = _as_features(fake_features, "fake_features")
    yc, mu_y = _centred(real_features, "real_features")
    if x.shape[1] != yc.shape[1]:
        raise ValueError(f"feature dims differ: real {yc.shape[1]}, fake {x.shape[1]}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    n, d = x.shape
    m = yc.shape[0]
    root = _psd_sqrt(yc.T @ yc / (m - 1)) if min(n, m) > d else None  # the D x D route: one root for all resamples
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        xb = x[rng.integers(0, n, n)]
        mu_b = xb.mean(axis=0)
        values.append(_fd_centred(xb - mu_b, mu_b, yc, mu_y, root))
    return float(np.std(values, ddof=1))
