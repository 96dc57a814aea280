"""Uncertainties of the Fréchet distance (bootstrap over fakes) and of density / coverage."""
import numpy as np
import pytest

from neuro_lpc.metrics import density_coverage, feature_statistics, frechet_distance, frechet_distance_features, frechet_distance_se


# fake rows n and real rows m against D = 40: the n x n, the m x m and the D x D eigenproblem
@pytest.mark.parametrize("n, m", [(12, 500), (300, 25), (300, 500)])
def test_fd_from_features_equals_the_sqrtm_formula(n, m):
    rng = np.random.default_rng(0)
    d = 40
    real = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    fake = rng.normal(size=(n, d)) * 1.2 + 0.3
    expected = frechet_distance(*feature_statistics(fake), *feature_statistics(real))
    assert frechet_distance_features(fake, real) == pytest.approx(expected, rel=1e-7)
    with pytest.raises(ValueError, match="feature dims"):
        frechet_distance_features(fake, real[:, :5])


def test_fd_se_is_the_spread_of_the_documented_bootstrap():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(200, 6)), rng.normal(size=(80, 6)) + 0.5
    mu_r, s_r = feature_statistics(real)
    draws = np.random.default_rng(9)
    direct = []
    for _ in range(7):
        mu_b, s_b = feature_statistics(fake[draws.integers(0, 80, 80)])
        direct.append(frechet_distance(mu_b, s_b, mu_r, s_r))
    assert frechet_distance_se(fake, real, n_boot=7, seed=9) == pytest.approx(np.std(direct, ddof=1), rel=1e-6)


def test_fd_se_matches_the_spread_over_independent_fake_sets(single_thread):
    rng = np.random.default_rng(2)
    d = 6
    real = rng.normal(size=(5000, d))
    mu_r, s_r = feature_statistics(real)
    values, ses = [], []
    for r in range(150):
        fake = rng.normal(size=(150, d)) * 1.3 + 0.4
        mu_f, s_f = feature_statistics(fake)
        values.append(frechet_distance(mu_f, s_f, mu_r, s_r))
        ses.append(frechet_distance_se(fake, real, n_boot=20, seed=r))
    ratio = np.mean(ses) / np.std(values, ddof=1)
    assert 0.75 < ratio < 1.33, ratio


def test_fd_se_rejects_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_boot"):
        frechet_distance_se(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), n_boot=1)
    with pytest.raises(ValueError, match="feature dims"):
        frechet_distance_se(rng.normal(size=(5, 2)), rng.normal(size=(5, 3)))


def test_density_coverage_se_is_the_spread_over_resampled_fake_sets():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(120, 4)), rng.normal(size=(90, 4)) * 1.2 + 0.3
    res = density_coverage(real, fake, k=3, bootstrap=25, seed=4)
    plain = density_coverage(real, fake, k=3)
    assert all(res[key] == plain[key] for key in plain)  # the point estimates are unchanged
    draws = np.random.default_rng(4)
    dens, cov = [], []
    for _ in range(25):  # the documented multinomial weights, applied by repeating fakes
        w = draws.multinomial(90, np.full(90, 1 / 90))
        b = density_coverage(real, np.repeat(fake, w, axis=0), k=3)
        dens.append(b["density"])
        cov.append(b["coverage"])
    assert res["density_se"] == pytest.approx(np.std(dens, ddof=1), rel=1e-9)
    assert res["coverage_se"] == pytest.approx(np.std(cov, ddof=1), rel=1e-9)
    assert res["density_se"] > 0 and res["coverage_se"] > 0


def test_density_coverage_bootstrap_argument_is_checked():
    real = np.random.default_rng(5).normal(size=(20, 3))
    with pytest.raises(ValueError, match="bootstrap"):
        density_coverage(real, real, k=2, bootstrap=1)
    assert "density_se" not in density_coverage(real, real, k=2)
