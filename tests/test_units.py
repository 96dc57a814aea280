"""Each unit's equation (circuits.units) against closed forms and independent oracles: the settled value-unit force
is the posterior score, both error forms settle at the precision-weighted error, the gain units' bias-corrected gain
is exact for a constant drive, the linear drift matrix is the Jacobian of the circuit's nonlinear drift, and the
Euler coefficients give the OU chain its closed-form stationary variance."""
import numpy as np
import pytest
import torch

from circuits import CircuitConfig
from circuits.bound import BoundCircuit
from circuits.run import CircuitRun
from circuits import units
from neuro_lpc.theory import gaussian_posterior
from problems import F64, Wbx, linear_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _gaussian_error(x, mu, form, sigma):
    """The error units' target for a Gaussian likelihood, written from the forms' definitions."""
    return (x - mu) / sigma**2 if form == "error" else x - mu


@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_settled_value_force_is_the_score_of_the_exact_posterior(form):
    """Adiabatic error units make s = W^T eps - z / s_p^2 the posterior score -P (z - mean) (neuro_lpc.theory)."""
    sigma, prior_std = 0.5, 1.3
    model, x1 = linear_model(3, 6, sigma, seed=3)
    W, b, x = Wbx(model, x1)
    mean, _, P = gaussian_posterior(W, b, x, sigma, prior_std)
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    f = units.error_form(form, sigma)
    eps = units.settled_error(_gaussian_error(x, z @ W.T + b, form, sigma), f)
    s = units.value_score(eps @ W, z, prior_std**2)
    expected = -(z.numpy() - mean) @ P
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_error_units_relax_to_the_precision_weighted_error_at_rate_leak_over_tau(form):
    """deps/dt = (target - leak eps) / tau_e vanishes at eps* = e(x, mu) in both forms, and relaxes a deviation
    at rate leak / tau_e (1 / tau_e for "error", sigma_x^2 / tau_e for "bogacz")."""
    sigma, tau_e = 0.4, 2e-3
    f = units.error_form(form, sigma)
    x, mu = torch.randn(2, 7, dtype=F64), torch.randn(2, 7, dtype=F64)
    target = _gaussian_error(x, mu, form, sigma)
    eps_star = (x - mu) / sigma**2
    torch.testing.assert_close(units.settled_error(target, f), eps_star, rtol=1e-14, atol=1e-14)
    assert units.error_drift(target, eps_star, f.leak, tau_e).abs().max() < 1e-9
    delta = torch.randn(2, 7, dtype=F64)
    rate = -units.error_drift(target, eps_star + delta, f.leak, tau_e) / delta
    torch.testing.assert_close(rate, torch.full_like(rate, (1.0 if form == "error" else sigma**2) / tau_e))
    with pytest.raises(ValueError, match="Gaussian"):
        units.error_form("bogacz", None)


def test_gain_units_follow_their_ema_and_the_bias_correction_is_exact():
    """With a constant drive s and m_0 = 0: m_t = (1 - beta^t) s^2, so m_t / (1 - beta^t) = s^2 exactly (Adam's
    correction) and G = 1 / (|s| + delta); the cap saturates G; dm/dt = (s^2 - m) / tau_m vanishes at m = s^2."""
    beta, delta = 0.9, 1e-3
    s = torch.tensor([[0.5, -2.0, 1e-6]], dtype=F64)
    m = torch.zeros_like(s)
    for t in range(1, 31):
        units.gain_update_(m, s, beta)
        torch.testing.assert_close(m, (1 - beta**t) * s * s, rtol=1e-12, atol=0)
        G = units.gain_of(m, delta, None, 1 - beta**t)
        torch.testing.assert_close(G, 1 / (s.abs() + delta), rtol=1e-10, atol=0)
    assert float(units.gain_of(m, delta, 50.0, 1 - beta**30)[0, 2]) == 50.0     # 1 / (1e-6 + 1e-3) ~ 999 capped
    per_unit = torch.full((3,), beta, dtype=F64)                                 # a per-unit decay, the same law
    m2 = torch.zeros_like(s)
    units.gain_update_(m2, s, per_unit)
    torch.testing.assert_close(m2, (1 - beta) * s * s, rtol=1e-14, atol=0)
    assert units.gain_drift(s, s * s, 1e-2).abs().max() == 0


@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_the_linear_drift_matrix_is_the_jacobian_of_the_circuits_drift(tau_e, form):
    """units.linear_drift (what the stability bound and the theory use) against the Jacobian of the run's ODE drift
    (the kernels' forward and feedback through the decoder) by central differences -- exact up to rounding for an
    affine drift: an independent path to the same matrix."""
    sigma, prior_std, tau_z = 0.5, 1.2, 1e-2
    model, x1 = linear_model(3, 5, sigma, seed=8)
    model.prior_std = prior_std
    c = BoundCircuit(model, CircuitConfig(dt=1e-5, tau_z=tau_z, tau_e=tau_e, error_form=form))
    run = CircuitRun(c, x1, torch.zeros(1, 3, dtype=F64), torch.Generator(), kernel="linear")
    d, n = 3, 5
    N = d if tau_e == 0 else d + n

    def flow(y):
        dz, deps, _ = run.drift(y[None, :d], None if tau_e == 0 else y[None, d:], None)
        return dz[0] if tau_e == 0 else torch.cat([dz[0], deps[0]])

    h, eye = 1e-3, torch.eye(N, dtype=F64)
    J = torch.stack([(flow(h * eye[j]) - flow(-h * eye[j])) / (2 * h) for j in range(N)], dim=1)
    D = np.full(d, tau_z) if tau_e == 0 else np.concatenate([np.full(d, tau_z), np.full(n, tau_e)])
    A = units.linear_drift(model.decoder.weight.detach().numpy(), prior_std**2, c.error_form, tau_e == 0)
    np.testing.assert_allclose(J.numpy(), A / D[:, None], rtol=1e-10, atol=1e-8)


def test_value_unit_euler_coefficients_give_the_ou_chains_stationary_variance():
    """Prior-only value units: z' = (1 - a_z / s_p^2) z + c_z n is an AR(1) with stationary variance
    c_z^2 / (1 - b^2) = T s_p^2 / (1 - a_z / (2 s_p^2)) (closed form), -> T s_p^2 as dt -> 0."""
    T, sp2, tau_z = 0.7, 1.5, 1e-2
    for dt in (1e-3, 1e-5):
        a, c = units.value_rate(dt, tau_z), units.value_noise_scale(dt, tau_z, T)
        b = 1 - a / sp2
        assert c**2 / (1 - b**2) == pytest.approx(T * sp2 / (1 - a / (2 * sp2)), rel=1e-12)
    assert units.value_noise_scale(1e-3, tau_z, 0.0) == 0.0
    z = torch.zeros(20000, 1, dtype=F64)
    zn = torch.empty_like(z)
    gen = torch.Generator().manual_seed(0)
    a, c = units.value_rate(1e-3, tau_z), units.value_noise_scale(1e-3, tau_z, T)
    for _ in range(300):
        units.euler_step_into(zn, z, units.value_score(torch.zeros_like(z), z, sp2), a)
        units.add_scaled_(zn, torch.randn(z.shape, generator=gen, dtype=F64), c)
        z, zn = zn, z
    expected = T * sp2 / (1 - a / (2 * sp2))
    assert float(z.var()) == pytest.approx(expected, rel=0.05)    # 5 se of a 20,000-sample variance ~ 5 %
