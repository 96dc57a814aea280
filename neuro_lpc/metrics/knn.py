"""k-NN manifold metrics: precision, recall, density, coverage, and bootstrap errors of the last two.

Kynkäänniemi et al. 2019; Naeem et al. 2020. With r_i the distance from real point X_i to its k-th
nearest other real point, r'_j the same among fakes Y, and B(c, r) the open ball::

    precision = (1/M) sum_j 1[exists i: Y_j in B(X_i, r_i)]
    recall    = (1/N) sum_i 1[exists j: X_i in B(Y_j, r'_j)]
    density   = (1/(k M)) sum_j sum_i 1[Y_j in B(X_i, r_i)]
    coverage  = (1/N) sum_i 1[min_j ||X_i - Y_j|| < r_i]

Standard errors (``bootstrap=B > 0``): the real set and its radii are held fixed and the M fakes are
resampled with replacement B times (multinomial weights w, ``numpy.random.default_rng(seed)``)::

    density_b  = (1/(k M)) sum_j w_j c_j            (c_j = number of real balls holding Y_j)
    coverage_b = (1/N) sum_i 1[exists j: w_j > 0 and Y_j in B(X_i, r_i)]

``density_se`` / ``coverage_se`` are the standard deviations (ddof=1) of these B values. The
(real ball, fake) incidences are kept as a sparse list of pairs, so the bootstrap costs no distances.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_feature_tensor(a, what: str, device) -> torch.Tensor:
    t = torch.as_tensor(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
    t = t.to(device=device, dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{what} must be (N, D), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    return t


def _chunk(n_rows: int, budget: int = 1 << 24) -> int:
    """Columns per chunk so an (n_rows, chunk) float64 distance block stays near 128 MB."""
    return max(1, budget // max(1, n_rows))


def kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (the (k+1)-th smallest, self included)."""
    n = features.shape[0]
    radii = torch.empty(n, dtype=features.dtype, device=features.device)
    step = _chunk(n)
    for s in range(0, n, step):
        d = torch.cdist(features[s : s + step], features)
        radii[s : s + step] = d.kthvalue(k + 1, dim=1).values
    return radii


def _bootstrap_density_coverage(pairs_real: torch.Tensor, pairs_fake: torch.Tensor, counts: torch.Tensor,
                                n: int, k: int, n_boot: int, seed: int) -> tuple[float, float]:
    """SEs of density and coverage under resampling the fakes (module docstring).

    Weights W (B, M) = ``default_rng(seed).multinomial(M, [1/M] * M, size=B)``; density_b =
    W_b . c / (k M); coverage_b counts the real balls with at least one pair whose fake has W > 0
    (pairs sorted by ball, ``logical_or.reduceat`` per ball, in blocks of replicates).
    """
    m = counts.shape[0]
    weights = np.random.default_rng(seed).multinomial(m, np.full(m, 1.0 / m), size=n_boot)  # (B, M)
    density = weights @ counts.cpu().numpy().astype(np.float64) / (k * m)
    coverage = np.zeros(n_boot)
    pr, pf = pairs_real.cpu().numpy(), pairs_fake.cpu().numpy()
    if pr.size:
        order = np.argsort(pr, kind="stable")
        pr, pf = pr[order], pf[order]
        starts = np.flatnonzero(np.r_[True, pr[1:] != pr[:-1]])  # first pair of each covered ball
        block = max(1, (1 << 24) // pr.size)
        for s in range(0, n_boot, block):
            present = weights[s : s + block][:, pf] > 0  # (block, pairs)
            coverage[s : s + block] = np.logical_or.reduceat(present, starts, axis=1).sum(axis=1) / n
    return float(np.std(density, ddof=1)), float(np.std(coverage, ddof=1))


def density_coverage(real_features, fake_features, k: int = 5, device="cpu", *, bootstrap: int = 0,
                     seed: int = 0) -> dict[str, float]:
    """Density, coverage, precision and recall of fake features against real ones (module docstring).

    Computed in float64 with ``torch.cdist`` in blocks of fakes, so memory stays bounded for
    N, M ~ 50,000. Returns ``dict(density, coverage, precision, recall)`` of Python floats, plus
    ``density_se`` and ``coverage_se`` when ``bootstrap`` (the number of resamples, >= 2) is given.
    """
    real = _as_feature_tensor(real_features, "real_features", device)
    fake = _as_feature_tensor(fake_features, "fake_features", device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"bootstrap must be 0 (off) or an integer >= 2, got {bootstrap!r}")
    n, m = real.shape[0], fake.shape[0]
    if k >= n or k >= m:
        raise ValueError(f"k = {k} needs more than k real and fake points, got {n} real and {m} fake")
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    balls_holding_fake = torch.zeros(m, dtype=torch.int64, device=real.device)
    covered = torch.zeros(n, dtype=torch.bool, device=real.device)
    recalled = torch.zeros(n, dtype=torch.bool, device=real.device)
    pairs = []
    step = _chunk(n)
    for s in range(0, m, step):
        d = torch.cdist(real, fake[s : s + step])  # (n, chunk)
        inside_real_ball = d < real_radii[:, None]
        balls_holding_fake[s : s + step] = inside_real_ball.sum(0)
        covered |= inside_real_ball.any(1)
        recalled |= (d < fake_radii[None, s : s + step]).any(1)
        if bootstrap:
            i, j = inside_real_ball.nonzero(as_tuple=True)
            pairs.append((i.to(torch.int64), (j + s).to(torch.int64)))
    result = dict(
        density=float(balls_holding_fake.sum().item() / (k * m)),
        coverage=float(covered.double().mean().item()),
        precision=float((balls_holding_fake > 0).double().mean().item()),
        recall=float(recalled.double().mean().item()),
    )
    if bootstrap:
        pr = torch.cat([p[0] for p in pairs]) if pairs else torch.zeros(0, dtype=torch.int64)
        pf = torch.cat([p[1] for p in pairs]) if pairs else torch.zeros(0, dtype=torch.int64)
        result["density_se"], result["coverage_se"] = _bootstrap_density_coverage(
            pr, pf, balls_holding_fake, n, int(k), int(bootstrap), seed)
    return result
