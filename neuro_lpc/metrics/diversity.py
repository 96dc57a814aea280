"""Diversity of a sample set and the collapse rule.

Quantities (images in [-1, 1], features (N, D)):

``pixel_std``            mean over pixels and channels of the per-pixel standard deviation across
                         the N samples (ddof=1): 0 for N copies of one image.
``flatness``             mean over samples of the within-image pixel standard deviation: 0 for
                         blank (single-colour) images.
``mean_pairwise_distance``  mean Euclidean distance over pairs i < j of feature rows (on a fixed
                         random subset of at most 1000 rows).
``feature_spread``       mean_pairwise_distance(fake) / mean_pairwise_distance(real).
``duplicate_fraction``   fraction of samples whose nearest other sample (features) is closer than
                         ``ratio`` (0.05) times the median nearest-neighbour distance of an equal-size
                         random subset of the real set.

:func:`detect_collapse` applies these rules in order; the first that fires is the reason:

1. *identical*  — pixel_std < 1e-3 (all samples one image; 8-bit resolution is 2/255 = 0.0078);
2. *blank*      — flatness < 0.02 (samples are single-colour images);
3. *near-duplicate (pixels)* — pixel_std < 0.1 x pixel_std of the real images (when known);
4. *near-duplicate (features)* — duplicate_fraction > 0.5 (e.g. a few images repeated);
5. *single mode* — feature_spread < 0.15 (the samples occupy a region under a seventh as wide as
   the real set's).

Thresholds come from measured values on animal-mnist, 200 images per set against 200 real test
images (docs/metrics.md has the table). Real images: pixel-std ratio 0.99-1.02, duplicate fraction
<= 0.06, spread 0.97-1.01 (Inception and classifier features). Not collapsed, and kept clear of the
thresholds: a briefly trained LPC model (ratio 0.77, spread 0.72), a VAE after 2 epochs (ratio
0.25), heavily blurred images (0.74, 0.77-0.84), one class only (0.88, 0.62-0.80), uniform noise
(0.96, spread 0.49 Inception / 0.18 classifier). Collapsed: one image plus N(0, 0.05^2) pixel noise
(ratio 0.05), plus N(0, 0.01^2) (0.011), one image repeated and a constant image (0). One image
plus N(0, 0.2^2) noise (ratio 0.20, Inception spread 0.57) is *not* flagged: its FID/KID are those
of a failed model, but the rule keeps a margin from poorly trained, blurry models.
"""
from __future__ import annotations

import numpy as np
import torch

from ._util import _as_features, _check_images

IDENTICAL_PIXEL_STD = 1e-3
BLANK_FLATNESS = 0.02
DUPLICATE_PIXEL_STD_RATIO = 0.1
DUPLICATE_NN_RATIO = 0.05
DUPLICATE_FRACTION = 0.5
SINGLE_MODE_SPREAD = 0.15
PAIRWISE_MAX_N = 1000


def pixel_std(images: torch.Tensor) -> float:
    """Mean over pixels of the per-pixel std (ddof=1) across the N >= 2 images (N, C, H, W)."""
    images = _check_images(images, (1, 3, 4))
    if images.shape[0] < 2:
        raise ValueError(f"pixel_std needs at least 2 images, got {images.shape[0]}")
    return float(images.double().std(dim=0).mean())


def flatness(images: torch.Tensor) -> float:
    """Mean over images of the within-image pixel std (all channels together); 0 for blank images."""
    images = _check_images(images, (1, 3, 4))
    return float(images.double().flatten(1).std(dim=1, unbiased=False).mean())


def _subset(features: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    if features.shape[0] <= max_n:
        return features
    return features[np.random.default_rng(seed).choice(features.shape[0], max_n, replace=False)]


def _distances(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a)
    return torch.cdist(t, t)


def mean_pairwise_distance(features, max_n: int = PAIRWISE_MAX_N, seed: int = 0) -> float:
    """Mean Euclidean distance over pairs i < j of the rows (on a seeded subset of at most ``max_n`` rows)."""
    f = _subset(_as_features(features, "features"), max_n, seed)
    d = _distances(f)
    n = f.shape[0]
    return float(d.sum() / (n * (n - 1)))


def feature_spread(fake_features, real_features, max_n: int = PAIRWISE_MAX_N, seed: int = 0) -> float:
    """mean_pairwise_distance(fake) / mean_pairwise_distance(real); inf if the real set has no spread."""
    fake = mean_pairwise_distance(fake_features, max_n, seed)
    real = mean_pairwise_distance(real_features, max_n, seed)
    return fake / real if real > 0 else float("inf")


def _nn_distances(f: np.ndarray) -> torch.Tensor:
    d = _distances(f)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values


def duplicate_fraction(fake_features, real_features, ratio: float = DUPLICATE_NN_RATIO, max_n: int = PAIRWISE_MAX_N,
                       seed: int = 0) -> float:
    """Fraction of fakes whose nearest other fake is within ``ratio`` x the real set's median NN distance.

    Nearest-neighbour distances shrink with the number of points, so the real reference uses the
    same number of points as the fakes: both are seeded subsets of min(M, N, ``max_n``) rows.
    """
    fake = _as_features(fake_features, "fake_features")
    real = _as_features(real_features, "real_features")
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]}, fake {fake.shape[1]}")
    n = min(fake.shape[0], real.shape[0], max_n)
    fake, real = _subset(fake, n, seed), _subset(real, n, seed)
    reference = float(_nn_distances(real).median())
    return float((_nn_distances(fake) <= ratio * reference).double().mean())


def detect_collapse(images: torch.Tensor, features=None, real_features=None, *, pixel_std_real: float | None = None,
                    seed: int = 0) -> tuple[bool, str | None]:
    """``(collapsed, reason)`` for a sample set by the rules of the module docstring.

    ``images`` (N >= 2, C, H, W) in [-1, 1]; ``features`` and ``real_features`` (same network) enable
    the feature rules 4-5; ``pixel_std_real`` (the real images' :func:`pixel_std`) enables rule 3.
    ``reason`` is None when the set is not collapsed.
    """
    spread = pixel_std(images)
    if spread < IDENTICAL_PIXEL_STD:
        return True, f"identical samples: per-pixel std across samples {spread:.2g} < {IDENTICAL_PIXEL_STD:g}"
    flat = flatness(images)
    if flat < BLANK_FLATNESS:
        return True, f"blank samples: mean within-image pixel std {flat:.2g} < {BLANK_FLATNESS:g}"
    if pixel_std_real is not None and pixel_std_real > 0 and spread < DUPLICATE_PIXEL_STD_RATIO * pixel_std_real:
        return True, (f"near-duplicate samples: per-pixel std {spread:.3g} is {spread / pixel_std_real:.1%} of the real "
                      f"images' {pixel_std_real:.3g} (< {DUPLICATE_PIXEL_STD_RATIO:.0%})")
    if (features is None) != (real_features is None):
        raise ValueError("give both features and real_features, or neither")
    if features is not None:
        dup = duplicate_fraction(features, real_features, seed=seed)
        if dup > DUPLICATE_FRACTION:
            return True, (f"near-duplicate samples: {dup:.0%} have a neighbour closer than {DUPLICATE_NN_RATIO:g}x the real "
                          f"set's median nearest-neighbour distance (> {DUPLICATE_FRACTION:.0%})")
        ratio = feature_spread(features, real_features, seed=seed)
        if ratio < SINGLE_MODE_SPREAD:
            return True, (f"single mode: mean pairwise feature distance is {ratio:.2f}x the real set's "
                          f"(< {SINGLE_MODE_SPREAD:g})")
    return False, None
