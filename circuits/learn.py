"""Learning with the circuit: the shared decoder/encoder trained from circuit trajectories.

:class:`CircuitTrainer` is ``neuro_lpc.train.Trainer`` (the same loop, data order, Adam optimiser,
checkpoints, exact resume, metrics) with the inner Langevin chain of ``LPCTrainer`` replaced by a
*presentation* of the batch to the circuit (DESIGN.md section 3, "Learning in the circuit"):

1. warm start z(0) ~ q(z|x) (a reparameterised sample of the encoder), or z(0) ~ p(z) for the first
   ``prior_init_batches`` batches and with warm start "none" -- exactly as ``LPCTrainer``;
2. ``presentation_steps`` Euler-Maruyama steps of the circuit (``circuits.Circuit.simulate``) with
   ``accumulate_grad=True``: the decoder and likelihood parameters receive the time average
   -(1/(B P)) sum_k sum_b grad_theta log p(x_b, z_b(t_k)) over the states before each step (the
   continuous analogue of the paper's eq. 8; with finite tau_e the "hebbian" rule uses the error
   units' eps, see ``CircuitConfig.learning_rule``);
3. the encoder's warm-start objective (``neuro_lpc.objectives.warm_start_loss``): reverse KL needs no
   trajectory (it goes through the decoder as the presentation read it, ``presented_model``); forward
   KL / Jeffreys use the running sums of z and z^2 over the presentation, computed from the recorded
   states z(t_k), k = record_every, 2 record_every, ... (every state with the default
   ``record_every=1``, as the discrete trainer's t = 1..T); the loss metric is -log p(x, z) of the
   recorded states under the weights the circuit read (``records="device"``: drift, programming error), the
   weights it learns on;
4. one Adam step on decoder, likelihood and encoder (the discrete trainer's optimiser and learning
   rate, so that a comparison isolates the inference dynamics).

Online variant (``online=True``): the weights also move *during* the presentation,
tau_theta d theta = grad_theta mean_b log p(x_b, z_b(t)) dt, i.e. ``online_lr = dt / tau_theta`` per
step (tau_theta >> tau_z). With ``online_adam=True`` (default) the time-averaged gradient still
drives the Adam step at the end of the presentation (so ``tau_theta = inf`` is the offline
trainer exactly); ``online_adam=False`` leaves the decoder and likelihood to the online rule alone
(the encoder still takes its Adam step).

Discrete limit (tested): with adiabatic error units (tau_e = 0), noise preset "ideal", no
preconditioning and dt = step_size * tau_z, a presentation consumes the generator exactly like the
discrete chain, so the first optimiser step equals ``LPCTrainer``'s to rounding.

The circuit is rebuilt before every presentation from the current weights (cheap): frozen device
draws of the units (mismatch, time constants, feedback mismatch) are the same every batch (seeded by
``config.seed``: the same physical device), while weight-relative noise amplitudes and the
likelihood's error scale follow the trained weights, and the Euler-Maruyama stability of dt is
re-checked (a dt made unstable by the learned weights stops the run like a divergence, naming the
batch, with the last good checkpoint kept).

Weights on analog arrays (``learning``; ``circuits.modes`` documents when each draw is made):
``deploy`` trains on exact digital weights (the weight-device sources are off while learning) and
is scored on a fresh programming of the array; ``hardware-aware`` presents every batch on a freshly
programmed array (straight-through gradients to the digital weights); ``in-memory`` keeps one array
for the whole run, turns every optimiser update of the decoder's weights into pulses on it, and
advances its clock by the presentation's duration (or ``seconds_per_batch``) per batch, so drift
measures time since each device's last write. Its state is part of the checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from neuro_lpc.config import TrainConfig
from neuro_lpc.errors import CheckpointError, DivergenceError
from neuro_lpc.chain import SampleResult
from neuro_lpc.model import GenerativeModel
from neuro_lpc.objectives import reparameterise, warm_start_loss
from neuro_lpc.train import Trainer, read_checkpoint, restore_networks
from neuro_lpc.validation import LIMITS, check_int, check_number

from .circuit import ERROR_FORMS, LEARNING_RULES, Circuit, CircuitConfig
from .config import check_dt_static
from .local_update import EdgeRecorder, PulseUpdateConfig, Transfer, check_mapped, local_update
from .modes import (LEARNING_MODES, ON_DEVICE_MODES, check_learning_mode, deployed_model, program_array,
                    split_weight_sources)
from .noise import NoiseModel
from .noise.arrays import AnalogArray
from .timescales import derive_seed

__all__ = ["CircuitTrainConfig", "CircuitTrainer", "load_circuit_trained"]


@dataclass
class CircuitTrainConfig(TrainConfig):
    """A :class:`neuro_lpc.TrainConfig` plus the circuit's fields (seconds throughout).

    Inherited fields keep their meaning (data, batch size, Adam's lr, model, warm start, seed, ...);
    ``langevin_steps`` and ``step_size`` only supply the defaults of ``presentation_steps`` and ``dt``.

    dt: Euler-Maruyama step (None: ``step_size * tau_z``, the step at which the circuit with
        adiabatic error units *is* discrete LPC with step ``step_size``).
    tau_z, tau_e: value / error unit time constants. The default tau_e = 0 (adiabatic error units) with
        dt = None is the discrete limit, so that the noise model alone separates a circuit run from
        discrete LPC. Finite tau_e needs dt < 2 tau_e and, on image models, tau_e << tau_z: the z-eps
        loop is an underdamped oscillator along stiff posterior directions (docs/learning.md).
    temperature: T of the intrinsic Langevin noise (None: the noise model's; 1 for "ideal").
    noise: preset name (none, ideal, thermal, analog, cortical) or a noise-config dict
        (``circuits.noise.NoiseModel.from_dict``); stored whole in config.json.
    presentation_steps: EM steps per batch (None: ``langevin_steps``).
    record_every: record interval of the presentation (the loss metric and the forward-KL sums use
        the recorded states; 1 = every state).
    precondition: None/False (off), True/"rms" (gain units with ``precondition_tau``) or a decay beta in
        (0, 1) (tau_m = dt / (1 - beta)); ``precondition_delta`` is the gain floor.
    error_form, timescales, learning_rule: passed to ``CircuitConfig``.
    online: weights move during the presentation with online_lr = dt / tau_theta (tau_theta required,
        > 0, ``inf`` allowed = no online movement); online_adam: keep the end-of-presentation Adam step
        on the decoder/likelihood in the online variant.
    check_every: steps between the circuit's NaN/inf checks.
    learning: how the decoder's weights live on the analog array (``circuits.modes``): "deploy",
        "hardware-aware" (default), "in-memory" or "in-memory-local" (the local pulsed rule); matters only with
        weight-device noise sources
        (weight_programming, drift, weight_read, pulsed) -- "in-memory" adds a default ``pulsed`` device
        when the noise model has none.
    deploy_time: seconds since programming (since the last write for "in-memory") at which the trained
        weights are scored on the array (None: the drift source's ``t_start``, else 0).
    seconds_per_batch: device-clock seconds per batch in "in-memory" learning (None: the presentation's
        simulated duration, presentation_steps x dt).
    pulse_update: "in-memory-local" only: the pulse-train statistics of the local update, a dict of
        ``circuits.local_update.PulseUpdateConfig`` fields (desired_bl, bl_management, update_management, expected,
        trains; None: aihwkit's defaults, drawn pulse trains).
    dynamics, skew, skew_scale, friction, mass: the value units' family (``CircuitConfig``; docs/circuits_dynamics.md):
        "overdamped" (default), "nonreversible" or "underdamped"; integrator: "euler" or "baoab" (underdamped).
        theta-gradients are accumulated along the chain
        as for the overdamped circuit (one backward per step at z(t)); z(0) from the encoder's warm start, the
        momentum units from N(0, T M).
    """

    method: str = "circuit"
    precondition: Any = None
    dt: float | None = None
    tau_z: float = 1e-2
    tau_e: float = 0.0
    temperature: float | None = None
    noise: Any = "ideal"
    presentation_steps: int | None = None
    record_every: int = 1
    precondition_tau: float = 0.1
    error_form: str = "error"
    timescales: Any = None
    learning_rule: str = "hebbian"
    online: bool = False
    tau_theta: float | None = None
    online_adam: bool = True
    check_every: int = 100
    learning: str = "hardware-aware"
    deploy_time: float | None = None
    seconds_per_batch: float | None = None
    dynamics: str = "overdamped"
    skew: Any = None
    skew_scale: float = 1.0
    friction: float = 1.0
    mass: Any = 1.0
    integrator: str = "euler"
    pulse_update: Any = None

    # --------------------------------------------------------------- derived
    @property
    def resolved_dt(self) -> float:
        return float(self.dt) if self.dt is not None else float(self.step_size) * float(self.tau_z)

    @property
    def resolved_steps(self) -> int:
        return int(self.presentation_steps) if self.presentation_steps is not None else int(self.langevin_steps)

    @property
    def online_lr(self) -> float | None:
        """dt / tau_theta in the online variant (0 for tau_theta = inf), None offline."""
        if not self.online:
            return None
        return 0.0 if math.isinf(self.tau_theta) else self.resolved_dt / float(self.tau_theta)

    def circuit_config(self) -> CircuitConfig:
        """The :class:`CircuitConfig` of a presentation (validated)."""
        return CircuitConfig(
            dt=self.resolved_dt, tau_z=self.tau_z, tau_e=self.tau_e, temperature=self.temperature, noise=self.noise,
            precondition=self.precondition, precondition_tau=self.precondition_tau,
            precondition_delta=self.precondition_delta, error_form=self.error_form, timescales=self.timescales,
            learning_rule=self.learning_rule, seed=self.seed, check_every=self.check_every, dynamics=self.dynamics,
            skew=self.skew, skew_scale=self.skew_scale, friction=self.friction, mass=self.mass,
            integrator=self.integrator).validate()

    # ------------------------------------------------------------ validation
    def validate(self) -> "CircuitTrainConfig":
        if self.method != "circuit":
            raise ValueError(f"CircuitTrainConfig.method must be 'circuit', got {self.method!r}")
        # the inherited fields, checked by TrainConfig's own rules (it knows the methods lpc and vae only)
        TrainConfig.validate(dataclasses.replace(self, method="lpc", precondition=None))
        if self.fast is not None:  # inherited from TrainConfig: it would otherwise be silently ignored here
            raise ValueError(f"fast={self.fast!r} is the discrete sampler's fast path (train_lpc --fast); circuit "
                             f"training runs the circuit's step loop (sampling runs: Circuit.simulate(fast='graphs'))")
        for name in ("presentation_steps", "record_every", "check_every"):
            check_int(name, getattr(self, name), hi=LIMITS["steps"], allow_none=name == "presentation_steps")
        if self.record_every > self.resolved_steps:
            raise ValueError(f"record_every={self.record_every} exceeds presentation_steps={self.resolved_steps}")
        if not _finite_positive(self.tau_z):
            raise ValueError(f"tau_z must be a positive finite number of seconds, got {self.tau_z!r}")
        if isinstance(self.tau_e, bool) or not isinstance(self.tau_e, (int, float)) or not (0 <= self.tau_e < math.inf):
            raise ValueError(f"tau_e must be a non-negative finite number of seconds (0 = adiabatic), got {self.tau_e!r}")
        if self.dt is not None and not _finite_positive(self.dt):
            raise ValueError(f"dt must be a positive finite number of seconds, got {self.dt!r}")
        if not isinstance(self.online, bool) or not isinstance(self.online_adam, bool):
            raise ValueError(f"online and online_adam must be true/false, got {self.online!r}, {self.online_adam!r}")
        check_number("tau_theta", self.tau_theta, lo=0, lo_open=True, allow_none=True, allow_inf=True, unit=" of seconds")
        check_number("precondition_tau", self.precondition_tau, lo=0, lo_open=True, unit=" of seconds")
        if self.online:
            t = self.tau_theta
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0) or math.isnan(t):
                raise ValueError(f"online learning needs tau_theta > 0 seconds (inf = weights fixed during the "
                                 f"presentation), got {t!r}")
            if not math.isinf(t) and t < 10 * float(self.tau_z):
                warnings.warn(f"tau_theta={t:g} s is not much slower than tau_z={self.tau_z:g} s: the online rule "
                              f"then follows single samples rather than the posterior average", stacklevel=2)
        if self.error_form not in ERROR_FORMS:
            raise ValueError(f"error_form must be one of {ERROR_FORMS}, got {self.error_form!r}")
        if self.learning_rule not in LEARNING_RULES:
            raise ValueError(f"learning_rule must be one of {LEARNING_RULES}, got {self.learning_rule!r}")
        if isinstance(self.noise, NoiseModel):
            self.noise = self.noise.to_dict()
        if not isinstance(self.noise, (str, dict)):
            raise ValueError(f"noise must be a preset name or a noise-config dict, got {type(self.noise).__name__}")
        check_dt_static(self.circuit_config(), self.prior_std)  # every circuit field, and the dt bounds known now
        check_learning_mode(self.learning)
        self.pulse_update_config()
        for name in ("deploy_time", "seconds_per_batch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise ValueError(f"{name} must be a non-negative finite number of seconds or None, got {v!r}")
        dev, _ = split_weight_sources(NoiseModel.resolve(self.noise))
        if any(s.type == "pulsed" for s in dev) and self.learning not in ON_DEVICE_MODES:
            raise ValueError(f"the 'pulsed' weight device acts on in-memory writes only; learning={self.learning!r} "
                             f"would ignore it (use learning='in-memory' or drop the source)")
        return self

    def pulse_update_config(self) -> PulseUpdateConfig:
        """The local update's pulse statistics (``pulse_update``), validated; one-line errors."""
        pu = self.pulse_update
        if pu is not None and self.learning != "in-memory-local":
            raise ValueError(f"pulse_update configures learning='in-memory-local' only; learning={self.learning!r}")
        if self.learning == "in-memory-local" and self.online:
            raise ValueError("learning='in-memory-local' writes the arrays once per presentation; online=True is not "
                             "supported")
        if pu is None:
            return PulseUpdateConfig()
        if not isinstance(pu, dict):
            raise ValueError(f"pulse_update must be a dict of PulseUpdateConfig fields or None, got "
                             f"{type(pu).__name__}")
        known = {f.name for f in dataclasses.fields(PulseUpdateConfig)}
        if set(pu) - known:
            raise ValueError(f"pulse_update: unknown fields {sorted(set(pu) - known)}; known: {sorted(known)}")
        return PulseUpdateConfig(**pu).validate()

    def noise_model(self) -> NoiseModel:
        """The noise model of the run; "in-memory" gets a default ``pulsed`` device when it has none."""
        nm = NoiseModel.resolve(self.noise)
        if self.learning in ON_DEVICE_MODES and not any(s.type == "pulsed" for s in nm.sources):
            d = nm.to_dict()
            d["sources"] = d["sources"] + [{"type": "pulsed"}]
            nm = NoiseModel.from_dict(d)
        return nm

    def resolved_deploy_time(self) -> float:
        if self.deploy_time is not None:
            return float(self.deploy_time)
        drift = [s for s in NoiseModel.resolve(self.noise).sources if s.type == "drift"]
        return float(drift[-1].params["t_start"]) if drift else 0.0


def _finite_positive(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0


class CircuitTrainer(Trainer):
    """Train a GenerativeModel and its encoder from circuit presentations (module docstring).

    Args:
        model, encoder: as for ``LPCTrainer`` (the encoder returns (mean, var)).
        config: a :class:`CircuitTrainConfig`.
        out_dir: run folder (config.json, metrics.jsonl, checkpoint.pt, sample grids).

    Raises ValueError at construction when the circuit cannot run (bad noise preset, unstable dt for
    the initial weights, ...), before any work.
    """

    method = "circuit"

    def __init__(self, model, encoder, config: CircuitTrainConfig, out_dir=None):
        if not isinstance(config, CircuitTrainConfig):
            raise TypeError(f"CircuitTrainer needs a CircuitTrainConfig, got {type(config).__name__}")
        super().__init__(model, encoder, config, out_dir)
        self.noise = config.noise_model()
        self.weight_sources, other = split_weight_sources(self.noise)
        self.mode = config.learning
        if self.weight_sources:
            check_learning_mode(self.mode, self.model.decoder)
        self.circuit_config = config.circuit_config()
        if self.mode == "deploy" and self.weight_sources:     # digital weights while learning
            d = self.noise.to_dict()
            d["sources"] = [s.to_dict() for s in other]
            self.circuit_config = dataclasses.replace(self.circuit_config, noise=NoiseModel.from_dict(d))
        else:
            self.circuit_config = dataclasses.replace(self.circuit_config, noise=self.noise)
        self.encoder_params = list(self.encoder.parameters())
        self.array: AnalogArray | None = None
        self.pulse_gen = torch.Generator().manual_seed(derive_seed(config.seed, 300))
        self.noise_state: dict = {}   # dynamic noise states (the 1/f bank) carried from one presentation to the next
        self.frozen_cache: dict = {}  # the sources' frozen draws (the same every batch: the same device), drawn once
        if self.mode in ON_DEVICE_MODES and self.weight_sources:
            self.array = AnalogArray.from_noise(dict(self.model.decoder.named_parameters()), self.weight_sources,
                                                seed=derive_seed(config.seed, 301),
                                                program_gen=torch.Generator().manual_seed(derive_seed(config.seed, 302)))
            self.array.clock = 0.0                              # training starts at the first programming
            self._sync_from_array()
        self.local = None   # in-memory-local: (covered layers, edge recorder, pulse statistics, Tiki-Taka or None)
        if self.mode == "in-memory-local":
            if any(s.type == "feedback_mismatch" for s in self.noise.sources):
                raise ValueError("learning='in-memory-local' records the error at each array's edge on the forward "
                                 "array's backward read; a separate feedback_mismatch array is not supported")
            layers = check_mapped(self.model.decoder, self.array.names)
            pcfg = config.pulse_update_config()
            tt = Transfer(self.array, derive_seed(config.seed, 303)) if pcfg.transfer_every else None
            self.local = (layers, EdgeRecorder(layers), pcfg, tt)
        self.circuit = self.build_circuit()     # checks dt against the initial weights now

    # ------------------------------------------------------------------ the array
    def _sync_from_array(self) -> None:
        """in-memory: the digital copy of the covered weights is what the devices store."""
        params = dict(self.model.decoder.named_parameters())
        with torch.no_grad():
            for n in self.array.names:
                params[n].copy_(self.array.stored[n])

    def batch_array(self) -> AnalogArray | None:
        """The array the next presentation runs on (module docstring)."""
        if not self.weight_sources or self.mode == "deploy":
            return None
        if self.mode in ON_DEVICE_MODES:
            return self.array
        # hardware-aware: a fresh programming (and fresh drift exponents) per batch, at the deployment horizon
        return program_array(self.model, self.noise, self.config.seed, self.config.resolved_deploy_time(),
                             stream=1 + self.global_step)

    def build_circuit(self, array: AnalogArray | None = None) -> Circuit:
        """A circuit on the current weights (see the module docstring on rebuilding)."""
        return Circuit(self.model, self.circuit_config, array=array, noise_state=self.noise_state,
                       frozen_cache=self.frozen_cache)

    def _clip_and_step(self) -> None:
        if self.array is None:
            return super()._clip_and_step()
        if self.local is not None:
            return self._local_step()
        params = dict(self.model.decoder.named_parameters())
        before = {n: params[n].detach().clone() for n in self.array.names}
        super()._clip_and_step()
        desired = {n: params[n].detach() - before[n] for n in self.array.names}
        self.array.pulse_update(desired, self.pulse_gen)
        self._sync_from_array()
        cfg = self.config
        self.array.advance(cfg.seconds_per_batch if cfg.seconds_per_batch is not None
                           else cfg.resolved_steps * cfg.resolved_dt)

    def _local_step(self) -> None:
        """in-memory-local: the arrays' local pulsed update (``circuits.local_update``) from the presentation's edge
        signals and plain SGD for the decoder's parameters off the arrays (no per-weight state), both at the decoder's
        rate (``decoder_lr``, else ``lr``; times the schedule); the digital parameters off the decoder (the
        likelihood's sigma, the encoder) keep Adam at ``lr``: the split of the digital twin,
        ``TrainConfig.optimizer = "sgd"`` (``neuro_lpc.train.SGDThenAdam``)."""
        layers, recorder, pcfg, tt = self.local
        lr = self.decoder_rate()
        covered = set(self.array.names)
        with torch.no_grad():
            for n, p in self.model.decoder.named_parameters():
                if p.grad is not None and n not in covered:
                    p.add_(p.grad, alpha=-lr)
                p.grad = None
        super()._clip_and_step()              # Adam on the likelihood and the encoder (the decoder's grads are None)
        local_update(self.array if tt is None else tt.fast, recorder, layers, lr, pcfg, self.pulse_gen)
        if tt is not None:     # Tiki-Taka: the fast array's columns onto the slow one the circuit reads
            tt.step(self.array, pcfg, lr, self.pulse_gen)
        self._sync_from_array()
        cfg = self.config
        self.array.advance(cfg.seconds_per_batch if cfg.seconds_per_batch is not None
                           else cfg.resolved_steps * cfg.resolved_dt)

    def device_array(self, t: float | None = None, seed: int | None = None) -> AnalogArray | None:
        """The array the trained weights are scored on, ``t`` seconds (default ``deploy_time``) after programming
        (deploy / hardware-aware: a fresh programming draw from ``seed``) or after training (in-memory: the
        array as it sits, its clock advanced by t). None without weight-device sources."""
        if not self.weight_sources:
            return None
        t = self.config.resolved_deploy_time() if t is None else float(t)
        if self.mode in ON_DEVICE_MODES:
            arr = AnalogArray.__new__(AnalogArray)
            arr.__dict__.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in self.array.__dict__.items()})
            arr.advance(t)
            return arr
        dev_noise = NoiseModel([s.to_dict() for s in self.weight_sources])
        return program_array(self.model, dev_noise, self.config.seed if seed is None else seed, t, stream=0)

    def deployed(self, t: float | None = None, seed: int | None = None, generator: torch.Generator | None = None):
        """The trained model as it runs on the device (``circuits.modes.deployed_model``)."""
        return deployed_model(self.model, self.device_array(t, seed), generator)

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self.noise_state:
            sd["noise_state"] = dict(self.noise_state)
        if self.array is not None:
            sd["array"] = self.array.state_dict()
            if self.local is not None and self.local[3] is not None:
                sd["transfer"] = self.local[3].state_dict()
            sd["pulse_generator"] = self.pulse_gen.get_state()
        return sd

    def rng_generators(self) -> dict[str, torch.Generator]:
        return {**super().rng_generators(), "pulse_generator": self.pulse_gen}

    def load_checkpoint(self, path) -> dict:
        ck = super().load_checkpoint(path)
        self.noise_state.clear()
        self.noise_state.update(ck.get("noise_state", {}))
        if self.array is not None:
            if "array" not in ck:
                raise CheckpointError(f"checkpoint {path} holds no analog array state (needed by learning='in-memory')")
            self.array.load_state_dict(ck["array"])
            if self.local is not None and self.local[3] is not None:
                self.local[3].load_state_dict(ck["transfer"])
            self.pulse_gen.set_state(ck["pulse_generator"])
            self._sync_from_array()
        return ck

    def initial_state(self, x, mean, var) -> torch.Tensor:
        """z(0): the prior for the first ``prior_init_batches`` batches or warm start "none", else q(z|x)."""
        if self.config.warm_start == "none" or self.global_step < self.config.prior_init_batches:
            return self.model.prior_sample(x.shape[0], self.generator, like=mean)
        return reparameterise(mean.detach(), var.detach(), self.generator)

    def present(self, x: torch.Tensor, z0: torch.Tensor):
        """One presentation of the batch with decoder-gradient accumulation (and online learning)."""
        cfg = self.config
        try:
            self.circuit = self.build_circuit(self.batch_array())
        except ValueError as err:
            raise DivergenceError(f"the circuit can no longer run with the learned weights: {err}",
                                  step=None) from None
        online_lr = cfg.online_lr
        accumulate = not (cfg.online and not cfg.online_adam)
        # the presentation builds no graph of its own: the circuit takes its parameter gradients inside
        # explicit enable_grad blocks, so nothing else (error units driven by a learnable sigma) records history.
        # Records (the loss metric) measure log p(x, z) under the weights the circuit read, the ones it learns on: the
        # digital weights differ from them on an array (drift without compensation scales every layer by ~0.77 at
        # 1 h, and the digital loss of the device's chain then climbs while the device's falls; issue 14)
        edges = self.local[1] if self.local is not None else contextlib.nullcontext()
        frozen = self.local_weights_without_grad()
        for p in frozen:                 # in-memory-local: the local rule replaces their autograd gradients
            p.requires_grad_(False)
        try:
            with torch.no_grad(), edges:  # in-memory-local: the arrays' edge signals, where the theta-gradient accrues
                return self.circuit.simulate(x, z0, steps=cfg.resolved_steps, record_every=cfg.record_every,
                                             generator=self.generator, accumulate_grad=accumulate, online_lr=online_lr,
                                             records="device")
        finally:
            for p in frozen:
                p.requires_grad_(True)

    skip_local_weight_grads = True       # in-memory-local: leave the array weights' autograd gradients out (speed)

    def local_weights_without_grad(self) -> list:
        """in-memory-local: the array-covered weights whose autograd gradients the presentation can leave out -- the
        local rule writes them from the edge signals instead (a third fewer matrix products in the learning backward).
        Only where every mapped layer keeps a bias that still takes a gradient (off the array): then the parameter
        pass still runs back through every mapped layer's output, where ``EdgeRecorder`` reads d. Else none."""
        if self.local is None or not self.skip_local_weight_grads:
            return []
        layers = self.local[0]
        covered = set(layers)
        params = dict(self.model.decoder.named_parameters())
        weights = [n for n, (kind, _) in layers.items() if kind == "weight"]
        for n in weights:
            bias = n.rpartition(".")[0] + ".bias"
            if bias in covered or bias not in params or not params[bias].requires_grad:
                return []
        return [params[n] for n in weights if params[n].requires_grad]

    def presented_model(self):
        """The model as the last presentation read it: the decoder with the weights the circuit read at its start
        (``Circuit.effective_weights``: the array's reads with programming error and drift, static weight hooks; no
        per-read noise), or the model itself when nothing perturbs its weights. The encoder's reverse-KL (ELBO) term
        is taken through it, so that q(z|x) proposes for the posterior the circuit samples (issue 14: through the
        digital decoder, uncompensated drift left it proposing for a decoder ~0.77^6 times too strong)."""
        c = self.circuit
        h = c.hooks
        if c.array is None and not (h["weight_static"] or h["weight_dynamic"]):
            return self.model
        fwd, _ = c.effective_weights(0.0)
        m = self.model
        return GenerativeModel(_ReadDecoder(m.decoder, fwd), m.likelihood, prior_std=m.prior_std,
                               latent_dim=m.latent_dim)

    def train_step(self, x):
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        mean, var = self.encoder(x)
        z0 = self.initial_state(x, mean, var)
        traj = self.present(x, z0)
        R = traj.z.shape[0]
        result = None
        if cfg.warm_start in ("forward", "jeffreys"):
            zr = traj.z.detach()
            z_sum, z_sq = torch.zeros_like(zr[0]), torch.zeros_like(zr[0])
            for z in zr:            # accumulated in time order, as the discrete sampler's running sums
                z_sum.add_(z)
                z_sq.addcmul_(z, z)
            result = SampleResult(z=zr[-1], steps=R, z_sum=z_sum, z_sqsum=z_sq)
        enc_model = self.presented_model() if cfg.warm_start in ("reverse", "jeffreys") else self.model
        enc_loss = warm_start_loss(cfg.warm_start, enc_model, x, mean, var, result, self.generator)
        if cfg.warm_start != "none":
            torch.autograd.backward(enc_loss, inputs=self.encoder_params)
        self._clip_and_step()
        loss = -traj.log_joint.mean()
        n_dim = x[0].numel()
        sigma = self.model.likelihood.sigma.detach() if hasattr(self.model.likelihood, "sigma") else torch.tensor(0.0)
        return {"loss": loss, "loss_per_dim": loss / n_dim, "encoder_loss": enc_loss.detach(), "sigma": sigma,
                "error_norm": traj.extras["error_norm"].mean()}


class _ReadDecoder(nn.Module):
    """A decoder evaluated with given (detached) weights through ``functional_call``: gradients reach z only."""

    def __init__(self, decoder: nn.Module, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.inner = decoder
        self.read = weights

    def forward(self, z):
        return functional_call(self.inner, self.read, (z,))


def load_circuit_trained(path: str | os.PathLike, device="cpu") -> tuple[Any, nn.Module, CircuitTrainConfig, dict]:
    """Rebuild (model, encoder, config, checkpoint) from a checkpoint written by :class:`CircuitTrainer`."""
    ck = read_checkpoint(path, map_location=device)
    if ck.get("method") != CircuitTrainer.method:
        raise CheckpointError(f"checkpoint {path} was written by a {ck.get('method')!r} trainer, not 'circuit' "
                              f"(use neuro_lpc.train.load_trained for lpc / vae checkpoints)")
    try:
        config = CircuitTrainConfig.from_dict(ck["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} holds an unreadable circuit config: {e}") from None
    model, encoder = restore_networks(config, ck, path, device)
    return model, encoder, config, ck
