"""The linear LPC circuit in Brian2: an independent implementation for cross-checks and export.

For a linear decoder g(z) = W z + b with a Gaussian likelihood (std sigma_x) and the prior
N(0, s_p^2 I), the circuit of DESIGN.md section 3 is, in Ito form,

    tau_e d eps = [ (x - W z - b) / sigma_x^2 - eps ] dt                  (form "error", tau_e > 0)
    tau_e d eps = [ (x - W z - b) - sigma_x^2 eps ] dt                   (form "bogacz")
    tau_z d z   = [ W^T eps - z / s_p^2 ] dt + sqrt(2 T tau_z) dW

and with ``tau_e = 0`` (adiabatic error units) eps is the algebraic (x - W z - b) / sigma_x^2.

Brian2 formulation
------------------
* two ``NeuronGroup`` s: value units z (B*d neurons) and error units eps (B*n neurons), one copy of
  the circuit per chain b (neuron b*d + i is z_i of chain b, neuron b*n + j is eps_j of chain b);
* the products W z and W^T eps are ``(summed)`` synaptic variables of two ``Synapses`` objects
  (z -> eps with weight W[j, i], eps -> z with the same weight), wired only within a chain;
* the noise is Brian2's ``xi`` (units s^-1/2, a step adds sqrt(dt) * xi):
  dz/dt = (W^T eps - z / s_p^2) / tau_z + sqrt(2 T / tau_z) xi, i.e. the SDE above divided by tau_z;
* ``method="euler"`` is Euler-Maruyama for this additive noise;
* every object uses the ``numpy`` code-generation target (``NumpyCodeObject``): no compiler is
  needed, and ``seed`` (Brian2's ``seed()``, i.e. numpy's global generator, whose state is saved
  and restored around the run) makes a run reproducible.

One step is exact Euler-Maruyama from the state at the start of the step: Brian2 schedules the
summed-variable updaters at ``order - 1`` of their target group in the "groups" slot, so both
W z and W^T eps are summed from the old state before either group's state updater runs (for
``tau_e = 0`` the groups are ordered so that W z, then eps, then W^T eps are formed first).

Brian2's numpy target costs some 100 us per step whatever the size: keep to small models (a few
units, up to a few hundred chains) and a few 10^4 steps.

Times are given in seconds as plain floats; they are attached to Brian2's ``second`` inside.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import positive as _positive

__all__ = ["BrianCircuitTrajectory", "simulate_linear_circuit_brian", "build_linear_circuit_network",
           "linear_circuit_from_model"]

_FORMS = ("error", "bogacz")


class BrianCircuitTrajectory(NamedTuple):
    """Output of :func:`simulate_linear_circuit_brian` (numpy float64 arrays).

    t (R,) record times in seconds: 0, record_dt, 2 record_dt, ... up to ``duration`` (inclusive
    when ``duration`` is a multiple of ``record_dt``); z (R, B, d); eps (R, B, n).
    Row 0 is the initial state.
    """

    t: np.ndarray
    z: np.ndarray
    eps: np.ndarray


# --------------------------------------------------------------------------------- inputs ----

def _as_array(name, value, ndim):
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(value, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _steps(name, total, dt):
    k = int(round(total / dt))
    if k < 1 or abs(k * dt - total) > 1e-9 * max(total, dt):
        raise ValueError(f"{name}={total:g} s must be a positive whole multiple of dt={dt:g} s")
    return k


def _check_inputs(W, b, x, z0, eps0, sigma_x, prior_std, tau_z, tau_e, temperature, form):
    W = _as_array("W", W, 2)
    n, d = W.shape
    b = _as_array("b", b, 1)
    if b.shape != (n,):
        raise ValueError(f"b must have shape (n={n},) for W of shape {W.shape}, got {b.shape}")
    x = _as_array("x", x, (1, 2))
    if x.shape[-1] != n:
        raise ValueError(f"x must have shape (n={n},) or (B, n={n}), got {x.shape}")
    z0 = _as_array("z0", z0, (1, 2))
    if z0.shape[-1] != d:
        raise ValueError(f"z0 must have shape (d={d},) or (B, d={d}), got {z0.shape}")
    x, z0 = np.atleast_2d(x), np.atleast_2d(z0)
    B = max(x.shape[0], z0.shape[0])
    for name, arr in (("x", x), ("z0", z0)):
        if arr.shape[0] not in (1, B):
            raise ValueError(f"batch sizes of x and z0 differ: {x.shape[0]} vs {z0.shape[0]}")
    x, z0 = np.broadcast_to(x, (B, n)).copy(), np.broadcast_to(z0, (B, d)).copy()
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
    var_x = _positive("sigma_x", sigma_x) ** 2
    var_p = _positive("prior_std", prior_std) ** 2
    tau_z = _positive("tau_z", tau_z)
    tau_e = _positive("tau_e", tau_e, allow_zero=True)
    T = _positive("temperature", temperature, allow_zero=True)
    if eps0 is None:
        err = x - z0 @ W.T - b                       # error units settled at z0: eps*(z0)
        eps0 = err / var_x
    else:
        eps0 = np.atleast_2d(_as_array("eps0", eps0, (1, 2)))
        if eps0.shape[-1] != n or eps0.shape[0] not in (1, B):
            raise ValueError(f"eps0 must have shape (n={n},) or (B={B}, n={n}), got {eps0.shape}")
        eps0 = np.broadcast_to(eps0, (B, n)).copy()
    return W, b, x, z0, eps0, var_x, var_p, tau_z, tau_e, T, B, n, d


# -------------------------------------------------------------------------------- network ----

def build_linear_circuit_network(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                                 temperature: float, dt: float, z0, eps0=None, form: str = "error",
                                 record_dt: float | None = None, record: bool = True):
    """Build (without running) the Brian2 network of the linear circuit (module docstring).

    Returns ``(network, value_units, error_units, monitors)`` where ``monitors`` is a dict with
    StateMonitors ``"z"`` and ``"eps"`` (empty when ``record=False``).  The groups' equations,
    namespace and code target (numpy) are set; use it to inspect or export the model.
    All times in seconds (floats).
    """
    import brian2 as b2
    from brian2.codegen.runtime.numpy_rt import NumpyCodeObject

    W, b, x, z0, eps0, var_x, var_p, tau_z, tau_e, T, B, n, d = _check_inputs(
        W, b, x, z0, eps0, sigma_x, prior_std, tau_z, tau_e, temperature, form)
    dt = _positive("dt", dt)
    rec_dt = dt if record_dt is None else dt * _steps("record_dt", _positive("record_dt", record_dt), dt)
    namespace = {"tau_z": tau_z * b2.second, "tau_e": tau_e * b2.second, "var_x": var_x, "var_p": var_p,
                 "temperature": T}
    kw = {"dt": dt * b2.second, "codeobj_class": NumpyCodeObject, "namespace": namespace}

    z_eqs = """
    dz/dt = (WTe - z / var_p) / tau_z + sqrt(2 * temperature / tau_z) * xi : 1
    WTe : 1
    """
    if tau_e > 0:
        drive = "(x_in - Wz - b_out) / var_x - eps" if form == "error" else "(x_in - Wz - b_out) - var_x * eps"
        eps_eqs = f"""
        deps/dt = ({drive}) / tau_e : 1
        x_in : 1 (constant)
        b_out : 1 (constant)
        Wz : 1
        """
        orders = (0, 0)     # both summed updaters (order -1) run before both state updaters (order 0)
    else:
        eps_eqs = """
        eps = (x_in - Wz - b_out) / var_x : 1
        x_in : 1 (constant)
        b_out : 1 (constant)
        Wz : 1
        """
        orders = (2, 0)     # Wz at -1, then W^T eps(Wz) at 1, then z's state updater at 2
    value_units = b2.NeuronGroup(B * d, z_eqs, method="euler", order=orders[0], name="value_units*", **kw)
    error_units = b2.NeuronGroup(B * n, eps_eqs, method="euler", order=orders[1], name="error_units*", **kw)

    # wiring: chain c, latent i, observation j
    c, i, j = np.meshgrid(np.arange(B), np.arange(d), np.arange(n), indexing="ij")
    pre_z, post_e = (c * d + i).ravel(), (c * n + j).ravel()
    forward = b2.Synapses(value_units, error_units, "w : 1 (constant)\nWz_post = w * z_pre : 1 (summed)",
                          name="forward_weights*", **kw)
    forward.connect(i=pre_z, j=post_e)
    forward.w = W[np.asarray(forward.j[:]) % n, np.asarray(forward.i[:]) % d]
    feedback = b2.Synapses(error_units, value_units, "w : 1 (constant)\nWTe_post = w * eps_pre : 1 (summed)",
                           name="feedback_weights*", **kw)
    feedback.connect(i=post_e, j=pre_z)
    feedback.w = W[np.asarray(feedback.i[:]) % n, np.asarray(feedback.j[:]) % d]

    value_units.z = z0.ravel()
    error_units.x_in = x.ravel()
    error_units.b_out = np.tile(b, B)
    if tau_e > 0:
        error_units.eps = eps0.ravel()
    objects = [value_units, error_units, forward, feedback]
    monitors = {}
    if record:
        mkw = {"dt": rec_dt * b2.second, "codeobj_class": NumpyCodeObject}
        monitors["z"] = b2.StateMonitor(value_units, "z", record=True, name="z_monitor*", **mkw)
        if tau_e > 0:   # algebraic error units are a function of z: recorded through z (a monitor of the
            # subexpression would see W z from the previous step, since Wz is summed in the "groups" slot)
            monitors["eps"] = b2.StateMonitor(error_units, "eps", record=True, name="eps_monitor*", **mkw)
        objects += list(monitors.values())
    return b2.Network(*objects), value_units, error_units, monitors


def simulate_linear_circuit_brian(W, b, x, sigma_x: float, prior_std: float, tau_z: float, tau_e: float,
                                  temperature: float, dt: float, duration: float, z0, eps0=None, seed: int | None = 0,
                                  record_dt: float | None = None, form: str = "error") -> BrianCircuitTrajectory:
    """Integrate the linear circuit with Brian2 (Euler-Maruyama, numpy target) and return the record.

    Args:
        W: (n, d) decoder weights; b: (n,) bias; x: (n,) or (B, n) observation(s).
        sigma_x, prior_std: likelihood and prior standard deviations.
        tau_z, tau_e: time constants in seconds (tau_e = 0: adiabatic error units).
        temperature: T (1 = Langevin PC, 0 = classic noise-free PC).
        dt, duration: step and run length in seconds (duration a multiple of dt).
        z0: (d,) or (B, d) initial value units; eps0: (n,) or (B, n) initial error units, default the
            settled error e(x, W z0 + b) (ignored for tau_e = 0).
        seed: seed of the noise (Brian2 ``seed``); None leaves numpy's global generator as it is.
        record_dt: record interval in seconds (a multiple of dt; default every step).
        form: "error" or "bogacz" (see the module docstring).

    Returns a :class:`BrianCircuitTrajectory` (t (R,), z (R, B, d), eps (R, B, n)), numpy float64.
    Raises ValueError on bad input before building anything, and a FloatingPointError naming the
    first non-finite unit when the run diverges (unstable dt).
    """
    import brian2 as b2

    dt_f = _positive("dt", dt)
    steps = _steps("duration", _positive("duration", duration), dt_f)
    every = 1 if record_dt is None else _steps("record_dt", _positive("record_dt", record_dt), dt_f)
    net, value_units, error_units, mon = build_linear_circuit_network(
        W, b, x, sigma_x, prior_std, tau_z, tau_e, temperature, dt_f, z0, eps0, form, record_dt)
    n_rec = (steps - 1) // every + 1                # records at t = 0, every, ... < steps (Brian2's t < duration)
    n, d = np.shape(W)
    B = len(value_units) // d
    state = np.random.get_state()
    try:
        if seed is not None:
            b2.seed(int(seed))
        net.run(steps * dt_f * b2.second, namespace={})
        z_rec = np.asarray(mon["z"].z[:, :n_rec]).T
        t_rec = np.arange(n_rec) * every * dt_f
        final = steps % every == 0                  # the final state lies on the record grid
        if final:
            z_rec = np.concatenate([z_rec, np.asarray(value_units.z[:])[None]])
            t_rec = np.append(t_rec, steps * dt_f)
        if "eps" in mon:
            e_rec = np.asarray(mon["eps"].eps[:, :n_rec]).T
            if final:
                e_rec = np.concatenate([e_rec, np.asarray(error_units.eps[:])[None]])
    finally:
        if seed is not None:
            np.random.set_state(state)
    z_rec = z_rec.reshape(len(t_rec), B, d)
    if "eps" in mon:
        e_rec = e_rec.reshape(len(t_rec), B, n)
    else:                                           # tau_e = 0: eps(t) = e(x, W z(t) + b) exactly
        p = _check_inputs(W, b, x, z0, None, sigma_x, prior_std, tau_z, tau_e, temperature, form)
        Wm, bm, xm, var_x = p[0], p[1], p[2], p[5]
        e_rec = (xm - np.einsum("rbd,nd->rbn", z_rec, Wm) - bm) / var_x
    for name, rec in (("value unit z", z_rec), ("error unit eps", e_rec)):
        bad = ~np.isfinite(rec)
        if bad.any():
            r = int(np.argwhere(bad.any(axis=(1, 2)))[0, 0])
            c, i = np.argwhere(bad[r])[0]
            raise FloatingPointError(f"Brian2 circuit diverged by t={t_rec[r]:g} s: non-finite {name}_{i} of chain {c} "
                                     f"(dt={dt_f:g} s is probably unstable for tau_z={tau_z:g} s, tau_e={tau_e:g} s)")
    return BrianCircuitTrajectory(t=t_rec, z=z_rec, eps=e_rec)


def linear_circuit_from_model(model) -> dict:
    """W, b, sigma_x and prior_std of a GenerativeModel with an ``nn.Linear`` decoder and a Gaussian likelihood
    (float64 numpy), as keyword arguments for :func:`simulate_linear_circuit_brian`."""
    from torch import nn

    from neuro_lpc.likelihoods import GaussianLikelihood

    dec = model.decoder
    if not isinstance(dec, nn.Linear):
        raise ValueError(f"the Brian2 circuit needs a linear decoder (torch.nn.Linear), got {type(dec).__name__}")
    if not isinstance(model.likelihood, GaussianLikelihood):
        raise ValueError(f"the Brian2 circuit needs a Gaussian likelihood, got {type(model.likelihood).__name__}")
    W = dec.weight.detach().cpu().double().numpy()
    b = dec.bias.detach().cpu().double().numpy() if dec.bias is not None else np.zeros(W.shape[0])
    return {"W": W, "b": b, "sigma_x": float(model.likelihood.sigma), "prior_std": float(model.prior_std)}
