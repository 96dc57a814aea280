"""KID (unbiased MMD^2, cubic polynomial kernel) against a direct numpy implementation and known cases."""
import numpy as np
import pytest

from neuro_lpc.metrics import kernel_inception_distance, mmd2_unbiased, polynomial_kernel


def _mmd2_loops(x, y):
    """The U-statistic written out term by term with the kernel (x.y / d + 1)^3."""
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def _gaussians(seed, m, n, d, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + shift  # real, fake


def test_kid_of_whole_sets_equals_the_direct_u_statistic():
    real, fake = _gaussians(0, 30, 30, 6, shift=0.4)
    res = kernel_inception_distance(real, fake, subset_size=1000)
    assert (res["kid_subset_size"], res["kid_subsets"]) == (30, 1)  # the subset is the whole set: one evaluation
    assert res["kid"] == pytest.approx(_mmd2_loops(fake, real), rel=1e-10)


def test_kid_over_subsets_is_the_mean_of_the_documented_draws():
    real, fake = _gaussians(1, 40, 55, 5, shift=0.3)
    res = kernel_inception_distance(real, fake, subset_size=12, n_subsets=7, seed=3)
    rng = np.random.default_rng(3)
    direct = []
    for _ in range(7):
        ix, iy = rng.choice(40, 12, replace=False), rng.choice(55, 12, replace=False)
        direct.append(_mmd2_loops(fake[ix], real[iy]))
    assert (res["kid_subset_size"], res["kid_subsets"]) == (12, 7)
    assert res["kid"] == pytest.approx(np.mean(direct), rel=1e-10)
    # the Monte-Carlo spread of the subsets is part of the SE
    assert res["kid_se"] ** 2 >= np.var(direct, ddof=1) / 7


def test_kid_with_and_without_the_precomputed_kernel_matrix_agree():
    real, fake = _gaussians(2, 60, 80, 7, shift=0.2)
    a = kernel_inception_distance(real, fake, subset_size=20, n_subsets=9, seed=1)
    b = kernel_inception_distance(real, fake, subset_size=20, n_subsets=9, seed=1, gram_bytes=0)
    assert a["kid"] == pytest.approx(b["kid"], rel=1e-12) and a["kid_se"] == pytest.approx(b["kid_se"], rel=1e-9)


def test_mmd2_unbiased_from_kernel_blocks():
    real, fake = _gaussians(3, 9, 11, 4)
    import torch

    x, y = torch.from_numpy(fake), torch.from_numpy(real)
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    assert got == pytest.approx(_mmd2_loops(fake, real), rel=1e-10)


def test_kid_same_distribution_is_zero_within_its_se_and_shifted_is_positive(single_thread):
    same = kernel_inception_distance(*_gaussians(4, 400, 400, 16))
    assert abs(same["kid"]) < 2 * same["kid_se"]
    shifted = kernel_inception_distance(*_gaussians(4, 400, 400, 16, shift=0.5))
    assert shifted["kid"] > 5 * shifted["kid_se"] > 0
    wider = kernel_inception_distance(*_gaussians(5, 400, 400, 16, shift=1.0))
    assert wider["kid"] > shifted["kid"]


# 200 points per set; s = 1000 > n: one evaluation per draw; s = 60: 20 random subsets per draw
@pytest.mark.parametrize("shift, subset", [(0.25, 1000), (0.25, 60), (0.0, 1000)])
def test_kid_se_matches_the_spread_over_independent_draws(single_thread, shift, subset):
    # 120 independent pairs of sample sets: the reported SE against the actual standard deviation of KID
    rng = np.random.default_rng(6)
    d, values, ses = 8, [], []
    for r in range(120):
        real, fake = rng.normal(size=(200, d)), rng.normal(size=(200, d)) + shift
        res = kernel_inception_distance(real, fake, subset_size=subset, n_subsets=20, seed=r)
        values.append(res["kid"])
        ses.append(res["kid_se"])
    ratio = np.mean(ses) / np.std(values, ddof=1)
    if shift > 0:  # first-order variance formula: calibrated
        assert 0.75 < ratio < 1.35, ratio
    else:  # equal distributions: documented as conservative, never overconfident
        assert 0.9 < ratio < 2.5, ratio


def test_kid_rejects_bad_input():
    real, fake = _gaussians(7, 10, 10, 3)
    with pytest.raises(ValueError, match="feature dims"):
        kernel_inception_distance(real, fake[:, :2])
    with pytest.raises(ValueError, match="N >= 2"):
        kernel_inception_distance(real, fake[:1])
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(real, fake, subset_size=1)
    with pytest.raises(ValueError, match="n_subsets"):
        kernel_inception_distance(real, fake, n_subsets=0)
    with pytest.raises(ValueError, match="NaN"):
        kernel_inception_distance(real, np.full((4, 3), np.nan))
