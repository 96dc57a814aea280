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

Integration is fixed-step Euler-Maruyama (``circuits.integrate``): every state advances together
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

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.func import functional_call

from neuro_lpc.likelihoods import LOG_2PI, GaussianLikelihood
from neuro_lpc.model import GenerativeModel
from neuro_lpc.record import Trajectory

from .noise import CircuitContext, NoiseModel
from .timescales import TimescaleModel, Timescales, Uniform, derive_seed, make_timescales

__all__ = ["CircuitConfig", "Circuit", "ERROR_FORMS", "LEARNING_RULES"]

ERROR_FORMS = ("error", "bogacz")
LEARNING_RULES = ("hebbian", "exact")
PRECONDITION = (None, False, True, "rms")


def _number(name, value, *, positive=False, nonneg=False, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"CircuitConfig: {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"CircuitConfig: {name} must be positive, got {value!r}")
    if nonneg and value < 0:
        raise ValueError(f"CircuitConfig: {name} must be non-negative, got {value!r}")


@dataclass
class CircuitConfig:
    """Configuration of a :class:`Circuit` (seconds throughout).

    dt: Euler-Maruyama step. tau_z, tau_e: time constants of value and error units (medians when
    the time-constant model is heterogeneous; tau_e = 0 = adiabatic error units). temperature: T of
    the intrinsic Langevin noise (None: the noise model's, i.e. 0 for preset ``none``, else 1).
    noise: preset name (``none``, ``ideal``, ``thermal``, ``analog``, ``cortical``), path to a JSON
    file, dict or :class:`~circuits.noise.NoiseModel`. precondition: None/False/0 (off), True/"rms"
    (gain units m with time constant ``precondition_tau``, starting at the squared initial score) or a
    decay beta in (0, 1) (Algorithm 1: tau_m = dt / (1 - beta), m = 0 at the start and the gain from
    the bias-corrected m / (1 - beta^t)); ``precondition_delta`` is the gain floor.
    error_form: "error" or "bogacz". timescales: None (the noise model's, else uniform), a name of
    ``circuits.timescales.TIMESCALES``, a dict or a TimescaleModel. learning_rule: what the decoder
    learns from with ``accumulate_grad`` / ``online_lr``: "hebbian" (the error units' eps, one
    backward per step; equal to grad_theta log p(x, z) when the error units are adiabatic) or "exact"
    (e(x, g(z)), a second backward when tau_e > 0). seed: seeds the run generator and every frozen
    draw. check_every: steps between host checks for NaN/inf. record_path: stream records to this
    HDF5 file (memory flat in duration); record_buffer: records per device block written at once.
    device: where to run (None: the model's device; the model must already be there).
    """

    dt: float = 1e-4
    tau_z: float = 1e-2
    tau_e: float = 2e-3
    temperature: float | None = None
    noise: Any = "ideal"
    precondition: bool | str | None = None
    precondition_tau: float = 0.1
    precondition_delta: float = 1e-8
    error_form: str = "error"
    timescales: Any = None
    learning_rule: str = "hebbian"
    seed: int = 0
    check_every: int = 100
    record_path: str | None = None
    record_buffer: int = 256
    device: str | None = None

    def validate(self) -> "CircuitConfig":
        """Raise a clear ValueError on any bad field; returns self."""
        _number("dt", self.dt, positive=True)
        _number("tau_z", self.tau_z, positive=True)
        _number("tau_e", self.tau_e, nonneg=True)
        _number("temperature", self.temperature, nonneg=True, allow_none=True)
        _number("precondition_tau", self.precondition_tau, positive=True)
        _number("precondition_delta", self.precondition_delta, positive=True)
        pc = self.precondition
        if pc not in PRECONDITION and not (isinstance(pc, float) and 0 <= pc < 1):
            raise ValueError(f"CircuitConfig: precondition must be None, False, True, 'rms' or a decay beta in [0, 1), "
                             f"got {pc!r}")
        if self.error_form not in ERROR_FORMS:
            raise ValueError(f"CircuitConfig: error_form must be one of {ERROR_FORMS}, got {self.error_form!r}")
        if self.learning_rule not in LEARNING_RULES:
            raise ValueError(f"CircuitConfig: learning_rule must be one of {LEARNING_RULES}, got {self.learning_rule!r}")
        for name in ("seed", "check_every", "record_buffer"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and name != "seed") or (name == "seed" and v < 0):
                raise ValueError(f"CircuitConfig: {name} must be a {'non-negative' if name == 'seed' else 'positive'} "
                                 f"integer, got {v!r}")
        if self.record_path is not None and not isinstance(self.record_path, (str, os.PathLike)):
            raise ValueError(f"CircuitConfig: record_path must be a path or None, got {self.record_path!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"CircuitConfig: bad device {self.device!r}: {err}") from None
        self.noise_model()
        self.timescale_model()
        return self

    @property
    def preconditioned(self) -> bool:
        pc = self.precondition
        return pc is True or pc == "rms" or (isinstance(pc, float) and pc > 0)

    def gain_tau(self) -> float:
        """tau_m: ``precondition_tau``, or dt / (1 - beta) for a discrete decay beta (one step = dt)."""
        pc = self.precondition
        if isinstance(pc, float) and 0 < pc < 1:
            return float(self.dt) / (1.0 - pc)
        return float(self.precondition_tau)

    def noise_model(self) -> NoiseModel:
        return NoiseModel.resolve(self.noise)

    def timescale_model(self) -> TimescaleModel:
        """The configured model, else the noise model's, else uniform."""
        if self.timescales is not None:
            return make_timescales(self.timescales)
        nm = self.noise_model()
        return nm.timescales if nm.timescales is not None else Uniform()

    def resolved_temperature(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        t = self.noise_model().temperature
        return 1.0 if t is None else float(t)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, NoiseModel):
                v = v.to_dict()
            elif isinstance(v, TimescaleModel):
                v = v.to_dict()
            elif isinstance(v, (os.PathLike, torch.device)):
                v = str(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CircuitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"CircuitConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(d)).validate()


def _error_scale(likelihood) -> float:
    """Natural scale of the error units: 1/sigma for (discretised) Gaussians, 1 otherwise."""
    sigma = getattr(likelihood, "sigma", None)
    if sigma is None:
        return 1.0
    return 1.0 / float(sigma.detach() if isinstance(sigma, torch.Tensor) else sigma)


class Circuit:
    """The LPC circuit for a ``neuro_lpc.GenerativeModel`` under a :class:`CircuitConfig`.

    Construction validates everything that can be checked before a run (config, noise model,
    time constants, the Euler-Maruyama stability of dt) and makes every frozen draw (device mismatch,
    programming noise, per-unit time constants) from ``config.seed``.

    Attributes: ``model``, ``config``, ``noise`` (NoiseModel), ``temperature``, ``timescales``
    (per-unit, on the device), ``sources`` (the bound noise sources that act), ``frozen`` (every frozen
    draw by name), ``state`` (z, eps, m and t after the last ``simulate``).
    """

    def __init__(self, model: GenerativeModel, config: CircuitConfig | None = None, **overrides):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a neuro_lpc.GenerativeModel, got {type(model).__name__}")
        config = dataclasses.replace(config or CircuitConfig(), **overrides) if overrides else (config or CircuitConfig())
        self.config = config.validate()
        self.model = model
        p = next(model.parameters(), None)
        model_device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(config.device) if config.device is not None else model_device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if model_device != self.device:
            raise ValueError(f"the model is on {model_device} but the circuit runs on {self.device}: "
                             f"move the model first (model.to('{self.device}'))")
        self.dtype = p.dtype if p is not None else torch.get_default_dtype()
        self.noise = config.noise_model()
        self.temperature = config.resolved_temperature()
        self.timescale_model = config.timescale_model()
        self.linear_decoder = type(model.decoder) is nn.Linear
        self.gaussian = isinstance(model.likelihood, GaussianLikelihood)
        if config.error_form == "bogacz" and not self.gaussian:
            raise ValueError("error_form='bogacz' (precision as the error unit's leak) needs a GaussianLikelihood, "
                             f"got {type(model.likelihood).__name__}; use error_form='error'")
        ts = self.timescale_model.build(config.tau_z, config.tau_e, config.gain_tau(), model.latent_dim,
                                        model.output_shape, seed=config.seed)
        self.timescales: Timescales = ts.to(self.device, self.dtype)
        self.prior_std = float(model.prior_std)
        self.error_scale = _error_scale(model.likelihood)
        frozen_gen = torch.Generator().manual_seed(derive_seed(config.seed, 2))
        self.context = CircuitContext(
            latent_dim=model.latent_dim, obs_shape=tuple(model.output_shape), device=self.device, dtype=self.dtype,
            dt=float(config.dt), timescales=self.timescales, temperature=self.temperature, prior_std=self.prior_std,
            error_scale=self.error_scale, weights={n: w.detach() for n, w in model.decoder.named_parameters()},
            frozen_gen=frozen_gen)
        self.sources = self.noise.bind(self.context)
        # hooks collected once: a source with nothing to do costs nothing per step
        hooks = {}
        for name in ("value_transform", "prediction_transform", "error_transform", "weight_static", "weight_dynamic",
                     "feedback_static", "pre_step", "value_increment", "error_increment", "state_clip", "record"):
            hooks[name] = [getattr(b, name) for b in self.sources if getattr(b, name) is not None]
        self.hooks = hooks
        self.frozen = {f"{b.source.type}[{i}].{k}": v for i, b in enumerate(self.sources) for k, v in b.frozen.items()
                       if isinstance(v, torch.Tensor)}
        self.state: dict[str, Any] | None = None
        from .integrate import check_step_size
        check_step_size(self)

    # ------------------------------------------------------------------ properties
    @property
    def adiabatic(self) -> bool:
        return self.timescales.adiabatic

    @property
    def preconditioned(self) -> bool:
        return self.config.preconditioned

    @property
    def uniform_timescales(self) -> bool:
        ts = self.timescales
        return not any(isinstance(t, torch.Tensor) for t in (ts.tau_z, ts.tau_e, ts.tau_m))

    def attrs(self, **extra) -> dict:
        """The run attributes stored with every trajectory / recording."""
        return {"config": self.config.to_dict(), "noise_model": self.noise.to_dict(), "seed": self.config.seed,
                "dt": float(self.config.dt), "temperature": self.temperature,
                "timescale_model": self.timescale_model.to_dict(), "adiabatic": self.adiabatic,
                "latent_dim": self.model.latent_dim, **extra}

    # ---------------------------------------------------------------------- public
    def simulate(self, x: torch.Tensor, z0: torch.Tensor | str | None = None, steps: int = 1000,
                 record_every: int = 10, generator: torch.Generator | None = None, encoder: nn.Module | None = None,
                 accumulate_grad: bool = False, grad_scale: float | None = None, online_lr: float | None = None,
                 record_path: str | os.PathLike | None = None, keep_records: bool = True,
                 record_eps: bool = False) -> Trajectory:
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

        Returns a ``neuro_lpc.record.Trajectory``: t (R,) s, z (R, B, d), log_joint (R, B) of the true
        model, extras "error_norm" (R, B) (||eps||, or ||e(x, g(z))|| when adiabatic), "gain" (R, B, d)
        when preconditioned, and the noise states sources were asked to record.
        Raises ``neuro_lpc.DivergenceError`` naming the step and unit on NaN/inf.
        """
        from .integrate import run_em
        return run_em(self, x, z0=z0, steps=steps, record_every=record_every, generator=generator, encoder=encoder,
                      accumulate_grad=accumulate_grad, grad_scale=grad_scale, online_lr=online_lr,
                      record_path=record_path if record_path is not None else self.config.record_path,
                      keep_records=keep_records, record_eps=record_eps)

    def simulate_ode(self, x: torch.Tensor, z0: torch.Tensor | str | None = None, t_end: float = 0.1,
                     n_points: int = 101, t: torch.Tensor | None = None, method: str = "dopri5",
                     rtol: float = 1e-7, atol: float = 1e-9, generator: torch.Generator | None = None,
                     encoder: nn.Module | None = None) -> Trajectory:
        """The noise-free circuit (T = 0, preset ``none``) integrated by ``torchdiffeq.odeint``.

        Records at ``t`` (default linspace(0, t_end, n_points), including t = 0). The reference that
        Euler-Maruyama under preset ``none`` converges to as dt -> 0. The config must have no noise
        sources (the temperature is ignored: the ODE is the T = 0 circuit).
        """
        from .integrate import run_ode
        return run_ode(self, x, z0=z0, t_end=t_end, n_points=n_points, t=t, method=method, rtol=rtol, atol=atol,
                       generator=generator, encoder=encoder)

    # -------------------------------------------------------------------- helpers
    def initial_state(self, x: torch.Tensor, z0, generator: torch.Generator | None,
                      encoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated (x, z0) on the circuit's device/dtype (see ``simulate``)."""
        model = self.model
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        x = x.to(self.device, self.dtype)
        model.check_inputs(x)
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        B = x.shape[0]
        if z0 is None or (isinstance(z0, str) and z0 == "prior"):
            z0 = self.prior_std * torch.randn((B, model.latent_dim), generator=generator, device=self.device,
                                              dtype=self.dtype)
        elif isinstance(z0, str) and z0 == "encoder":
            if encoder is None:
                raise ValueError("z0='encoder' needs encoder= (a module returning (mean, var))")
            with torch.no_grad():
                out = encoder(x)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ValueError("encoder(x) must return (mean, var)")
            mean, var = (o.detach().to(self.device, self.dtype) for o in out)
            z0 = mean + var.sqrt() * torch.randn(mean.shape, generator=generator, device=self.device, dtype=self.dtype)
        elif isinstance(z0, str):
            raise ValueError(f"z0 must be a tensor, None, 'prior' or 'encoder', got {z0!r}")
        elif isinstance(z0, torch.Tensor):
            z0 = z0.detach().to(self.device, self.dtype)
        else:
            raise TypeError(f"z0 must be a tensor, None, 'prior' or 'encoder', got {type(z0).__name__}")
        model.check_inputs(x, z0)
        if not torch.isfinite(z0).all():
            raise ValueError("z0 contains NaN or inf")
        return x, z0.clone()


# ================================================================================ runs ====

class _Weights:
    """Forward / feedback parameters of the decoder for one step, with the noise sources' weight hooks.

    Gradients pass straight through every perturbation: p_eff = p + (hooked(p) - p).detach().
    ``fwd`` / ``fb`` are dicts for ``functional_call`` (None: use the module's own parameters; ``fb is
    fwd`` when the feedback path has no mismatch of its own).
    """

    def __init__(self, circuit: Circuit, learning: bool):
        self.c = circuit
        self.params = dict(circuit.model.decoder.named_parameters())
        h = circuit.hooks
        self.static, self.dynamic, self.fb_static = h["weight_static"], h["weight_dynamic"], h["feedback_static"]
        self.any = bool(self.static or self.dynamic or self.fb_static)
        self.per_step = bool(self.dynamic) or (learning and self.any)
        self.learning = learning
        self.fwd = self.fb = None
        self._static_cache = None
        if self.any and not self.per_step:
            self._build(0.0, None)

    def _hooked_static(self):
        out = {}
        with torch.no_grad():
            for name, p in self.params.items():
                w = p.detach()
                for hook in self.static:
                    w = hook(name, w)
                out[name] = w
        return out

    def _build(self, t: float, gen):
        if self._static_cache is None or self.learning:
            self._static_cache = self._hooked_static()
        fwd = {}
        with torch.no_grad():
            for name, w in self._static_cache.items():
                for hook in self.dynamic:
                    w = hook(name, w, t, gen)
                fwd[name] = w
        if self.learning:  # straight-through: gradients reach the unperturbed parameters. The caller runs
            # the step under no_grad (the state update builds no graph), so the graph is enabled here:
            # without it p_eff has no grad_fn and no gradient reaches the stored parameters
            with torch.enable_grad():
                fwd = {name: p + (fwd[name] - p.detach()) for name, p in self.params.items()}
        if self.fb_static:
            fb = {}
            with torch.no_grad():
                for name, w in fwd.items():
                    w = w.detach()
                    for hook in self.fb_static:
                        w = hook(name, w)
                    fb[name] = w
            if self.learning:
                with torch.enable_grad():
                    fb = {name: fwd[name] + (fb[name] - fwd[name].detach()) for name in fwd}
        else:
            fb = fwd
        self.fwd, self.fb = fwd, fb

    def step(self, t: float, gen) -> None:
        if self.per_step:
            self._build(t, gen)


class CircuitRun:
    """State and per-step kernel of one ``simulate`` call (internal; used by ``circuits.integrate``).

    Kernels (chosen once per run): "linear-plain-reduced" / "linear-plain" (nn.Linear decoder, Gaussian
    likelihood, uniform time constants, no noise sources, no preconditioning, no learning: one randn and
    3-4 in-place ops per step, in the reduced basis f = eps W when d < n, see ``_setup_plain``),
    "linear" (nn.Linear decoder, any options but learning: explicit matmuls) and "autograd" (any
    decoder: forward through ``functional_call`` and one vector-Jacobian product per step; learning).
    """

    def __init__(self, circuit: Circuit, x: torch.Tensor, z0: torch.Tensor, gen: torch.Generator,
                 accumulate_grad: bool = False, online_lr: float | None = None):
        c = self.c = circuit
        cfg = c.config
        self.x, self.gen = x, gen
        self.B = x.shape[0]
        self.k = 0
        self.dt = float(cfg.dt)
        model = c.model
        self.lik = model.likelihood
        self.sp2 = c.prior_std**2
        ts = c.timescales
        T = c.temperature
        self.noisy = T > 0
        self.az = self.dt / ts.tau_z
        self.cz = (2 * T * self.dt / ts.tau_z) ** 0.5 if self.noisy else 0.0
        self.ae = 0.0 if c.adiabatic else self.dt / ts.tau_e
        self.am = self.dt / ts.tau_m
        self.bogacz = cfg.error_form == "bogacz"
        self.leak = float(self.lik.sigma.detach()) ** 2 if self.bogacz else 1.0
        self.delta = float(cfg.precondition_delta)
        self.learning = bool(accumulate_grad or online_lr)
        self.accumulate = bool(accumulate_grad)
        self.online_lr = online_lr
        h = c.hooks
        self.value_tr, self.pred_tr, self.err_tr = h["value_transform"], h["prediction_transform"], h["error_transform"]
        self.pre_steps, self.val_inc, self.err_inc = h["pre_step"], h["value_increment"], h["error_increment"]
        self.clips, self.recorders = h["state_clip"], h["record"]
        for b in c.sources:
            b.start(self.B, gen)
        # state
        self.z = z0
        self.zn = torch.empty_like(z0)
        self.n = torch.empty_like(z0)
        with torch.no_grad():
            mu0 = model.decoder(z0)
            self._eps = model.error(x, mu0).detach().clone()
        self.en = None if c.adiabatic else torch.empty_like(self._eps)
        self.m = None
        # gain units: a decay beta is Algorithm 1 (m = 0, G from the bias-corrected m / (1 - beta^t));
        # the continuous form ("rms" / True) starts at the squared initial score, no bias correction
        self.bias_correct = isinstance(cfg.precondition, float) and c.preconditioned
        # the gain units' decay per step, beta = 1 - dt / tau_m (exactly the configured beta when uniform)
        self.gain_beta = 1.0 - self.am
        if self.bias_correct and not isinstance(ts.tau_m, torch.Tensor):
            self.gain_beta = float(cfg.precondition)
        if self.bias_correct:
            self.m = torch.zeros_like(z0)
        elif c.preconditioned:
            s0 = model.score(x, z0)
            self.m = (s0 * s0).detach()
        # learning
        self.learn_params = []
        if self.learning:
            self.dec_params = [p for p in model.decoder.parameters() if p.requires_grad]
            self.lik_params = [p for p in model.likelihood.parameters() if p.requires_grad]
            self.learn_params = self.dec_params + self.lik_params
            if not self.learn_params:
                raise ValueError("accumulate_grad / online_lr: the model has no parameters that require grad")
            self.acc = [torch.zeros_like(p) for p in self.learn_params] if self.accumulate else None
        # kernel
        self._eps_fn = None
        self._state_names = ("z", "_eps", "m")
        plain = (c.linear_decoder and c.gaussian and not c.sources and c.uniform_timescales and not c.preconditioned
                 and not self.learning)
        if plain:
            self._setup_plain()
        else:
            self.kernel = "linear" if (c.linear_decoder and not self.learning) else "autograd"
            self.weights = _Weights(c, self.learning)
            self._forward = self._forward_linear if self.kernel == "linear" else self._forward_autograd
            self._feedback = self._feedback_linear if self.kernel == "linear" else self._feedback_autograd
            self.step = self._step_general
        # records: the log joint at a recorded state from the next step's forward (no forward per
        # record) when that forward is the true model's (no value transform, no weight perturbation)
        self.defer_records = (not plain and not self.value_tr and not self.weights.any)
        self._request = None
        self._err_cache = None
        self._lean_record = c.linear_decoder and c.gaussian and not self.learning
        if self._lean_record:  # read once, before the loop (sigma does not change without learning)
            self._record_prec = float(torch.exp(-2 * self.lik.log_sigma.detach()))
            self._lj_const()
            self.xmb_cache()

    # the error units: a tensor, or reconstructed on demand by the reduced linear kernels
    @property
    def eps(self) -> torch.Tensor:
        return self._eps_fn() if self._eps_fn is not None else self._eps

    @eps.setter
    def eps(self, value: torch.Tensor) -> None:
        self._eps = value

    # ------------------------------------------------------------------ plain kernels
    def _setup_plain(self):
        """Linear decoder g(z) = W z + b, Gaussian likelihood, no noise sources (module docstring).

        With the error units eps (B, n) and d < n the linear circuit is integrated in the reduced
        basis of its feedback f = eps W (B, d): since eps' = be eps + ae_k z W^T + xb,

            f' = be f + ae_k z G + xb W,   G = W^T W (d x d),   z' = bz z + az f + cz n,

        which is the same Euler-Maruyama recursion (to rounding) at O(B d^2) instead of O(B n d) per
        step. f is stored shifted by the constant f* = xb W / (1 - be), next to the running sum
        q' = be q + ae_k z, so one product [f - f*, q]' = be [f - f*, q] + ae_k z [G | I] advances both;
        a step is one randn and four small in-place ops. eps itself is rebuilt when needed (records,
        checks, the final state): eps_k = be^k eps_0 + (1 - be^k) / (1 - be) xb + q_k W^T. Adiabatic
        error units reduce likewise to z' = z M + h + cz n with M = bz I - az prec G, h = az prec (x - b) W.
        d >= n keeps the direct form (eps updated in place by one addmm per step).
        """
        dec = self.c.model.decoder
        W = dec.weight.detach()
        b = dec.bias.detach() if dec.bias is not None else torch.zeros(W.shape[0], device=W.device, dtype=W.dtype)
        self.W, self.Wt = W, W.t()
        n, d = W.shape
        prec = float(torch.exp(-2 * self.lik.log_sigma.detach()))
        self.prec = prec
        k = 1.0 if self.bogacz else prec
        self.bz = 1.0 - self.az / self.sp2
        self.xmb = (self.x - b).contiguous()
        reduced = d < n
        if self.c.adiabatic:
            if reduced:
                self.kernel = "linear-plain-reduced"
                G = self.Wt @ W
                self.M = torch.eye(d, device=W.device, dtype=W.dtype) * self.bz - (self.az * prec) * G
                self.h = (self.xmb @ W) * (self.az * prec)
                self._eps_fn = self._eps_adiabatic
                self._state_names = ("z",)
                self.step = self._step_reduced_adiabatic
            else:
                self.kernel = "linear-plain"
                self.xbp = self.xmb * prec
                self.step = self._step_plain_adiabatic
            return
        self.be = 1.0 - self.ae * self.leak
        self.ae_k = -self.ae * k
        self.xb = self.xmb * (self.ae * k)
        if reduced:
            self.kernel = "linear-plain-reduced"
            d_ = self.z.shape[1]
            eye = torch.eye(d_, device=W.device, dtype=W.dtype)
            self.GI = torch.cat([self.Wt @ W, eye], dim=1)  # [G | I], (d, 2d)
            self.Iaz = eye * self.az
            fstar = (self.xb @ W) / (1.0 - self.be)  # the constant part of f's fixed point
            self.cfz = fstar * self.az
            self.S = torch.cat([self._eps @ W - fstar, torch.zeros_like(self.z)], dim=1)  # [f - f*, q]
            self.fs, self.q = self.S[:, :d_], self.S[:, d_:]
            self.eps0 = self._eps
            self._eps_fn = self._eps_reduced
            self._state_names = ("z", "S")
            self.step = self._step_reduced
        else:
            self.kernel = "linear-plain"
            self.step = self._step_plain

    def _step_plain(self):
        if self.noisy:
            torch.randn(self.z.shape, generator=self.gen, out=self.n)
        torch.addmm(self.z, self._eps, self.W, beta=self.bz, alpha=self.az, out=self.zn)
        if self.noisy:
            self.zn.add_(self.n, alpha=self.cz)
        self._eps.addmm_(self.z, self.Wt, beta=self.be, alpha=self.ae_k).add_(self.xb)
        self.z, self.zn = self.zn, self.z
        self.k += 1

    def _step_plain_adiabatic(self):
        if self.noisy:
            torch.randn(self.z.shape, generator=self.gen, out=self.n)
        torch.addmm(self.xbp, self.z, self.Wt, alpha=-self.prec, out=self._eps)
        torch.addmm(self.z, self._eps, self.W, beta=self.bz, alpha=self.az, out=self.zn)
        if self.noisy:
            self.zn.add_(self.n, alpha=self.cz)
        self.z, self.zn = self.zn, self.z
        self.k += 1

    def _step_reduced(self):
        z, zn = self.z, self.zn
        if self.noisy:
            torch.randn(z.shape, generator=self.gen, out=self.n)
        torch.addmm(z, self.fs, self.Iaz, beta=self.bz, out=zn).add_(self.cfz)  # bz z + az f
        if self.noisy:
            zn.add_(self.n, alpha=self.cz)
        self.S.addmm_(z, self.GI, beta=self.be, alpha=self.ae_k)  # f - f* and q in one product
        self.z, self.zn = zn, z
        self.k += 1

    def _step_reduced_adiabatic(self):
        if self.noisy:
            torch.randn(self.z.shape, generator=self.gen, out=self.n)
        torch.addmm(self.h, self.z, self.M, out=self.zn)
        if self.noisy:
            self.zn.add_(self.n, alpha=self.cz)
        self.z, self.zn = self.zn, self.z
        self.k += 1

    def _eps_reduced(self) -> torch.Tensor:
        q = self.S[:, self.z.shape[1]:]
        pk = self.be ** self.k
        s = (1.0 - pk) / (1.0 - self.be)
        return torch.addmm(torch.add(self.eps0 * pk, self.xb, alpha=s), q, self.Wt)

    def _eps_adiabatic(self) -> torch.Tensor:
        return torch.addmm(self.xmb, self.z, self.Wt, alpha=-1).mul_(self.prec)

    # ---------------------------------------------------------------- general kernel
    def _forward_linear(self, z_in):
        w = self.weights.fwd
        if w is None:
            dec = self.c.model.decoder
            W, b = dec.weight.detach(), (dec.bias.detach() if dec.bias is not None else None)
        else:
            W, b = w["weight"], w.get("bias")
        return torch.addmm(b, z_in, W.t()) if b is not None else z_in @ W.t()

    def _feedback_linear(self, eps_fb, target):
        w = self.weights.fb
        W = self.c.model.decoder.weight.detach() if w is None else w["weight"]
        return eps_fb @ W

    def _decode(self, params, z):
        dec = self.c.model.decoder
        return dec(z) if params is None else functional_call(dec, params, (z,))

    def _forward_autograd(self, z_in):
        self._zleaf = z_in.detach().requires_grad_(True)
        with torch.enable_grad():
            self._mu_graph = self._decode(self.weights.fwd, self._zleaf)
        return self._mu_graph.detach()

    def _feedback_autograd(self, eps_fb, target):
        zleaf, mu_g = self._zleaf, self._mu_graph
        separate_fb = self.weights.fb is not self.weights.fwd
        if not self.learning:
            with torch.enable_grad():
                out = self._decode(self.weights.fb, zleaf) if separate_fb else mu_g
                (v,) = torch.autograd.grad(out, zleaf, grad_outputs=eps_fb)
            self._mu_graph = None
            return v.clone() if v.data_ptr() == eps_fb.data_ptr() else v
        # learning: parameter gradients of log p with the error signal of the learning rule
        exact = self.c.config.learning_rule == "exact" and not self.c.adiabatic
        if exact:
            with torch.no_grad():  # a cotangent: no graph (a learnable sigma would otherwise build one)
                cot = self.lik.error(self.x, self._mu_seen)
        else:
            cot = eps_fb
        with torch.enable_grad():
            outputs, cots = [mu_g], [cot]
            if self.lik_params:
                outputs.append(self.lik.log_prob(self.x, self._mu_seen).sum())
                cots.append(None)
            if not separate_fb and not exact:
                grads = torch.autograd.grad(outputs, [zleaf, *self.learn_params], cots, allow_unused=True)
                v, pgrads = grads[0], grads[1:]
            else:
                fb_out = self._decode(self.weights.fb, zleaf) if separate_fb else mu_g
                (v,) = torch.autograd.grad(fb_out, zleaf, grad_outputs=eps_fb, retain_graph=True)
                pgrads = torch.autograd.grad(outputs, self.learn_params, cots, allow_unused=True)
        self._mu_graph = None
        self._pgrads = pgrads
        return v.clone() if v.data_ptr() == eps_fb.data_ptr() else v

    def _apply_learning(self):
        for i, (p, g) in enumerate(zip(self.learn_params, self._pgrads)):
            if g is None:
                continue
            if self.accumulate:
                self.acc[i].add_(g)
            if self.online_lr:
                with torch.no_grad():
                    p.add_(g, alpha=self.online_lr / self.B)
        self._pgrads = None

    @torch.no_grad()
    def _target(self, mu_s):
        """What the error units relax to: e(x, mu) (form "error") or x - mu (form "bogacz").

        State update only, so without a graph: with a learnable sigma e(x, mu) would otherwise require
        grad (and the in-place / ``out=`` updates raise). Parameter gradients come from the learning
        backward in ``_feedback_autograd``, not from here.
        """
        return (self.x - mu_s) if self.bogacz else self.lik.error(self.x, mu_s)

    def _step_general(self):
        gen = self.gen
        if self.noisy:
            torch.randn(self.z.shape, generator=gen, out=self.n)
        self.weights.step(self.k * self.dt, gen)
        for f in self.pre_steps:
            f(gen)
        z = self.z
        z_in = z
        for tr in self.value_tr:
            z_in = tr(z_in)
        mu = self._forward(z_in)
        mu_true = mu  # the true model's g(z) when defer_records
        for tr in self.pred_tr:
            mu = tr(mu)
        self._mu_seen = mu
        target = self._target(mu)
        if self.c.adiabatic:
            eps_cur = target / self.leak if self.bogacz else target
            if self._request is not None:
                self._fill_request(z, mu_true, None if self.pred_tr else eps_cur)
            if self.err_inc:
                ref = eps_cur
                eps_cur = eps_cur.clone()
                for inc in self.err_inc:
                    inc(ref, eps_cur, gen)
            self.eps = eps_cur
        else:
            eps_cur = self.eps
            if self._request is not None:
                self._fill_request(z, mu_true, None)
        eps_fb = eps_cur
        for tr in self.err_tr:
            eps_fb = tr(eps_fb)
        v = self._feedback(eps_fb, target)
        s = v.sub_(z, alpha=1.0 / self.sp2)  # the score-like drift J^T eps - z / s_p^2
        zn = self.zn
        if self.m is not None:
            # Algorithm 1's order: the gain units advance first (m' = beta m + (1 - beta) s^2, the EM step
            # of tau_m dm = (s^2 - m) dt), then z moves with the updated gain; written as the discrete
            # sampler writes it, so the adiabatic limit agrees with it bit for bit where it can
            b = self.gain_beta
            if isinstance(b, torch.Tensor):
                self.m.mul_(b).addcmul_(s * s, 1.0 - b)
            else:
                self.m.mul_(b).addcmul_(s, s, value=1.0 - b)
            G = self._gain(self.k + 1)
            if isinstance(self.az, torch.Tensor):
                _axpy_into(zn, z, G * s, self.az)
            else:
                torch.addcmul(z, G, s, value=self.az, out=zn)
            if self.noisy:
                if isinstance(self.cz, torch.Tensor):
                    zn.addcmul_(self.n, G.sqrt_() * self.cz)
                else:
                    zn.addcmul_(G.sqrt_(), self.n, value=self.cz)
        else:
            _axpy_into(zn, z, s, self.az)
            if self.noisy:
                _axpy(zn, self.n, self.cz)
        for inc in self.val_inc:
            inc(z, zn, gen)
        if not self.c.adiabatic:
            en = self.en
            drive = target.sub_(self.eps, alpha=self.leak)  # target is a fresh tensor
            _axpy_into(en, self.eps, drive, self.ae)
            for inc in self.err_inc:
                inc(self.eps, en, gen)
            self.eps, self.en = en, self.eps
        self.z, self.zn = zn, z
        for clip in self.clips:
            clip(self.z, None if self.c.adiabatic else self.eps)
        if self.learning:
            self._apply_learning()
        self.k += 1

    # ------------------------------------------------------------------- drift (ODE)
    def drift(self, z, eps, m):
        """Noise-free time derivatives (dz, deps or None, dm or None) at a state (for torchdiffeq)."""
        if self.kernel.startswith("linear-plain"):  # reuse the general forward/feedback for the ODE
            self.weights = _Weights(self.c, False)
            self._forward, self._feedback = self._forward_linear, self._feedback_linear
        mu = self._forward(z)
        target = self._target(mu)
        if self.c.adiabatic:
            eps = target / self.leak if self.bogacz else target
        v = self._feedback(eps, target)
        s = v - z / self.sp2
        if m is not None:
            G = 1.0 / (m.sqrt() + self.delta)
            dz = G * s * (1.0 / self.c.timescales.tau_z)
            dm = (s * s - m) / self.c.timescales.tau_m
        else:
            dz, dm = s / self.c.timescales.tau_z, None
        deps = None if self.c.adiabatic else (target - self.leak * eps) / self.c.timescales.tau_e
        return dz, deps, dm

    # ---------------------------------------------------------------------- records
    @torch.no_grad()
    def measure(self):
        """(log p(x, z) (B,), error norm (B,)) of the current state under the true (noise-free) model."""
        model, z, x = self.c.model, self.z, self.x
        if self._lean_record:
            dec = model.decoder
            r = torch.addmm(self.xmb_cache(), z, dec.weight.detach().t(), alpha=-1)  # x - b - W z
            prec = self._record_prec
            rn = torch.linalg.vector_norm(r, dim=1)
            zn = torch.linalg.vector_norm(z, dim=1)
            lj = rn.square().mul_(-0.5 * prec).add_(zn.square_(), alpha=-0.5 / self.sp2).add_(self._lj_const())
            en = rn.mul_(prec) if self.c.adiabatic else None
        else:
            mu = model.decoder(z)
            lj = model.likelihood.log_prob(x, mu) + model.log_prior(z)
            en = None
            if self.c.adiabatic:
                err = model.error(x, mu)
                self._err_cache = (self.k, err)  # error_units() of this state without another forward
                en = torch.linalg.vector_norm(err.reshape(self.B, -1), dim=1)
        if en is None:
            en = torch.linalg.vector_norm(self.eps.reshape(self.B, -1), dim=1)
        return lj, en

    @torch.no_grad()
    def error_units(self) -> torch.Tensor:
        """The error units' state (for adiabatic units: e(x, g(z)) at the current z, noise-free)."""
        if not self.c.adiabatic:
            return self.eps
        if self._err_cache is not None and self._err_cache[0] == self.k:
            return self._err_cache[1]
        return self.c.model.error(self.x, self.c.model.decoder(self.z))

    # deferred records: the next step's forward fills what a record needs of the true model
    def request_record(self, lj: torch.Tensor, en: torch.Tensor | None, eps: torch.Tensor | None) -> None:
        """Have the next step write log p(x, z) of the current z into ``lj`` (and, adiabatic, ||e(x, g(z))||
        into ``en``, e(x, g(z)) into ``eps``), from the forward it does anyway (``defer_records`` only)."""
        self._request = (lj, en, eps)

    @torch.no_grad()
    def _fill_request(self, z, mu, err):
        lj, en, eps = self._request
        self._request = None
        torch.add(self.lik.log_prob(self.x, mu), self.c.model.log_prior(z), out=lj)
        if en is None and eps is None:
            return
        if err is None:
            err = self.c.model.error(self.x, mu)
        if en is not None:
            torch.linalg.vector_norm(err.reshape(self.B, -1), dim=1, out=en)
        if eps is not None:
            eps.copy_(err)

    def resolve_request(self) -> None:
        """Fill a pending record request now (one forward at the current state)."""
        if self._request is None:
            return
        lj, en, eps = self._request
        self._request = None
        lj_, en_ = self.measure()
        lj.copy_(lj_)
        if en is not None:
            en.copy_(en_)
        if eps is not None:
            eps.copy_(self.error_units())

    def drop_request(self) -> None:
        self._request = None

    def xmb_cache(self):
        if not hasattr(self, "_xmb"):
            dec = self.c.model.decoder
            self._xmb = (self.x - dec.bias.detach()) if dec.bias is not None else self.x
        return self._xmb

    def _lj_const(self) -> float:
        if not hasattr(self, "_ljc"):
            n = self.x[0].numel()
            d = self.z.shape[1]
            ls = float(self.lik.log_sigma.detach())
            self._ljc = -n * (ls + 0.5 * LOG_2PI) - d * (math.log(self.c.prior_std) + 0.5 * LOG_2PI)
        return self._ljc

    def _gain(self, t: int) -> torch.Tensor:
        """G = 1 / (sqrt(m_hat) + delta) after t steps: m_hat = m / (1 - beta^t) for a decay beta, else m."""
        if self.bias_correct:
            corr = 1 - self.gain_beta ** t  # per unit with per-unit tau_m
            return (self.m / corr).sqrt_().add_(self.delta).reciprocal_()
        return (self.m.sqrt() + self.delta).reciprocal_()

    def gain(self):
        """The gain of the step just taken (the current state)."""
        return self._gain(self.k)

    def noise_records(self) -> dict[str, torch.Tensor]:
        out = {}
        for rec in self.recorders:
            out.update(rec())
        return out

    # ------------------------------------------------------------ divergence support
    def all_finite(self) -> bool:
        ok = None
        for name in self._state_names:
            t = getattr(self, name)
            if t is not None:
                f = torch.isfinite(t).all()
                ok = f if ok is None else ok & f
        return bool(ok)

    def snapshot(self) -> dict:
        snap = {"k": self.k, "gen": self.gen.get_state(),
                "state": {n: (None if getattr(self, n) is None else getattr(self, n).clone()) for n in self._state_names},
                "sources": [t.clone() for b in self.c.sources for t in b.state_tensors()]}
        if self.online_lr:
            snap["params"] = [p.detach().clone() for p in self.learn_params]
        return snap

    def restore(self, snap: dict) -> None:
        self.k = snap["k"]
        self._err_cache = None
        for name, t in snap["state"].items():
            cur = getattr(self, name)
            if t is not None and cur is not None and cur.shape == t.shape:
                cur.copy_(t)  # in place: views of the state (the reduced kernel's) stay valid
            else:
                setattr(self, name, None if t is None else t.clone())
        self.gen.set_state(snap["gen"])
        for t, s in zip([t for b in self.c.sources for t in b.state_tensors()], snap["sources"]):
            t.copy_(s)
        if "params" in snap:
            with torch.no_grad():
                for p, s in zip(self.learn_params, snap["params"]):
                    p.copy_(s)

    def describe_bad_units(self) -> tuple[str, int | None, str | None]:
        """(text, chain, unit) naming the first non-finite unit of the current state."""
        parts = []
        first = None
        for label, t in (("value unit z", self.z), ("error unit eps", self.eps), ("gain unit m", self.m)):
            if t is None:
                continue
            bad = (~torch.isfinite(t)).nonzero()
            if len(bad) == 0:
                continue
            chain = int(bad[0, 0])
            idx = ", ".join(str(int(i)) for i in bad[0, 1:])
            name = f"{label.split()[-1]}[{idx}]"
            if first is None:
                first = (f"{label}[{idx}] of chain {chain}", chain, name)
            parts.append(f"{len(bad)} {label.rsplit(' ', 1)[0]}s")
        if first is None:
            return "no non-finite unit found", None, None
        text = f"non-finite {first[0]} ({', '.join(parts)} non-finite in all)"
        return text, first[1], first[2]


def _axpy_into(out: torch.Tensor, base: torch.Tensor, t: torch.Tensor, coef) -> None:
    """out = base + coef * t (out preallocated; Python or tensor coefficient)."""
    if isinstance(coef, torch.Tensor):
        torch.addcmul(base, t, coef, out=out)
    else:
        torch.add(base, t, alpha=coef, out=out)


def _axpy(out: torch.Tensor, t: torch.Tensor, coef) -> None:
    """out += coef * t for a Python or tensor coefficient (broadcast over the batch)."""
    if isinstance(coef, torch.Tensor):
        out.addcmul_(t, coef)
    else:
        out.add_(t, alpha=coef)
