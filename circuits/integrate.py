"""Euler-Maruyama integration of the LPC circuit, and the noise-free reference through torchdiffeq.

Euler-Maruyama (Ito; plain fixed step; every state advances together from the old state):

    X_{k+1} = X_k + dt f(X_k) + sqrt(dt) g(X_k) xi_k,

weak order 1 and, for the additive noise of the ideal circuit, strong order 1. The loop keeps the
device busy: no host synchronisation inside it except

* a NaN/inf check every ``config.check_every`` steps (and before each block of HDF5 records is
  written). The state at the last good check is snapshotted (with the generator state), so on
  divergence the window is replayed deterministically step by step to name the *first* bad step and
  unit exactly ("value unit z[3] of chain 5", "error unit eps[120] of chain 0") -- cheaper than
  tracking the first bad step on the device every step, which would cost more than a step of the
  linear circuit. The same check looks at the log-joints recorded since the previous one: a decoder
  that returns NaN for a chain leaves the state finite (its score does not see the NaN) but not the
  log-joint, so the first such record names its step, the chain and the decoder's first non-finite
  output unit at the recorded state;
* writing a full block of ``config.record_buffer`` records to HDF5 (when streaming).

Before any step, :func:`check_step_size` rejects a dt that makes Euler-Maruyama unstable: on
tau dx = -x dt the step multiplies x by (1 - dt/tau), which is stable only for dt < 2 tau; for a
linear decoder with a Gaussian likelihood it also checks the stiffness of the whole linear drift
(the eigenvalues mu of the drift matrix need |1 + dt mu| < 1, i.e. dt < min -2 Re mu / |mu|^2).

:func:`run_ode` integrates the noise-free circuit (preset ``none``, T = 0) with
``torchdiffeq.odeint`` (dopri5 by default): the reference Euler-Maruyama converges to as dt -> 0.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch

from neuro_lpc.errors import DivergenceError
from neuro_lpc.langevin import describe_bad_log_joint
from neuro_lpc.record import HDF5Recorder, Trajectory

from .run import CircuitRun

__all__ = ["check_step_size", "stable_dt_bound", "run_em", "run_ode"]

MAX_DENSE_EIG = 2048  # largest linear state (d + n) whose drift matrix is diagonalised densely


# =============================================================================== dt checks ====

def _euler_bound(mu: np.ndarray) -> float:
    """Largest stable EM step for drift eigenvalues mu (all with negative real part)."""
    mu = np.asarray(mu, dtype=np.complex128).ravel()
    if mu.size == 0:
        return math.inf
    if np.any(mu.real >= 0):
        return 0.0
    return float(np.min(-2 * mu.real / np.abs(mu) ** 2))


def _linear_gaussian_bound(circuit) -> float | None:
    """EM stability bound of a linear-decoder, Gaussian-likelihood circuit (None when not cheap)."""
    model = circuit.model
    W = model.decoder.weight.detach().double().cpu().numpy()
    n, d = W.shape
    var_x = float(model.likelihood.sigma.detach()) ** 2
    var_p = circuit.prior_std**2
    ts = circuit.timescales
    bogacz = circuit.config.error_form == "bogacz"
    if circuit.uniform_timescales:
        tau_z = float(ts.tau_z)
        if circuit.adiabatic:
            lam = np.linalg.eigvalsh(W.T @ W / var_x + np.eye(d) / var_p)
            return _euler_bound(-lam / tau_z)
        tau_e = float(ts.tau_e)
        k, leak = (1.0, var_x) if bogacz else (var_x, 1.0)
        s = np.linalg.svd(W, compute_uv=False)
        a = 1.0 / (var_p * tau_z)
        blocks = np.zeros((len(s), 2, 2))
        blocks[:, 0, 0] = -a
        blocks[:, 0, 1] = s / tau_z
        blocks[:, 1, 0] = -s / (k * tau_e)
        blocks[:, 1, 1] = -leak / tau_e
        mus = [np.linalg.eigvals(blocks).ravel()]
        if n > len(s):
            mus.append(np.array([-leak / tau_e]))
        if d > len(s):
            mus.append(np.array([-a]))
        return _euler_bound(np.concatenate(mus))
    # per-unit time constants: dense eigenvalues of D^-1 M when small enough
    N = d + (0 if circuit.adiabatic else n)
    if N > MAX_DENSE_EIG:
        return None
    tz = ts.tau_z.double().cpu().numpy() if isinstance(ts.tau_z, torch.Tensor) else np.full(d, float(ts.tau_z))
    if circuit.adiabatic:
        M = -(W.T @ W / var_x + np.eye(d) / var_p)
        return _euler_bound(np.linalg.eigvals(M / tz[:, None]))
    te = ts.tau_e.double().cpu().numpy().ravel() if isinstance(ts.tau_e, torch.Tensor) else np.full(n, float(ts.tau_e))
    k, leak = (1.0, var_x) if bogacz else (var_x, 1.0)
    M = np.block([[-np.eye(d) / var_p, W.T], [-W / k, -leak * np.eye(n)]])
    tau = np.concatenate([tz, te])
    return _euler_bound(np.linalg.eigvals(M / tau[:, None]))


def stable_dt_bound(circuit) -> tuple[float, str]:
    """(largest stable dt, what limits it) for Euler-Maruyama on this circuit's noise-free drift.

    Always: value units dt < 2 tau_z s_p^2 (their prior leak), error units dt < 2 tau_e / leak, gain
    units dt < tau_m (the nominal ``config.gain_tau()``: m' = (1 - dt/tau_m) m + (dt/tau_m) s^2 must stay
    >= 0 for sqrt(m), not only bounded; a per-unit tau_m,i decays as that decay ** (tau_m / tau_m,i),
    in (0, 1) whenever it is, ``circuits.timescales.gain_decay``; always true for a decay beta). For an
    ``nn.Linear`` decoder with a Gaussian likelihood (no preconditioning), also the eigenvalues of the whole
    linear drift (cheap: 2x2 blocks from the SVD of W when the time constants are uniform; a dense
    eigen-decomposition up to d + n = 2048 otherwise).
    """
    ts = circuit.timescales
    cfg = circuit.config
    small = lambda t: float(t.min()) if isinstance(t, torch.Tensor) else float(t)  # noqa: E731
    bounds = [(2 * small(ts.tau_z) * circuit.prior_std**2,
               f"the value units (smallest tau_z = {small(ts.tau_z):.4g} s, prior leak 1/s_p^2)")]
    if not circuit.adiabatic:
        leak = float(circuit.model.likelihood.sigma.detach()) ** 2 if cfg.error_form == "bogacz" else 1.0
        bounds.append((2 * small(ts.tau_e) / leak, f"the error units (smallest tau_e = {small(ts.tau_e):.4g} s"
                       + (f", leak sigma_x^2 = {leak:.4g})" if cfg.error_form == "bogacz" else ")")))
    if circuit.preconditioned:
        tm = cfg.gain_tau()
        bounds.append((tm, f"the gain units (tau_m = {tm:.4g} s; m must stay >= 0)"))
    if circuit.linear_decoder and circuit.gaussian and not circuit.preconditioned:
        lin = _linear_gaussian_bound(circuit)
        if lin is not None:
            bounds.append((lin, "the stiffness of the linear circuit (eigenvalues of its drift matrix)"))
    return min(bounds, key=lambda b: b[0])


def check_step_size(circuit) -> None:
    """Raise ValueError (before any step) when dt makes Euler-Maruyama unstable, naming the stable dt."""
    dt = float(circuit.config.dt)
    bound, what = stable_dt_bound(circuit)
    if not dt < bound:
        raise ValueError(f"dt={dt:g} s is unstable for Euler-Maruyama: {what} needs dt < {bound:.4g} s "
                         f"(dt <= {bound / 10:.3g} s for accuracy)")


# ========================================================================= Euler-Maruyama ====

def _check_int(name, v, lo, hi=None):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")


def _make_generator(circuit, generator):
    if generator is None:
        return torch.Generator(device=circuit.device).manual_seed(circuit.config.seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != circuit.device.type:
        raise ValueError(f"generator is on {generator.device} but the circuit runs on {circuit.device}")
    return generator


class _Records:
    """Preallocated device buffers for a block of records."""

    def __init__(self, run, size: int, record_eps: bool = False):
        B, d = run.z.shape
        self.record_eps = record_eps
        dev, dt = run.z.device, run.z.dtype
        self.size = size
        self.z = torch.empty((size, B, d), device=dev, dtype=dt)
        self.log_joint = torch.empty((size, B), device=dev, dtype=dt)
        self.extras = {"error_norm": torch.empty((size, B), device=dev, dtype=dt)}
        if run.m is not None:
            self.extras["gain"] = torch.empty((size, B, d), device=dev, dtype=dt)
        for name, v in run.noise_records().items():
            self.extras[name] = torch.empty((size, *v.shape), device=dev, dtype=v.dtype)
        if record_eps:
            self.extras["eps"] = torch.empty((size, *run.eps.shape), device=dev, dtype=dt)
        self.steps = [0] * size  # the step of each record (host ints: no sync)

    def put(self, i: int, run) -> None:
        """Record the current state. With ``run.defer_records`` the log joint (and, adiabatic, the error)
        is left to the next step's forward (``run.request_record``): call ``run.resolve_request()``
        before reading a record that no step has followed."""
        self.z[i].copy_(run.z)
        if run.defer_records:
            adiabatic = run.c.adiabatic
            if not adiabatic:
                torch.linalg.vector_norm(run.eps.reshape(run.B, -1), dim=1, out=self.extras["error_norm"][i])
            run.request_record(self.log_joint[i], self.extras["error_norm"][i] if adiabatic else None,
                               self.extras["eps"][i] if (self.record_eps and adiabatic) else None)
        else:
            lj, en = run.measure()
            self.log_joint[i].copy_(lj)
            self.extras["error_norm"][i].copy_(en)
        if run.m is not None:
            self.extras["gain"][i].copy_(run.gain())
        for name, v in run.noise_records().items():
            self.extras[name][i].copy_(v)
        if self.record_eps and not (run.defer_records and run.c.adiabatic):
            self.extras["eps"][i].copy_(run.error_units())
        self.steps[i] = run.k

    def block(self, n: int, dt: float):
        t = torch.tensor(self.steps[:n], dtype=torch.float64, device=self.z.device) * dt
        return t, self.z[:n], self.log_joint[:n], {k: v[:n] for k, v in self.extras.items()}


def run_em(circuit, x, z0=None, steps: int = 1000, record_every: int = 10, generator=None, encoder=None,
           accumulate_grad: bool = False, grad_scale: float | None = None, online_lr: float | None = None,
           record_path=None, keep_records: bool = True, record_eps: bool = False, records: str = "model") -> Trajectory:
    """Euler-Maruyama run of ``circuit`` (see ``Circuit.simulate`` for the arguments)."""

    cfg = circuit.config
    _check_int("steps", steps, 1)
    _check_int("record_every", record_every, 1, steps)
    if grad_scale is not None and not (isinstance(grad_scale, (int, float)) and math.isfinite(grad_scale)):
        raise ValueError(f"grad_scale must be a finite number, got {grad_scale!r}")
    if online_lr is not None and (isinstance(online_lr, bool) or not isinstance(online_lr, (int, float))
                                  or not math.isfinite(online_lr) or online_lr < 0):
        raise ValueError(f"online_lr must be a non-negative number, got {online_lr!r}")
    if record_path is not None and not isinstance(record_path, (str, os.PathLike)):
        raise ValueError(f"record_path must be a path, got {record_path!r}")
    if records not in ("model", "device"):
        raise ValueError(f"records must be 'model' or 'device', got {records!r}")
    gen = _make_generator(circuit, generator)
    x, z0 = circuit.initial_state(x, z0, gen, encoder)
    run = CircuitRun(circuit, x, z0, gen, accumulate_grad=accumulate_grad, online_lr=online_lr, records=records)
    R = steps // record_every
    streaming = record_path is not None
    block = min(R, cfg.record_buffer) if streaming else R
    recs = _Records(run, block, record_eps)
    dt = float(cfg.dt)
    attrs = circuit.attrs(steps=steps, record_every=record_every, kernel=run.kernel, batch=run.B,
                          accumulate_grad=bool(accumulate_grad), online_lr=online_lr,
                          **({"records": records} if records != "model" else {}))
    recorder = HDF5Recorder(record_path, attrs) if streaming else None
    snap = run.snapshot()
    filled = 0
    last = 0
    lj_checked = 0   # records of the current block whose log-joint has been checked
    check_every = cfg.check_every

    def check_records():
        """Raise naming the step, chain and output unit of the first non-finite recorded log-joint."""
        nonlocal lj_checked
        upto = filled - (1 if run._request is not None else 0)   # a pending record is not measured yet
        if upto <= lj_checked:
            return
        block_lj = recs.log_joint[lj_checked:upto]
        if bool(torch.isfinite(block_lj).all()):
            lj_checked = upto
            return
        row, chain = (int(i) for i in (~torch.isfinite(block_lj)).nonzero()[0])
        if not bool(torch.isfinite(recs.z[lj_checked + row, chain]).all()):
            return   # the state itself diverged: the replay of the state check names it
        step = recs.steps[lj_checked + row]
        unit, where = describe_bad_log_joint(circuit.model, run.x, recs.z[lj_checked + row], chain)
        if online_lr:
            run.restore(snap)  # leave the weights at their last good values
        raise DivergenceError(f"circuit diverged at step {step} (t = {step * dt:.6g} s): non-finite log p(x, z) of "
                              f"chain {chain} with a finite state ({where}); check the decoder, its weights and dt",
                              step=step, chain=chain, unit=unit)

    def check():
        """Host check; on divergence replay from the snapshot to name the first bad step, then raise."""
        nonlocal snap
        check_records()   # first: a log-joint can overflow before the state does (same answer for any window)
        if run.all_finite():
            snap = run.snapshot()
            return
        k_end = run.k
        run.drop_request()  # a pending record is of step k_end, past the first bad step: not kept
        run.restore(snap)
        bad_step = None
        while run.k < k_end:
            run.step()
            if not run.all_finite():
                bad_step = run.k
                break
        text, chain, unit = run.describe_bad_units()
        if bad_step is None:  # not reproducible (should not happen): report the window
            bad_step, text = k_end, text + f" (first detected at the check of step {k_end})"
        if online_lr:
            run.restore(snap)  # leave the weights at their last good values
        raise DivergenceError(f"circuit diverged at step {bad_step} (t = {bad_step * dt:.6g} s): {text}; "
                              f"try a smaller dt, larger time constants or less noise",
                              step=bad_step, chain=chain, unit=unit)

    def flush(n):
        """Write the first n records of the block (on divergence only those before the bad step)."""
        try:
            check()
        except DivergenceError as err:
            good = sum(1 for s in recs.steps[:n] if s < err.step)
            if good:
                t, z, lj, ex = recs.block(good, dt)
                recorder.append(t, z, lj, **ex)
            raise
        t, z, lj, ex = recs.block(n, dt)
        recorder.append(t, z, lj, **ex)

    try:
        for k in range(1, steps + 1):
            run.step()
            if k % record_every == 0:
                recs.put(filled, run)
                last = filled
                filled += 1
                if streaming and filled == block:
                    run.resolve_request()  # the block's last record, before it is written
                    flush(filled)
                    filled = lj_checked = 0
            if k % check_every == 0 or k == steps:
                check()
        run.resolve_request()  # the last record, when no step followed it: one forward
        check_records()
        run.finish()  # dynamic noise states handed to a persistent noise_state
        if streaming:
            if filled:
                flush(filled)
            recorder.close()
    except BaseException as err:
        if recorder is not None:
            recorder.close(status=f"failed: {type(err).__name__}: {err}")
        raise

    if accumulate_grad:  # .grad = grad_scale * sum_t sum_b grad_theta log p(x_b, z_b(t-1)) (+ what it held)
        scale = grad_scale if grad_scale is not None else -1.0 / (run.B * steps)
        for p, a in zip(run.learn_params, run.acc):
            a.mul_(scale)
            p.grad = a if p.grad is None else p.grad.add_(a)
    circuit.state = {"z": run.z, "eps": run.error_units(), "m": run.m, "t": steps * dt, "steps": steps,
                     "kernel": run.kernel}
    if streaming:
        attrs["record_path"] = str(record_path)
        if keep_records:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traj = Trajectory.from_hdf5(record_path, device=circuit.device)
            traj.attrs = attrs
            return traj
        t, z, lj, ex = recs.block(last + 1, dt)
        return Trajectory(t[-1:], z[-1:].clone(), lj[-1:].clone(), {k: v[-1:].clone() for k, v in ex.items()}, attrs)
    t, z, lj, ex = recs.block(R, dt)
    return Trajectory(t, z, lj, ex, attrs)


# ================================================================================== ODE ====

def run_ode(circuit, x, z0=None, t_end: float = 0.1, n_points: int = 101, t=None, method: str = "dopri5",
            rtol: float = 1e-7, atol: float = 1e-9, generator=None, encoder=None) -> Trajectory:
    """The noise-free circuit by ``torchdiffeq.odeint`` (see ``Circuit.simulate_ode``)."""
    from torchdiffeq import odeint


    if circuit.sources:
        raise ValueError("simulate_ode integrates the noise-free circuit (preset 'none'); this circuit has noise "
                         f"sources {[b.source.type for b in circuit.sources]}")
    if t is None:
        if not (isinstance(t_end, (int, float)) and math.isfinite(t_end) and t_end > 0):
            raise ValueError(f"t_end must be a positive number, got {t_end!r}")
        _check_int("n_points", n_points, 2)
        t = torch.linspace(0.0, float(t_end), n_points, dtype=torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 1 or len(t) < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t must be a strictly increasing 1-d sequence of at least two times")
    gen = _make_generator(circuit, generator)
    x, z0 = circuit.initial_state(x, z0, gen, encoder)
    run = CircuitRun(circuit, x, z0, gen)
    run._eps_fn = None  # the ODE carries eps itself (no reduced-basis reconstruction)
    tt = t.to(circuit.device, circuit.dtype)
    has_eps, has_m = not circuit.adiabatic, run.m is not None
    if has_m and run.bias_correct:
        # the ODE has no step count for Adam's bias correction: gain units start at the squared
        # initial score (the bias-corrected m_hat of the first step), as the continuous form does
        s0 = circuit.model.score(x, z0)
        run.m = (s0 * s0).detach()
    y0 = (z0,) + ((run.eps,) if has_eps else ()) + ((run.m,) if has_m else ())

    def f(_t, y):
        z = y[0]
        eps = y[1] if has_eps else None
        m = y[-1] if has_m else None
        dz, deps, dm = run.drift(z, eps, m)
        return (dz,) + ((deps,) if has_eps else ()) + ((dm,) if has_m else ())

    with torch.no_grad():
        sol = odeint(f, y0, tt, method=method, rtol=rtol, atol=atol)
    zs = sol[0]
    R, B = zs.shape[0], zs.shape[1]
    lj = torch.empty((R, B), device=circuit.device, dtype=circuit.dtype)
    en = torch.empty((R, B), device=circuit.device, dtype=circuit.dtype)
    extras = {"error_norm": en}
    if has_m:
        extras["gain"] = 1.0 / (sol[-1].sqrt() + run.delta)
    for r in range(R):
        run.z = zs[r]
        if has_eps:
            run.eps = sol[1][r]
        lj[r], en[r] = run.measure()
    attrs = circuit.attrs(method=method, rtol=rtol, atol=atol, solver="torchdiffeq.odeint")
    run.z = zs[-1]
    circuit.state = {"z": zs[-1], "eps": sol[1][-1] if has_eps else None, "m": sol[-1][-1] if has_m else None,
                     "t": float(t[-1]), "kernel": "ode"}
    return Trajectory(t, zs, lj, extras, attrs)
