"""The units of the LPC circuit: ONE equation per kind of unit, used by every path that needs it.

Each unit obeys tau dX = F(state) dt (+ noise), with F its *force* (DESIGN.md section 3; the continuous-time
version of the paper's eq. 5, Ito form):

    value units z    tau_z dz   = G [ J_g(z)^T eps - z / s_p^2 ] dt + sqrt(2 T tau_z G) dW   F_z = G s
    error units eps  tau_e deps = [ target(x, g(z)) - leak eps ] dt                        F_e = target - leak eps
    gain units m     tau_m dm   = [ s^2 - m ] dt,   G = min(1 / (sqrt(m_hat) + delta), G_max)  F_m = s^2 - m

with s = J_g(z)^T eps - z / s_p^2 the score-like drift at the state (:func:`value_score`).  Two more families of
value-unit dynamics (issue 16; ``docs/circuits_dynamics.md``) leave the stationary law of z unchanged:

    non-reversible   tau_z dz = (G + J) s dt + sqrt(2 T tau_z G) dW         J = -J^T constant: F_z = G s + J s
    underdamped      tau_z dz = M^-1 v dt                                   momentum units v (F_z = M^-1 v)
                     tau_v dv = (s - gamma_f M^-1 v) dt + sqrt(2 gamma_f T tau_v) dW,   tau_v = tau_z

(J: antisymmetric lateral connections between value units, :func:`skew_rate` / :func:`skew_force`; v: each value
unit's momentum / inhibitory partner, Aitchison & Lengyel 2016, :func:`momentum_force` etc.).  Time-constant scaling
of the momentum units: in t' = t / tau_z, dz = M^-1 v dt', dv = (s - gamma_f M^-1 v) dt' + sqrt(2 gamma_f T) dW'
(dW = sqrt(tau_z) dW' in law) is kinetic Langevin for H = -log p(x, z) + v^T M^-1 v / 2, whose stationary law is
exp(-H / T) = p(z | x)^(1/T) (x) N(0, T M); multiplying by tau_z gives the noise sqrt(2 gamma_f T tau_z) dW above.
Per-unit tau_z,i (shared by z_i and v_i) keep it: the drift is [[0, D^-1], [-D^-1, -gamma_f D^-1]] grad(-H), an
antisymmetric part plus the diffusion's gamma_f T D^-1 (docs/circuits_dynamics.md).  The error units come in
two forms (:func:`error_form`): "error" (default) relaxes to the precision-weighted error
e(x, mu) = d log p(x | mu) / d mu with leak 1; "bogacz" (Bogacz 2017, Gaussian only) relaxes to x - mu with leak
sigma_x^2 (the precision in the leak).  For a Gaussian likelihood both targets are (x - mu) / k with k = sigma_x^2
("error") or 1 ("bogacz"): the only constants the linear circuit needs (:func:`linear_drift`).

Who uses what (so that an equation changed here changes every path):

* the Euler-Maruyama step of the general kernel (``circuits.kernels_general``): :func:`value_score`,
  :func:`euler_step_into` with :func:`value_rate` / :func:`error_rate`, :func:`value_noise_scale`,
  :func:`error_force_into`, :func:`settled_error`, :func:`gain_update_`, :func:`gain_of`;
* the folded linear kernels (``circuits.kernels_linear``): :func:`error_form`, :func:`value_rate`,
  :func:`error_rate`, :func:`value_noise_scale` (their coefficients b_z = 1 - a_z / s_p^2, ... are these folded);
* the ODE form for torchdiffeq (``CircuitRun.drift``): :func:`value_score`, :func:`value_drift`,
  :func:`error_drift`, :func:`gain_drift`, :func:`gain_of`;
* the stability bound and the linear-Gaussian theory (``circuits.stability``, ``circuits.theory``):
  :func:`linear_drift` (the drift matrix of the linear circuit, built from the same constants).

Euler-Maruyama of tau dX = F dt is X' = X + (dt / tau) F: the step's coefficient a = dt / tau (``*_rate``) is
computed first and multiplies F, which makes the adiabatic circuit at dt = gamma tau_z the discrete chain
z' = z + gamma s + sqrt(2 gamma T) n bit for bit (``LangevinSampler``).  The gain units' step is written
m' = beta m + (1 - beta) s^2 with beta = 1 - dt / tau_m, Algorithm 1's arrangement of the same Euler step.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from neuro_lpc.gain import gain_of_rms, rms, second_moment_update_

__all__ = ["ErrorForm", "error_form", "value_score", "value_rate", "value_noise_scale", "value_drift", "error_rate",
           "error_force_into", "error_drift", "settled_error", "gain_update_", "gain_of", "gain_drift", "euler_step_into",
           "add_scaled_", "linear_drift", "skew_rate", "skew_force", "momentum_velocity", "momentum_force",
           "momentum_noise_scale", "momentum_ou_step", "linear_dynamics_drift"]


# ----------------------------------------------------------------------------- shared arithmetic ----

def euler_step_into(out: torch.Tensor, state: torch.Tensor, force: torch.Tensor, rate) -> None:
    """out = state + rate * force: the Euler step of tau dX = F dt with rate = dt / tau (a Python number or a
    per-unit tensor broadcast over the batch); ``out`` preallocated."""
    if isinstance(rate, torch.Tensor):
        torch.addcmul(state, force, rate, out=out)
    else:
        torch.add(state, force, alpha=rate, out=out)


def add_scaled_(out: torch.Tensor, t: torch.Tensor, coef) -> None:
    """out += coef * t for a Python or per-unit tensor coefficient (the noise increment of a step)."""
    if isinstance(coef, torch.Tensor):
        out.addcmul_(t, coef)
    else:
        out.add_(t, alpha=coef)


# ------------------------------------------------------------------------------------ value units ----

def value_score(feedback: torch.Tensor, z: torch.Tensor, prior_var: float, inplace: bool = False) -> torch.Tensor:
    """s = J_g(z)^T eps - z / s_p^2: the value units' force without the gain (the score of p(x, z) when the error
    units are settled), from the feedback J_g(z)^T eps.  ``inplace`` writes s into ``feedback``."""
    if inplace:
        return feedback.sub_(z, alpha=1.0 / prior_var)
    return torch.sub(feedback, z, alpha=1.0 / prior_var)


def value_rate(dt: float, tau_z):
    """a_z = dt / tau_z: the value units' Euler coefficient (per unit when tau_z is a tensor)."""
    return dt / tau_z


def value_noise_scale(dt: float, tau_z, temperature: float):
    """c_z = sqrt(2 T dt / tau_z): the per-step std of the intrinsic noise sqrt(2 T tau_z) dW / tau_z (times
    sqrt(G) with gain units); 0.0 at T = 0."""
    return (2 * temperature * dt / tau_z) ** 0.5 if temperature > 0 else 0.0


def value_drift(s: torch.Tensor, tau_z, gain: torch.Tensor | None = None) -> torch.Tensor:
    """dz/dt = G s / tau_z (noise-free; G = 1 without gain units): the ODE form of the value units."""
    force = s if gain is None else gain * s
    return force * (1.0 / tau_z)


# ------------------------------------------------------------- non-reversible value units (skew J) ----

def skew_rate(J: torch.Tensor, tau_z, scale: float = 1.0) -> torch.Tensor:
    """K = scale * D^-1/2 J D^-1/2 with D = diag(tau_z): the skew part of the value units' drift per unit time,
    dz/dt = D^-1 G s + K s (times ``scale`` = dt it is the Euler step's matrix).  For uniform tau_z it is J / tau_z,
    i.e. tau_z dz = (G + J) s dt; for per-unit tau_z the symmetric split keeps K antisymmetric, so that
    div(K grad p) = 0 and the stationary law is still the posterior (D^-1 J would not be antisymmetric).
    J (d, d) antisymmetric; returns (d, d)."""
    if isinstance(tau_z, torch.Tensor):
        r = tau_z.reshape(-1).to(J).rsqrt()
        return (r[:, None] * J * r[None, :]) * scale
    return J * (scale / float(tau_z))


def skew_force(s: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """K s for each chain (rows of s, (B, d)): s K^T -- the skew drift routed through the lateral connections."""
    return s @ K.t()


# ---------------------------------------------------------------- momentum units v (underdamped) ----

def momentum_velocity(v: torch.Tensor, inv_mass) -> torch.Tensor:
    """M^-1 v: what a momentum unit drives its value unit with (F_z = M^-1 v; M a number or per-unit (d,))."""
    return v * inv_mass


def momentum_force(s: torch.Tensor, v: torch.Tensor, inv_mass, friction: float) -> torch.Tensor:
    """F_v = s - gamma_f M^-1 v: the momentum units' force (the score-like drift minus friction), a new tensor."""
    return s - (v * inv_mass) * friction


def momentum_noise_scale(dt: float, tau_z, temperature: float, friction: float):
    """c_v = sqrt(2 gamma_f T dt / tau_z): the per-step std of sqrt(2 gamma_f T tau_z) dW / tau_z; 0.0 at T = 0."""
    return (2 * friction * temperature * dt / tau_z) ** 0.5 if temperature > 0 else 0.0


def momentum_ou_step(dt: float, tau_z, temperature: float, friction: float, mass: torch.Tensor):
    """(c, sigma) of the exact step of the momentum units' friction and noise alone (BAOAB's "O", Leimkuhler &
    Matthews 2013): tau_z dv = -gamma_f M^-1 v dt + sqrt(2 gamma_f T tau_z) dW over dt is v' = c v + sigma xi with
    c = exp(-gamma_f h / M), sigma = sqrt(T M (1 - c^2)), h = dt / tau_z (per unit, (d,))."""
    h = dt / tau_z
    c = torch.exp(-friction * h / mass)
    return c, (temperature * mass * (1 - c * c)).sqrt()


# ------------------------------------------------------------------------------------ error units ----

class ErrorForm(NamedTuple):
    """The error units' form: target (x - mu) / k for a Gaussian likelihood (``k`` = sigma_x^2 for "error", 1 for
    "bogacz") and ``leak`` (1 for "error", sigma_x^2 for "bogacz")."""
    name: str
    k: float
    leak: float


def error_form(name: str, sigma_x: float | None) -> ErrorForm:
    """The constants of form ``name`` ("error" or "bogacz") for a likelihood of std sigma_x (None: not Gaussian;
    "error" only, whose target is then the likelihood's own e(x, mu) and whose leak is 1)."""
    if name == "error":
        return ErrorForm("error", 1.0 if sigma_x is None else sigma_x**2, 1.0)
    if name == "bogacz":
        if sigma_x is None:
            raise ValueError("error_form='bogacz' needs a Gaussian likelihood")
        return ErrorForm("bogacz", 1.0, sigma_x**2)
    raise ValueError(f"error form must be 'error' or 'bogacz', got {name!r}")


def error_rate(dt: float, tau_e):
    """a_e = dt / tau_e: the error units' Euler coefficient (0.0 for adiabatic units, tau_e = 0)."""
    if not isinstance(tau_e, torch.Tensor) and tau_e == 0:
        return 0.0
    return dt / tau_e


def error_force_into(target: torch.Tensor, eps: torch.Tensor, leak: float) -> torch.Tensor:
    """F_e = target - leak eps, written into ``target`` (a fresh tensor the step owns)."""
    return target.sub_(eps, alpha=leak)


def error_drift(target: torch.Tensor, eps: torch.Tensor, leak: float, tau_e) -> torch.Tensor:
    """d eps/dt = (target - leak eps) / tau_e: the ODE form of the error units."""
    return (target - leak * eps) / tau_e


def settled_error(target: torch.Tensor, form: ErrorForm) -> torch.Tensor:
    """Adiabatic error units (tau_e -> 0): eps = target / leak (= e(x, g(z)) in both forms)."""
    return target / form.leak if form.name == "bogacz" else target


# ------------------------------------------------------------------------------------- gain units ----

def gain_update_(m: torch.Tensor, s: torch.Tensor, beta) -> torch.Tensor:
    """m <- beta m + (1 - beta) s^2 in place: the Euler step of tau_m dm = (s^2 - m) dt with beta = 1 - dt / tau_m
    (Algorithm 1's decay; per unit a tensor, ``circuits.timescales.gain_decay``).  The discrete sampler's gain units,
    ``neuro_lpc.gain.second_moment_update_``."""
    return second_moment_update_(m, s, beta)


def gain_of(m: torch.Tensor, delta: float, max_gain: float | None, correction=None) -> torch.Tensor:
    """G = min(1 / (sqrt(m / correction) + delta), G_max) (Adam's bias correction 1 - beta^t for a decay beta; None:
    sqrt(m)).  The cap is the gain unit's saturation (``neuro_lpc.langevin``: why 1e4).  ``neuro_lpc.gain``."""
    return gain_of_rms(rms(m, correction), delta, max_gain)


def gain_drift(s: torch.Tensor, m: torch.Tensor, tau_m) -> torch.Tensor:
    """dm/dt = (s^2 - m) / tau_m: the ODE form of the gain units."""
    return (s * s - m) / tau_m


# ------------------------------------------------------------------------------- linear circuit ----

def linear_drift(W, prior_var: float, form: ErrorForm, adiabatic: bool):
    """The drift matrix A of the noise-free linear circuit (decoder g(z) = W z + b, Gaussian likelihood) before the
    time constants, d[z; eps]/dt = D^-1 (A [z; eps] + c) with D = diag(tau_z, tau_e):

        finite tau_e:  A = [[ -I / s_p^2,  W^T       ],      (value units: F_z = W^T eps - z / s_p^2)
                            [ -W / k,     -leak I    ]]      (error units: F_e = (x - b - W z) / k - leak eps)
        adiabatic:     A = -(W^T W / sigma_x^2 + I / s_p^2)  (eps settled at e(x, W z + b)), d x d

    (numpy in, numpy out; W is (n, d)).  ``circuits.stability`` takes its eigenvalues for the Euler bound and
    ``circuits.theory`` its stationary law; both get the same constants as the kernels from here."""
    import numpy as np
    W = np.asarray(W, dtype=np.float64)
    n, d = W.shape
    if adiabatic:
        return -(W.T @ W / (form.k * form.leak) + np.eye(d) / prior_var)
    return np.block([[-np.eye(d) / prior_var, W.T], [-W / form.k, -form.leak * np.eye(n)]])


def linear_dynamics_drift(W, prior_var: float, form: ErrorForm, adiabatic: bool, dynamics: str = "overdamped",
                          skew=None, friction: float = 1.0, mass=1.0):
    """:func:`linear_drift` of each family of value-unit dynamics (before the time constants; numpy):

        overdamped      state [z, eps]       A = linear_drift
        nonreversible   state [z, eps]       the z rows of linear_drift left-multiplied by (I + J)
        underdamped     state [z, eps, v]    z rows [0, 0, M^-1];  v rows [score rows of linear_drift, -gamma_f M^-1]

    (eps absent when adiabatic).  ``skew`` J (d, d) antisymmetric; ``mass`` a number or (d,)."""
    import numpy as np
    A = linear_drift(W, prior_var, form, adiabatic)
    d = np.asarray(W).shape[1]
    if dynamics == "overdamped":
        return A
    if dynamics == "nonreversible":
        J = np.zeros((d, d)) if skew is None else np.asarray(skew, dtype=np.float64)
        A = A.copy()
        A[:d] = (np.eye(d) + J) @ A[:d]
        return A
    if dynamics != "underdamped":
        raise ValueError(f"dynamics must be 'overdamped', 'nonreversible' or 'underdamped', got {dynamics!r}")
    N = A.shape[0]
    inv_m = np.diag(1.0 / np.broadcast_to(np.asarray(mass, dtype=np.float64), (d,)))
    out = np.zeros((N + d, N + d))
    out[d:N, :N] = A[d:]                 # error units unchanged
    out[:d, N:] = inv_m                  # dz = M^-1 v
    out[N:, :N] = A[:d]                  # dv = s - gamma_f M^-1 v
    out[N:, N:] = -friction * inv_m
    return out
