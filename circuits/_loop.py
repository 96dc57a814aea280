"""What the eager loop (``circuits.integrate``) and the graphed loop (``circuits.fast``) share: the record
buffers and the divergence guard.

The guard keeps the loops free of host synchronisation except at its checks (every ``config.check_every`` steps,
before each block of HDF5 records is written, at the end).  At a check it first looks at the log-joints recorded
since the previous one: a decoder that returns NaN for a chain leaves the state finite (its score does not see the
NaN) but not the log-joint, so the first such record names its step, the chain and the decoder's first
non-finite output unit at the recorded state.  Then the state: the state at the last good check is snapshotted
(with the generator state), so on divergence the window is replayed deterministically step by step to name the
*first* bad step and unit exactly ("value unit z[3] of chain 5", "error unit eps[120] of chain 0") -- cheaper than
tracking the first bad step on the device every step, which would cost more than a step of the linear circuit.
"""
from __future__ import annotations

import torch

from neuro_lpc.chain import describe_bad_log_joint
from neuro_lpc.errors import DivergenceError

__all__ = ["Records", "DivergenceGuard", "final_state"]


class Records:
    """Preallocated device buffers for a block of ``size`` records of a run."""

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
        if getattr(run, "v", None) is not None:   # underdamped: the momentum units
            self.extras["v"] = torch.empty((size, B, d), device=dev, dtype=dt)
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
        if "v" in self.extras:
            self.extras["v"][i].copy_(run.v)
        for name, v in run.noise_records().items():
            self.extras[name][i].copy_(v)
        if self.record_eps and not (run.defer_records and run.c.adiabatic):
            self.extras["eps"][i].copy_(run.error_units())
        self.steps[i] = run.k

    def block(self, n: int, dt: float):
        """(t, z, log_joint, extras) of the first n records."""
        t = torch.tensor(self.steps[:n], dtype=torch.float64, device=self.z.device) * dt
        return t, self.z[:n], self.log_joint[:n], {k: v[:n] for k, v in self.extras.items()}


class DivergenceGuard:
    """The host check of a run (module docstring): records' log-joints, then the state; raises
    ``neuro_lpc.DivergenceError`` naming the first bad step, chain and unit.  With online learning the weights are
    left at their last good values."""

    def __init__(self, run, records: Records, dt: float):
        self.run, self.records, self.dt = run, records, dt
        self.snap = run.snapshot()
        self.checked = 0   # records of the current block whose log-joint has been checked

    def new_block(self) -> None:
        """The record buffer was written out and starts again at 0."""
        self.checked = 0

    def check_records(self, filled: int) -> None:
        """Raise naming the step, chain and output unit of the first non-finite recorded log-joint."""
        run, recs = self.run, self.records
        upto = filled - (1 if run._request is not None else 0)   # a pending record is not measured yet
        if upto <= self.checked:
            return
        block_lj = recs.log_joint[self.checked:upto]
        if bool(torch.isfinite(block_lj).all()):
            self.checked = upto
            return
        row, chain = (int(i) for i in (~torch.isfinite(block_lj)).nonzero()[0])
        if not bool(torch.isfinite(recs.z[self.checked + row, chain]).all()):
            return   # the state itself diverged: the replay of the state check names it
        step = recs.steps[self.checked + row]
        unit, where = describe_bad_log_joint(run.c.model, run.x, recs.z[self.checked + row], chain)
        if run.online_lr:
            run.restore(self.snap)  # leave the weights at their last good values
        raise DivergenceError(f"circuit diverged at step {step} (t = {step * self.dt:.6g} s): non-finite log p(x, z) of "
                              f"chain {chain} with a finite state ({where}); check the decoder, its weights and dt",
                              step=step, chain=chain, unit=unit)

    def check(self, filled: int) -> None:
        """Records first (a log-joint can overflow before the state does), then the state: snapshot when finite,
        else replay the window from the snapshot to name the first bad step and raise."""
        self.check_records(filled)
        run = self.run
        if run.all_finite():
            self.snap = run.snapshot()
            return
        k_end = run.k
        run.drop_request()  # a pending record is of step k_end, past the first bad step: not kept
        run.restore(self.snap)
        bad_step = None
        while run.k < k_end:
            run.step()
            if not run.all_finite():
                bad_step = run.k
                break
        text, chain, unit = run.describe_bad_units()
        if bad_step is None:  # not reproducible (should not happen): report the window
            bad_step, text = k_end, text + f" (first detected at the check of step {k_end})"
        if run.online_lr:
            run.restore(self.snap)  # leave the weights at their last good values
        raise DivergenceError(f"circuit diverged at step {bad_step} (t = {bad_step * self.dt:.6g} s): {text}; "
                              f"try a smaller dt, larger time constants or less noise",
                              step=bad_step, chain=chain, unit=unit)


def final_state(run, steps: int, dt: float) -> dict:
    """The state a run ends in (``Circuit.state``)."""
    return {"z": run.z, "eps": run.error_units(), "m": run.m, "v": getattr(run, "v", None), "t": steps * dt,
            "steps": steps, "kernel": run.kernel}
