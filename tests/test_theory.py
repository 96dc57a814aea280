"""neuro_lpc.theory.euler_stable_dt against brute force: iterating the Euler map x <- (I + dt A) x."""
import math

import numpy as np
import pytest

from neuro_lpc.theory import euler_stable_dt


def _iterate(A, dt, steps):
    F = np.eye(A.shape[0]) + dt * A
    x = np.ones(A.shape[0])
    for _ in range(steps):
        x = F @ x
    return float(np.linalg.norm(x))


@pytest.mark.parametrize("A", [np.array([[-1.0, 3.0], [-3.0, -1.0]]),     # a rotation: eigenvalues -1 +- 3i
                               np.array([[-1.0, 5.0], [0.0, -4.0]])],     # non-normal, real eigenvalues -1, -4
                         ids=["complex", "non-normal"])
def test_the_euler_map_decays_just_below_the_bound_and_grows_just_above(A):
    dt = euler_stable_dt(np.linalg.eigvals(A))
    assert 0 < dt < math.inf
    assert _iterate(A, 0.99 * dt, 5000) < 1e-3
    assert _iterate(A, 1.01 * dt, 5000) > 1e3


def test_the_bound_is_where_the_spectral_radius_of_the_euler_map_crosses_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        A = rng.normal(size=(4, 4))
        A -= (np.max(np.linalg.eigvals(A).real) + rng.uniform(0.1, 2.0)) * np.eye(4)     # shift to stable
        dt = euler_stable_dt(np.linalg.eigvals(A))

        def radius(h):
            return np.max(np.abs(np.linalg.eigvals(np.eye(4) + h * A)))

        assert radius(0.999 * dt) < 1 < radius(1.001 * dt)


def test_no_eigenvalues_no_bound_and_a_marginal_drift_no_stable_step():
    assert euler_stable_dt(np.array([])) == math.inf
    assert euler_stable_dt(np.array([-1.0, 0.0])) == 0.0
    assert euler_stable_dt(np.array([-1.0 + 0j, 0.5 + 2j])) == 0.0
    assert isinstance(euler_stable_dt(np.array([-2.0])), float)
