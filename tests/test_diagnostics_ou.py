"""Exact OU theory (circuits.diagnostics.ou) against closed forms, quadrature, and the estimators on simulations."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from circuits.analysis import (
    ar1_integrated_autocorr_time, ar1_lagged_cov, ar1_stationary_cov, autocorrelation, ess_summary,
    euler_maruyama_ar1, euler_maruyama_stationary, integrated_autocorr_time, linear_circuit_matrices,
    linear_sde_stationary, ou_autocorrelation, ou_exact_ar1, ou_integrated_autocorr_time, ou_lagged_cov,
    ou_stationary_cov, ou_transient,
)
from helpers_diagnostics import simulate_ar1

A_NONNORMAL = np.array([[-1.0, 2.5], [-0.4, -3.0]])
B_2D = np.array([[1.0, 0.0], [0.3, 0.8]])


def test_scalar_ou_closed_forms():
    tau, s2 = 0.3, 2.0                                  # dx = -x/tau dt + sqrt(2 s2 / tau) dW: var s2, rho = e^{-t/tau}
    A, B = np.array([[-1 / tau]]), np.array([[np.sqrt(2 * s2 / tau)]])
    t = np.array([0.0, 0.1, 0.5, -0.5])
    assert np.allclose(ou_lagged_cov(A, B, t)[:, 0, 0], s2 * np.exp(-np.abs(t) / tau))
    assert np.allclose(ou_autocorrelation(A, B, t)[:, 0], np.exp(-np.abs(t) / tau))
    assert np.isclose(ou_integrated_autocorr_time(A, B)[0], 2 * tau)
    delta = 0.05
    q = np.exp(-delta / tau)
    assert np.isclose(ou_integrated_autocorr_time(A, B, dt_record=delta)[0], (1 + q) / (1 - q))


def test_lagged_cov_is_expm_sigma_and_transposes_for_negative_lags():
    sigma = ou_stationary_cov(A_NONNORMAL, B_2D)
    assert np.allclose(sigma, linear_sde_stationary(A_NONNORMAL, B_2D)[1])
    C = ou_lagged_cov(A_NONNORMAL, B_2D, [0.7, -0.7])
    assert np.allclose(C[0], scipy.linalg.expm(0.7 * A_NONNORMAL) @ sigma)
    assert np.allclose(C[1], C[0].T)
    assert not np.allclose(C[0], C[0].T)                  # non-normal, irreversible: a check with teeth


@pytest.mark.parametrize("v", [[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])
def test_integrated_time_equals_quadrature_of_rho(v):
    rho = lambda s: ou_autocorrelation(A_NONNORMAL, B_2D, [s], projection=v)[0, 0]  # noqa: E731
    integral, _ = scipy.integrate.quad(rho, 0, 40, limit=200)
    assert np.isclose(ou_integrated_autocorr_time(A_NONNORMAL, B_2D, projection=v)[0], 2 * integral, rtol=1e-7)


def test_sampled_time_tends_to_continuous_and_equals_brute_sum():
    F, Q = ou_exact_ar1(A_NONNORMAL, B_2D, 0.02)
    C = ar1_lagged_cov(F, Q, 4000)
    rho = C[:, 0, 0] / C[0, 0, 0]
    assert np.isclose(ar1_integrated_autocorr_time(F, Q, [1.0, 0.0])[0], 1 + 2 * rho[1:].sum(), rtol=1e-9)
    cont = ou_integrated_autocorr_time(A_NONNORMAL, B_2D)
    for dt in (1e-2, 1e-3):
        assert np.allclose(ou_integrated_autocorr_time(A_NONNORMAL, B_2D, dt_record=dt) * dt, cont, rtol=5 * dt)


def test_euler_maruyama_ar1_matches_em_stationary_and_composes():
    A, c, B = linear_circuit_matrices(np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]]), np.zeros(3), np.zeros(3),
                                      sigma_x=0.7, prior_std=1.0, tau_z=1.0, tau_e=0.2)
    F1, Q1 = euler_maruyama_ar1(A, B, 0.01)
    F3, Q3 = euler_maruyama_ar1(A, B, 0.01, record_every=3)
    assert np.allclose(F3, np.linalg.matrix_power(F1, 3))
    assert np.allclose(Q3, F1 @ (F1 @ Q1 @ F1.T + Q1) @ F1.T + Q1)
    em = euler_maruyama_stationary(A, B, 0.01)[1]
    assert np.allclose(ar1_stationary_cov(F1, Q1), em) and np.allclose(ar1_stationary_cov(F3, Q3), em)


def test_estimators_agree_with_theory_on_a_simulated_linear_circuit():
    """integrated_autocorr_time and autocorrelation on the EM chain of a linear circuit (adiabatic error units)
    vs the exact AR(1) theory, within Monte Carlo error (Madras-Sokal se; across-chain se for rho)."""
    W = np.array([[1.2, 0.3], [-0.4, 0.9], [0.5, 0.5]])
    A, _, B = linear_circuit_matrices(W, np.zeros(3), np.zeros(3), sigma_x=0.8, prior_std=1.0, tau_z=1.0, tau_e=0.0)
    F, Q = euler_maruyama_ar1(A, B, dt=0.02, record_every=5)
    V = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, -0.6]])
    x = simulate_ar1(F, Q, R=6000, chains=24, seed=3) @ V.T          # (R, chains, 3 projections)
    theory = ar1_integrated_autocorr_time(F, Q, V)
    res = ess_summary(x, chain_axis=1)
    assert res["reliable"]
    assert np.all(np.abs(res["tau"] - theory) < 4 * res["tau_se"] + 0.02 * theory), (res["tau"], theory)
    assert np.allclose(integrated_autocorr_time(x, chain_axis=1), res["tau"])
    rho = autocorrelation(x, max_lag=8)                                # (9, chains, 3)
    C = ar1_lagged_cov(F, Q, 8)
    rho_theory = np.einsum("kn,lnm,km->lk", V, C, V) / np.einsum("kn,nm,km->k", V, C[0], V)
    se = rho.std(1, ddof=1) / np.sqrt(x.shape[1])
    assert np.all(np.abs(rho.mean(1) - rho_theory) < 4 * se[:, :] + 1e-3 + 10 / x.shape[0])


def test_transient_matches_simulation_and_ends_stationary():
    A, B = A_NONNORMAL, B_2D
    c = np.array([1.0, -0.5])
    m0, S0 = np.array([2.0, 1.0]), np.diag([0.5, 0.1])
    means, covs = ou_transient(A, B, [0.0, 0.3, 50.0], m0, S0, c)
    assert np.allclose(means[0], m0) and np.allclose(covs[0], S0)
    assert np.allclose(means[2], -np.linalg.solve(A, c)) and np.allclose(covs[2], ou_stationary_cov(A, B))
    # exact simulation of the affine OU to t = 0.3: x' = F x + (I - F) mu + n
    F, Q = ou_exact_ar1(A, B, 0.3)
    rng = np.random.default_rng(0)
    S = 40000
    x0 = m0 + rng.standard_normal((S, 2)) @ np.linalg.cholesky(S0).T
    mu = -np.linalg.solve(A, c)
    x1 = x0 @ F.T + (np.eye(2) - F) @ mu + rng.standard_normal((S, 2)) @ np.linalg.cholesky(Q).T
    assert np.all(np.abs(x1.mean(0) - means[1]) < 4 * np.sqrt(np.diag(covs[1]) / S))
    assert np.allclose(np.cov(x1, rowvar=False), covs[1], atol=4 * np.sqrt(2 / S) * np.max(covs[1]))


@pytest.mark.parametrize("call, match", [
    (lambda: ou_stationary_cov(np.array([[0.5]]), np.eye(1)), "not stable"),
    (lambda: ou_lagged_cov(-np.eye(2), np.eye(3), [0.0]), "B must have shape"),
    (lambda: ou_autocorrelation(-np.eye(2), np.eye(2), [0.0], projection=[1.0, 0, 0]), "projection"),
    (lambda: ou_integrated_autocorr_time(-np.eye(2), np.eye(2), dt_record=0), "dt"),
    (lambda: euler_maruyama_ar1(-np.eye(2), np.eye(2), 0.1, record_every=0), "record_every"),
    (lambda: ar1_stationary_cov(np.eye(2) * 1.1, np.eye(2)), "spectral radius"),
    (lambda: ou_transient(-np.eye(2), np.eye(2), [-1.0], np.zeros(2)), "times"),
    (lambda: ou_transient(-np.eye(2), np.eye(2), [1.0], np.zeros(3)), "m0"),
])
def test_bad_input_is_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
