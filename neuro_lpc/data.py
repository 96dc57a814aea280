"""Image data sets for LPC, all mapped to float32 tensors (C, H, W) in [-1, 1].

Pixel values v in {0, ..., 255} become x = 2 v / 255 - 1, so x = -1 is black and x = +1 white; the
discretised-Gaussian likelihood (256 bins on [-1, 1]) assumes exactly this map.

Data sets (the string registry ``DATASETS``):

``animal-mnist`` (the default, no download)
    10,000 real 28x28 grey images of 10 animal classes (1,000 each) shipped inside the wheel of the
    pip package ``animal-mnist==0.4`` as two gzip-compressed pickles of numpy arrays
    (``animal_mnist/data/Animal_MNIST/animal_data_version_3.gz``: uint8 (10000, 28, 28);
    ``animal_label_version_3.gz``: int64 (10000,), sorted by class). They are read with
    :class:`NumpyOnlyUnpickler`, which refuses any pickled global other than numpy's array
    reconstruction, so a tampered file cannot run code. The package ships no split; ours is fixed
    by content (see :func:`animal_mnist_split`): per class, 100 test images, 900 training images,
    1,000 / 9,000 in all, each split in a fixed pseudo-random (hash) order; no test image has a
    pixel-identical copy in the training set (the file holds 284 exact duplicate pairs, each
    within one class).

``mnist``, ``fashion-mnist``, ``cifar10``, ``svhn``, ``celeba64`` (a local folder, ``root``)
    torchvision data sets read from the user's folder (``--data-root``); ``download=False`` unless
    the caller passes ``download=True``. A missing folder raises FileNotFoundError naming the layout
    torchvision expects. ``celeba64`` is CelebA (aligned) centre-cropped to 148x148 and resized to
    64x64 (bilinear, antialiased); its official 'train' / 'test' partitions are used ('valid' is
    left out) and it has no class labels: every item's label is 0 and ``num_classes`` is 0.

Public API::

    train, test, info = load_dataset("animal-mnist")
    loader = make_loader(train, batch_size=64, shuffle=True, seed=0)
    X, y = dataset_tensor(test, n=1000)
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

DATASETS = ("animal-mnist", "mnist", "fashion-mnist", "cifar10", "svhn", "celeba64")

ANIMAL_MNIST_PACKAGE = "animal_mnist"
ANIMAL_MNIST_IMAGES = ("data", "Animal_MNIST", "animal_data_version_3.gz")
ANIMAL_MNIST_LABELS = ("data", "Animal_MNIST", "animal_label_version_3.gz")
ANIMAL_MNIST_TEST_PER_CLASS = 100
CELEBA_CROP = 148
CELEBA_SIZE = 64


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set.  ``num_classes == 0`` means unlabelled."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    n_train: int
    n_test: int


# --------------------------------------------------------------------------------------------------
# Safe reading of pickled numpy arrays


def _numpy_multiarray():
    """numpy's ``multiarray`` module: ``numpy._core`` in numpy 2, ``numpy.core`` before."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _allowed_globals() -> dict[tuple[str, str], object]:
    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else.

    A pickle can name any importable callable (``os.system``, ``builtins.eval``, ...) and call it
    while loading. This unpickler resolves only numpy's array-reconstruction globals
    (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``, ``scalar``,
    ``numpy.ndarray``, ``numpy.dtype``) and raises ``pickle.UnpicklingError`` for any other.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy array globals are allowed"
            ) from None


def load_numpy_pickle(path: str | os.PathLike) -> np.ndarray:
    """Read a (optionally gzip-compressed) pickle holding one numpy array, refusing anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickled array not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        obj = NumpyOnlyUnpickler(f).load()
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a numpy array")
    return obj


# --------------------------------------------------------------------------------------------------
# In-memory image sets


class ImageTensorDataset(Dataset):
    """Images and labels held as two tensors: ``images`` float32 (N, C, H, W) in [-1, 1], ``labels`` int64 (N,).

    Item i is ``(images[i], int(labels[i]))``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels

    @classmethod
    def from_uint8(cls, pixels: np.ndarray, labels: np.ndarray) -> "ImageTensorDataset":
        """Build from uint8 pixels (N, H, W) or (N, C, H, W), mapping v to 2 v / 255 - 1."""
        if pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
        if pixels.ndim == 3:
            pixels = pixels[:, None]
        images = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)
        return cls(images, torch.as_tensor(np.asarray(labels), dtype=torch.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def _package_file(package: str, parts: tuple[str, ...]) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def animal_mnist_files() -> tuple[Path, Path]:
    """(images file, labels file) inside the installed ``animal-mnist`` wheel."""
    hint = "install it with: pip install --no-deps animal-mnist==0.4"
    try:
        images, labels = _package_file(ANIMAL_MNIST_PACKAGE, ANIMAL_MNIST_IMAGES), _package_file(
            ANIMAL_MNIST_PACKAGE, ANIMAL_MNIST_LABELS
        )
    except FileNotFoundError as err:
        raise FileNotFoundError(f"animal-mnist: {err}; {hint}") from None
    for path in (images, labels):
        if not path.is_file():
            raise FileNotFoundError(f"animal-mnist: {path} is missing; {hint}")
    return images, labels


def animal_mnist_split(pixels: np.ndarray, labels: np.ndarray, test_per_class: int = ANIMAL_MNIST_TEST_PER_CLASS):
    """Deterministic, content-defined train/test split: (train_indices, test_indices).

    For each class c, the candidates are the images of c whose pixels occur exactly once in the
    whole file (so no test image has a copy in the training set); they are ordered by the SHA-256
    of their pixel bytes and the first ``test_per_class`` go to the test set. Everything else is
    training data. Both index lists are returned ordered by a second, independent hash,
    SHA-256(b"order:" + pixel bytes), a fixed pseudo-random order, so the first n items of either
    split are a fair sample (the file itself is sorted by class, and the selection hash would leave
    each class's low-hash images out of the training set's start). The rule depends only on the
    pixels, not on file order or an RNG.
    """
    flat = pixels.reshape(len(pixels), -1)
    _, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    unique_content = counts[inverse.reshape(-1)] == 1
    digests = np.array([hashlib.sha256(row.tobytes()).hexdigest() for row in flat])
    test = []
    for c in np.unique(labels):
        candidates = np.flatnonzero((labels == c) & unique_content)
        if len(candidates) < test_per_class:
            raise ValueError(f"class {c} has only {len(candidates)} unique images, needs {test_per_class}")
        test.extend(candidates[np.argsort(digests[candidates], kind="stable")[:test_per_class]])
    order_keys = np.array([hashlib.sha256(b"order:" + row.tobytes()).hexdigest() for row in flat])
    order = np.argsort(order_keys, kind="stable")
    in_test = np.zeros(len(pixels), dtype=bool)
    in_test[np.asarray(test, dtype=np.int64)] = True
    return order[~in_test[order]], order[in_test[order]]


@functools.lru_cache(maxsize=1)
def _animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images_path, labels_path = animal_mnist_files()
    pixels, labels = load_numpy_pickle(images_path), load_numpy_pickle(labels_path)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != (28, 28) or labels.shape != (pixels.shape[0],):
        raise ValueError(f"unexpected animal-mnist arrays: images {pixels.shape} {pixels.dtype}, labels {labels.shape}")
    train, test = animal_mnist_split(pixels, labels)
    return pixels[train], labels[train], pixels[test], labels[test]


def _load_animal_mnist(root, download):
    x_train, y_train, x_test, y_test = _animal_mnist_arrays()
    train, test = ImageTensorDataset.from_uint8(x_train, y_train), ImageTensorDataset.from_uint8(x_test, y_test)
    info = DatasetInfo("animal-mnist", 1, 28, 10, len(train), len(test))
    return train, test, info


# --------------------------------------------------------------------------------------------------
# torchvision folders


class _ConstantLabel(Dataset):
    """Wrap an unlabelled data set ``(image, None)`` as ``(image, 0)``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.base[index][0], 0


@dataclass(frozen=True)
class _FolderSpec:
    channels: int
    image_size: int
    num_classes: int
    layout: str  # the folder layout torchvision expects, in words
    required: tuple[str, ...]  # paths relative to root that must exist when download=False
    build: Callable  # (root, train: bool, download, transform) -> Dataset


def _signed_unit(channels: int, *pre):
    from torchvision import transforms

    return transforms.Compose([*pre, transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)])


def _mnist_like(cls_name: str):
    def build(root, train, download, transform):
        import torchvision.datasets as tvd

        return getattr(tvd, cls_name)(root, train=train, download=download, transform=transform)

    return build


def _build_cifar10(root, train, download, transform):
    from torchvision.datasets import CIFAR10

    return CIFAR10(root, train=train, download=download, transform=transform)


def _build_svhn(root, train, download, transform):
    from torchvision.datasets import SVHN

    return SVHN(root, split="train" if train else "test", download=download, transform=transform)


def _build_celeba(root, train, download, transform):
    from torchvision.datasets import CelebA

    return _ConstantLabel(CelebA(root, split="train" if train else "test", target_type=[], download=download, transform=transform))


def _mnist_files(folder: str) -> tuple[str, ...]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(f"{folder}/raw/{n}" for n in names)


_CELEBA_FILES = (
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_attr_celeba.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)

_FOLDERS: dict[str, _FolderSpec] = {
    "mnist": _FolderSpec(
        1, 28, 10, "<root>/MNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte",
        _mnist_files("MNIST"), _mnist_like("MNIST"),
    ),
    "fashion-mnist": _FolderSpec(
        1, 28, 10, "<root>/FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte",
        _mnist_files("FashionMNIST"), _mnist_like("FashionMNIST"),
    ),
    "cifar10": _FolderSpec(
        3, 32, 10, "<root>/cifar-10-batches-py/ holding data_batch_1..5, test_batch and batches.meta",
        tuple(f"cifar-10-batches-py/{n}" for n in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")),
        _build_cifar10,
    ),
    "svhn": _FolderSpec(
        3, 32, 10, "<root>/train_32x32.mat and <root>/test_32x32.mat", ("train_32x32.mat", "test_32x32.mat"), _build_svhn,
    ),
    "celeba64": _FolderSpec(
        3, CELEBA_SIZE, 0, "<root>/celeba/img_align_celeba/*.jpg plus <root>/celeba/{" + ",".join(_CELEBA_FILES) + "}",
        ("celeba/img_align_celeba",) + tuple(f"celeba/{n}" for n in _CELEBA_FILES), _build_celeba,
    ),
}


def _folder_transform(name: str, spec: _FolderSpec):
    if name == "celeba64":
        from torchvision import transforms

        pre = (transforms.CenterCrop(CELEBA_CROP), transforms.Resize(CELEBA_SIZE, antialias=True))
        return _signed_unit(spec.channels, *pre)
    return _signed_unit(spec.channels)


def _load_folder(name: str, root, download: bool):
    spec = _FOLDERS[name]
    if root is None:
        raise FileNotFoundError(f"{name} is read from a local folder: pass root (--data-root); expected {spec.layout}")
    root = Path(root).expanduser()
    if not download:
        missing = [p for p in spec.required if not (root / p).exists()]
        if missing:
            raise FileNotFoundError(
                f"{name}: {root / missing[0]} not found; expected {spec.layout.replace('<root>', str(root))} "
                "(or pass download=True)"
            )
    transform = _folder_transform(name, spec)
    try:
        train = spec.build(str(root), True, download, transform)
        test = spec.build(str(root), False, download, transform)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"{name}: {err} under {root}; expected {spec.layout.replace('<root>', str(root))}") from err
    return train, test, DatasetInfo(name, spec.channels, spec.image_size, spec.num_classes, len(train), len(test))


# --------------------------------------------------------------------------------------------------
# Public entry points


def load_dataset(name: str = "animal-mnist", root: str | os.PathLike | None = None, download: bool = False):
    """Load a data set by name: ``(train, test, info)``.

    ``train`` / ``test`` yield ``(image float32 (C, H, W) in [-1, 1], int label)``. ``root`` is the
    local data folder for the torchvision sets (ignored by ``animal-mnist``, which ships in a wheel);
    ``download=True`` lets torchvision fetch a missing set into ``root``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "animal-mnist":
        return _load_animal_mnist(root, download)
    return _load_folder(name, root, download)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool = True) -> DataLoader:
    """A single-process DataLoader whose order is fixed by ``seed`` (its own ``torch.Generator``)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last and len(dataset) < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the data set size {len(dataset)}: drop_last would give no batch")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset, batch_size=int(batch_size), shuffle=shuffle, drop_last=drop_last, num_workers=0, generator=generator
    )


def dataset_tensor(dataset: Dataset, n: int | None = None, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the first ``n`` items (all if None): ``X`` float32 (n, C, H, W), ``y`` int64 (n,)."""
    size = len(dataset)
    n = size if n is None else int(n)
    if not 1 <= n <= size:
        raise ValueError(f"n must be in [1, {size}] for this data set, got {n}")
    if isinstance(dataset, ImageTensorDataset):
        return dataset.images[:n].clone(), dataset.labels[:n].clone()
    subset = torch.utils.data.Subset(dataset, range(n))
    xs, ys = [], []
    for x, y in DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0):
        xs.append(x.to(torch.float32))
        ys.append(torch.as_tensor(y, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)
