"""CircuitConfig: the configuration of a circuit, its validation, and the choices it names.

``ERROR_FORMS`` (how the error units relax), ``LEARNING_RULES`` (what the decoder learns from),
``PRECONDITION`` (the gain-unit switches) and ``PRECONDITIONERS`` (adapting or frozen gain units); see :class:`CircuitConfig` and ``circuits.circuit``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from .noise import NoiseModel
from .timescales import TimescaleModel, Uniform, make_timescales

__all__ = ["CircuitConfig", "ERROR_FORMS", "LEARNING_RULES", "PRECONDITION", "PRECONDITIONERS", "check_dt_static",
           "check_noise_amplitudes", "NOISE_AMPLITUDE_MAX"]

ERROR_FORMS = ("error", "bogacz")
LEARNING_RULES = ("hebbian", "exact")
PRECONDITION = (None, False, True, "rms")
INTEGRATORS = ("euler", "baoab")        # how an underdamped circuit steps (docs/circuits_dynamics.md)
PRECONDITIONERS = ("adam", "frozen")   # as neuro_lpc.langevin: gain units adapt throughout, or hold after a warm-up
DEFAULT_WARMUP_STEPS = 100             # the default warm-up of "frozen": 100 dt (LangevinSampler: min(100, steps // 2))
DEFAULT_MAX_GAIN = 1e4                 # the cap on G, as LangevinSampler's max_gain (neuro_lpc/langevin.py: why)
NOISE_AMPLITUDE_MAX = 1e3              # largest noise std / Fano factor accepted: 1000x the signal scale is no device,
                                       # and far larger values overflow float32 mid-run instead of failing up front


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
    preconditioner: "adam" (the gain units adapt throughout: Algorithm 1 for a decay beta) or "frozen"
    (they adapt for ``precondition_warmup`` seconds, then hold G: the value units are then ULA / an SDE
    with a fixed diagonal G, invariant for its own law; see neuro_lpc.langevin). precondition_warmup:
    None = 100 dt; rounded to whole steps (at least one). precondition_max_gain: cap on G, G = min(1 /
    (sqrt(m_hat) + delta), max_gain), the gain unit's saturation (None: no cap; default 1e4, which binds
    only near stationary points, as ``LangevinSampler(max_gain=...)``).
    error_form: "error" or "bogacz". timescales: None (the noise model's, else uniform), a name of
    ``circuits.timescales.TIMESCALES``, a dict or a TimescaleModel. learning_rule: what the decoder
    learns from with ``accumulate_grad`` / ``online_lr``: "hebbian" (the error units' eps, one
    backward per step; equal to grad_theta log p(x, z) when the error units are adiabatic) or "exact"
    (e(x, g(z)), a second backward when tau_e > 0). seed: seeds the run generator and every frozen
    draw. check_every: steps between host checks for NaN/inf. record_path: stream records to this
    HDF5 file (memory flat in duration); record_buffer: records per device block written at once.
    device: where to run (None: the model's device; the model must already be there).
    dynamics: the value units' family (``neuro_lpc.dynamics.DYNAMICS``; docs/circuits_dynamics.md): "overdamped"
    (default, the LPC circuit), "nonreversible" (tau_z dz = (G + J) s dt + ..., J antisymmetric lateral connections)
    or "underdamped" (a momentum unit v per value unit: tau_z dz = M^-1 v dt, tau_z dv = (s - gamma_f M^-1 v) dt +
    sqrt(2 gamma_f T tau_z) dW). skew: J for "nonreversible": None (no skew), "random", "optimal" or a (d, d)
    antisymmetric tensor; skew_scale scales the named ones. friction gamma_f, mass M (a number or per unit):
    "underdamped" only. The stationary law of z is the same for every family. integrator: how "underdamped" steps,
    "euler" (Euler-Maruyama, default) or "baoab" (Leimkuhler & Matthews 2013's splitting, one force per step; the
    momentum units then hold v - (h/2) s, h = dt / tau_z; exact z-marginal on a Gaussian posterior).
    """

    dt: float = 1e-4
    tau_z: float = 1e-2
    tau_e: float = 2e-3
    temperature: float | None = None
    noise: Any = "ideal"
    precondition: bool | str | None = None
    precondition_tau: float = 0.1
    precondition_delta: float = 1e-8
    preconditioner: str = "adam"
    precondition_warmup: float | None = None
    precondition_max_gain: float | None = DEFAULT_MAX_GAIN
    error_form: str = "error"
    timescales: Any = None
    learning_rule: str = "hebbian"
    seed: int = 0
    check_every: int = 100
    record_path: str | None = None
    record_buffer: int = 256
    device: str | None = None
    dynamics: str = "overdamped"
    skew: Any = None
    skew_scale: float = 1.0
    friction: float = 1.0
    mass: Any = 1.0
    integrator: str = "euler"

    def validate(self) -> "CircuitConfig":
        """Raise a clear ValueError on any bad field; returns self."""
        _number("dt", self.dt, positive=True)
        _number("tau_z", self.tau_z, positive=True)
        _number("tau_e", self.tau_e, nonneg=True)
        _number("temperature", self.temperature, nonneg=True, allow_none=True)
        _number("precondition_tau", self.precondition_tau, positive=True)
        _number("precondition_delta", self.precondition_delta, positive=True)
        pc = self.precondition
        # bools and "rms" by identity: 1.0 == True and 1 == True must not pass as "on" (a beta of 1 never decays)
        named = pc is None or isinstance(pc, bool) or (isinstance(pc, str) and pc == "rms")
        beta = not isinstance(pc, bool) and isinstance(pc, (int, float)) and math.isfinite(pc) and 0 <= pc < 1
        if not (named or beta):
            raise ValueError(f"CircuitConfig: precondition must be None, False, True, 'rms' or a decay beta in [0, 1), "
                             f"got {pc!r}")
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(f"CircuitConfig: preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}")
        if self.preconditioner == "frozen" and not self.preconditioned:
            raise ValueError("CircuitConfig: preconditioner='frozen' needs gain units (precondition=beta, True or 'rms')")
        if self.precondition_warmup is not None and self.preconditioner != "frozen":
            raise ValueError(f"CircuitConfig: precondition_warmup applies only to preconditioner='frozen', "
                             f"got preconditioner={self.preconditioner!r}")
        _number("precondition_warmup", self.precondition_warmup, positive=True, allow_none=True)
        _number("precondition_max_gain", self.precondition_max_gain, positive=True, allow_none=True)
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
        check_noise_amplitudes(self.noise_model())
        self.timescale_model()
        self._check_dynamics()
        return self

    def _check_dynamics(self) -> None:
        """The dynamics fields (``neuro_lpc.dynamics.check_dynamics``) and what the circuit cannot compose with them."""
        from neuro_lpc.dynamics import check_dynamics
        if isinstance(self.skew, (list, tuple)):
            self.skew = torch.tensor(self.skew, dtype=torch.float64)   # from a config.json
        if isinstance(self.mass, (list, tuple)):
            self.mass = torch.tensor(self.mass, dtype=torch.float64)
        check_dynamics(self.dynamics, self.skew, self.skew_scale, self.friction, self.mass, where="CircuitConfig")
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"CircuitConfig: integrator must be one of {INTEGRATORS}, got {self.integrator!r}")
        if self.integrator != "euler" and self.dynamics != "underdamped":
            raise ValueError(f"CircuitConfig: integrator={self.integrator!r} splits the momentum units: it needs "
                             f"dynamics='underdamped', got {self.dynamics!r}")
        if self.dynamics == "underdamped" and self.preconditioned:
            raise ValueError("CircuitConfig: dynamics='underdamped' does not compose with gain units (precondition): "
                             "use precondition=None (or dynamics='overdamped' / 'nonreversible')")

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

    def warmup_steps(self) -> int | None:
        """Steps of adaptation before "frozen" holds G: round(precondition_warmup / dt) >= 1, default 100; None for "adam"."""
        if self.preconditioner != "frozen":
            return None
        if self.precondition_warmup is None:
            return DEFAULT_WARMUP_STEPS
        return max(1, round(float(self.precondition_warmup) / float(self.dt)))

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
            elif isinstance(v, torch.Tensor):   # a user-given skew J or per-unit mass: a JSON list
                v = v.detach().cpu().tolist()
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CircuitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"CircuitConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(d)).validate()


def check_dt_static(config: CircuitConfig, prior_std: float = 1.0) -> None:
    """The Euler-Maruyama stability bounds that need no network, checked before any work.

    ``circuits.integrate.stable_dt_bound`` on the built circuit is the full check; the bounds that depend only
    on the configuration are: value units dt < 2 tau_z s_p^2, error units (form "error", tau_e > 0)
    dt < 2 tau_e, gain units dt < tau_m (positivity, not stability: m' = (1 - dt/tau_m) m + (dt/tau_m) s^2 must
    stay >= 0 for sqrt(m); always true for a decay beta, tau_m = dt / (1 - beta); per-unit tau_m,i need nothing
    more, ``circuits.timescales.gain_decay``). With heterogeneous time constants tau_z / tau_e are medians and
    the smallest unit is faster, so these are necessary conditions: a dt they refuse is unstable for every
    draw, and the circuit's own check still runs on the actual units.
    """
    dt = float(config.dt)
    bounds = [(2 * float(config.tau_z) * float(prior_std) ** 2, f"the value units (tau_z = {config.tau_z:g} s)")]
    if config.dynamics != "overdamped":   # their bound depends on J / M, gamma_f: the circuit's check (stability)
        bounds = []
    if config.tau_e and config.error_form == "error":
        bounds.append((2 * float(config.tau_e), f"the error units (tau_e = {config.tau_e:g} s)"))
    if config.preconditioned:
        bounds.append((config.gain_tau(), f"the gain units (tau_m = {config.gain_tau():g} s; m must stay >= 0)"))
    if not bounds:
        return
    bound, what = min(bounds, key=lambda b: b[0])
    if not dt < bound:
        raise ValueError(f"dt={dt:g} s is unstable for Euler-Maruyama: {what} needs dt < {bound:.4g} s "
                         f"(dt <= {bound / 10:.3g} s for accuracy)")


def check_noise_amplitudes(model: NoiseModel) -> None:
    """Refuse noise amplitudes (``*std``, ``*fano`` parameters) above ``NOISE_AMPLITUDE_MAX`` before any work."""
    for i, src in enumerate(model.sources):
        for key, v in src.params.items():
            if (key.endswith("std") or key.endswith("fano")) and isinstance(v, (int, float)) and v > NOISE_AMPLITUDE_MAX:
                raise ValueError(f"noise source {i} ({src.type!r}): {key}={v:g} is too large (at most "
                                 f"{NOISE_AMPLITUDE_MAX:g}; amplitudes are relative to the signal scale unless "
                                 f"units='absolute')")
