"""Variability quenching and onset transients (circuits.diagnostics.quenching) on linear circuits started at the prior."""
from __future__ import annotations

import numpy as np
import pytest

from circuits.analysis import (
    across_trial_moments, gaussian_posterior, linear_circuit_matrices, ou_exact_ar1, ou_transient, overshoot_fraction,
    quenching_curve,
)

W = np.array([[1.5, 0.3], [-0.4, 1.1], [0.6, 0.6]])
X = np.array([1.0, -0.5, 2.0])
S_P, SIGMA_X = 1.2, 0.6


def onset_experiment(A, c, B, m0, S0, dt, R, trials, seed):
    """Exact simulation of dX = (A X + c) dt + B dW from N(m0, S0): X' = F X + (I - F) mu + n. (R, trials, N)."""
    rng = np.random.default_rng(seed)
    F, Q = ou_exact_ar1(A, B, dt)
    mu = -np.linalg.solve(A, c)
    root = lambda S: np.linalg.cholesky(S + 1e-14 * np.eye(len(S)))  # noqa: E731
    x = m0 + rng.standard_normal((trials, len(m0))) @ root(S0).T
    out = np.empty((R, trials, len(m0)))
    for r in range(R):
        out[r] = x
        x = x @ F.T + (np.eye(len(m0)) - F) @ mu + rng.standard_normal(x.shape) @ root(Q).T
    return out


def test_across_trial_moments_and_quenching_match_ou_theory():
    A, c, B = linear_circuit_matrices(W, np.zeros(3), X, SIGMA_X, S_P, 1.0, 0.0)
    dt, R, S = 0.05, 60, 3000
    m0, S0 = np.zeros(2), S_P ** 2 * np.eye(2)                     # spontaneous state: the prior
    z = onset_experiment(A, c, B, m0, S0, dt, R, S, seed=1)
    t = dt * np.arange(R)
    means, covs = ou_transient(A, B, t, m0, S0, c)
    mom = across_trial_moments(z)
    var_theory = np.diagonal(covs, axis1=1, axis2=2)
    assert np.all(np.abs(mom.mean - means) < 5 * mom.mean_se)
    assert np.all(np.abs(mom.var - var_theory) < 5 * mom.var_se)
    q = quenching_curve(z, t, spontaneous_var=S_P ** 2)
    ratio_theory = (var_theory / S_P ** 2).mean(1)
    assert np.all(np.abs(q.ratio - ratio_theory) < 5 * q.ratio_se)
    _, post_cov, _ = gaussian_posterior(W, np.zeros(3), X, SIGMA_X, S_P)
    final = np.diag(post_cov).mean() / S_P ** 2
    assert final < 0.5 and abs(q.final_ratio - final) < 0.05 * final     # quenched from 1 to posterior / prior
    assert q.ratio[0] == pytest.approx(1.0, abs=0.1) and 0 < q.quench_time < t[-1]


def test_onset_overshoot_of_an_underdamped_circuit_matches_theory():
    """Finite tau_e makes the value/error loop underdamped: the mean response overshoots its final level."""
    w, sx = np.array([[2.0]]), 0.5
    A, c, B = linear_circuit_matrices(w, np.zeros(1), np.array([1.0]), sx, 1.0, 1.0, 0.5)
    dt, R = 0.05, 200
    m0, S0 = np.zeros(2), np.diag([1.0, 0.0])                       # z from the prior, error units silent
    t = dt * np.arange(R)
    means, _ = ou_transient(A, B, t, m0, S0, c)
    mu = -np.linalg.solve(A, c)
    over_theory, rec = overshoot_fraction(means[:, :1], final=mu[:1])
    assert over_theory > 0.2
    z = onset_experiment(A, c, B, m0, S0, dt, R, 2000, seed=2)[:, :, :1]
    q = quenching_curve(z, t)
    assert abs(q.overshoot - over_theory) < 0.05 + 3 * q.mean_noise
    assert abs(q.overshoot_time - t[rec]) < 0.3


def test_overshoot_is_zero_for_a_monotone_approach_and_scales():
    t = np.linspace(0, 5, 100)
    m = np.column_stack([1 - np.exp(-t), -2 * (1 - np.exp(-2 * t))])
    assert overshoot_fraction(m, final=[1.0, -2.0])[0] == 0.0
    assert overshoot_fraction(m)[0] < 0.01          # default final level: the last quarter's average, still rising
    bump = np.column_stack([1 - np.exp(-t) + 0.5 * t * np.exp(-t)])  # peaks at t = 3: 1 + 0.5 e^-3
    assert overshoot_fraction(bump, final=[1.0])[0] == pytest.approx(0.5 * np.exp(-3), rel=1e-3)


@pytest.mark.parametrize("call, match", [
    (lambda: across_trial_moments(np.zeros((5, 1, 2))), "S>=2"),
    (lambda: quenching_curve(np.ones((5, 3, 2)), t=np.arange(4)), "t must have shape"),
    (lambda: quenching_curve(np.random.rand(5, 3, 2), spontaneous_var=[1.0, 2.0, 3.0]), "spontaneous_var"),
    (lambda: quenching_curve(np.random.rand(5, 3, 2), spontaneous_var=0.0), "positive"),
    (lambda: quenching_curve(np.random.rand(5, 3, 2), final_fraction=0), "final_fraction"),
    (lambda: overshoot_fraction(np.ones((5, 2)), final=[1.0]), "final must have shape"),
])
def test_bad_input_is_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
