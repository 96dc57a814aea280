"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel.

For fake features X (m, d) and real features Y (n, d), kernel k(a, b) = (a.b / d + 1)^3 and a subset
of s points from each set::

    MMD^2_u = 1/(s(s-1)) sum_{i != i'} k(x_i, x_i') + 1/(s(s-1)) sum_{j != j'} k(y_j, y_j')
              - 2/s^2 sum_{i, j} k(x_i, y_j)

KID is the mean of MMD^2_u over B subsets (default B = 100, s = min(1000, m, n)), each drawn without
replacement from each set (``numpy.random.default_rng(seed)``: for every subset, ``choice(m, s)``
for the fakes, then ``choice(n, s)`` for the reals) — the convention of the paper's code and of
torch-fidelity. When s = m = n every subset is the whole set, so one evaluation is made (B = 1).
It works on any feature set; it is unbiased, so it can be slightly negative for equal distributions.

Standard error. KID_B is an average of U-statistics, so (Hoeffding decomposition, first order)::

    Var(KID_B) ~ 4 Var f(x) / m + 4 Var g(y) / n + Var_b(MMD^2_u of subset b) / B
    f(x) = E_x' k(x, x') - E_y k(x, y),   g(y) = E_y' k(y, y') - E_x k(x, y)

The first two terms are the sampling variance of the full-sample U-statistic, with Var f and Var g
estimated in every subset from the kernel matrices' row means (ddof=1) and averaged over subsets;
the last is the Monte-Carlo variance of averaging B random subsets (0 when the subsets are the whole
sets). ``kid_se`` is the square root. When the two distributions are equal the first-order terms
vanish and the variance is O(1/s^2); the plug-in estimate then keeps the noise of the row means,
of the same order, so the SE is conservative (too large, not too small) near KID = 0.

All arithmetic is float64. The kernel matrix of all m + n points is computed once when it fits in
``gram_bytes`` (default 256 MiB, i.e. m + n <= 5792), else each subset's blocks are computed anew.
"""
from __future__ import annotations

import numpy as np
import torch

from ._util import _as_features


def polynomial_kernel(x, y, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    """k(x_i, y_j) = (x_i . y_j / d + coef0)^degree for (N, d) and (M, d) float tensors -> (N, M)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> float:
    """Unbiased MMD^2 from the kernel blocks K_xx (m, m), K_yy (n, n), K_xy (m, n); m, n >= 2."""
    m, n = kxx.shape[0], kyy.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.sum() / (m * n))


def _projection_variances(kxx, kyy, kxy) -> tuple[float, float]:
    """Plug-in Var f(x) and Var g(y) (ddof=1) from row means of the kernel blocks (module docstring)."""
    m, n = kxx.shape[0], kyy.shape[0]
    f = (kxx.sum(1) - kxx.diagonal()) / (m - 1) - kxy.mean(1)
    g = (kyy.sum(1) - kyy.diagonal()) / (n - 1) - kxy.mean(0)
    return float(f.var()), float(g.var())


def kernel_inception_distance(real_features, fake_features, subset_size: int = 1000, n_subsets: int = 100,
                              seed: int = 0, gram_bytes: int = 1 << 28) -> dict:
    """KID of fake features against real ones, with its standard error (module docstring).

    Returns ``dict(kid, kid_se, kid_subset_size, kid_subsets)``: the mean of the unbiased MMD^2 over
    ``kid_subsets`` subsets of ``kid_subset_size`` = min(``subset_size``, m, n) points per set.
    """
    y = torch.from_numpy(_as_features(real_features, "real_features"))
    x = torch.from_numpy(_as_features(fake_features, "fake_features"))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: real {y.shape[1]}, fake {x.shape[1]}")
    for name, v in (("subset_size", subset_size), ("n_subsets", n_subsets)):
        if not isinstance(v, (int, np.integer)) or v < (2 if name == "subset_size" else 1):
            raise ValueError(f"{name} must be an integer >= {2 if name == 'subset_size' else 1}, got {v!r}")
    m, n = x.shape[0], y.shape[0]
    s = int(min(subset_size, m, n))
    b = 1 if s == m == n else int(n_subsets)
    rng = np.random.default_rng(seed)
    full = None
    if (m + n) ** 2 * 8 <= gram_bytes:
        z = torch.cat([x, y])
        full = polynomial_kernel(z, z)
    values, var_f, var_g = [], [], []
    for _ in range(b):
        ix = torch.from_numpy(rng.choice(m, s, replace=False)) if b > 1 else torch.arange(m)
        iy = torch.from_numpy(rng.choice(n, s, replace=False)) if b > 1 else torch.arange(n)
        if full is not None:
            jy = iy + m
            kxx, kyy, kxy = full[ix][:, ix], full[jy][:, jy], full[ix][:, jy]
        else:
            xs, ys = x[ix], y[iy]
            kxx, kyy, kxy = polynomial_kernel(xs, xs), polynomial_kernel(ys, ys), polynomial_kernel(xs, ys)
        values.append(mmd2_unbiased(kxx, kyy, kxy))
        vf, vg = _projection_variances(kxx, kyy, kxy)
        var_f.append(vf)
        var_g.append(vg)
    sampling = 4.0 * np.mean(var_f) / m + 4.0 * np.mean(var_g) / n
    monte_carlo = np.var(values, ddof=1) / b if b > 1 else 0.0
    return dict(kid=float(np.mean(values)), kid_se=float(np.sqrt(sampling + monte_carlo)), kid_subset_size=s, kid_subsets=b)
