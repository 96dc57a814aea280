"""Tests of circuits.analysis against closed forms, independent oracles and Monte Carlo."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from circuits.analysis import (
    across_chain_spread, autocorrelation, effective_sample_size, ess_per_unit_time, ess_summary,
    euler_maruyama_stationary, fano_factor, gaussian_posterior, integrated_autocorr_time,
    linear_circuit_matrices, linear_circuit_z_stationary, linear_sde_stationary, pca_landscape_grid,
    pca_projection, split_rhat, time_to_typical_set, ula_stationary, ula_stationary_eigen,
)


def random_model(seed: int = 0, n: int = 3, d: int = 2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=n)


def random_spd(d: int, seed: int) -> np.ndarray:
    M = np.random.default_rng(seed).normal(size=(d, d))
    return M @ M.T + 0.5 * np.eye(d)


def random_stable_drift(N: int, seed: int) -> np.ndarray:
    """A non-normal stable matrix: -(SPD) plus a skew part."""
    rng = np.random.default_rng(seed)
    M, S = rng.normal(size=(N, N)), rng.normal(size=(N, N))
    return -(M @ M.T / N + 0.5 * np.eye(N)) + 0.7 * (S - S.T)


def kron_continuous_lyapunov(A, Q):
    """Oracle: vec(A C + C A^T) = (I kron A + A kron I) vec(C) = -vec(Q), solved densely."""
    N = A.shape[0]
    K = np.kron(np.eye(N), A) + np.kron(A, np.eye(N))
    return np.linalg.solve(K, -Q.reshape(-1)).reshape(N, N)


def kron_discrete_lyapunov(F, Q):
    """Oracle: vec(C - F C F^T) = (I - F kron F) vec(C) = vec(Q)."""
    N = F.shape[0]
    return np.linalg.solve(np.eye(N * N) - np.kron(F, F), Q.reshape(-1)).reshape(N, N)


# ====================================================================== theory ====

def test_gaussian_posterior_matches_joint_gaussian_conditioning():
    rng = np.random.default_rng(1)
    n, d, sigma_x, s_p = 5, 3, 0.7, 1.3
    W, b, x = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(4, n))
    mean, cov, precision = gaussian_posterior(W, b, x, sigma_x, s_p)
    # joint of (z, x): Cov z = s_p^2 I, Cov(z, x) = s_p^2 W^T, Cov x = s_p^2 W W^T + sigma_x^2 I
    S_zx = s_p ** 2 * W.T
    S_xx = s_p ** 2 * W @ W.T + sigma_x ** 2 * np.eye(n)
    expected_cov = s_p ** 2 * np.eye(d) - S_zx @ np.linalg.solve(S_xx, S_zx.T)
    expected_mean = (S_zx @ np.linalg.solve(S_xx, (x - b).T)).T
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(precision @ cov, np.eye(d), atol=1e-10)
    single_mean, _, _ = gaussian_posterior(torch.tensor(W), b, x[0], sigma_x, s_p)  # torch in, (n,) x
    np.testing.assert_allclose(single_mean, expected_mean[0], rtol=1e-10)
    with pytest.raises(ValueError, match="x must have shape"):
        gaussian_posterior(W, b, x[:, :4], sigma_x, s_p)


def test_ula_eigen_form_equals_lyapunov_form_and_oracle():
    P = random_spd(4, seed=2)
    lam_max = np.linalg.eigvalsh(P)[-1]
    mu = np.arange(4.0)
    for gamma in (0.05 / lam_max, 1.0 / lam_max, 1.9 / lam_max):
        mean_l, cov_l = ula_stationary(P, mu, gamma)
        mean_e, cov_e = ula_stationary_eigen(P, mu, gamma)
        F = np.eye(4) - gamma * P
        np.testing.assert_allclose(cov_l, cov_e, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cov_l, kron_discrete_lyapunov(F, 2 * gamma * np.eye(4)), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(mean_l, mu)
        np.testing.assert_array_equal(mean_e, mu)


def test_preconditioned_ula_matches_the_whitened_chain():
    """With y = G^-1/2 z, preconditioned ULA on precision P is plain ULA on G^1/2 P G^1/2."""
    P = random_spd(3, seed=3)
    g = np.array([0.3, 1.0, 2.5])
    Pg = np.sqrt(g)[:, None] * P * np.sqrt(g)[None, :]
    gamma = 1.2 / np.linalg.eigvalsh(Pg)[-1]
    _, cov_y = ula_stationary_eigen(Pg, np.zeros(3), gamma)
    _, cov_z = ula_stationary(P, np.zeros(3), gamma, G=g)
    np.testing.assert_allclose(cov_z, np.sqrt(g)[:, None] * cov_y * np.sqrt(g)[None, :], rtol=1e-9)
    _, cov_diag = ula_stationary(P, np.zeros(3), gamma, G=np.diag(g))
    np.testing.assert_allclose(cov_diag, cov_z, rtol=1e-12)


def test_ula_bias_vanishes_linearly_with_the_step():
    P = random_spd(3, seed=4)
    target = np.linalg.inv(P)
    lam_max = np.linalg.eigvalsh(P)[-1]
    errors = [np.linalg.norm(ula_stationary(P, np.zeros(3), h / lam_max)[1] - target) for h in (0.1, 0.05, 0.025)]
    assert 1.8 < errors[0] / errors[1] < 2.2 and 1.8 < errors[1] / errors[2] < 2.2


def test_unstable_steps_are_rejected_naming_the_stable_bound():
    P = np.diag([1.0, 4.0])
    with pytest.raises(ValueError, match=r"step_size < 0\.5 "):
        ula_stationary(P, np.zeros(2), 0.6)
    with pytest.raises(ValueError, match=r"step_size < 0\.5 "):
        ula_stationary_eigen(P, np.zeros(2), 0.6)
    # eigenvalues -1 +- 5i: |1 + dt mu|^2 < 1  <=>  dt < 2 / 26
    A = np.array([[-1.0, 5.0], [-5.0, -1.0]])
    with pytest.raises(ValueError, match=r"dt < 0\.07692"):
        euler_maruyama_stationary(A, np.eye(2), 0.08)
    euler_maruyama_stationary(A, np.eye(2), 0.076)
    with pytest.raises(ValueError, match="not stable"):
        linear_sde_stationary(-A.T @ A * 0 + np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="no step is stable"):
        euler_maruyama_stationary(np.diag([-1.0, 0.1]), np.eye(2), 0.01)


def test_linear_sde_stationary_matches_kronecker_oracle_and_affine_mean():
    A = random_stable_drift(4, seed=5)
    B = np.random.default_rng(6).normal(size=(4, 2))
    c = np.random.default_rng(7).normal(size=(3, 4))
    mean, cov = linear_sde_stationary(A, B, c)
    np.testing.assert_allclose(cov, kron_continuous_lyapunov(A, B @ B.T), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mean @ A.T + c, 0, atol=1e-12)  # drift vanishes at the mean
    dt = 0.05
    mean_em, cov_em = euler_maruyama_stationary(A, B, dt, c)
    np.testing.assert_allclose(cov_em, kron_discrete_lyapunov(np.eye(4) + dt * A, dt * B @ B.T), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mean_em, mean, atol=1e-12)


def test_discrete_lyapunov_tends_to_continuous_linearly_in_dt():
    A = random_stable_drift(4, seed=8)
    B = np.random.default_rng(9).normal(size=(4, 4))
    _, cov = linear_sde_stationary(A, B)
    dts = [0.04, 0.02, 0.01, 0.005]
    errors = [np.linalg.norm(euler_maruyama_stationary(A, B, dt)[1] - cov) / np.linalg.norm(cov) for dt in dts]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 1.8) & (ratios < 2.2)), ratios
    assert errors[-1] < 0.02


# ============================================================== circuit theory ====

@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_adiabatic_circuit_is_the_exact_posterior_at_temperature(form):
    W, b, x = random_model(10)
    mu, cov, _ = gaussian_posterior(W, b, x, 0.5, 1.2)
    for T in (1.0, 2.0):
        mean_z, cov_z = linear_circuit_z_stationary(W, b, x, 0.5, 1.2, tau_z=0.7, tau_e=0.0, temperature=T, form=form)
        np.testing.assert_allclose(mean_z, mu, rtol=1e-10)
        np.testing.assert_allclose(cov_z, T * cov, rtol=1e-10)


@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_circuit_z_marginal_tends_to_the_posterior_as_tau_e_vanishes(form):
    W, b, x = random_model(11)
    mu, cov, _ = gaussian_posterior(W, b, x, 0.5, 1.0)
    errors = []
    for tau_e in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        mean_z, cov_z = linear_circuit_z_stationary(W, b, x, 0.5, 1.0, tau_z=1.0, tau_e=tau_e, form=form)
        np.testing.assert_allclose(mean_z, mu, rtol=1e-8)  # the mean is exact at every tau_e
        errors.append(np.linalg.norm(cov_z - cov) / np.linalg.norm(cov))
    assert all(e1 < e0 for e0, e1 in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3
    assert 5 < errors[-2] / errors[-1] < 20  # O(tau_e)


def test_finite_tau_e_inflates_the_z_covariance():
    W, b, x = random_model(12)
    mu, cov, _ = gaussian_posterior(W, b, x, 0.5, 1.0)
    mean_z, cov_z = linear_circuit_z_stationary(W, b, x, 0.5, 1.0, tau_z=1.0, tau_e=0.3)
    np.testing.assert_allclose(mean_z, mu, rtol=1e-10)
    assert np.linalg.norm(cov_z - cov) / np.linalg.norm(cov) > 0.2
    assert np.linalg.eigvalsh(cov_z - cov)[0] > 0  # over-dispersed in every direction here


@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_scalar_circuit_variance_matches_closed_form(form):
    """d = n = 1: var z = (T / P) (1 + tau' w^2 / (sigma^2 (tau_z + tau' / s_p^2))), tau' = tau_e (error)
    or tau_e / sigma^2 (bogacz: the leak sigma^2 shortens the error unit's time constant)."""
    for w, sigma, s_p, tau_z, tau_e, T in [(1.0, 1.0, 1.0, 1.0, 0.1, 1.0), (2.0, 0.5, 1.5, 0.3, 0.7, 2.0),
                                           (-0.4, 2.0, 0.8, 2.0, 5.0, 0.5)]:
        tau = tau_e if form == "error" else tau_e / sigma ** 2
        P = w ** 2 / sigma ** 2 + 1 / s_p ** 2
        expected = T / P * (1 + tau * w ** 2 / (sigma ** 2 * (tau_z + tau / s_p ** 2)))
        _, var = linear_circuit_z_stationary([[w]], [0.1], [0.7], sigma, s_p, tau_z, tau_e, T, form)
        np.testing.assert_allclose(var[0, 0], expected, rtol=1e-10)


def test_circuit_matrices_shapes_and_drift_fixed_point():
    W, b, x = random_model(13, n=4, d=2)
    A, c, B = linear_circuit_matrices(W, b, np.stack([x, 2 * x]), 0.5, 1.0, 1.0, 0.2, 1.5)
    assert A.shape == (6, 6) and c.shape == (2, 6) and B.shape == (6, 2)
    np.testing.assert_allclose(B @ B.T, np.diag([3.0, 3.0, 0, 0, 0, 0]))
    mean = -np.linalg.solve(A, c[0])
    mu, _, _ = gaussian_posterior(W, b, x, 0.5, 1.0)
    np.testing.assert_allclose(mean[:2], mu, rtol=1e-10)
    np.testing.assert_allclose(mean[2:], (x - W @ mu - b) / 0.25, rtol=1e-10)  # eps* = precision-weighted error
    with pytest.raises(ValueError, match="form"):
        linear_circuit_matrices(W, b, x, 0.5, 1.0, 1.0, 0.2, form="other")


def test_euler_maruyama_circuit_covariance_matches_direct_simulation():
    W, b, x = random_model(14)
    A, c, B = linear_circuit_matrices(W, b, x, sigma_x=1.0, prior_std=1.0, tau_z=1.0, tau_e=0.3)
    dt, chains = 0.04, 20_000  # stable below dt = 0.097 (complex eigenvalues: the loop oscillates)
    mean_em, cov_em = euler_maruyama_stationary(A, B, dt, c)
    _, cov_ct = linear_sde_stationary(A, B, c)
    F = np.eye(A.shape[0]) + dt * A
    rho = np.max(np.abs(np.linalg.eigvals(F)))
    burn_in = int(np.ceil(np.log(1e-4) / np.log(rho)))
    rng = np.random.default_rng(15)
    X = np.zeros((chains, A.shape[0]))
    for _ in range(burn_in):
        X = X @ F.T + dt * c + np.sqrt(dt) * rng.standard_normal((chains, B.shape[1])) @ B.T
    mean_mc, cov_mc = X.mean(0), np.cov(X, rowvar=False)
    var = np.diag(cov_em)
    cov_se = np.sqrt((np.outer(var, var) + cov_em ** 2) / chains)
    np.testing.assert_array_less(np.abs(cov_mc - cov_em), 4.5 * cov_se)
    np.testing.assert_array_less(np.abs(mean_mc - mean_em), 4.5 * np.sqrt(var / chains))
    # the test can tell the EM chain from the SDE: their z-covariances differ by more than MC error
    assert np.max(np.abs(cov_ct - cov_em)[:2, :2] / cov_se[:2, :2]) > 10


# ================================================================= diagnostics ====

def ar1(a: float, R: int, chains: int, seed: int) -> np.ndarray:
    """Stationary AR(1) x_t = a x_{t-1} + sqrt(1 - a^2) n_t, unit variance, shape (R, chains)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((R, chains))
    x_prev = rng.standard_normal((1, chains))
    return scipy.signal.lfilter([np.sqrt(1 - a ** 2)], [1, -a], noise, axis=0, zi=a * x_prev)[0]


def test_autocorrelation_fft_matches_direct_sum():
    x = np.random.default_rng(16).standard_normal((50, 3, 2)).cumsum(0)
    rho = autocorrelation(x, max_lag=20)
    xc = x - x.mean(0)
    direct = np.stack([(xc[: 50 - k] * xc[k:]).sum(0) for k in range(21)]) / (xc ** 2).sum(0)
    np.testing.assert_allclose(rho, direct, rtol=1e-10, atol=1e-12)
    rho_t = autocorrelation(torch.tensor(x), max_lag=20)
    assert isinstance(rho_t, torch.Tensor) and torch.allclose(rho_t, torch.tensor(direct), atol=1e-12)


def test_ar1_autocorrelation_and_integrated_time_match_closed_form():
    a, R, chains = 0.8, 20_000, 32
    x = ar1(a, R, chains, seed=17)
    rho = autocorrelation(x, max_lag=10).mean(1)
    np.testing.assert_allclose(rho, a ** np.arange(11), atol=0.015)
    tau_true = (1 + a) / (1 - a)
    taus = integrated_autocorr_time(x)
    assert taus.shape == (chains,)
    se = taus.std(ddof=1) / np.sqrt(chains)
    assert abs(taus.mean() - tau_true) < 4 * se + 0.01 * tau_true, (taus.mean(), se)
    pooled = integrated_autocorr_time(x, chain_axis=1)
    assert abs(pooled - tau_true) < 0.05 * tau_true
    np.testing.assert_allclose(effective_sample_size(x), R / taus)
    np.testing.assert_allclose(effective_sample_size(x, chain_axis=1), chains * R / pooled)
    np.testing.assert_allclose(ess_per_unit_time(x, dt_record=0.1), 1 / (taus * 0.1))


def test_ess_of_iid_normal_is_the_number_of_samples():
    R, chains = 4000, 64
    x = torch.randn(R, chains, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    ess = effective_sample_size(x)
    assert isinstance(ess, torch.Tensor) and ess.shape == (chains,)
    assert abs(float(ess.mean()) / R - 1) < 0.05


def test_short_chain_warns_that_the_window_is_too_short():
    with pytest.warns(RuntimeWarning, match="shorter than"):
        integrated_autocorr_time(np.linspace(0, 1, 100)[:, None] + 0.01 * np.random.default_rng(19).standard_normal((100, 2)))


def test_ess_summary_on_a_long_ar1_is_reliable_and_its_tau_se_is_calibrated():
    """AR(1) with a = 0.8: tau = (1 + a) / (1 - a) = 9.  R = 20 000 >> 50 tau: reliable; the per-chain
    estimates scatter around the truth by their Madras-Sokal standard error."""
    a, R, chains = 0.8, 20_000, 64
    tau_true = (1 + a) / (1 - a)
    x = ar1(a, R, chains, seed=31)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ess_summary(x, dt_record=0.1)
    assert s["reliable"] is True and s["reason"] is None and s["reliable_series"].all()
    np.testing.assert_allclose(s["tau"], integrated_autocorr_time(x))
    np.testing.assert_allclose(s["ess"], R / s["tau"])
    np.testing.assert_allclose(s["ess_per_unit_time"], 1 / (s["tau"] * 0.1))
    np.testing.assert_allclose(s["ess_se"] / s["ess"], s["tau_se"] / s["tau"])
    np.testing.assert_allclose(s["records_per_tau"], R / s["tau"])
    z = (s["tau"] - tau_true) / s["tau_se"]
    assert abs(z.mean()) < 4 / np.sqrt(chains)                  # unbiased at this length
    assert 0.75 < z.std(ddof=1) < 1.35                           # the SE matches the actual scatter
    assert np.mean(np.abs(z) < 2) > 0.85
    pooled = ess_summary(x, chain_axis=1)                        # 64 chains pooled: an 8x smaller SE
    assert pooled["tau"].shape == () and pooled["reliable"]
    assert abs(pooled["tau"] - tau_true) < 3 * pooled["tau_se"]
    np.testing.assert_allclose(pooled["tau_se"], pooled["tau"] * np.sqrt(2 * (2 * pooled["window"] + 1) / (R * chains)))


def test_ess_summary_flags_a_short_ar1_as_unreliable():
    """a = 0.95 (tau = 39) recorded 200 times (~100 records in the study): 5 records per tau, not 50."""
    x = ar1(0.95, 200, 8, seed=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # a verdict, not a warning
        s = ess_summary(torch.tensor(x))
    assert s["reliable"] is False and not s["reliable_series"].any()
    assert isinstance(s["tau"], torch.Tensor) and s["tau"].shape == (8,)
    assert "8 of 8 series unreliable" in s["reason"] and "records per autocorrelation time" in s["reason"]
    assert (s["records_per_tau"] < 50).all()
    assert (s["tau"] < 39).all()                                 # underestimated, as the rule warns
    constant = ess_summary(np.ones((100, 1)))
    assert not constant["reliable"] and "no finite positive tau" in constant["reason"]


def test_split_rhat_is_one_for_mixed_chains_and_large_otherwise():
    rng = np.random.default_rng(20)
    iid = rng.standard_normal((2001, 8, 3))
    rhat = split_rhat(iid)
    assert rhat.shape == (3,) and np.all(np.abs(rhat - 1) < 0.01)
    shifted = iid + np.array([0, 0, 0, 0, 1, 1, 1, 1])[None, :, None]
    assert np.all(split_rhat(shifted) > 1.1)
    drifting = iid[:, :1] + np.linspace(0, 3, 2001)[:, None, None]  # one chain, non-stationary
    assert np.all(split_rhat(drifting) > 1.1)
    # chains with means 0 and 1 plus unit noise: four half-sequences with means (0, 0, 1, 1), so
    # B/n = var(means, ddof=1) = 1/3, W = 1 and R-hat = sqrt((n - 1)/n + 1/3) with n = 1000 (MC error
    # ~0.01; without the split the two chains would give sqrt(1 + 1/2) = 1.22)
    np.testing.assert_allclose(split_rhat(shifted[:, 3:5]), np.sqrt(999 / 1000 + 1 / 3), atol=0.03)


def test_time_to_typical_set_finds_the_step_into_stationarity():
    R, chains = 400, 5
    t = np.arange(R) * 0.1
    rng = np.random.default_rng(21)
    stationary = np.clip(rng.standard_normal((R, chains)), -1.5, 1.5)  # always inside +- 2 std (std ~ 0.86)
    entry = np.array([0, 10, 50, 120, 199])
    trace = np.where(np.arange(R)[:, None] < entry[None, :], -100.0, stationary)
    np.testing.assert_allclose(time_to_typical_set(trace, t), t[entry])
    with pytest.raises(ValueError, match="t must have shape"):
        time_to_typical_set(trace, t[:-1])


def test_fano_factor_of_poisson_and_scaled_poisson():
    counts = torch.poisson(torch.full((5000, 4), 7.0), generator=torch.Generator().manual_seed(22))
    fano = fano_factor(counts)
    assert torch.all((fano - 1).abs() < 0.08)
    assert np.all(np.abs(fano_factor(3 * counts.numpy(), axis=0) - 3) < 0.25)


def test_across_chain_spread_recovers_the_known_std():
    R, chains = 6, 4000
    stds = np.array([[2.0, 1.0, 0.5]]) * np.linspace(1, 0.2, R)[:, None]  # (R, d), quenching over time
    z = np.random.default_rng(23).standard_normal((R, chains, 3)) * stds[:, None, :] + 5.0
    np.testing.assert_allclose(across_chain_spread(z), stds.mean(1), rtol=0.03)


def test_pca_of_a_straight_line_puts_all_variance_on_pc1():
    R, chains, d = 30, 4, 6
    rng = np.random.default_rng(24)
    start, velocity = rng.normal(size=(chains, d)), rng.normal(size=(chains, d))
    z = start[None] + np.arange(R)[:, None, None] * velocity[None]
    proj = pca_projection(z)
    assert proj.coords.shape == (R, chains, 2) and proj.directions.shape == (chains, 2, d)
    np.testing.assert_allclose(proj.explained_variance[:, 0], 1.0, atol=1e-12)
    speed = np.linalg.norm(velocity, axis=1)
    np.testing.assert_allclose(np.abs(np.einsum("bd,bd->b", proj.directions[:, 0], velocity)), speed, rtol=1e-10)
    np.testing.assert_allclose(proj.coords[..., 0], (R - 1 - np.arange(R))[:, None] * speed[None], rtol=1e-10)
    np.testing.assert_allclose(proj.coords[..., 1], 0, atol=1e-9)
    np.testing.assert_allclose(proj.final_state, z[-1])


def test_pca_of_a_random_walk_matches_eigendecomposition_per_chain():
    z = np.random.default_rng(25).standard_normal((200, 3, 5)).cumsum(0) * np.array([3, 2, 1, 0.5, 0.2])
    proj = pca_projection(torch.tensor(z))
    assert isinstance(proj.coords, torch.Tensor)
    for b in range(3):
        displacements = z[:-1, b] - z[-1, b]
        lam, U = np.linalg.eigh(np.cov(displacements, rowvar=False))
        top = U[:, ::-1][:, :2].T
        np.testing.assert_allclose(np.abs((proj.directions[b].numpy() * top).sum(1)), 1, atol=1e-8)
        np.testing.assert_allclose(proj.explained_variance[b].numpy(), lam[::-1][:2] / lam.sum(), rtol=1e-8)
        np.testing.assert_allclose(proj.directions[b].numpy() @ proj.directions[b].numpy().T, np.eye(2), atol=1e-10)
    assert torch.all(proj.coords[0] >= 0)  # sign convention: the start has non-negative coordinates
    grid, points = pca_landscape_grid(proj, resolution=7)
    offsets = points - proj.final_state[None, None]
    in_plane = torch.einsum("ijbd,bkd->ijbk", offsets, proj.directions)
    torch.testing.assert_close(in_plane[..., 0], grid[:, None, None].expand(7, 7, 3))
    torch.testing.assert_close(in_plane[..., 1], grid[None, :, None].expand(7, 7, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_diagnostics_on_cuda_agree_with_cpu():
    x = torch.from_numpy(ar1(0.6, 3000, 8, seed=26))
    z = torch.randn(50, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(27)).cumsum(0)
    t = torch.arange(50, dtype=torch.float64)
    for fn, args in [(integrated_autocorr_time, (x,)), (split_rhat, (x[:, :, None],)),
                     (across_chain_spread, (z,)), (time_to_typical_set, (z[..., 0], t))]:
        on_gpu = fn(*(a.cuda() for a in args))
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), fn(*args))
    proj_gpu, proj_cpu = pca_projection(z.cuda()), pca_projection(z)
    torch.testing.assert_close(proj_gpu.coords.cpu(), proj_cpu.coords)


def test_the_names_the_single_module_exposed_by_accident_warn_and_still_resolve():
    import typing

    import circuits.analysis as analysis
    from circuits._checks import positive

    with pytest.warns(DeprecationWarning, match="circuits.analysis._positive is deprecated; use circuits._checks.positive"):
        assert analysis._positive is positive
    for name, module in (("np", np), ("torch", torch), ("warnings", warnings)):
        with pytest.warns(DeprecationWarning, match=f"circuits.analysis.{name} is deprecated"):
            assert getattr(analysis, name) is module
    with pytest.warns(DeprecationWarning, match="circuits.analysis.NamedTuple is deprecated; use typing.NamedTuple"):
        assert analysis.NamedTuple is typing.NamedTuple
