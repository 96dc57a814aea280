"""The LPC circuit with a linear decoder as an affine linear SDE, and the stationary law of its value units.

Built on :mod:`neuro_lpc.theory` (the Gaussian posterior and the stationary laws of linear SDEs and their
Euler-Maruyama chains).  Model: z ~ N(0, s_p^2 I), x | z ~ N(W z + b, sigma_x^2 I), W of shape (n, d).

* :func:`linear_circuit_matrices` - the circuit written as dX = (A X + c) dt + B dW, with error units
  of finite time constant tau_e.
* :func:`linear_circuit_z_stationary` - the stationary (mean, cov) of z, continuous or Euler-Maruyama.

Finding (see ``docs/analysis.md``): with finite tau_e the circuit's z-marginal keeps the exact
posterior *mean* but not its *covariance*; the covariance tends to T P^-1 only as tau_e -> 0.
"""
from __future__ import annotations

import numpy as np

from neuro_lpc.theory import euler_maruyama_stationary, linear_gaussian_inputs, linear_sde_stationary

from ._checks import array, positive
from .units import error_form, linear_drift

__all__ = ["linear_circuit_matrices", "linear_circuit_z_stationary"]


def linear_circuit_matrices(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                            temperature: float = 1.0, form: str = "error"):
    """The LPC circuit with a linear decoder as an affine linear SDE dX = (A X + c) dt + B dW.

    State X = [z (d), eps (n)] (z first). Equations (DESIGN.md section 3, Ito form)::

        tau_e d eps = [ (x - W z - b) / sigma_x^2 - eps ] dt          (form "error")
        tau_e d eps = [ (x - W z - b) - sigma_x^2 eps ] dt           (form "bogacz")
        tau_z d z   = [ W^T eps - z / s_p^2 ] dt + sqrt(2 T tau_z) dW

    so, with a = 1 / (s_p^2 tau_z),

        A = [[ -a I,                 W^T / tau_z ],        c = [ 0                          ]
             [ -W / (k tau_e),       -(l / tau_e) I ]],        [ (x - b) / (k tau_e)        ]
        B = [[ sqrt(2 T / tau_z) I_d ], [ 0 ]]              (shape (d + n, d))

    with (k, l) = (sigma_x^2, 1) for "error" and (1, sigma_x^2) for "bogacz". Both forms settle at
    the precision-weighted error eps* = (x - W z - b) / sigma_x^2; "bogacz" relaxes with time
    constant tau_e / sigma_x^2 instead of tau_e.

    ``tau_e = 0`` (adiabatic error units) returns the reduced z-only SDE

        A = -P / tau_z,   c = W^T (x - b) / (sigma_x^2 tau_z),   B = sqrt(2 T / tau_z) I_d,

    whose stationary law is N(mu, T P^-1): the exact posterior at T = 1 (whatever ``form``).

    For any tau_e the stationary mean of z is the posterior mean mu (the drift's fixed point does
    not depend on tau_e), but for tau_e > 0 the stationary covariance of z is *not* P^-1 (see
    ``docs/analysis.md``). x: (n,) or (B_x, n); c then has shape (..., N). Returns ``(A, c, B)``.
    """
    W, b, x = linear_gaussian_inputs(W, b, x)
    for name, v in (("W", W), ("b", b), ("x", x)):
        if not np.isfinite(v).all():
            raise ValueError(f"{name} has non-finite entries")
    n, d = W.shape
    if form not in ("error", "bogacz"):
        raise ValueError(f"form must be 'error' or 'bogacz', got {form!r}")
    units_form = error_form(form, positive("sigma_x", sigma_x))
    var_x = units_form.k * units_form.leak          # sigma_x^2 in both forms
    var_p = positive("prior_std", prior_std) ** 2
    tau_z = positive("tau_z", tau_z)
    tau_e = positive("tau_e", tau_e, allow_zero=True)
    T = positive("temperature", temperature, allow_zero=True)
    noise = np.sqrt(2 * T / tau_z)
    drift = linear_drift(W, var_p, units_form, adiabatic=tau_e == 0)   # the units' own equations (circuits.units)
    if tau_e == 0:
        return drift / tau_z, (x - b) @ W / (var_x * tau_z), noise * np.eye(d)
    A = drift / np.concatenate([np.full(d, tau_z), np.full(n, tau_e)])[:, None]
    c = np.concatenate([np.zeros(x.shape[:-1] + (d,)), (x - b) / (units_form.k * tau_e)], axis=-1)
    B = np.concatenate([noise * np.eye(d), np.zeros((n, d))], axis=0)
    return A, c, B


def linear_circuit_z_stationary(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                                temperature: float = 1.0, form: str = "error", dt: float | None = None):
    """Stationary (mean, cov) of the circuit's value units z: the z-block of the joint solution.

    ``dt=None`` gives the continuous-time SDE (:func:`linear_sde_stationary`); a number gives its
    Euler-Maruyama chain with that step (:func:`euler_maruyama_stationary`). mean (..., d), cov (d, d).
    """
    A, c, B = linear_circuit_matrices(W, b, x, sigma_x, prior_std, tau_z, tau_e, temperature, form)
    mean, cov = linear_sde_stationary(A, B, c) if dt is None else euler_maruyama_stationary(A, B, dt, c)
    d = array("W", W, 2).shape[1]
    return mean[..., :d], cov[:d, :d]
