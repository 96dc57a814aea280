"""Tests of neuro_lpc.data: the embedded set, its split, safe unpickling, folders, loaders."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from neuro_lpc.data import (
    DATASETS,
    DatasetInfo,
    ImageTensorDataset,
    NumpyOnlyUnpickler,
    animal_mnist_files,
    animal_mnist_split,
    dataset_tensor,
    load_dataset,
    load_numpy_pickle,
    make_loader,
)


@pytest.fixture(scope="module")
def animal():
    return load_dataset("animal-mnist")


@pytest.fixture(scope="module")
def raw_animal():
    images, labels = animal_mnist_files()
    return load_numpy_pickle(images), load_numpy_pickle(labels)


def _pixels(ds: ImageTensorDataset) -> np.ndarray:
    """Back to uint8 pixel values; fails if the images are not exactly 2 v / 255 - 1."""
    v = (ds.images.double() + 1.0) * 127.5
    assert torch.allclose(v, v.round(), atol=1e-4), "images are not on the 256-level grid 2 v / 255 - 1"
    return v.round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------------
# the embedded set


def test_embedded_set_shapes_classes_and_range(animal):
    train, test, info = animal
    assert info == DatasetInfo("animal-mnist", 1, 28, 10, len(train), len(test))
    for ds in (train, test):
        x, y = ds[0]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
        assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0  # both ends used
        assert set(ds.labels.tolist()) == set(range(10))
        _pixels(ds)  # values on the v -> 2 v / 255 - 1 grid


def test_raw_files_are_the_documented_arrays(raw_animal):
    pixels, labels = raw_animal
    assert pixels.shape == (10000, 28, 28) and pixels.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_split_is_disjoint_stratified_and_sized_as_documented(animal, raw_animal):
    train, test, info = animal
    assert (info.n_train, info.n_test) == (9000, 1000)
    assert np.bincount(test.labels.numpy(), minlength=10).tolist() == [100] * 10
    assert np.bincount(train.labels.numpy(), minlength=10).tolist() == [900] * 10
    train_rows = {r.tobytes() for r in _pixels(train).reshape(9000, -1)}
    test_rows = [r.tobytes() for r in _pixels(test).reshape(1000, -1)]
    assert not train_rows.intersection(test_rows), "a test image has a pixel-identical copy in the training set"
    # together the splits are exactly the file's images (as a multiset), each with its own label
    pixels, labels = raw_animal
    both = np.concatenate([_pixels(train), _pixels(test)])[:, 0].reshape(10000, -1)
    both_labels = np.concatenate([train.labels.numpy(), test.labels.numpy()])
    key = lambda rows, lab: sorted(zip((r.tobytes() for r in rows), lab.tolist()))  # noqa: E731
    assert key(both, both_labels) == key(pixels.reshape(10000, -1), labels)


def test_split_depends_only_on_content(raw_animal):
    pixels, labels = raw_animal
    _, test = animal_mnist_split(pixels, labels)
    perm = np.random.default_rng(1).permutation(len(pixels))
    _, test_perm = animal_mnist_split(pixels[perm], labels[perm])
    assert sorted(perm[test_perm].tolist()) == sorted(test.tolist())


def test_first_items_of_a_split_are_a_fair_sample(animal):
    # the file is sorted by class; the splits' order must not be: the first 1,000 training items
    # hold each class ~100 times (binomial sd ~9.5; 40 is over 4 sd)
    train, test, _ = animal
    counts = np.bincount(train.labels[:1000].numpy(), minlength=10)
    assert np.all(np.abs(counts - 100) < 40), counts
    assert len(set(test.labels[:100].tolist())) == 10


# --------------------------------------------------------------------------------------------------
# restricted unpickler


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))
    with pytest.raises(pickle.UnpicklingError, match="refusing .*system"):
        NumpyOnlyUnpickler(__import__("io").BytesIO(payload)).load()
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as f:
        f.write(payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(path)
    assert not marker.exists()


def test_unpickler_refuses_non_numpy_globals(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps(DatasetInfo("x", 1, 2, 3, 4, 5)))
    with pytest.raises(pickle.UnpicklingError, match="refusing .*DatasetInfo"):
        load_numpy_pickle(path)


def test_unpickler_reads_arrays_and_rejects_other_objects(tmp_path):
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "a.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(array, f, protocol=4)
    loaded = load_numpy_pickle(path)
    assert loaded.dtype == array.dtype and np.array_equal(loaded, array)
    plain = tmp_path / "list.pkl"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a numpy array"):
        load_numpy_pickle(plain)
    with pytest.raises(FileNotFoundError):
        load_numpy_pickle(tmp_path / "missing.gz")


# --------------------------------------------------------------------------------------------------
# torchvision folders


@pytest.mark.parametrize(
    "name, layout",
    [
        ("mnist", "MNIST/raw/"),
        ("fashion-mnist", "FashionMNIST/raw/"),
        ("cifar10", "cifar-10-batches-py/"),
        ("svhn", "train_32x32.mat"),
        ("celeba64", "celeba/img_align_celeba"),
    ],
)
def test_missing_folder_names_the_expected_layout(tmp_path, name, layout):
    with pytest.raises(FileNotFoundError, match="expected .*" + layout.replace(".", r"\.")):
        load_dataset(name, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="root"):
        load_dataset(name, root=None)


def _write_idx(path, array: np.ndarray):
    code = 0x08  # unsigned byte
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, code, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_folder_maps_pixels_to_signed_unit(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    sets = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", pixels)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        sets[prefix] = (pixels, labels)
    train, test, info = load_dataset(name, root=tmp_path)
    assert info == DatasetInfo(name, 1, 28, 10, 6, 4)
    for ds, (pixels, labels) in ((train, sets["train"]), (test, sets["t10k"])):
        X, y = dataset_tensor(ds)
        assert X.shape == (len(labels), 1, 28, 28) and X.dtype == torch.float32
        expected = torch.from_numpy(pixels.astype(np.float64) * 2 / 255 - 1)[:, None]
        assert torch.allclose(X.double(), expected, atol=1e-6)
        assert y.tolist() == labels.tolist()


def test_unknown_name_lists_the_data_sets():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)


# --------------------------------------------------------------------------------------------------
# loaders and stacking


def _epoch_labels(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_make_loader_order_is_fixed_by_seed(animal):
    train, _, _ = animal
    a = make_loader(train, 500, shuffle=True, seed=3, drop_last=False)
    b = make_loader(train, 500, shuffle=True, seed=3, drop_last=False)
    c = make_loader(train, 500, shuffle=True, seed=4, drop_last=False)
    first_a, first_b = [x for x, _ in a][0], [x for x, _ in b][0]
    assert torch.equal(first_a, first_b)
    assert _epoch_labels(a) == _epoch_labels(b)  # second epoch of each, also equal
    assert _epoch_labels(a) != _epoch_labels(c)
    assert sorted(_epoch_labels(c)) == sorted(train.labels.tolist())  # a permutation of the data


def test_make_loader_drop_last_and_bad_batch(animal):
    train, _, _ = animal
    loader = make_loader(train, 4096, shuffle=False, seed=0)
    assert [len(y) for _, y in loader] == [4096, 4096]
    with pytest.raises(ValueError):
        make_loader(train, 0, shuffle=False, seed=0)
    with pytest.raises(ValueError):
        make_loader(train, 10_000, shuffle=False, seed=0)


def test_dataset_tensor_stacks_the_first_items(animal):
    _, test, _ = animal
    X, y = dataset_tensor(test, 37)
    Xs, ys = dataset_tensor(torch.utils.data.Subset(test, range(50)), 37)  # the generic path
    assert X.shape == (37, 1, 28, 28) and y.dtype == torch.int64
    assert torch.equal(X, Xs) and torch.equal(y, ys)
    for i in (0, 36):
        assert torch.equal(X[i], test[i][0]) and y[i].item() == test[i][1]
    with pytest.raises(ValueError):
        dataset_tensor(test, 0)
    with pytest.raises(ValueError):
        dataset_tensor(test, len(test) + 1)
