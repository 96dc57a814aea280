"""Analog and biological noise models for the LPC circuit: composable sources, presets, JSON configs.

A :class:`NoiseModel` is an ordered list of :class:`NoiseSource` s plus an optional temperature and
time-constant model. Sources are named in the registry :data:`NOISE_SOURCES`; named combinations
are in :data:`PRESETS` (``none``, ``ideal``, ``thermal``, ``analog``, ``cortical``). A model is given
to the circuit as a preset name, a dict (:meth:`NoiseModel.from_dict`), a JSON file
(:meth:`NoiseModel.from_file`) or an object, and is saved with every run (:meth:`NoiseModel.to_dict`).

Where noise enters (DESIGN.md section 3; the hooks a source may implement)
-------------------------------------------------------------------------
* *frozen draws* at circuit construction (device mismatch, programming noise, drift exponents,
  feedback mismatch), made on the CPU in float64 from a generator seeded by the config's seed, so
  they are identical across calls and devices with the same seed and differ across seeds;
* *fresh draws* every step (thermal, shot, read noise, stochastic rounding), from the run's
  generator, after the intrinsic Langevin noise (which is always the first draw of a step);
* *dynamic states* advanced with the circuit (the OU bank of 1/f noise);
* *weights*: the decoder's parameters on the forward path (quantisation, programming noise, drift,
  read noise; applied through ``torch.func.functional_call`` for a general decoder) and a separate
  perturbed copy for the feedback path J^T (feedback mismatch). Gradients pass straight through
  the perturbations to the unperturbed parameters;
* *activity transforms* of what downstream units see: value outputs z -> decoder ("value"), decoder
  outputs mu -> error units ("prediction"), error outputs eps -> feedback ("error"): gain/offset
  mismatch, DAC/ADC quantisation, saturation;
* *additive increments* on value units and on error units.

Units ("relative", the default, or "absolute")
---------------------------------------------
Amplitudes are relative to the natural scale of the site they act on: value units scale
s_p (the prior std), error units 1/sigma_x for a (discretised) Gaussian likelihood (the std of the
precision-weighted error e(x, g(z)) when x is drawn from the model; 1 for Bernoulli), predictions 1
(data live in [-1, 1]). Additive white noise is written like the intrinsic Langevin noise,

    tau dz += sqrt(2 tau) * sigma dW     (per step: sqrt(2 dt / tau) * sigma * xi),

so sigma is the stationary std the noise alone would give a unit with unit leak; the intrinsic
Langevin noise is this with sigma = sqrt(T), so a ``value_std`` of 0.1 is 10 % of the Langevin noise
at T = 1 (and raises the effective temperature to T + 0.01). "absolute" amplitudes are noise
densities in state units per sqrt(second): per step sigma * sqrt(dt) * xi. Adiabatic error units
(tau_e = 0) have no dynamics: their additive noise is drawn fresh at every evaluation with std sigma
(times the scale), so its effect on z scales with dt (documented; prefer a finite tau_e).

Every source's parameters, defaults and references are in its docstring and in ``docs/circuits.md``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch

from .timescales import TimescaleModel, Timescales, make_timescales

__all__ = ["NoiseSource", "NoiseModel", "BoundSource", "CircuitContext", "OUBank", "NOISE_SOURCES", "PRESETS",
           "Thermal", "Shot", "Flicker", "Mismatch", "WeightProgramming", "WeightRead", "Drift", "Quantisation",
           "Saturation", "FeedbackMismatch", "make_noise", "pcm_programming_std", "pcm_drift_nu_moments"]

ACTIVITY_SITES = ("value", "prediction", "error")
STATE_SITES = ("value", "error")
UNITS = ("relative", "absolute")


# =========================================================================== the context ====

@dataclass
class CircuitContext:
    """What a source needs to bind itself to one circuit (built by ``Circuit``)."""

    latent_dim: int
    obs_shape: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype
    dt: float
    timescales: Timescales
    temperature: float
    prior_std: float
    error_scale: float
    weights: dict[str, torch.Tensor]
    frozen_gen: torch.Generator

    @property
    def adiabatic(self) -> bool:
        return self.timescales.adiabatic

    def scale(self, site: str) -> float:
        return {"value": self.prior_std, "error": self.error_scale, "prediction": 1.0}[site]

    def frozen_randn(self, shape) -> torch.Tensor:
        """A frozen N(0, 1) draw: CPU float64 (device independent), then cast to the circuit's device/dtype."""
        return torch.randn(tuple(shape), generator=self.frozen_gen, dtype=torch.float64).to(self.device, self.dtype)

    def unit_shape(self, site: str) -> tuple[int, ...]:
        return (self.latent_dim,) if site == "value" else tuple(self.obs_shape)


def _sqrt(x):
    return x.sqrt() if isinstance(x, torch.Tensor) else math.sqrt(x)


def _add_scaled(out: torch.Tensor, t: torch.Tensor, coef) -> None:
    """out += coef * t for a Python or tensor coefficient."""
    if isinstance(coef, torch.Tensor):
        out.addcmul_(t, coef)
    else:
        out.add_(t, alpha=coef)


def _is_weight(name: str, w: torch.Tensor, include_bias: bool) -> bool:
    return w.dim() >= 2 or (include_bias and w.dim() == 1)


# ====================================================================== bound sources ====

class BoundSource:
    """A source bound to one circuit: its frozen draws and the hooks it implements.

    Every hook is ``None`` unless the source uses it; the circuit collects the non-``None`` hooks once
    at construction, so a source with nothing to do costs nothing per step.

    * ``value_transform`` / ``prediction_transform`` / ``error_transform``: tensor -> tensor;
    * ``weight_static(name, w) -> w'`` (frozen or deterministic) and ``weight_dynamic(name, w, t, gen) -> w'``
      (time dependent or fresh draws; t in seconds) on the forward weights; ``feedback_static`` on the
      feedback copy only;
    * ``pre_step(gen)``: advance dynamic states (before the increments of the step);
    * ``value_increment(ref, out, gen)`` / ``error_increment(ref, out, gen)``: add noise into ``out`` in
      place; ``ref`` is the activity signal-dependent noise scales with (the old state; in the
      adiabatic case the settled error);
    * ``state_clip(z, eps)``: in place on the new state;
    * ``record() -> {name: (B, ...)}`` of chosen noise states.
    """

    value_transform: Callable | None = None
    prediction_transform: Callable | None = None
    error_transform: Callable | None = None
    weight_static: Callable | None = None
    weight_dynamic: Callable | None = None
    feedback_static: Callable | None = None
    pre_step: Callable | None = None
    value_increment: Callable | None = None
    error_increment: Callable | None = None
    state_clip: Callable | None = None
    record: Callable | None = None

    def __init__(self, source: "NoiseSource", ctx: CircuitContext):
        self.source = source
        self.ctx = ctx
        self.frozen: dict[str, torch.Tensor] = {}

    def start(self, batch: int, gen: torch.Generator) -> None:
        """Per-run set-up (buffers, initial dynamic states) for ``batch`` chains."""

    def state_tensors(self) -> list[torch.Tensor]:
        """Dynamic state tensors (snapshotted for divergence replay)."""
        return []

    @property
    def active(self) -> bool:
        return any(getattr(self, h) is not None for h in (
            "value_transform", "prediction_transform", "error_transform", "weight_static", "weight_dynamic",
            "feedback_static", "pre_step", "value_increment", "error_increment", "state_clip"))


# ============================================================================ sources ====

class NoiseSource:
    """Base class of a noise source: validated parameters, ``to_dict`` and ``bind``.

    Subclasses set ``type`` (the registry name), ``defaults`` (every parameter with its default),
    ``nonnegative`` (amplitudes that must be >= 0), ``choices`` (parameters with a fixed set of values)
    and implement :meth:`bind`, which returns a :class:`BoundSource` (or ``None`` when the source has
    nothing to do, e.g. zero amplitude).
    """

    type: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}
    nonnegative: ClassVar[tuple[str, ...]] = ()
    positive: ClassVar[tuple[str, ...]] = ()
    choices: ClassVar[dict[str, tuple]] = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"noise source {self.type!r}: unknown parameter(s) {unknown}; "
                             f"known: {sorted(self.defaults)}")
        self.params = {**copy.deepcopy(self.defaults), **params}
        for key in self.nonnegative + self.positive:
            v = self.params[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"noise source {self.type!r}: {key} must be a finite number, got {v!r}")
            if v < 0 or (key in self.positive and v == 0):
                raise ValueError(f"noise source {self.type!r}: {key} must be "
                                 f"{'positive' if key in self.positive else 'non-negative'}, got {v!r}")
        for key, allowed in self.choices.items():
            if self.params[key] not in allowed:
                raise ValueError(f"noise source {self.type!r}: {key} must be one of {allowed}, got {self.params[key]!r}")
        self._validate()

    def _validate(self) -> None:
        pass

    def __getattr__(self, name):
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {"type": self.type, **copy.deepcopy(self.params)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, NoiseSource) and self.to_dict() == other.to_dict()

    def bind(self, ctx: CircuitContext) -> BoundSource | None:  # pragma: no cover - abstract
        raise NotImplementedError


def _sites(source: NoiseSource, key: str, allowed: tuple[str, ...]) -> list[str]:
    sites = source.params[key]
    if isinstance(sites, str):
        sites = [sites]
    sites = list(sites)
    bad = sorted(set(sites) - set(allowed))
    if bad:
        raise ValueError(f"noise source {source.type!r}: unknown site(s) {bad} in {key}; choose from {allowed}")
    source.params[key] = sites
    return sites


def _white_coefs(ctx: CircuitContext, site: str, std: float, units: str):
    """Per-step std of additive white noise on a state site (see the module docstring)."""
    scale = ctx.scale(site) if units == "relative" else 1.0
    if site == "value":
        tau = ctx.timescales.tau_z
    else:
        if ctx.adiabatic:
            return std * scale  # fresh per evaluation
        tau = ctx.timescales.tau_e
    if units == "absolute":
        return std * math.sqrt(ctx.dt)
    return std * scale * _sqrt(2 * ctx.dt / tau)


class _Thermal(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.coef_v = _white_coefs(ctx, "value", p["value_std"], p["units"]) if p["value_std"] > 0 else None
        self.coef_e = _white_coefs(ctx, "error", p["error_std"], p["units"]) if p["error_std"] > 0 else None
        if self.coef_v is not None:
            self.value_increment = self._inc_v
        if self.coef_e is not None:
            self.error_increment = self._inc_e

    def start(self, batch, gen):
        c = self.ctx
        self.buf_v = torch.empty((batch, c.latent_dim), device=c.device, dtype=c.dtype)
        self.buf_e = torch.empty((batch, *c.obs_shape), device=c.device, dtype=c.dtype)

    def _inc_v(self, ref, out, gen):
        torch.randn(self.buf_v.shape, generator=gen, out=self.buf_v)
        _add_scaled(out, self.buf_v, self.coef_v)

    def _inc_e(self, ref, out, gen):
        torch.randn(self.buf_e.shape, generator=gen, out=self.buf_e)
        _add_scaled(out, self.buf_e, self.coef_e)


class Thermal(NoiseSource):
    """Thermal (Johnson-Nyquist) white noise added to value and error units.

    Parameters (defaults): ``value_std`` (0.1), ``error_std`` (0.1), ``units`` ("relative").
    In relative units ``value_std`` is the fraction of the intrinsic Langevin noise at T = 1 (extra
    per-step std sqrt(2 dt / tau_z) * value_std; effective temperature T + value_std^2) and
    ``error_std`` the stationary std it gives a resting error unit, as a fraction of 1/sigma_x.

    Source: an RC cell C dv = -v/R dt + sqrt(2 k T / R) dW has variance k T / C at rest
    (Johnson-Nyquist; Normal Computing's stochastic processing unit). With C = 1.5 pF, k T = 4.1e-21 J
    that is ~52 uV rms, ~1e-3 of a 50 mV swing; the default 0.1 is an order above, chosen to be visible
    and comparable to aihwkit's output noise of 0.04-0.06 of full scale.
    """

    type = "thermal"
    defaults = {"value_std": 0.1, "error_std": 0.1, "units": "relative"}
    nonnegative = ("value_std", "error_std")
    choices = {"units": UNITS}

    def bind(self, ctx):
        b = _Thermal(self, ctx)
        return b if b.active else None


class _Shot(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.var_v = self._coef(ctx, "value", p["value_fano"], p["units"]) if p["value_fano"] > 0 else None
        self.var_e = self._coef(ctx, "error", p["error_fano"], p["units"]) if p["error_fano"] > 0 else None
        if self.var_v is not None:
            self.value_increment = self._inc_v
        if self.var_e is not None:
            self.error_increment = self._inc_e

    @staticmethod
    def _coef(ctx, site, fano, units):
        """Per-step variance per unit of |activity|."""
        F = fano * (ctx.scale(site) if units == "relative" else 1.0)
        if site == "error" and ctx.adiabatic:
            return F
        tau = ctx.timescales.tau_z if site == "value" else ctx.timescales.tau_e
        return F * 2 * ctx.dt / tau

    def start(self, batch, gen):
        c = self.ctx
        self.buf_v = torch.empty((batch, c.latent_dim), device=c.device, dtype=c.dtype)
        self.buf_e = torch.empty((batch, *c.obs_shape), device=c.device, dtype=c.dtype)

    @staticmethod
    def _inc(ref, out, gen, buf, var):
        torch.randn(buf.shape, generator=gen, out=buf)
        out.addcmul_(buf, (ref.abs() * var).sqrt_())

    def _inc_v(self, ref, out, gen):
        self._inc(ref, out, gen, self.buf_v, self.var_v)

    def _inc_e(self, ref, out, gen):
        self._inc(ref, out, gen, self.buf_e, self.var_e)


class Shot(NoiseSource):
    """Signal-dependent (shot / Poisson-like) noise: variance proportional to |activity|.

    tau da += sqrt(2 tau F |a|) dW, i.e. a resting unit at activity a gets a stationary variance
    F |a| (a Fano factor F in the unit's own scale). Parameters: ``value_fano`` (0.15),
    ``error_fano`` (0.15), ``units`` ("relative": F in units of the site scale). Adiabatic error units
    get eps = e + sqrt(F |e|) xi per evaluation.

    Source: spike counts of cortical neurons are Poisson-like, variance ~ mean (Fano factor ~1;
    Softky & Koch 1993, Churchland et al. 2010). A value unit read as a population of N neurons
    firing r_0 Hz per unit activity, averaged over tau, has F = 1 / (N r_0 tau); N = 25, r_0 = 20 Hz,
    tau = 14 ms gives F ~ 0.14 -- the default 0.15.
    """

    type = "shot"
    defaults = {"value_fano": 0.15, "error_fano": 0.15, "units": "relative"}
    nonnegative = ("value_fano", "error_fano")
    choices = {"units": UNITS}

    def bind(self, ctx):
        b = _Shot(self, ctx)
        return b if b.active else None


class OUBank:
    """A bank of K independent OU processes with log-spaced time constants: 1/f (flicker) noise.

    y_k' = a_k y_k + sqrt(v (1 - a_k^2)) xi, a_k = exp(-dt / tau_k), v = std^2 / K, output sum_k y_k.
    The update is the exact discretisation of dy = -y / tau_k dt + sqrt(2 v / tau_k) dW (so it is stable
    for any dt, unlike Euler-Maruyama, which needs dt < 2 tau_min). Equal variances on log-spaced
    tau_k give the one-sided PSD

        S(f) = sum_k 4 v tau_k / (1 + (2 pi f tau_k)^2)  ~  1/f   between 1/(2 pi tau_max) and 1/(2 pi tau_min).

    Each unit of ``shape`` has its own independent bank; the stationary std of the output is ``std``.
    """

    def __init__(self, taus: Sequence[float], std: float, shape: tuple[int, ...], dt: float,
                 device=None, dtype=torch.float32):
        self.taus = torch.as_tensor(list(taus), dtype=torch.float64)
        self.K = len(self.taus)
        self.std, self.dt, self.shape = float(std), float(dt), tuple(shape)
        v = self.std**2 / self.K
        a = torch.exp(-self.dt / self.taus)
        view = (self.K,) + (1,) * len(self.shape)
        self.a = a.reshape(view).to(device, dtype)
        self.b = torch.sqrt(v * (1 - a**2)).reshape(view).to(device, dtype)
        self.v = v
        self.y = torch.zeros((self.K, *self.shape), device=device, dtype=dtype)
        self.buf = torch.empty_like(self.y)
        self.out = torch.zeros(self.shape, device=device, dtype=dtype)

    @staticmethod
    def log_spaced(tau_min: float, tau_max: float, per_decade: float) -> list[float]:
        decades = math.log10(tau_max / tau_min)
        K = max(1, int(round(per_decade * decades)) + 1)
        if K == 1:
            return [math.sqrt(tau_min * tau_max)]
        return [tau_min * (tau_max / tau_min) ** (k / (K - 1)) for k in range(K)]

    def reset(self, gen: torch.Generator | None = None) -> None:
        """Start in the stationary law: y_k ~ N(0, v)."""
        torch.randn(self.y.shape, generator=gen, out=self.y)
        self.y.mul_(math.sqrt(self.v))
        torch.sum(self.y, dim=0, out=self.out)

    def step(self, gen: torch.Generator | None = None) -> torch.Tensor:
        """Advance by dt; returns the summed output (a view reused across steps)."""
        torch.randn(self.y.shape, generator=gen, out=self.buf)
        self.y.mul_(self.a).addcmul_(self.buf, self.b)
        torch.sum(self.y, dim=0, out=self.out)
        return self.out

    def psd(self, f):
        """Theoretical one-sided PSD of the output at frequencies f (numpy or torch, Hz)."""
        f = torch.as_tensor(f, dtype=torch.float64)
        taus = self.taus.reshape(-1, *([1] * f.dim()))
        return (4 * self.v * taus / (1 + (2 * math.pi * f * taus) ** 2)).sum(0)


class _Flicker(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.taus = OUBank.log_spaced(p["tau_min"], p["tau_max"], p["per_decade"])
        self.sites = [s for s in STATE_SITES if p[f"{s}_std"] > 0]
        self.coefs = {}
        for site in self.sites:
            std = p[f"{site}_std"] * (ctx.scale(site) if p["units"] == "relative" else 1.0)
            if site == "error" and ctx.adiabatic:
                self.coefs[site] = std
            else:
                tau = ctx.timescales.tau_z if site == "value" else ctx.timescales.tau_e
                self.coefs[site] = std * ctx.dt / tau  # a current in units of the drift: tau da += std y dt
        if self.sites:
            self.pre_step = self._advance
        if "value" in self.sites:
            self.value_increment = self._inc_v
        if "error" in self.sites:
            self.error_increment = self._inc_e
        if p["record"] and self.sites:
            self.record = self._record
        self.banks: dict[str, OUBank] = {}

    def start(self, batch, gen):
        c = self.ctx
        self.banks = {site: OUBank(self.taus, 1.0, (batch, *c.unit_shape(site)), c.dt, c.device, c.dtype)
                      for site in self.sites}
        for bank in self.banks.values():
            bank.reset(gen)

    def state_tensors(self):
        return [t for bank in self.banks.values() for t in (bank.y, bank.out)]

    def _advance(self, gen):
        for bank in self.banks.values():
            bank.step(gen)

    def _inc_v(self, ref, out, gen):
        _add_scaled(out, self.banks["value"].out, self.coefs["value"])

    def _inc_e(self, ref, out, gen):
        _add_scaled(out, self.banks["error"].out, self.coefs["error"])

    def _record(self):
        p = self.source.params
        out = {}
        for site, bank in self.banks.items():
            std = p[f"{site}_std"] * (self.ctx.scale(site) if p["units"] == "relative" else 1.0)
            out[f"noise_flicker_{site}"] = bank.out * std
        return out


class Flicker(NoiseSource):
    """1/f (flicker) noise: an input current from a bank of OU processes spanning decades of tau.

    tau da = [... + std * y(t)] dt with y the unit-variance output of an :class:`OUBank` (one bank
    per unit and chain), PSD slope -1 between 1/(2 pi tau_max) and 1/(2 pi tau_min).
    Parameters: ``value_std`` (0.1), ``error_std`` (0.0), ``tau_min`` (1e-3 s), ``tau_max`` (10 s),
    ``per_decade`` (2 processes per decade), ``units`` ("relative"), ``record`` (False: store the
    currents as extras ``noise_flicker_value`` / ``noise_flicker_error``).

    Source: 1/f read noise of PCM devices (aihwkit's ``PCMLikeNoiseModel``, Q_s ~ 0.0088 / (g/g_max)^0.65);
    aihwkit and CrossSim apply it only as a function of total inference time, not inside continuous
    dynamics -- the gap this source fills (reference notes). The OU-superposition construction of 1/f
    noise is standard (e.g. Kaulakys & Meskauskas; Milotti 1995).
    """

    type = "flicker"
    defaults = {"value_std": 0.1, "error_std": 0.0, "tau_min": 1e-3, "tau_max": 10.0, "per_decade": 2.0,
                "units": "relative", "record": False}
    nonnegative = ("value_std", "error_std")
    positive = ("tau_min", "tau_max", "per_decade")
    choices = {"units": UNITS, "record": (True, False)}

    def _validate(self):
        if self.params["tau_min"] > self.params["tau_max"]:
            raise ValueError(f"noise source 'flicker': tau_min={self.params['tau_min']} > tau_max={self.params['tau_max']}")

    def bind(self, ctx):
        b = _Flicker(self, ctx)
        return b if b.active else None


class _Mismatch(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        for site in p["sites"]:
            shape = ctx.unit_shape(site)
            gain = 1 + p["gain_std"] * ctx.frozen_randn(shape)
            offset = p["offset_std"] * ctx.scale(site) * ctx.frozen_randn(shape)
            self.frozen[f"{site}_gain"], self.frozen[f"{site}_offset"] = gain, offset
            if p["gain_std"] > 0 or p["offset_std"] > 0:
                setattr(self, f"{site}_transform", self._make(gain, offset))

    @staticmethod
    def _make(gain, offset):
        def transform(a):
            return torch.addcmul(offset, a, gain)
        return transform


class Mismatch(NoiseSource):
    """Frozen per-unit gain and offset mismatch of what units pass downstream: a' = a (1 + s_g xi) + s_o xi'.

    Parameters: ``gain_std`` (0.1), ``offset_std`` (0.02, in units of the site scale),
    ``sites`` (["value", "error"]; also "prediction"). Drawn once per circuit from the seed.

    Source: rockpool's mismatch model for DYNAP-SE parameters, p' = p (1 + sigma xi) with sigma ~ 0.1
    (3 sigma = 30 %). The offset default is a choice (2 % of the unit's scale).
    """

    type = "mismatch"
    defaults = {"gain_std": 0.1, "offset_std": 0.02, "sites": ["value", "error"]}
    nonnegative = ("gain_std", "offset_std")

    def _validate(self):
        _sites(self, "sites", ACTIVITY_SITES)

    def bind(self, ctx):
        b = _Mismatch(self, ctx)
        return b if b.active else None


def pcm_programming_std(r: torch.Tensor) -> torch.Tensor:
    """aihwkit PCMLikeNoiseModel programming noise, relative to g_max, at r = g_T / g_max in [0, 1].

    sigma = sum_k c_k r^k * g_max / 25 with c = [0.26348, 1.9650, -1.1731] uS and g_max = 25 uS,
    i.e. sigma / g_max = (0.26348 + 1.9650 r - 1.1731 r^2) / 25 (1.05 % at r = 0, 4.2 % at r = 1).
    """
    return (0.26348 + 1.9650 * r - 1.1731 * r * r) / 25.0


def pcm_drift_nu_moments(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """aihwkit PCM drift exponent moments at r = g / g_max (clamped to >= 1e-6):
    mu_nu = clip(-0.0155 ln r + 0.0244, 0.049, 0.1), sigma_nu = clip(-0.0125 ln r - 0.0059, 0.008, 0.045)."""
    lr = torch.log(r.clamp(min=1e-6))
    mu = (-0.0155 * lr + 0.0244).clamp(0.049, 0.1)
    sd = (-0.0125 * lr - 0.0059).clamp(0.008, 0.045)
    return mu, sd


class _WeightProgramming(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        for name, w in ctx.weights.items():
            if not _is_weight(name, w, p["include_bias"]):
                continue
            w = w.detach()
            wmax = w.abs().max().clamp(min=1e-30)
            if p["model"] == "pcm":
                sigma = pcm_programming_std(w.abs() / wmax) * wmax
            else:
                sigma = p["std"] * wmax
            self.frozen[name] = sigma * ctx.frozen_randn(w.shape)
        if self.frozen:
            self.weight_static = self._apply

    def _apply(self, name, w):
        delta = self.frozen.get(name)
        return w if delta is None else w + delta


class WeightProgramming(NoiseSource):
    """Frozen weight programming noise, relative to the largest |weight| of each tensor.

    w' = w + sigma(|w| / w_max) w_max xi, drawn once per circuit. ``model="pcm"`` (default) uses
    aihwkit's PCMLikeNoiseModel programming polynomial (:func:`pcm_programming_std`: 1-4 % of w_max);
    ``model="constant"`` uses sigma = ``std`` (0.0175) for every weight. ``include_bias`` (False):
    also perturb 1-d parameters. Weights are decoder parameters with >= 2 dimensions.

    Sources: IBM aihwkit ``PCMLikeNoiseModel`` (c = [0.26348, 1.9650, -1.1731] uS, g_max = 25 uS);
    Sandia CrossSim treats programming error as frozen and read noise as fresh, the same split as here.
    """

    type = "weight_programming"
    defaults = {"model": "pcm", "std": 0.0175, "include_bias": False}
    nonnegative = ("std",)
    choices = {"model": ("pcm", "constant"), "include_bias": (True, False)}

    def bind(self, ctx):
        if self.params["model"] == "constant" and self.params["std"] == 0:
            return None
        b = _WeightProgramming(self, ctx)
        return b if b.active else None


class _WeightRead(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.sigma = {}
        for name, w in ctx.weights.items():
            if _is_weight(name, w, p["include_bias"]):
                self.sigma[name] = float(p["std"] * w.detach().abs().max())
        if self.sigma:
            self.weight_dynamic = self._apply

    def _apply(self, name, w, t, gen):
        s = self.sigma.get(name)
        if s is None:
            return w
        return w + s * torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype)


class WeightRead(NoiseSource):
    """Weight read noise, fresh at every step: w' = w + std * w_max * xi.

    ``std`` (0.0175) is relative to the largest |weight| of each tensor at circuit construction.
    One draw per step is shared by the B chains of the batch (the same physical array read once per
    step for the whole batch); ``include_bias`` (False).

    Source: aihwkit ``IOParameters`` weight noise per matrix-vector product, w_noise = sigma_w ~ 0.0175
    (y_i += sigma_w ||x|| xi, which is the same law per product as independent weight perturbations).
    """

    type = "weight_read"
    defaults = {"std": 0.0175, "include_bias": False}
    nonnegative = ("std",)
    choices = {"include_bias": (True, False)}

    def bind(self, ctx):
        if self.params["std"] == 0:
            return None
        b = _WeightRead(self, ctx)
        return b if b.active else None


class _Drift(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        for name, w in ctx.weights.items():
            if not _is_weight(name, w, p["include_bias"]):
                continue
            w = w.detach()
            if p["nu"] == "pcm":
                wmax = w.abs().max().clamp(min=1e-30)
                mu, sd = pcm_drift_nu_moments(w.abs() / wmax)
                nu = (mu + sd * ctx.frozen_randn(w.shape)).abs()
            else:
                nu = (float(p["nu"]) + p["nu_std"] * ctx.frozen_randn(w.shape)).abs()
            self.frozen[name] = nu
        if self.frozen:
            self.weight_dynamic = self._apply

    def factor(self, name: str, t: float) -> torch.Tensor:
        """g(t) / g_prog = ((t + t_start + t0) / t0)^(-nu) (divided by its mean with ``compensate``)."""
        p = self.source.params
        nu = self.frozen[name]
        f = torch.exp(-nu * math.log((t + p["t_start"] + p["t0"]) / p["t0"]))
        if p["compensate"]:
            f = f / f.mean()
        return f

    def _apply(self, name, w, t, gen):
        if name not in self.frozen:
            return w
        return w * self.factor(name, t)


class Drift(NoiseSource):
    """Conductance drift: w(t) = w_prog ((t + t_start + t0) / t0)^(-nu), nu frozen per weight.

    Parameters: ``t0`` (20 s), ``t_start`` (0 s: time since programming when the simulation starts;
    the ``analog`` preset uses 3600 s), ``nu`` ("pcm": nu ~ |N(mu_nu, sigma_nu)| from aihwkit's
    formulas in |w| / w_max, :func:`pcm_drift_nu_moments`; or a number), ``nu_std`` (0.0: spread of a
    numeric nu), ``compensate`` (False: divide by the mean factor, aihwkit's global drift
    compensation), ``include_bias`` (False).

    Source: IBM aihwkit PCM drift model (t0 = 20 s).
    """

    type = "drift"
    defaults = {"t0": 20.0, "t_start": 0.0, "nu": "pcm", "nu_std": 0.0, "compensate": False, "include_bias": False}
    nonnegative = ("t_start", "nu_std")
    positive = ("t0",)
    choices = {"compensate": (True, False), "include_bias": (True, False)}

    def _validate(self):
        nu = self.params["nu"]
        if nu != "pcm" and not (isinstance(nu, (int, float)) and not isinstance(nu, bool) and math.isfinite(nu) and nu >= 0):
            raise ValueError(f"noise source 'drift': nu must be 'pcm' or a non-negative number, got {nu!r}")

    def bind(self, ctx):
        b = _Drift(self, ctx)
        return b if b.active else None


QUANT_DEFAULT_BITS = {"value": 7, "error": 7, "prediction": 9, "weights": 8}
QUANT_DEFAULT_BOUND = {"value": 3.0, "error": 3.0, "prediction": 2.0}  # prediction: headroom beyond [-1, 1]


def quantise(a: torch.Tensor, res: float, bound: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Clip to [-bound, bound], then round to the grid res * k (stochastic rounding when gen is given)."""
    a = a.clamp(-bound, bound) / res
    if gen is None:
        a = torch.round(a)
    else:
        a = torch.floor(a + torch.rand(a.shape, generator=gen, device=a.device, dtype=a.dtype))
    return a * res


class _Quantisation(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        site = p["site"]
        bits = p["bits"] if p["bits"] is not None else QUANT_DEFAULT_BITS[site]
        self.steps = 2**bits - 2
        if site == "weights":
            self.res = {}
            for name, w in ctx.weights.items():
                if w.dim() >= 2:
                    wmax = float(w.detach().abs().max())
                    self.res[name] = (2 * wmax / self.steps, wmax)
            if self.res:
                self.weight_static = self._weights
            return
        bound = (p["bound"] if p["bound"] is not None else QUANT_DEFAULT_BOUND[site]) * ctx.scale(site)
        self.bound, self.resolution = bound, 2 * bound / self.steps
        self.gen = None
        setattr(self, f"{site}_transform", self._act)

    def _act(self, a):
        return quantise(a, self.resolution, self.bound, self.gen)

    def _weights(self, name, w):
        if name not in self.res:
            return w
        res, wmax = self.res[name]
        return quantise(w, res, wmax)

    def start(self, batch, gen):
        self.gen = gen if self.source.params["stochastic"] else None


class Quantisation(NoiseSource):
    """DAC / ADC quantisation after clipping to a bound, of activities or of weights.

    Parameters: ``site`` ("value": DAC of value outputs into the decoder; "error": DAC of error
    outputs into the feedback array; "prediction": ADC of the decoder outputs; "weights": the decoder
    weights), ``bits`` (None: 7 for value/error DACs, 9 for the prediction ADC, 8 for weights),
    ``bound`` (None: 3 for value/error, 2 for prediction -- pixel means of the open-edge discretised Gaussian
    sit beyond [-1, 1], and an ADC that clips them winds the value units up --, in units of the site scale; weights always
    use the largest |weight|), ``stochastic`` (False: round to nearest; True: stochastic rounding,
    fresh draws). Resolution 2 * bound / (2^bits - 2).

    Source: aihwkit ``IOParameters``: inp_res = 1/(2^7 - 2) with inp_bound = 1 (7-bit DAC),
    out_res = 1/(2^9 - 2) (9-bit ADC), out_bound = 12.
    """

    type = "quantisation"
    defaults = {"site": "value", "bits": None, "bound": None, "stochastic": False}
    choices = {"site": ACTIVITY_SITES + ("weights",), "stochastic": (True, False)}

    def _validate(self):
        bits, bound = self.params["bits"], self.params["bound"]
        if bits is not None and not (isinstance(bits, int) and not isinstance(bits, bool) and 2 <= bits <= 32):
            raise ValueError(f"noise source 'quantisation': bits must be an integer in [2, 32] or None, got {bits!r}")
        if bound is not None and not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ValueError(f"noise source 'quantisation': bound must be a positive number or None, got {bound!r}")
        if self.params["site"] == "weights" and self.params["stochastic"]:
            raise ValueError("noise source 'quantisation': stochastic rounding applies to activities, not weights")

    def bind(self, ctx):
        b = _Quantisation(self, ctx)
        return b if b.active else None


class _Saturation(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.bounds = {site: p["bound"] * ctx.scale(site) for site in p["sites"]}
        if p["on"] == "output":
            for site, bound in self.bounds.items():
                setattr(self, f"{site}_transform", self._make(bound, p["mode"]))
        else:
            self.state_clip = self._clip_state

    @staticmethod
    def _make(bound, mode):
        if mode == "clip":
            return lambda a: a.clamp(-bound, bound)
        return lambda a: torch.tanh(a / bound) * bound

    def _clip_state(self, z, eps):
        mode = self.source.params["mode"]
        for site, t in (("value", z), ("error", eps)):
            if site in self.bounds and t is not None:
                bound = self.bounds[site]
                if mode == "clip":
                    t.clamp_(-bound, bound)
                else:
                    t.div_(bound).tanh_().mul_(bound)


class Saturation(NoiseSource):
    """Saturation at the rails: clip or tanh at +-bound (in units of the site scale).

    Parameters: ``sites`` (["value"]), ``bound`` (3.0), ``mode`` ("clip" | "tanh"), ``on`` ("output":
    what downstream units see; "state": the unit's own state after every step, value/error only).

    Source: any analog node is bounded by its supply rails; aihwkit bounds inputs (inp_bound = 1) and
    outputs (out_bound = 12) of each array; rate units saturate (Echeveste 2020's power-law rates).
    """

    type = "saturation"
    defaults = {"sites": ["value"], "bound": 3.0, "mode": "clip", "on": "output"}
    positive = ("bound",)
    choices = {"mode": ("clip", "tanh"), "on": ("output", "state")}

    def _validate(self):
        allowed = ACTIVITY_SITES if self.params["on"] == "output" else STATE_SITES
        _sites(self, "sites", allowed)

    def bind(self, ctx):
        b = _Saturation(self, ctx)
        return b if b.active else None


class _FeedbackMismatch(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.multiplicative = p["mode"] == "multiplicative"
        for name, w in ctx.weights.items():
            if w.dim() < 2:
                continue
            xi = ctx.frozen_randn(w.shape)
            # multiplicative: the factor 1 + std xi; additive: the offset std w_max xi
            self.frozen[name] = 1 + p["std"] * xi if self.multiplicative else p["std"] * w.detach().abs().max() * xi
        if self.frozen:
            self.feedback_static = self._apply

    def _apply(self, name, w):
        t = self.frozen.get(name)
        if t is None:
            return w
        return w * t if self.multiplicative else w + t


class FeedbackMismatch(NoiseSource):
    """A mismatched feedback path: J^T is computed with a frozen perturbed copy of the weights.

    ``mode="multiplicative"`` (default): w_fb = w (1 + std xi); ``"additive"``: w_fb = w + std w_max xi.
    ``std`` (0.1). The forward path keeps its own weights; the feedback copy also sees every forward
    perturbation (programming, drift, read noise) and then its own mismatch.

    Source: separate forward and feedback arrays in analog PC hardware are programmed independently;
    sigma ~ 0.1 follows rockpool's mismatch level (Lillicrap 2016's random feedback is the extreme case).
    """

    type = "feedback_mismatch"
    defaults = {"std": 0.1, "mode": "multiplicative"}
    nonnegative = ("std",)
    choices = {"mode": ("multiplicative", "additive")}

    def bind(self, ctx):
        if self.params["std"] == 0:
            return None
        b = _FeedbackMismatch(self, ctx)
        return b if b.active else None


NOISE_SOURCES: dict[str, type[NoiseSource]] = {
    cls.type: cls for cls in (Thermal, Shot, Flicker, Mismatch, WeightProgramming, WeightRead, Drift,
                              Quantisation, Saturation, FeedbackMismatch)
}


# ============================================================================= presets ====

PRESETS: dict[str, dict] = {
    # T = 0 and no noise: the circuit is an ODE (classic predictive coding, a gradient flow)
    "none": {"temperature": 0.0, "sources": []},
    # intrinsic Langevin noise only (T = 1): the circuit samples (the posterior when tau_e -> 0)
    "ideal": {"temperature": 1.0, "sources": []},
    "thermal": {"temperature": 1.0, "sources": [{"type": "thermal"}]},
    # a realistic analog in-memory-computing mix (aihwkit PCM, CrossSim, rockpool figures)
    "analog": {
        "temperature": 1.0,
        "timescales": {"name": "mismatch", "sigma": 0.1},
        "sources": [
            {"type": "weight_programming", "model": "pcm"},
            {"type": "drift", "t_start": 3600.0, "compensate": True},
            {"type": "weight_read", "std": 0.0175},
            {"type": "feedback_mismatch", "std": 0.05},
            {"type": "mismatch", "gain_std": 0.1, "offset_std": 0.02, "sites": ["value", "error"]},
            {"type": "quantisation", "site": "value", "bits": 7},
            {"type": "quantisation", "site": "prediction", "bits": 9},
            {"type": "quantisation", "site": "error", "bits": 7},
            {"type": "thermal", "value_std": 0.05, "error_std": 0.05},
            {"type": "flicker", "value_std": 0.05},
            {"type": "saturation", "sites": ["value"], "bound": 4.0, "mode": "clip", "on": "state"},
        ],
    },
    # cortex: Poisson-like variability and heterogeneous time constants of 10-20 ms
    "cortical": {
        "temperature": 1.0,
        "timescales": {"name": "heterogeneous", "tau_z": math.sqrt(0.01 * 0.02), "tau_e": math.sqrt(0.01 * 0.02),
                       "sigma": math.log(2) / 4, "low": 0.01, "high": 0.02},
        "sources": [{"type": "shot", "value_fano": 0.15, "error_fano": 0.15}],
    },
}


# ========================================================================= NoiseModel ====

def make_noise(spec: Mapping[str, Any] | NoiseSource) -> NoiseSource:
    """A NoiseSource from ``{"type": name, **params}`` or a source object."""
    if isinstance(spec, NoiseSource):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(f"a noise source must be a dict with a 'type' or a NoiseSource, got {type(spec).__name__}")
    params = dict(spec)
    kind = params.pop("type", None)
    if kind not in NOISE_SOURCES:
        raise ValueError(f"unknown noise source {kind!r}; choose one of {sorted(NOISE_SOURCES)}")
    return NOISE_SOURCES[kind](**params)


class NoiseModel:
    """An ordered list of noise sources, with the temperature and time-constant model they imply.

    Args:
        sources: NoiseSource objects or dicts ``{"type": ..., **params}``; applied in this order
            (e.g. value-unit mismatch before the DAC's quantisation).
        temperature: T of the intrinsic Langevin noise (None: 1.0; preset ``none`` sets 0).
        timescales: a time-constant model spec (None: the config's, else uniform).
        name: a label (the preset name).
    """

    KEYS = ("name", "preset", "temperature", "timescales", "sources")

    def __init__(self, sources: Sequence[NoiseSource | Mapping] = (), temperature: float | None = None,
                 timescales: str | Mapping | TimescaleModel | None = None, name: str | None = None):
        if isinstance(sources, (str, bytes, Mapping)):
            raise TypeError("sources must be a list of noise sources (dicts or NoiseSource objects)")
        self.sources = [make_noise(s) for s in sources]
        if temperature is not None:
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
                    or temperature < 0:
                raise ValueError(f"noise model: temperature must be a non-negative number, got {temperature!r}")
            temperature = float(temperature)
        self.temperature = temperature
        self.timescales = make_timescales(timescales) if timescales is not None else None
        self.name = name

    # ------------------------------------------------------------------- constructors
    @classmethod
    def preset(cls, name: str) -> "NoiseModel":
        if name not in PRESETS:
            raise ValueError(f"unknown noise preset {name!r}; choose one of {sorted(PRESETS)}")
        spec = copy.deepcopy(PRESETS[name])
        return cls(spec.get("sources", []), spec.get("temperature"), spec.get("timescales"), name=name)

    from_preset = preset

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "NoiseModel":
        """From ``{"preset"?, "name"?, "temperature"?, "timescales"?, "sources"?}``.

        With ``preset`` the preset is the base: its sources come first, then ``sources``; temperature
        and timescales given here override the preset's.
        """
        if not isinstance(spec, Mapping):
            raise TypeError(f"a noise config must be a dict, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"noise config: unknown key(s) {unknown}; known: {list(cls.KEYS)}")
        sources = list(spec.get("sources", []))
        temperature, timescales, name = spec.get("temperature"), spec.get("timescales"), spec.get("name")
        if spec.get("preset") is not None:
            base = cls.preset(spec["preset"])
            sources = [s.to_dict() for s in base.sources] + sources
            temperature = base.temperature if temperature is None else temperature
            if timescales is None and base.timescales is not None:
                timescales = base.timescales.to_dict()
            name = name or base.name
        return cls(sources, temperature, timescales, name)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "NoiseModel":
        """From a JSON file holding a :meth:`from_dict` config (or a bare preset name as a JSON string)."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"noise config file {path} does not exist")
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"noise config file {path} is not valid JSON: {err}") from None
        if isinstance(spec, str):
            return cls.preset(spec)
        return cls.from_dict(spec)

    @classmethod
    def resolve(cls, spec: "str | Mapping | NoiseModel | os.PathLike | None") -> "NoiseModel":
        """Preset name, path to a ``.json`` file, dict or NoiseModel -> NoiseModel (None = ideal)."""
        if spec is None:
            return cls.preset("ideal")
        if isinstance(spec, NoiseModel):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if isinstance(spec, os.PathLike) or (isinstance(spec, str) and spec.endswith(".json")):
            return cls.from_file(spec)
        if isinstance(spec, str):
            return cls.preset(spec)
        raise TypeError(f"noise must be a preset name, a dict, a JSON path or a NoiseModel, got {type(spec).__name__}")

    def to_dict(self) -> dict:
        out = {"sources": [s.to_dict() for s in self.sources]}
        if self.name is not None:
            out["name"] = self.name
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.timescales is not None:
            out["timescales"] = self.timescales.to_dict()
        return out

    def to_file(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def __repr__(self) -> str:
        return f"NoiseModel(name={self.name!r}, temperature={self.temperature}, sources={self.sources})"

    def __eq__(self, other) -> bool:
        return isinstance(other, NoiseModel) and self.to_dict() == other.to_dict()

    # ------------------------------------------------------------------------- binding
    def bind(self, ctx: CircuitContext) -> list[BoundSource]:
        """Bind every source to a circuit (frozen draws in source order); drop sources with nothing to do."""
        bound = []
        for source in self.sources:
            b = source.bind(ctx)
            if b is not None and b.active:
                bound.append(b)
        return bound
