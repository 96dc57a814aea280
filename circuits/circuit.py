"""The LPC circuit: value units z, precision-weighted error units eps, optional gain units m.

Equations (Ito form; DESIGN.md section 3; the continuous-time version of the paper's eq. 5):

    tau_e d eps = [ e(x, g(z)) - eps ] dt               + (error-unit noise)   form "error" (default)
    tau_e d eps = [ (x - g(z)) - sigma_x^2 eps ] dt      + (error-unit noise)   form "bogacz" (Gaussian only)
    tau_z d z   = G [ J_g(z)^T eps - z / s_p^2 ] dt + sqrt(2 T tau_z G) dW + (value-unit noise)
    tau_m d m   = [ (J_g(z)^T eps - z / s_p^2)^2 - m ] dt,     G = 1 / (sqrt(m) + delta)   (optional)

e(x, mu) = d log p(x | mu) / d mu is the precision-weighted prediction error (``GenerativeModel.error``),
J_g(z)^T eps a vector-Jacobian product through the decoder (``eps @ W`` for an ``nn.Linear`` decoder).
tau_e = 0 makes the error units adiabatic: eps = e(x, g(z)) exactly, and the z-equation is the
Langevin diffusion of p(z | x) with time scaled by 1 / tau_z (its invariant law is the posterior at T = 1).
With finite tau_e the z-marginal keeps the posterior mean but *not* its covariance
(``circuits.analysis``, ``docs/circuits.md``).

The units' equations are written once, in ``circuits.units``.  Integration is fixed-step Euler-Maruyama
(``circuits.integrate``; the per-step kernels in ``circuits.run.KERNELS``): every state advances together
from the old state, except that z moves with the gain G of the *updated* gain units (Algorithm 1's
order: m' = m + (dt/tau_m)(s^2 - m) first, then z' = z + (dt/tau_z) G(m') s + ...; s at the old state).
Key limit: with tau_e = 0, no extra noise, no preconditioning and dt = gamma * tau_z one step is
z += gamma * score + sqrt(2 gamma T) n, discrete ULA with step gamma; the circuit draws n as exactly
one ``torch.randn(z.shape, generator=...)`` first in every step, so the same seeded generator gives
the same chain as ``LangevinSampler(step_size=gamma)``. With ``precondition=beta`` (tau_m =
dt / (1 - beta), m = 0 at the start, G from the bias-corrected m / (1 - beta^t)) it is the same chain
as ``LangevinSampler(step_size=gamma, precondition=beta)`` (Algorithm 1).

Usage::

    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="ideal")
    traj = Circuit(model, cfg).simulate(x, steps=10_000, record_every=10)
    traj.t, traj.z, traj.log_joint, traj.extras["error_norm"]
"""
from __future__ import annotations

import os

import torch
from torch import nn

from neuro_lpc.model import GenerativeModel
from neuro_lpc.record import Trajectory

from .bound import BoundCircuit
from .config import ERROR_FORMS, LEARNING_RULES, CircuitConfig
from .integrate import run_em, run_ode
from .noise.arrays import AnalogArray
from .run_weights import RunWeights
from .stability import check_step_size

__all__ = ["CircuitConfig", "Circuit", "ERROR_FORMS", "LEARNING_RULES"]


class Circuit(BoundCircuit):
    """The LPC circuit for a ``neuro_lpc.GenerativeModel`` under a :class:`CircuitConfig`.

    Construction (``circuits.bound.BoundCircuit``) validates everything that can be checked before a run (config,
    noise model, time constants) and makes every frozen draw (device mismatch, programming noise, per-unit time
    constants) from ``config.seed``; then the Euler-Maruyama stability of dt is checked
    (``circuits.stability.check_step_size``).

    Attributes: ``model``, ``config``, ``noise`` (NoiseModel), ``temperature``, ``timescales``
    (per-unit, on the device), ``sources`` (the bound noise sources that act), ``frozen`` (every frozen
    draw by name), ``state`` (z, eps, m and t after the last ``simulate``), ``array`` (the analog array
    holding the decoder's weights when weight-device sources are on, else None).

    ``array``: an :class:`~circuits.noise.arrays.AnalogArray` the decoder's weights are read from
    (an owner -- a trainer, a deployment -- keeps it across circuits and advances its clock). Without
    one, weight-device sources program a fresh array from the model's weights at construction (one
    programming draw from ``config.seed``) whose clock starts at the drift source's ``t_start``.
    ``noise_state``: a dict an owner keeps across circuits so that dynamic noise states (the 1/f bank)
    continue from one run to the next instead of restarting in their stationary law.
    ``frozen_cache``: a dict an owner keeps across circuits of the same seed so that the frozen draws of the sources
    (``CircuitContext.frozen_randn``: feedback mismatch, unit mismatch) are drawn once, not per circuit (the same
    values either way).
    """

    def __init__(self, model: GenerativeModel, config: CircuitConfig | None = None, *, array: AnalogArray | None = None,
                 noise_state: dict | None = None, frozen_cache: dict | None = None, **overrides):
        super().__init__(model, config, array=array, noise_state=noise_state, frozen_cache=frozen_cache, **overrides)
        check_step_size(self)

    def simulate(self, x: torch.Tensor, z0: torch.Tensor | str | None = None, steps: int = 1000,
                 record_every: int = 10, generator: torch.Generator | None = None, encoder: nn.Module | None = None,
                 accumulate_grad: bool = False, grad_scale: float | None = None, online_lr: float | None = None,
                 record_path: str | os.PathLike | None = None, keep_records: bool = True,
                 record_eps: bool = False, fast: str | None = None, records: str = "model") -> Trajectory:
        """Integrate the circuit for ``steps`` Euler-Maruyama steps of ``config.dt`` from z0.

        Args:
            x: observations (B, ...) of the decoder's output shape.
            z0: initial value units (B, d); None or "prior" draws from the prior, "encoder" from
                ``encoder(x) = (mean, var)`` (a reparameterised sample), both with the run generator.
                Error units start settled at e(x, g(z0)); gain units at the squared initial score
                (precondition True/"rms") or at 0 with Adam's bias correction (a decay beta).
            steps: number of steps; record_every: record after every record_every-th step
                (R = steps // record_every records, at t = k record_every dt).
            generator: the run's random stream (default: a new generator seeded with config.seed).
            accumulate_grad: accumulate grad_theta log p(x, z(t)) at every step (state before the
                step) into the decoder's and likelihood's ``.grad`` (continuous eq. 8); ``.grad`` ends
                as grad_scale * sum over steps and chains (+ what it held), default -1/(B steps): the
                gradient of the time-averaged negative log joint. See ``config.learning_rule``.
            online_lr: if set, the weights move during the presentation:
                theta += online_lr * grad_theta mean_b log p(x_b, z_b) every step.
            record_path: stream records to this HDF5 file (overrides ``config.record_path``) in blocks
                of ``config.record_buffer`` records, so the run's memory is flat in its duration.
            keep_records: with ``record_path``, return the whole recording (read back from the file
                at the end, on the circuit's device); False returns only the final record (memory flat
                end to end; read the run later with ``Trajectory.from_hdf5``).
            record_eps: also record the error units as extra "eps" (R, B, ...) (the settled
                e(x, g(z)) when adiabatic).
            fast: None (eager) or "graphs": a sampling run as CUDA graphs of the ``record_every`` steps between
                records (``circuits.fast``; eager off CUDA and for what a graph cannot hold, named in
                ``traj.attrs["fast"]``). Not with learning, streaming, an encoder start or eps records.
            records: what the recorded log p(x, z) and error norm are measured under: "model" (default: the
                decoder's own parameters, the noise-free model) or "device" (the weights the circuit reads: its
                array's reads with programming error and drift at the record's time, the static weight hooks such
                as weight quantisation; no per-read noise) -- the loss of what a hardware-aware trainer learns on.

        Returns a ``neuro_lpc.record.Trajectory``: t (R,) s, z (R, B, d), log_joint (R, B) of the true
        model (of the weights read with ``records="device"``), extras "error_norm" (R, B) (||eps||, or
        ||e(x, g(z))|| when adiabatic), "gain" (R, B, d) when preconditioned, and the noise states sources were asked to record.
        Raises ``neuro_lpc.DivergenceError`` naming the step and unit on NaN/inf.
        """
        if fast is not None:
            if fast != "graphs":
                raise ValueError(f"fast must be None or 'graphs', got {fast!r}")
            given = [n for n, v in (("encoder", encoder), ("accumulate_grad", accumulate_grad), ("online_lr", online_lr),
                                    ("record_path", record_path or self.config.record_path), ("record_eps", record_eps),
                                    ("records='device'", records != "model"))
                     if v]
            if given:
                raise ValueError(f"fast='graphs' runs sampling only: drop {', '.join(given)} (or use fast=None)")
            from .fast import simulate_graphed
            return simulate_graphed(self, x, z0, steps=steps, record_every=record_every, generator=generator)
        traj, self.state = run_em(self, x, z0=z0, steps=steps, record_every=record_every, generator=generator,
                                  encoder=encoder,
                      accumulate_grad=accumulate_grad, grad_scale=grad_scale, online_lr=online_lr,
                      record_path=record_path if record_path is not None else self.config.record_path,
                      keep_records=keep_records, record_eps=record_eps, records=records)
        return traj

    def simulate_ode(self, x: torch.Tensor, z0: torch.Tensor | str | None = None, t_end: float = 0.1,
                     n_points: int = 101, t: torch.Tensor | None = None, method: str = "dopri5",
                     rtol: float = 1e-7, atol: float = 1e-9, generator: torch.Generator | None = None,
                     encoder: nn.Module | None = None) -> Trajectory:
        """The noise-free circuit (T = 0, preset ``none``) integrated by ``torchdiffeq.odeint``.

        Records at ``t`` (default linspace(0, t_end, n_points), including t = 0). The reference that
        Euler-Maruyama under preset ``none`` converges to as dt -> 0. The config must have no noise
        sources (the temperature is ignored: the ODE is the T = 0 circuit).
        """
        traj, self.state = run_ode(self, x, z0=z0, t_end=t_end, n_points=n_points, t=t, method=method, rtol=rtol, atol=atol,
                       generator=generator, encoder=encoder)
        return traj

    def effective_weights(self, t: float = 0.0) -> tuple[dict, dict]:
        """(forward, feedback) decoder weights a run sees at run time ``t`` (s), without read noise (which is
        fresh per product): the array's reads (programming, drift) and the static weight hooks."""
        w = RunWeights(self, learning=False)
        w._build(float(t), None)
        params = {n: p.detach() for n, p in self.model.decoder.named_parameters()}
        fwd = params if w.fwd is None else {n: v.detach() for n, v in w.fwd.items()}
        fb = fwd if w.fb is None or w.fb is w.fwd else {n: v.detach() for n, v in w.fb.items()}
        return fwd, fb


def __getattr__(name):
    """``circuits.circuit.CircuitRun`` (deprecated): the run moved to ``circuits.run``."""
    if name == "CircuitRun":
        import warnings
        warnings.warn("circuits.circuit.CircuitRun is deprecated; use circuits.run.CircuitRun", DeprecationWarning,
                      stacklevel=2)
        from .run import CircuitRun
        return CircuitRun
    raise AttributeError(f"module 'circuits.circuit' has no attribute {name!r}")
