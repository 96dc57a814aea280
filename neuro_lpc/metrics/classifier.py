"""Small conv classifier as a feature network: 128-d penultimate features; metric ``fd``.

Trained on the data set's training images (seconds on CPU) and cached per (data set, epochs, seed).
Its distance is labelled "FD (small-classifier features; not comparable to published FID)".
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..data import DatasetInfo, load_dataset, make_loader
from ._util import _atomic_write, _check_images, default_cache_dir

FD_CLASSIFIER_LABEL = "FD (small-classifier features; not comparable to published FID)"


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
