"""The fast CPU Inception path against the exact TorchScript reference (docs/metrics.md states the tolerance)."""
import pytest
import torch
import torchvision.transforms.functional as TF

from neuro_lpc.data import load_dataset
from neuro_lpc.metrics import FastInception, InceptionFeatures, feature_statistics, frechet_distance
from neuro_lpc.metrics import inception as inception_module

# Stated tolerance of the fast path (measured ~3e-6, docs/metrics.md): per image, the L2 error of the
# 2048-d feature vector relative to its norm, and any element's error relative to the batch's largest feature.
FEATURE_RTOL = 1e-4
FID_RTOL = 0.01


def _relative_errors(fast: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    per_image = ((fast - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
    elementwise = ((fast - ref).abs().max() / ref.abs().max()).item()
    return per_image, elementwise


@pytest.fixture(scope="module")
def networks():
    return InceptionFeatures("cpu", precision="fp32"), InceptionFeatures("cpu", precision="fast")


def test_auto_precision_is_the_fast_path_on_a_cpu_without_native_bf16(networks, monkeypatch):
    ref, fast = networks
    monkeypatch.setattr(inception_module, "cpu_bf16_capabilities", lambda: ())  # (with native bf16: test_metrics_inception_bf16.py)
    auto = InceptionFeatures("cpu")
    assert (auto.precision, fast.precision, ref.precision) == ("fast", "fast", "fp32")
    assert isinstance(auto.network, FastInception) and not isinstance(ref.network, FastInception)
    assert fast.key == "inception-q1-fast" != ref.key  # real statistics of one are never reused by the other
    with pytest.raises(ValueError, match="precision"):
        InceptionFeatures("cpu", precision="int8")


def test_fast_features_equal_the_reference_within_tolerance(networks):
    ref, fast = networks
    _, test, _ = load_dataset("animal-mnist")
    g = torch.Generator().manual_seed(0)
    grey = test.images[:3]
    colour = torch.rand(2, 3, 40, 36, generator=g) * 2 - 1  # another size and 3 channels
    for images in (grey, colour):
        a, b = fast(images), ref(images)
        assert a.shape == b.shape == (images.shape[0], 2048)
        per_image, elementwise = _relative_errors(a, b)
        assert per_image < FEATURE_RTOL and elementwise < FEATURE_RTOL, (per_image, elementwise)


@pytest.mark.slow  # ~10 min on 2 shared cores: 600 images through both networks
def test_fast_path_fid_within_one_percent_of_the_reference(networks):
    ref, fast = networks
    train, test, _ = load_dataset("animal-mnist")
    n = 200
    sets = {
        "real": test.images[:n],
        "held-out": train.images[:n],
        "blurred": TF.gaussian_blur(train.images[n : 2 * n], kernel_size=9, sigma=2.0),
    }
    f_ref = {k: ref(v) for k, v in sets.items()}
    f_fast = {k: fast(v) for k, v in sets.items()}
    for k in sets:
        per_image, elementwise = _relative_errors(f_fast[k], f_ref[k])
        assert per_image < FEATURE_RTOL and elementwise < FEATURE_RTOL, (k, per_image, elementwise)

    def fid(features, a, b):
        return frechet_distance(*feature_statistics(features[a].double().numpy()), *feature_statistics(features[b].double().numpy()))

    for other in ("held-out", "blurred"):
        exact, approx = fid(f_ref, other, "real"), fid(f_fast, other, "real")
        assert abs(approx - exact) < FID_RTOL * exact, (other, exact, approx)


def test_repeated_images_pass_through_the_network_once(networks):
    _, fast = networks
    _, test, _ = load_dataset("animal-mnist")
    images = torch.cat([test.images[:1].repeat(4, 1, 1, 1), test.images[1:2], test.images[:1]])
    rows = []
    inner = fast.network
    fast.network = lambda x: (rows.append(x.shape[0]), inner(x))[1]
    try:
        features = fast(images)
    finally:
        fast.network = inner
    assert rows == [2] and features.shape == (6, 2048)
    assert all(torch.equal(features[i], features[0]) for i in (1, 2, 3, 5)) and not torch.equal(features[4], features[0])


def test_threads_option_sets_and_restores_torch_threads(networks):
    _, fast = networks
    seen, inner, before = [], fast.network, torch.get_num_threads()
    fast.network = lambda x: (seen.append(torch.get_num_threads()), inner(x))[1]
    fast.threads = 1
    try:
        fast(torch.zeros(1, 1, 28, 28))
    finally:
        fast.network, fast.threads = inner, None
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        InceptionFeatures("cpu", threads=0)
