"""Spontaneous vs evoked (circuits.diagnostics.spontaneous): Gaussian KL, its null bias, Berkes et al.'s test."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from circuits.analysis import (
    aggregate_posterior_kl_linear, gaussian_kl, gaussian_kl_null_bias, gaussian_posterior, spontaneous_evoked_kl,
)

W = np.array([[1.0, 0.2, -0.5], [0.3, 1.2, 0.4], [-0.6, 0.1, 0.9], [0.5, 0.5, 0.5], [0.0, -1.0, 0.3]])
B_VEC = np.array([0.1, -0.2, 0.0, 0.3, 0.5])
SX, SP = 0.7, 1.3


def test_gaussian_kl_matches_monte_carlo():
    m1, m2 = np.array([0.5, -1.0]), np.array([0.0, 0.2])
    S1, S2 = np.array([[1.0, 0.4], [0.4, 0.8]]), np.array([[2.0, -0.3], [-0.3, 0.5]])
    x = stats.multivariate_normal(m1, S1).rvs(400_000, random_state=0)
    diff = stats.multivariate_normal(m1, S1).logpdf(x) - stats.multivariate_normal(m2, S2).logpdf(x)
    assert abs(gaussian_kl(m1, S1, m2, S2) - diff.mean()) < 4 * diff.std() / np.sqrt(len(x))
    assert gaussian_kl(m1, S1, m1, S1) == pytest.approx(0.0, abs=1e-12)


def test_null_bias_formula_matches_simulation():
    rng = np.random.default_rng(1)
    d, n = 4, 30
    kls = [spontaneous_evoked_kl(rng.standard_normal((n, d)), prior_std=1.0).kl for _ in range(1000)]
    assert abs(np.mean(kls) - gaussian_kl_null_bias(d, n)) < 4 * np.std(kls) / np.sqrt(len(kls))
    assert gaussian_kl_null_bias(d, 10_000) == pytest.approx(d * (d + 3) / (4 * 10_000), rel=0.01)


def _aggregate_samples(data_mean, data_cov, n, seed):
    """Berkes' experiment on the linear model: data x ~ N(data_mean, data_cov), one exact posterior sample each."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(data_mean, data_cov, size=n)
    mean, cov, _ = gaussian_posterior(W, B_VEC, x, SX, SP)
    return mean + rng.standard_normal(mean.shape) @ np.linalg.cholesky(cov).T


def test_aggregate_posterior_of_model_data_is_the_prior():
    model_cov = SP ** 2 * W @ W.T + SX ** 2 * np.eye(5)
    kl, mean, cov = aggregate_posterior_kl_linear(W, B_VEC, SX, SP, B_VEC, model_cov)
    assert kl == pytest.approx(0.0, abs=1e-10) and np.allclose(cov, SP ** 2 * np.eye(3)) and np.allclose(mean, 0)
    z = _aggregate_samples(B_VEC, model_cov, 40_000, seed=2)
    res = spontaneous_evoked_kl(z, prior_std=SP)
    assert res.kl < 4 * res.null_bias + 1e-3
    assert abs(res.var_ratio - 1.0) < 0.03


def test_misspecified_data_give_the_closed_form_positive_kl():
    data_mean = B_VEC + np.array([1.0, 0.0, -1.0, 0.5, 0.0])
    data_cov = 2.5 * (SP ** 2 * W @ W.T + SX ** 2 * np.eye(5))
    kl, _, _ = aggregate_posterior_kl_linear(W, B_VEC, SX, SP, data_mean, data_cov)
    assert kl > 0.2
    z = _aggregate_samples(data_mean, data_cov, 40_000, seed=3)
    batches = [spontaneous_evoked_kl(zb, prior_std=SP).kl for zb in np.split(z, 10)]
    se = np.std(batches, ddof=1) / np.sqrt(10)
    res = spontaneous_evoked_kl(z, prior_std=SP)
    assert abs(res.kl - res.null_bias - kl) < 4 * se + 1e-3


def test_two_sample_version_and_evoked_shapes():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((200, 10, 3)), rng.standard_normal((3000, 3))
    res = spontaneous_evoked_kl(a, spontaneous=b)                      # (R, B, d) is pooled to (2000, d)
    assert res.n == 2000 and res.kl < 5 * res.null_bias
    shifted = spontaneous_evoked_kl(a + 1.0, spontaneous=b)
    assert shifted.kl == pytest.approx(1.5, rel=0.1)                   # |shift|^2 / 2 = 3 / 2
    assert shifted.kl_marginal == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize("call, match", [
    (lambda: spontaneous_evoked_kl(np.ones((5, 2))), "exactly one"),
    (lambda: spontaneous_evoked_kl(np.random.rand(5, 2), spontaneous=np.random.rand(5, 3)), "spontaneous must have"),
    (lambda: spontaneous_evoked_kl(np.random.rand(5, 2), prior_std=0), "prior_std"),
    (lambda: gaussian_kl(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "dimensions"),
    (lambda: gaussian_kl(np.zeros(2), np.zeros((2, 2)), np.zeros(2), np.eye(2)), "positive definite"),
    (lambda: gaussian_kl_null_bias(5, 3), "n - 1 >= d"),
    (lambda: aggregate_posterior_kl_linear(W, B_VEC, SX, SP, np.zeros(4), np.eye(5)), "shape"),
])
def test_bad_input_is_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
