"""The Euler-Maruyama stability of a circuit's step dt, checked before any step.

On tau dx = -x dt the Euler step multiplies x by (1 - dt/tau), stable only for dt < 2 tau.  For drift
eigenvalues mu the step is stable iff |1 + dt mu| < 1 for all of them, i.e. dt < min -2 Re mu / |mu|^2
(``neuro_lpc.theory.euler_stable_dt``: the one formula, used here and by the stationary laws of
``circuits.theory``).  :func:`stable_dt_bound` takes the smallest of

* each unit's own leak: value units dt < 2 tau_z s_p^2, error units dt < 2 tau_e / leak, gain units dt < tau_m
  (the nominal ``config.gain_tau()``: m' = (1 - dt/tau_m) m + (dt/tau_m) s^2 must stay >= 0 for sqrt(m), not
  only bounded; a per-unit tau_m,i decays as that decay ** (tau_m / tau_m,i), in (0, 1) whenever it is,
  ``circuits.timescales.gain_decay``; always true for a decay beta);
* for an ``nn.Linear`` decoder with a Gaussian likelihood (no preconditioning), the eigenvalues of the whole
  linear drift D^-1 A (``circuits.units.linear_drift``): with uniform time constants cheaply from the SVD
  W = U S V^T, which makes A orthogonally similar to 2 x 2 blocks ``linear_drift([[s_i]])`` plus uncoupled units;
  with per-unit time constants densely up to d + n = ``MAX_DENSE_EIG``.
"""
from __future__ import annotations

import numpy as np
import torch

from neuro_lpc.theory import euler_stable_dt

from .bound import BoundCircuit
from .units import linear_drift, linear_dynamics_drift

__all__ = ["stable_dt_bound", "check_step_size", "MAX_DENSE_EIG"]

MAX_DENSE_EIG = 2048  # largest linear state (d + n) whose drift matrix is diagonalised densely


def _smallest(t) -> float:
    return float(t.min()) if isinstance(t, torch.Tensor) else float(t)


def _per_unit(t, size: int) -> np.ndarray:
    return t.double().cpu().numpy().ravel() if isinstance(t, torch.Tensor) else np.full(size, float(t))


def _dynamics_drift(circuit: BoundCircuit, W: np.ndarray) -> np.ndarray:
    """The linear circuit's drift per unit time for "nonreversible" / "underdamped" value units (dense):
    D^-1 A of ``units.linear_dynamics_drift`` (v's units have tau_z), with the skew part K = D^-1/2 J D^-1/2 of
    ``units.skew_rate``."""
    n, d = W.shape
    prior_var, form, ts = circuit.prior_std**2, circuit.error_form, circuit.timescales
    tau = _per_unit(ts.tau_z, d) if circuit.adiabatic else np.concatenate([_per_unit(ts.tau_z, d), _per_unit(ts.tau_e, n)])
    if circuit.dynamics == "underdamped":
        mass = circuit.mass.double().cpu().numpy()
        A = linear_dynamics_drift(W, prior_var, form, circuit.adiabatic, "underdamped",
                                  friction=float(circuit.config.friction), mass=mass)
        return A / np.concatenate([tau, _per_unit(ts.tau_z, d)])[:, None]
    A = linear_drift(W, prior_var, form, circuit.adiabatic)
    out = A / tau[:, None]
    if circuit.skew is not None:
        r = 1.0 / np.sqrt(_per_unit(ts.tau_z, d))
        out[:d] += (r[:, None] * circuit.skew.double().cpu().numpy() * r[None, :]) @ A[:d]
    return out


def _dynamics_leak_bound(circuit: BoundCircuit) -> float:
    """The Euler bound of the value units' own prior leak under the family: "nonreversible" eigenvalues
    -(1 + i lambda_J) / (s_p^2 tau_z) (lambda_J the skew's singular values); "underdamped" the roots of
    tau_z^2 mu^2 + (gamma_f / M) tau_z mu + 1 / (M s_p^2) = 0 per unit (the prior's damped oscillator)."""
    ts, sp2, d = circuit.timescales, circuit.prior_std**2, circuit.model.latent_dim
    tau = _per_unit(ts.tau_z, d)
    if circuit.dynamics == "underdamped" and circuit.config.integrator == "baoab":
        return _verlet_bound(tau, circuit.mass.double().cpu().numpy(), np.full(d, 1.0 / sp2))
    if circuit.dynamics == "underdamped":
        m = circuit.mass.double().cpu().numpy()
        g = float(circuit.config.friction)
        mus = np.concatenate([np.roots([1.0, g / mi, 1.0 / (mi * sp2)]) / ti for mi, ti in zip(m, tau)])
        return euler_stable_dt(mus)
    lam = np.linalg.svd(circuit.skew.double().cpu().numpy(), compute_uv=False) if circuit.skew is not None else 0.0
    return euler_stable_dt(-(1 + 1j * np.max(lam)) / (sp2 * np.array([tau.min()])))


def _verlet_bound(tau: np.ndarray, mass: np.ndarray, curvature: np.ndarray) -> float:
    """BAOAB's bound (its B A B is Stormer-Verlet; Leimkuhler & Matthews 2013): h sqrt(lambda / M) < 2 per mode, i.e.
    dt < 2 tau_z sqrt(M / lambda) with the smallest tau_z and M against the largest curvature lambda."""
    return float(2 * tau.min() * np.sqrt(mass.min() / curvature.max()))


def _linear_gaussian_bound(circuit: BoundCircuit) -> float | None:
    """The Euler bound of the whole linear drift of a linear-decoder, Gaussian circuit (None when not cheap)."""
    W = circuit.model.decoder.weight.detach().double().cpu().numpy()
    n, d = W.shape
    prior_var, form, ts = circuit.prior_std**2, circuit.error_form, circuit.timescales
    if circuit.dynamics == "underdamped" and circuit.config.integrator == "baoab" and circuit.adiabatic:
        lam = np.linalg.eigvalsh(-linear_drift(W, prior_var, form, True))   # the posterior precision P
        return _verlet_bound(_per_unit(ts.tau_z, d), circuit.mass.double().cpu().numpy(), lam)
    if circuit.dynamics != "overdamped":
        N = d + (0 if circuit.adiabatic else n) + (d if circuit.dynamics == "underdamped" else 0)
        return None if N > MAX_DENSE_EIG else euler_stable_dt(np.linalg.eigvals(_dynamics_drift(circuit, W)))
    if circuit.uniform_timescales:
        if circuit.adiabatic:
            return euler_stable_dt(np.linalg.eigvalsh(linear_drift(W, prior_var, form, True)) / float(ts.tau_z))
        tau = np.array([float(ts.tau_z), float(ts.tau_e)])
        s = np.linalg.svd(W, compute_uv=False)
        blocks = [linear_drift(np.array([[si]]), prior_var, form, False) / tau[:, None] for si in s]
        # units W does not couple (s_i beyond the rank's count): their own leaks, the diagonal of A
        rest = np.diag(linear_drift(np.zeros((n - len(s), d - len(s))), prior_var, form, False))
        rest = rest / np.concatenate([np.full(d - len(s), tau[0]), np.full(n - len(s), tau[1])])
        mus = [np.linalg.eigvals(np.stack(blocks)).ravel() if blocks else np.empty(0), rest]
        return euler_stable_dt(np.concatenate(mus))
    N = d + (0 if circuit.adiabatic else n)
    if N > MAX_DENSE_EIG:
        return None
    tau = _per_unit(ts.tau_z, d)
    if not circuit.adiabatic:
        tau = np.concatenate([tau, _per_unit(ts.tau_e, n)])
    A = linear_drift(W, prior_var, form, circuit.adiabatic)
    return euler_stable_dt(np.linalg.eigvals(A / tau[:, None]))


def stable_dt_bound(circuit: BoundCircuit) -> tuple[float, str]:
    """(largest stable dt, what limits it) for Euler-Maruyama on this circuit's noise-free drift (module docstring)."""
    ts, cfg = circuit.timescales, circuit.config
    if circuit.dynamics == "overdamped":
        bounds = [(2 * _smallest(ts.tau_z) * circuit.prior_std**2,
                   f"the value units (smallest tau_z = {_smallest(ts.tau_z):.4g} s, prior leak 1/s_p^2)")]
    else:
        bounds = [(_dynamics_leak_bound(circuit), f"the {circuit.dynamics} value units (smallest tau_z = "
                   f"{_smallest(ts.tau_z):.4g} s, prior leak 1/s_p^2)")]
    if not circuit.adiabatic:
        leak = circuit.error_form.leak
        bounds.append((2 * _smallest(ts.tau_e) / leak, f"the error units (smallest tau_e = {_smallest(ts.tau_e):.4g} s"
                       + (f", leak sigma_x^2 = {leak:.4g})" if cfg.error_form == "bogacz" else ")")))
    if circuit.preconditioned:
        tm = cfg.gain_tau()
        bounds.append((tm, f"the gain units (tau_m = {tm:.4g} s; m must stay >= 0)"))
    if circuit.linear_decoder and circuit.gaussian and not circuit.preconditioned:
        lin = _linear_gaussian_bound(circuit)
        if lin is not None:
            bounds.append((lin, "the stiffness of the linear circuit (eigenvalues of its drift matrix)"))
    return min(bounds, key=lambda b: b[0])


def check_step_size(circuit: BoundCircuit) -> None:
    """Raise ValueError (before any step) when dt makes Euler-Maruyama unstable, naming the stable dt."""
    dt = float(circuit.config.dt)
    bound, what = stable_dt_bound(circuit)
    if not bound > 0:   # an eigenvalue with Re >= 0: the continuous circuit itself has no stationary law
        raise ValueError(f"the circuit is unstable for any dt: {what} has an eigenvalue with non-negative real part "
                         f"(dynamics={circuit.dynamics!r}; try a smaller skew_scale or adiabatic error units)")
    if not dt < bound:
        raise ValueError(f"dt={dt:g} s is unstable for Euler-Maruyama: {what} needs dt < {bound:.4g} s "
                         f"(dt <= {bound / 10:.3g} s for accuracy)")
