"""Detailed-balance violation (circuits.diagnostics.flux): closed forms and trajectory estimators on known OUs."""
from __future__ import annotations

import numpy as np
import pytest

from circuits.analysis import (
    lagged_covariance, linear_circuit_matrices, linear_flux_theory, ou_exact_ar1, ou_lagged_cov, ou_stationary_cov,
    pair_reversal_kl, probability_flux_field, sampled_circulation, time_reversal_asymmetry,
)
from helpers_diagnostics import reversible_ou, rotational_ou, simulate_ar1

W3x2 = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]])


# ------------------------------------------------------------------------------------------- theory
def test_rotational_ou_closed_form():
    gamma, omega = 1.5, 2.0
    A, B = rotational_ou(gamma, omega)
    f = linear_flux_theory(A, B)
    assert np.allclose(f.sigma, np.eye(2))
    assert np.allclose(f.circulation, omega * np.array([[0, -1], [1, 0]]))
    assert np.isclose(f.rotation_rate, omega)
    assert np.isclose(f.entropy_production, 2 * omega ** 2 / gamma)


def test_time_reversal_kl_per_unit_time_tends_to_entropy_production():
    A, B = rotational_ou(1.0, 3.0)
    sigma = ou_stationary_cov(A, B)
    rates = [pair_reversal_kl(sigma, ou_lagged_cov(A, B, [dt])[0]) / dt for dt in (1e-2, 1e-3)]
    assert abs(rates[1] - 18.0) < 0.01 * 18 and abs(rates[1] - 18.0) < abs(rates[0] - 18.0)


def test_reversible_and_adiabatic_circuit_have_no_flux():
    for A, B in (reversible_ou(0, 3), rotational_ou(1.0, 0.0)):
        f = linear_flux_theory(A, B)
        assert np.max(np.abs(f.circulation)) < 1e-12 and f.entropy_production < 1e-20
    A, _, B = linear_circuit_matrices(W3x2, np.zeros(3), np.ones(3), 0.7, 1.3, 0.01, 0.0, temperature=0.5)
    assert linear_flux_theory(A, B).rotation_rate < 1e-9 * np.abs(A).max()


@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_finite_tau_e_breaks_detailed_balance_of_the_joint_but_not_of_z(form):
    """Finite tau_e: the joint (z, eps) circulates (e_p infinite: the error units are noiseless), yet the
    lagged covariance of z alone stays symmetric -- z's transfer function depends on W only through W^T W,
    so eps acts like a momentum; only the joint shows the violation."""
    rng = np.random.default_rng(7)
    for n, d in ((3, 2), (1, 3), (4, 4)):
        W = rng.normal(size=(n, d))
        A, _, B = linear_circuit_matrices(W, np.zeros(n), np.zeros(n), 0.8, 1.2, 1.0, 0.2, temperature=1.3, form=form)
        f = linear_flux_theory(A, B)
        assert f.rotation_rate > 0.1 and f.entropy_production == np.inf
        C = ou_lagged_cov(A, B, [0.05, 0.5])[:, :d, :d]
        assert np.max(np.abs(C - np.swapaxes(C, 1, 2))) < 1e-12 * np.abs(C).max()


def test_which_heterogeneities_break_detailed_balance_of_z():
    """Adiabatic: per-unit tau_z (noise scaled with it) is a diagonal preconditioner, reversible; per-unit noise
    amplitudes (temperatures) are not.  Finite tau_e with per-unit tau_z: the z-block itself turns asymmetric."""
    A0, _, B0 = linear_circuit_matrices(W3x2, np.zeros(3), np.zeros(3), 0.8, 1.0, 1.0, 0.0)
    tz = np.array([1.0, 2.5])
    assert linear_flux_theory(A0 / tz[:, None], B0 / np.sqrt(tz)[:, None]).rotation_rate < 1e-12
    assert linear_flux_theory(A0, B0 * np.array([1.0, 1.5])[:, None]).rotation_rate > 0.05
    A, _, B = linear_circuit_matrices(W3x2, np.zeros(3), np.zeros(3), 0.8, 1.0, 1.0, 0.2)
    A[:2] /= tz[:, None]
    B[:2] /= np.sqrt(tz)[:, None]
    C = ou_lagged_cov(A, B, [0.3])[0, :2, :2]
    assert np.abs(C - C.T).max() > 1e-3 * np.abs(C).max()


def test_mismatched_feedback_breaks_detailed_balance_of_z():
    """Adiabatic error units but feedback B != W^T: dz = -(I/s_p^2 + B W/sigma^2) z dt + sqrt(2) dW."""
    fb = W3x2.T + np.array([[0.0, 0.5, 0.0], [0.0, 0.0, -0.5]])
    f = linear_flux_theory(-(np.eye(2) + fb @ W3x2 / 0.49), np.sqrt(2) * np.eye(2))
    assert f.rotation_rate > 0.1 and 0 < f.entropy_production < np.inf


# ------------------------------------------------------------------------------------------ estimators
def _estimate(A, B, dt, R=4000, chains=32, seed=0):
    F, Q = ou_exact_ar1(A, B, dt)
    return time_reversal_asymmetry(simulate_ar1(F, Q, R, chains, seed), dt_record=dt)


def test_estimated_circulation_matches_rotational_theory():
    A, B = rotational_ou(1.0, 2.0)
    dt = 0.05
    res = _estimate(A, B, dt)
    theory = sampled_circulation(A, B, dt)
    assert abs(res.circulation[1, 0] - theory[1, 0]) < 4 * res.circulation_se[1, 0]
    assert res.max_abs_z > 10
    assert abs(res.rotation_rate - abs(theory[1, 0])) < 0.05          # Sigma = I: the whitened norm is |Q_10|
    F, _ = ou_exact_ar1(A, B, dt)
    kl = pair_reversal_kl(np.eye(2), F)
    assert abs(res.pair_kl_per_record - kl) < 0.1 * kl


@pytest.mark.parametrize("system", ["reversible", "adiabatic circuit"])
def test_estimated_circulation_is_zero_within_error_for_reversible_processes(system):
    if system == "reversible":
        A, B = reversible_ou(1, 3)
    else:
        A, _, B = linear_circuit_matrices(W3x2, np.zeros(3), np.zeros(3), 0.7, 1.0, 1.0, 0.0)
    res = _estimate(A, B, 0.05, seed=2)
    assert res.max_abs_z < 4.5
    assert np.allclose(res.circulation, -res.circulation.T)


def test_estimated_joint_circulation_with_finite_tau_e_matches_theory():
    W = np.array([[1.0, 0.4], [-0.3, 0.9]])
    A, _, B = linear_circuit_matrices(W, np.zeros(2), np.zeros(2), 0.8, 1.0, 1.0, 0.3)
    dt = 0.05
    res = _estimate(A, B, dt, seed=4)
    theory = sampled_circulation(A, B, dt)
    iu = np.triu_indices(4, 1)
    assert np.all(np.abs(res.circulation[iu] - theory[iu]) < 4.5 * res.circulation_se[iu])
    assert res.max_abs_z > 10


def test_flux_field_velocity_is_the_linear_irreversible_drift():
    A, B = rotational_ou(1.0, 2.0)
    dt = 0.05
    F, Q = ou_exact_ar1(A, B, dt)
    x = simulate_ar1(F, Q, 3000, 32, seed=5)
    field = probability_flux_field(x, dt_record=dt, bins=6, extent=2.5)
    theory = np.einsum("ij,abj->abi", sampled_circulation(A, B, dt), field.position)   # Sigma = I
    ok = field.counts > 500
    assert ok.sum() >= 16
    err = np.abs(field.velocity - theory)[ok] / field.velocity_se[ok]
    assert err.max() < 5
    assert np.isclose((field.density * (field.edges[1] - field.edges[0]) ** 2).sum(), 1.0, atol=0.05)
    # reversible: velocity zero within error everywhere
    A, B = reversible_ou(2, 2)
    F, Q = ou_exact_ar1(A, B, dt)
    field = probability_flux_field(simulate_ar1(F, Q, 3000, 32, seed=6), dt_record=dt, bins=6)
    ok = field.counts > 500
    assert (np.abs(field.velocity) / field.velocity_se)[ok].max() < 5


def test_lagged_covariance_centres_each_chain():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4, 2)) + np.array([0.0, 5.0, -5.0, 10.0])[None, :, None]
    assert np.allclose(lagged_covariance(x, 0), np.eye(2), atol=0.1)
    assert lagged_covariance(x, 0, center="pooled")[0, 0] > 10


@pytest.mark.parametrize("call, match", [
    (lambda: time_reversal_asymmetry(np.zeros((10, 2))), "at least 2 units"),
    (lambda: time_reversal_asymmetry(np.ones((10, 2, 2)), dt_record=-1), "dt_record"),
    (lambda: lagged_covariance(np.ones((10, 2, 2)), lag=9), "lag"),
    (lambda: lagged_covariance(np.ones((10, 2, 2)), center="x"), "center"),
    (lambda: probability_flux_field(np.ones((10, 2, 3))), r"\(R, B, 2\)"),
    (lambda: pair_reversal_kl(np.eye(2), np.eye(3)), "shape"),
    (lambda: linear_flux_theory(np.eye(2), np.eye(2)), "not stable"),
])
def test_bad_input_is_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
