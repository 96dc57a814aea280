"""``simulate_brian2``: the circuit of ``Circuit(model, config).simulate`` integrated by Brian2.

Same arguments and the same :class:`~neuro_lpc.record.Trajectory` as the torch simulator: records after every
``record_every``-th step (t = k record_every dt, k = 1..steps // record_every), z (R, B, d) in the model's
dtype, log_joint (R, B) of the true model, extras "error_norm" (R, B) (||eps||, or ||e(x, g(z))|| when the
error units are adiabatic) and "eps" (R, B, n) when ``record_eps``. The equations and what can be
expressed are in ``circuits.brian.network`` and ``circuits.brian.spec``.
"""
from __future__ import annotations

import time

import torch

from neuro_lpc.errors import DivergenceError
from neuro_lpc.record import Trajectory

from .._checks import check_int
from .network import run_network
from .spec import BrianUnsupported, circuit_spec

__all__ = ["simulate_brian2", "TARGETS", "code_object_class"]

TARGETS = ("numpy", "cython")


def code_object_class(target: str):
    """The Brian2 runtime code-object class of ``target`` ("numpy" or "cython"; cython needs a C compiler)."""
    if target == "numpy":
        from brian2.codegen.runtime.numpy_rt import NumpyCodeObject
        return NumpyCodeObject
    if target == "cython":
        try:
            from brian2.codegen.runtime.cython_rt import CythonCodeObject
        except ImportError as err:  # pragma: no cover - Cython is installed with brian2 here
            raise BrianUnsupported(f"target 'cython' is not available: {err}") from None
        return CythonCodeObject
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def _measure(model, x, z, eps, adiabatic):
    """log p(x, z) (R, B) of the true model and the error norm (R, B) of records z (R, B, d)."""
    R, B, d = z.shape
    zz = z.reshape(R * B, d)
    xx = x.unsqueeze(0).expand(R, *x.shape).reshape(R * B, *x.shape[1:])
    with torch.no_grad():
        lj = model.log_joint(xx, zz).reshape(R, B)
        if adiabatic:
            err = model.error(xx, model.decoder(zz)).reshape(R, B, -1)
        else:
            err = eps
        norm = torch.linalg.vector_norm(err.reshape(R, B, -1), dim=2)
    return lj, norm


def simulate_brian2(model, x: torch.Tensor, config, z0=None, steps: int = 10_000, record_every: int = 10,
                    seed: int | None = None, target: str = "numpy", record_eps: bool = False) -> Trajectory:
    """Integrate ``Circuit(model, config)``'s SDE with Brian2 (Euler-Maruyama, ``method="euler"``).

    Args:
        model: a ``neuro_lpc.GenerativeModel`` (Gaussian likelihood; nn.Linear or fully connected decoder).
        x: observations (B, n). config: a ``CircuitConfig`` (the same one the torch circuit takes).
        z0: (B, d) tensor, or None / "prior" (the prior draw ``Circuit.simulate`` makes from ``config.seed``).
        steps, record_every: as ``Circuit.simulate``.
        seed: seed of Brian2's random numbers (``brian2.seed``, modulo 2**32; default ``config.seed``). The frozen draws
            (mismatch, time constants, programming noise) always come from ``config.seed``, as in torch.
        target: "numpy" (no compiler) or "cython" (compiled once, cached in ~/.cython; faster per step).
        record_eps: also record the error units as extra "eps" (R, B, n).

    Returns a ``Trajectory`` (see the module docstring); ``attrs["simulator"] == "brian2"``.
    Raises ``BrianUnsupported`` (a ValueError) naming what Brian2 cannot express, ValueError on bad
    arguments (both before any work), and ``neuro_lpc.DivergenceError`` on NaN/inf.
    """
    check_int("steps", steps, 1)
    check_int("record_every", record_every, 1, steps)
    if seed is not None:
        check_int("seed", seed, 0)
    codeobj = code_object_class(target)
    spec = circuit_spec(model, x, config, z0=z0, seed=seed)
    circuit = spec.pop("_circuit")
    t0 = time.perf_counter()
    out = run_network(spec, steps, record_every, seed=spec["seed"], codeobj_class=codeobj)
    wall = time.perf_counter() - t0
    dev, dtype = circuit.device, circuit.dtype
    z = torch.as_tensor(out["z"], dtype=dtype, device=dev)
    eps = None if out["eps"] is None else torch.as_tensor(out["eps"], dtype=dtype, device=dev)
    for name, rec in (("value unit z", z), ("error unit eps", eps)):
        if rec is not None and not bool(torch.isfinite(rec).all()):
            r, c, i = (int(v) for v in torch.nonzero(~torch.isfinite(rec))[0])
            step = (r + 1) * record_every
            raise DivergenceError(f"Brian2 circuit diverged by step {step} (t = {step * spec['dt']:.6g} s): non-finite "
                                  f"{name}_{i} of chain {c}; try a smaller dt or less noise", step=step, chain=c, unit=i)
    xt = torch.as_tensor(spec["x"], dtype=dtype, device=dev)
    lj, norm = _measure(model, xt, z, eps, circuit.adiabatic)
    extras = {"error_norm": norm}
    if record_eps:
        if eps is None:
            with torch.no_grad():
                R, B, d = z.shape
                xx = xt.unsqueeze(0).expand(R, *xt.shape).reshape(R * B, -1)
                eps = model.error(xx, model.decoder(z.reshape(R * B, d))).reshape(R, B, -1)  # settled e(x, g(z))
        extras["eps"] = eps
    attrs = circuit.attrs(steps=steps, record_every=record_every, batch=int(spec["B"]), simulator="brian2",
                          target=target, brian_seed=int(spec["seed"]), wall_s=wall)
    return Trajectory(torch.as_tensor(out["t"], dtype=torch.float64, device=dev), z, lj, extras, attrs)
