"""Diversity measures and the collapse rule, on the embedded data with pixel features (no network)."""
import numpy as np
import pytest
import torch

from neuro_lpc.data import load_dataset
from neuro_lpc.metrics import (detect_collapse, duplicate_fraction, feature_spread, flatness, mean_pairwise_distance,
                               pixel_std)


@pytest.fixture(scope="module")
def animal():
    train, test, _ = load_dataset("animal-mnist")
    return train.images[:300], test.images[:300]


def _flat(images):
    return images.flatten(1).double().numpy()


def test_pixel_std_and_flatness_closed_forms():
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(4000, 1, 4, 4, generator=g) * 2 - 1  # per-pixel std of U(-1, 1) is 1/sqrt(3)
    assert pixel_std(uniform) == pytest.approx(1 / np.sqrt(3), rel=0.03)
    assert flatness(uniform) == pytest.approx(1 / np.sqrt(3), rel=0.05)
    one = uniform[:1].repeat(7, 1, 1, 1)
    assert pixel_std(one) == 0.0
    levels = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 1, 4, 4)  # blank images of 5 grey levels
    assert flatness(levels) == 0.0 and pixel_std(levels) == pytest.approx(torch.linspace(-1, 1, 5).std().item())


def test_mean_pairwise_distance_and_spread():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(50, 3))
    direct = np.mean([np.linalg.norm(f[i] - f[j]) for i in range(50) for j in range(50) if i < j])
    assert mean_pairwise_distance(f) == pytest.approx(direct, rel=1e-10)
    assert feature_spread(2 * f, f) == pytest.approx(2.0, rel=1e-10)
    assert feature_spread(f, f) == pytest.approx(1.0)


def test_duplicate_fraction_of_copies_and_of_real_sets(animal):
    train, test = animal
    assert duplicate_fraction(_flat(test), _flat(train)) == 0.0
    copies = np.repeat(_flat(test[:10]), 30, axis=0)
    assert duplicate_fraction(copies, _flat(train)) == 1.0


def test_real_images_are_not_collapsed(animal):
    train, test = animal
    collapsed, reason = detect_collapse(test, _flat(test), _flat(train), pixel_std_real=pixel_std(train))
    assert (collapsed, reason) == (False, None)


@pytest.mark.parametrize("case, expected", [
    ("constant", "identical"), ("repeated", "identical"), ("repeated+noise", "near-duplicate"),
    ("blank", "blank"), ("ten images repeated", "near-duplicate"), ("one blob", "single mode"),
])
def test_degenerate_sets_are_collapsed_with_their_reason(animal, case, expected):
    train, test = animal
    g = torch.Generator().manual_seed(2)
    n = 200
    if case == "constant":
        images = torch.full((n, 1, 28, 28), -0.2)
    elif case == "repeated":
        images = test[:1].repeat(n, 1, 1, 1)
    elif case == "repeated+noise":
        images = (test[:1] + 0.02 * torch.randn(n, 1, 28, 28, generator=g)).clamp(-1, 1)
    elif case == "blank":
        images = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1).expand(n, 1, 28, 28)
    elif case == "ten images repeated":
        images = test[:10].repeat(n // 10, 1, 1, 1)
    else:  # pixel-diverse images whose features sit in one small region
        images = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    features = _flat(images)
    if case == "one blob":
        features = _flat(train[:n]).mean(0) + 0.05 * np.random.default_rng(3).normal(size=features.shape)
    collapsed, reason = detect_collapse(images, features, _flat(train), pixel_std_real=pixel_std(train))
    assert collapsed and reason.startswith(expected), reason


def test_pixel_rules_work_without_features(animal):
    _, test = animal
    assert detect_collapse(test[:1].repeat(5, 1, 1, 1))[0]
    assert detect_collapse(test) == (False, None)


def test_diversity_rejects_bad_input(animal):
    train, test = animal
    with pytest.raises(ValueError, match="at least 2"):
        pixel_std(test[:1])
    with pytest.raises(ValueError, match="both"):
        detect_collapse(test, _flat(test))
    with pytest.raises(ValueError, match="feature dims"):
        duplicate_fraction(_flat(test), _flat(train)[:, :5])
