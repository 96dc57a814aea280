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
from .units import error_form, linear_dynamics_drift

__all__ = ["linear_circuit_matrices", "linear_circuit_z_stationary", "slowest_decay_rate", "fastest_rate"]


def linear_circuit_matrices(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                            temperature: float = 1.0, form: str = "error", *, dynamics: str = "overdamped",
                            skew=None, friction: float = 1.0, mass=1.0):
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

    Other value-unit families (``dynamics``; ``circuits.units.linear_dynamics_drift``, docs/circuits_dynamics.md):
    "nonreversible" multiplies the z rows of A (and c) by (I + J) (``skew`` J (d, d) antisymmetric, None = 0);
    "underdamped" appends the momentum units, X = [z, eps, v] ([z, v] adiabatic), with
    tau_z dz = M^-1 v dt and tau_z dv = (W^T eps - z / s_p^2 - gamma_f M^-1 v) dt + sqrt(2 gamma_f T tau_z) dW
    (adiabatic: W^T eps -> W^T (x - b - W z) / sigma_x^2), so B has its noise on the v rows,
    sqrt(2 gamma_f T / tau_z); its stationary law is N(mu, T P^-1) (x) N(0, T M) when adiabatic.
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
    J = _skew_input(skew, d, dynamics)
    mass = np.broadcast_to(np.asarray(mass, dtype=np.float64), (d,)) if dynamics == "underdamped" else 1.0
    friction = positive("friction", friction)
    # the units' own equations (circuits.units)
    drift = linear_dynamics_drift(W, var_p, units_form, tau_e == 0, dynamics, J, friction, mass)
    N0 = d if tau_e == 0 else d + n                      # z and eps; v after them
    taus = np.full(d, tau_z) if tau_e == 0 else np.concatenate([np.full(d, tau_z), np.full(n, tau_e)])
    if dynamics == "underdamped":
        taus = np.concatenate([taus, np.full(d, tau_z)])
    A = drift / taus[:, None]
    c = np.zeros(x.shape[:-1] + (A.shape[0],))
    if tau_e == 0:
        cz = (x - b) @ W / (var_x * tau_z)               # the settled error's constant W^T (x - b) / sigma_x^2
        if dynamics == "underdamped":
            c[..., N0:] = cz
        else:
            c[..., :d] = cz if J is None else cz @ (np.eye(d) + J).T
    else:
        c[..., d:N0] = (x - b) / (units_form.k * tau_e)
    B = np.zeros((A.shape[0], d))
    if dynamics == "underdamped":
        B[N0:] = np.sqrt(2 * friction * T / tau_z) * np.eye(d)
    else:
        B[:d] = np.sqrt(2 * T / tau_z) * np.eye(d)
    return A, c, B


def _skew_input(skew, d: int, dynamics: str):
    """J as float64 (d, d) (checked antisymmetric), or None; only "nonreversible" takes one."""
    if dynamics not in ("overdamped", "nonreversible", "underdamped"):
        raise ValueError(f"dynamics must be 'overdamped', 'nonreversible' or 'underdamped', got {dynamics!r}")
    if skew is None:
        return None
    if dynamics != "nonreversible":
        raise ValueError(f"skew applies only to dynamics='nonreversible', got dynamics={dynamics!r}")
    J = array("skew", skew, 2)
    if J.shape != (d, d):
        raise ValueError(f"skew must have shape ({d}, {d}), got {J.shape}")
    if np.abs(J + J.T).max() > 1e-9 * max(1.0, np.abs(J).max()):
        raise ValueError("skew must be antisymmetric (J^T = -J)")
    return J


def slowest_decay_rate(A) -> float:
    """min_i -Re(mu_i) over the eigenvalues of a drift matrix A: the rate of the slowest mode (1/s)."""
    return float(np.min(-np.linalg.eigvals(array("A", A, 2)).real))


def fastest_rate(A) -> float:
    """max_i |mu_i|: the fastest time scale of a linear drift (1/s; the fair-comparison normaliser of issue 16)."""
    return float(np.max(np.abs(np.linalg.eigvals(array("A", A, 2)))))


def linear_circuit_z_stationary(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                                temperature: float = 1.0, form: str = "error", dt: float | None = None, **dynamics):
    """Stationary (mean, cov) of the circuit's value units z: the z-block of the joint solution (``dynamics``:
    the keyword arguments dynamics / skew / friction / mass of :func:`linear_circuit_matrices`).

    ``dt=None`` gives the continuous-time SDE (:func:`linear_sde_stationary`); a number gives its
    Euler-Maruyama chain with that step (:func:`euler_maruyama_stationary`). mean (..., d), cov (d, d).
    """
    A, c, B = linear_circuit_matrices(W, b, x, sigma_x, prior_std, tau_z, tau_e, temperature, form, **dynamics)
    mean, cov = linear_sde_stationary(A, B, c) if dt is None else euler_maruyama_stationary(A, B, dt, c)
    d = array("W", W, 2).shape[1]
    return mean[..., :d], cov[:d, :d]
