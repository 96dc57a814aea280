"""Noise correlations and Poisson-count Fano factors (circuits.diagnostics.correlations) on known processes."""
from __future__ import annotations

import numpy as np
import pytest

from circuits.analysis import noise_correlations, poisson_counts, poisson_fano_theory, spike_count_fano


def test_iid_samples_have_no_noise_correlation():
    z = np.random.default_rng(0).standard_normal((2000, 4, 6))
    nc = noise_correlations(z)
    iu = np.triu_indices(6, 1)
    assert np.all(np.abs(nc.corr[iu]) < 4 * nc.null_se)
    assert np.allclose(np.diag(nc.corr), 1.0)
    assert abs(nc.mean_abs_offdiag - np.sqrt(2 / np.pi) * nc.null_se) < 0.3 * nc.null_se


def test_known_covariance_gives_its_correlation_despite_stimulus_offsets():
    rng = np.random.default_rng(1)
    corr = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.1], [-0.3, 0.1, 1.0]])
    sd = np.array([0.5, 2.0, 1.0])
    L = np.linalg.cholesky(corr * np.outer(sd, sd))
    noise = rng.standard_normal((3000, 8, 3)) @ L.T
    signal = 5 * rng.standard_normal((1, 8, 1)) * np.ones(3)          # per-chain (stimulus) means along (1, 1, 1)
    nc = noise_correlations(noise + signal, center="chain")
    tol = 4 * (1 - corr ** 2) / np.sqrt(nc.n) + 1e-12
    assert np.all(np.abs(nc.corr - corr) < tol)
    assert noise_correlations(noise + signal, center="pooled").corr[0, 2] > 0.5   # signal correlations, not noise
    # one stimulus, a shared time course: center="time" removes the across-trial mean at each record
    drive = np.sin(np.linspace(0, 20, 3000))[:, None, None] * np.array([3.0, -3.0, 3.0])
    nt = noise_correlations(noise + drive, center="time")
    assert np.all(np.abs(nt.corr - corr) < tol + 0.01)


def test_poisson_counts_of_a_constant_rate_have_fano_one():
    a = np.ones((4000, 5, 4))                                          # activity 1 -> 50 Hz
    fano, counts = spike_count_fano(a, dt_record=0.002, window=0.05, gain=50.0, seed=3)
    assert counts.shape == (160, 5, 4) and counts.dtype.kind == "i"
    assert abs(counts.mean() - 2.5) < 0.05                             # 50 Hz x 50 ms
    se = np.sqrt(2 / (counts.shape[0] - 1)) / np.sqrt(fano.size)       # Fano of Poisson counts: se ~ sqrt(2/(n-1))
    assert abs(np.nanmean(fano) - 1.0) < 4 * se


def test_doubly_stochastic_rate_gives_the_known_larger_fano():
    rng = np.random.default_rng(4)
    mu, s, w = 0.5, 1.0, 10                                            # activity N(mu, s^2) held for each window
    held = np.repeat(mu + s * rng.standard_normal((3000, 8)), w, axis=0)
    fano, counts = spike_count_fano(held, dt_record=0.002, window=0.02, gain=100.0, seed=5)
    theory = poisson_fano_theory(mu, s, gain=100.0, window=0.02)
    assert theory > 1.5
    c = counts.astype(float).ravel()
    pooled = c.var(ddof=1) / c.mean()
    assert abs(pooled - theory) < 0.05 * theory
    assert poisson_fano_theory(0.7, 0.0, 50.0, 0.1) == pytest.approx(1.0)


def test_fano_theory_matches_direct_moments():
    rng = np.random.default_rng(6)
    a = np.clip(-0.3 + 0.8 * rng.standard_normal(2_000_000), 0, None) * 40 * 0.05
    assert poisson_fano_theory(-0.3, 0.8, 40.0, 0.05) == pytest.approx(1 + a.var() / a.mean(), rel=5e-3)


def test_counts_are_seeded_and_rectified():
    a = np.random.default_rng(7).standard_normal((100, 3))
    assert np.array_equal(poisson_counts(a, 0.01, 0.05, seed=1), poisson_counts(a, 0.01, 0.05, seed=1))
    assert not np.array_equal(poisson_counts(a, 0.01, 0.05, seed=1), poisson_counts(a, 0.01, 0.05, seed=2))
    assert poisson_counts(-np.abs(a), 0.01, 0.05).sum() == 0
    assert poisson_counts(np.ones((100, 3)), 0.01, 0.05, threshold=1.0).sum() == 0


@pytest.mark.parametrize("call, match", [
    (lambda: noise_correlations(np.zeros((10, 2, 1))), "at least 2 units"),
    (lambda: noise_correlations(np.random.rand(10, 2, 3), center="trial"), "center"),
    (lambda: noise_correlations(np.ones((10, 2, 3))), "zero variance"),
    (lambda: poisson_counts(np.ones((10, 2)), 0.01, 0.001), "shorter than one record"),
    (lambda: poisson_counts(np.ones((10, 2)), 0.01, 1.0), "longer than the trace"),
    (lambda: poisson_counts(np.ones((10, 2)), 0.01, 0.05, gain=-1), "gain"),
    (lambda: spike_count_fano(np.ones((10, 2)), 0.01, 0.1), "at least 2 entries"),
    (lambda: poisson_fano_theory(0.0, -1.0, 1.0, 1.0), "sigma"),
])
def test_bad_input_is_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
