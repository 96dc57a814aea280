"""The linear circuit against closed forms (circuits.theory, neuro_lpc.theory).

The Euler-Maruyama chain has a stationary law given by a discrete Lyapunov equation (the SDE by a continuous one),
and EM has weak order 1.  (That every kernel gives the same chain: tests/test_kernels.py.)
"""
import numpy as np
import pytest
import scipy.linalg
import torch

from circuits import Circuit, CircuitConfig
from circuits.analysis import (euler_maruyama_stationary, gaussian_posterior, linear_circuit_matrices,
                               linear_sde_stationary, ula_stationary_eigen)
from problems import F64, Wbx, assert_moments, linear_model, max_z_cov, stationary_samples


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------- linear-Gaussian theory ----

@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_linear_circuit_stationary_law_matches_discrete_lyapunov(form):
    """Finite tau_e: (z, eps) of 4000 chains match the EM chain's discrete Lyapunov solution, and the
    (clearly different) continuous solution is rejected at this coarse dt."""
    model, x1 = linear_model(3, 5, 0.5, seed=6)
    W, b, x = Wbx(model, x1)
    tau_z, tau_e = 1e-2, 2e-3
    dt = 0.25 * tau_e  # coarse: the EM bias is large
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e, 1.0, form)
    mean_em, cov_em = euler_maruyama_stationary(A, Bm, dt, c)
    mean_ct, cov_ct = linear_sde_stationary(A, Bm, c)
    circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, error_form=form))
    X = stationary_samples(circuit, x1, 4000, A, dt)
    assert_moments(X, mean_em, cov_em)
    assert max_z_cov(X, cov_ct) > 6  # the test has the power to see the O(dt) bias
    # the posterior mean is exact for any tau_e; the z covariance is not the posterior's
    post_mean, post_cov, _ = gaussian_posterior(W, b, x, 0.5)
    np.testing.assert_allclose(mean_ct[:3], post_mean, atol=1e-10)


def test_linear_circuit_small_dt_approaches_continuous_lyapunov():
    model, x1 = linear_model(3, 5, 0.5, seed=7)
    W, b, x = Wbx(model, x1)
    tau_z, tau_e, dt = 1e-2, 2e-3, 4e-5
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e)
    mean_ct, cov_ct = linear_sde_stationary(A, Bm, c)
    circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e))
    X = stationary_samples(circuit, x1, 4000, A, dt, records=6)
    assert_moments(X, mean_ct, cov_ct)
    # finite tau_e: the z-marginal is not the posterior (closed form, then seen in the samples)
    _, post_cov, _ = gaussian_posterior(W, b, x, 0.5)
    assert np.abs(cov_ct[:3, :3] - post_cov).max() > 0.05 * np.abs(post_cov).max()


def test_adiabatic_T1_samples_the_exact_posterior():
    """tau_e = 0: the stationary law is ULA's (discrete Lyapunov), which tends to the posterior as dt -> 0."""
    model, x1 = linear_model(3, 8, 0.5, seed=8)
    W, b, x = Wbx(model, x1)
    mean, cov, P = gaussian_posterior(W, b, x, 0.5)
    tau_z = 1e-2
    lam_max = np.linalg.eigvalsh(P).max()
    g = torch.Generator().manual_seed(0)
    L = torch.linalg.cholesky(torch.as_tensor(cov))
    z0 = torch.as_tensor(mean) + torch.randn(4000, 3, generator=g, dtype=F64) @ L.T  # start in the posterior
    for frac, power in ((0.8, True), (0.02, False)):
        gamma = frac / lam_max
        circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0))
        A = -P / tau_z
        Z = stationary_samples(circuit, x1, 4000, A, gamma * tau_z, records=6, record_eps=False, z0=z0, burn=2,
                               spacing=2)
        _, cov_ula = ula_stationary_eigen(P, mean, gamma)
        assert_moments(Z, mean, cov_ula)
        if power:
            assert max_z_cov(Z, cov) > 6  # the ULA step bias is visible at gamma lam_max = 0.8
        else:
            assert_moments(Z, mean, cov)  # and negligible at 0.02


def test_heterogeneous_time_constants_match_their_lyapunov_solution():
    """Per-unit tau (mismatch model): the drift is D^-1 M; EM's discrete Lyapunov solution holds."""
    model, x1 = linear_model(3, 5, 0.5, seed=9)
    W, b, x = Wbx(model, x1)
    cfg = CircuitConfig(dt=5e-4, tau_z=1e-2, tau_e=2e-3, timescales={"name": "mismatch", "sigma": 0.2}, seed=3)
    circuit = Circuit(model, cfg)
    tz = circuit.timescales.tau_z.numpy()
    te = circuit.timescales.tau_e.numpy()
    assert np.std(np.concatenate([tz / 1e-2, te / 2e-3])) > 0.05
    Wn, bn, xn = (t.numpy() for t in (W, b, x))
    M = np.block([[-np.eye(3), Wn.T], [-Wn / 0.25, -np.eye(5)]])
    tau = np.concatenate([tz, te])
    A = M / tau[:, None]
    c = np.concatenate([np.zeros(3), (xn - bn) / 0.25]) / tau
    Bm = np.concatenate([np.diag(np.sqrt(2 / tz)), np.zeros((5, 3))], 0)
    mean_em, cov_em = euler_maruyama_stationary(A, Bm, cfg.dt, c)
    X = stationary_samples(circuit, x1, 4000, A, cfg.dt)
    assert_moments(X, mean_em, cov_em)


def _exact_linear_mean(A, c, X0, t):
    Xs = -np.linalg.solve(A, c)
    return scipy.linalg.expm(A * t) @ (X0 - Xs) + Xs


def test_weak_error_is_first_order_in_dt():
    """log-log slope ~1 of (a) E[z(t_end)] from a deterministic start (EM vs the exact expm solution; by
    linearity E[z] is the noise-free trajectory) and (b) the stationary covariance (Lyapunov closed forms)."""
    model, x1 = linear_model(3, 5, 0.5, seed=10)
    W, b, x = Wbx(model, x1)
    tau_z, tau_e, t_end = 1e-2, 2e-3, 0.02
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e)
    z0 = torch.tensor([[1.0, -0.5, 0.3]], dtype=F64)
    with torch.no_grad():
        eps0 = model.error(x1, model.decoder(z0))
    X0 = torch.cat([z0, eps0], 1)[0].numpy()
    exact = _exact_linear_mean(A, c, X0, t_end)[:3]
    dts = [t_end / k for k in (200, 400, 800, 1600)]  # dt / tau_e from 0.05 down: the asymptotic regime
    errs = []
    for dt in dts:
        circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise="none"))
        traj = circuit.simulate(x1, z0, steps=round(t_end / dt), record_every=round(t_end / dt))
        errs.append(np.abs(traj.z[-1, 0].numpy() - exact).max())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1, (errs, slope)
    _, cov_ct = linear_sde_stationary(A, Bm, c)
    vdts = [1e-4, 5e-5, 2.5e-5, 1.25e-5]
    verr = [np.abs(euler_maruyama_stationary(A, Bm, dt, c)[1] - cov_ct).max() for dt in vdts]
    slope_v = np.polyfit(np.log(vdts), np.log(verr), 1)[0]
    assert 0.9 < slope_v < 1.1, (verr, slope_v)
