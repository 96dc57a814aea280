"""Euler-Maruyama integration of the LPC circuit, and the noise-free reference through torchdiffeq.

Euler-Maruyama (Ito; plain fixed step; every state advances together from the old state):

    X_{k+1} = X_k + dt f(X_k) + sqrt(dt) g(X_k) xi_k,

weak order 1 and, for the additive noise of the ideal circuit, strong order 1.  :func:`run_em` is the one eager
loop: one ``CircuitRun.step`` per step (its kernel chosen from ``circuits.run.KERNELS``), records every
``record_every`` steps into device buffers, and no host synchronisation inside it except

* the divergence guard's check every ``config.check_every`` steps (``circuits._loop.DivergenceGuard``: names the
  first bad step, chain and unit by a deterministic replay from the last good snapshot);
* writing a full block of ``config.record_buffer`` records to HDF5 (when streaming).

The step size was checked before (``circuits.stability``, at circuit construction).

:func:`run_ode` integrates the noise-free circuit (preset ``none``, T = 0) with ``torchdiffeq.odeint`` (dopri5 by
default) through the units' ODE form (``CircuitRun.drift``): the reference Euler-Maruyama converges to as dt -> 0.

Both return ``(trajectory, final state)``; the entry points (``Circuit.simulate``, ``simulate_graphed``) keep the
final state as ``circuit.state``.
"""
from __future__ import annotations

import math
import os
import warnings

import torch

from neuro_lpc.errors import DivergenceError
from neuro_lpc.record import HDF5Recorder, Trajectory

from ._checks import check_int
from ._loop import DivergenceGuard, Records, final_state
from .bound import BoundCircuit
from .run import CircuitRun
from .units import gain_of

__all__ = ["run_em", "run_ode"]


# ========================================================================= Euler-Maruyama ====

def check_em_arguments(steps, record_every, grad_scale, online_lr, record_path, records) -> None:
    """One-line errors for the loop's own arguments, before any work."""
    check_int("steps", steps, 1)
    check_int("record_every", record_every, 1, steps)
    if grad_scale is not None and not (isinstance(grad_scale, (int, float)) and math.isfinite(grad_scale)):
        raise ValueError(f"grad_scale must be a finite number, got {grad_scale!r}")
    if online_lr is not None and (isinstance(online_lr, bool) or not isinstance(online_lr, (int, float))
                                  or not math.isfinite(online_lr) or online_lr < 0):
        raise ValueError(f"online_lr must be a non-negative number, got {online_lr!r}")
    if record_path is not None and not isinstance(record_path, (str, os.PathLike)):
        raise ValueError(f"record_path must be a path, got {record_path!r}")
    if records not in ("model", "device"):
        raise ValueError(f"records must be 'model' or 'device', got {records!r}")


class _RecordStream:
    """The records of an eager run: device buffers of one block (the whole run, or ``config.record_buffer`` records
    when streaming to HDF5), the divergence guard, and the HDF5 writer."""

    def __init__(self, run: CircuitRun, steps: int, record_every: int, record_path, record_eps: bool, attrs: dict):
        cfg = run.c.config
        self.run, self.dt, self.attrs = run, float(cfg.dt), attrs
        self.R = steps // record_every
        self.path = record_path
        self.block = min(self.R, cfg.record_buffer) if record_path is not None else self.R
        self.recs = Records(run, self.block, record_eps)
        self.recorder = HDF5Recorder(record_path, attrs) if record_path is not None else None
        self.guard = DivergenceGuard(run, self.recs, self.dt)
        self.filled = self.last = 0

    def record(self) -> None:
        """Record the current state; write the block out when it is full (streaming)."""
        self.recs.put(self.filled, self.run)
        self.last = self.filled
        self.filled += 1
        if self.recorder is not None and self.filled == self.block:
            self.run.resolve_request()  # the block's last record, before it is written
            self.flush(self.filled)
            self.filled = 0
            self.guard.new_block()

    def check(self) -> None:
        self.guard.check(self.filled)

    def flush(self, n: int) -> None:
        """Write the first n records of the block (on divergence only those before the bad step)."""
        try:
            self.check()
        except DivergenceError as err:
            good = sum(1 for s in self.recs.steps[:n] if s < err.step)
            if good:
                t, z, lj, ex = self.recs.block(good, self.dt)
                self.recorder.append(t, z, lj, **ex)
            raise
        t, z, lj, ex = self.recs.block(n, self.dt)
        self.recorder.append(t, z, lj, **ex)

    def end_records(self) -> None:
        """After the last step: the last record's log-joint and a final records check."""
        self.run.resolve_request()  # the last record, when no step followed it: one forward
        self.guard.check_records(self.filled)

    def close(self) -> None:
        """The last block written, the file closed (streaming)."""
        if self.recorder is not None:
            if self.filled:
                self.flush(self.filled)
            self.recorder.close()

    def fail(self, err: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.close(status=f"failed: {type(err).__name__}: {err}")

    def trajectory(self, keep_records: bool, device) -> Trajectory:
        """The whole recording (read back from the file when streaming), or only the last record (streaming with
        ``keep_records=False``)."""
        if self.recorder is None:
            return Trajectory(*self.recs.block(self.R, self.dt), self.attrs)
        self.attrs["record_path"] = str(self.path)
        if keep_records:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traj = Trajectory.from_hdf5(self.path, device=device)
            traj.attrs = self.attrs
            return traj
        t, z, lj, ex = self.recs.block(self.last + 1, self.dt)
        return Trajectory(t[-1:], z[-1:].clone(), lj[-1:].clone(), {k: v[-1:].clone() for k, v in ex.items()},
                          self.attrs)


def _hand_gradients(run: CircuitRun, grad_scale: float | None, steps: int) -> None:
    """.grad = grad_scale * sum_t sum_b grad_theta log p(x_b, z_b(t-1)) (+ what it held); default -1/(B steps)."""
    scale = grad_scale if grad_scale is not None else -1.0 / (run.B * steps)
    for p, a in zip(run.learn_params, run.acc):
        a.mul_(scale)
        p.grad = a if p.grad is None else p.grad.add_(a)


def run_em(circuit: BoundCircuit, x, z0=None, steps: int = 1000, record_every: int = 10, generator=None, encoder=None,
           accumulate_grad: bool = False, grad_scale: float | None = None, online_lr: float | None = None,
           record_path=None, keep_records: bool = True, record_eps: bool = False, records: str = "model",
           kernel: str | None = None) -> tuple[Trajectory, dict]:
    """Euler-Maruyama run of ``circuit`` (see ``Circuit.simulate`` for the arguments; ``kernel`` forces one of
    ``circuits.run.KERNELS``, for tests).  Returns (trajectory, final state)."""
    check_em_arguments(steps, record_every, grad_scale, online_lr, record_path, records)
    gen = circuit.make_generator(generator)
    x, z0 = circuit.initial_state(x, z0, gen, encoder)
    run = CircuitRun(circuit, x, z0, gen, accumulate_grad=accumulate_grad, online_lr=online_lr, records=records,
                     kernel=kernel)
    attrs = circuit.attrs(steps=steps, record_every=record_every, kernel=run.kernel, batch=run.B,
                          accumulate_grad=bool(accumulate_grad), online_lr=online_lr,
                          **({"records": records} if records != "model" else {}))
    stream = _RecordStream(run, steps, record_every, record_path, record_eps, attrs)
    check_every = circuit.config.check_every
    try:
        for k in range(1, steps + 1):
            run.step()
            if k % record_every == 0:
                stream.record()
            if k % check_every == 0 or k == steps:
                stream.check()
        stream.end_records()
        run.finish()  # dynamic noise states handed to a persistent noise_state
        stream.close()
    except BaseException as err:
        stream.fail(err)
        raise
    if accumulate_grad:
        _hand_gradients(run, grad_scale, steps)
    return stream.trajectory(keep_records, circuit.device), final_state(run, steps, float(circuit.config.dt))


# ================================================================================== ODE ====

def run_ode(circuit: BoundCircuit, x, z0=None, t_end: float = 0.1, n_points: int = 101, t=None, method: str = "dopri5",
            rtol: float = 1e-7, atol: float = 1e-9, generator=None, encoder=None) -> tuple[Trajectory, dict]:
    """The noise-free circuit by ``torchdiffeq.odeint`` (see ``Circuit.simulate_ode``): (trajectory, final state)."""
    from torchdiffeq import odeint

    if circuit.sources:
        raise ValueError("simulate_ode integrates the noise-free circuit (preset 'none'); this circuit has noise "
                         f"sources {[b.source.type for b in circuit.sources]}")
    if t is None:
        if not (isinstance(t_end, (int, float)) and math.isfinite(t_end) and t_end > 0):
            raise ValueError(f"t_end must be a positive number, got {t_end!r}")
        check_int("n_points", n_points, 2)
        t = torch.linspace(0.0, float(t_end), n_points, dtype=torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 1 or len(t) < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t must be a strictly increasing 1-d sequence of at least two times")
    gen = circuit.make_generator(generator)
    x, z0 = circuit.initial_state(x, z0, gen, encoder)
    # a general kernel: the ODE carries eps itself (no reduced-basis reconstruction) and uses its forward / feedback
    run = CircuitRun(circuit, x, z0, gen, kernel="linear" if circuit.linear_decoder else "autograd")
    tt = t.to(circuit.device, circuit.dtype)
    has_eps, has_m = not circuit.adiabatic, run.m is not None
    if has_m and run.bias_correct:
        # the ODE has no step count for Adam's bias correction: gain units start at the squared
        # initial score (the bias-corrected m_hat of the first step), as the continuous form does
        s0 = circuit.model.score(x, z0)
        run.m = (s0 * s0).detach()
    has_v = run.underdamped   # momentum units (no gain units with them: CircuitConfig refuses the pair)
    y0 = (z0,) + ((run.eps,) if has_eps else ()) + ((run.m,) if has_m else ()) + ((run.v,) if has_v else ())

    def f(_t, y):
        z = y[0]
        eps = y[1] if has_eps else None
        m = y[-1] if has_m else None
        if has_v:
            dz, deps, _, dv = run.drift(z, eps, None, y[-1])
            return (dz,) + ((deps,) if has_eps else ()) + (dv,)
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
        extras["gain"] = gain_of(sol[-1], run.delta, run.max_gain)
    for r in range(R):
        run.z = zs[r]
        if has_eps:
            run.eps = sol[1][r]
        lj[r], en[r] = run.measure()
    attrs = circuit.attrs(method=method, rtol=rtol, atol=atol, solver="torchdiffeq.odeint")
    run.z = zs[-1]
    state = {"z": zs[-1], "eps": sol[1][-1] if has_eps else None, "m": sol[-1][-1] if has_m else None,
             "v": sol[-1][-1] if has_v else None,
             "t": float(t[-1]), "kernel": "ode"}
    return Trajectory(t, zs, lj, extras, attrs), state


def __getattr__(name):
    """``circuits.integrate.stable_dt_bound`` / ``check_step_size`` (deprecated): moved to ``circuits.stability``."""
    if name in ("stable_dt_bound", "check_step_size"):
        warnings.warn(f"circuits.integrate.{name} is deprecated; use circuits.stability.{name}", DeprecationWarning,
                      stacklevel=2)
        from . import stability
        return getattr(stability, name)
    raise AttributeError(f"module 'circuits.integrate' has no attribute {name!r}")
