"""Time-constant models of the circuit: which tau each value, error and gain unit gets.

The circuit (DESIGN.md section 3) has three populations with time constants

* tau_z: value units z (shape (d,) per unit),
* tau_e: observation error units eps (the observation shape, e.g. (n,) or (C, H, W)); 0 = adiabatic,
* tau_m: preconditioning gain units m (shape (d,)).

A :class:`TimescaleModel` turns the configured (median) values into per-unit values. Per-unit values
are shared by the B chains of a batch (the chains are B copies of one physical circuit), so a
tensor tau has the unit shape and broadcasts over the batch. Random draws are *frozen*: made once,
on the CPU in float64 from a generator seeded by the run's seed, so the same seed gives the same
time constants on any device.

Models (registry :data:`TIMESCALES`):

``uniform``        every unit of a population has the configured tau (Python floats: the fast path).
``heterogeneous``  log-normal per unit: tau_i = tau * exp(sigma * xi_i), optionally clipped to
                   [low, high] seconds. The ``cortical`` noise preset uses sigma = ln(2)/4 and a median
                   of sqrt(10 * 20) ms clipped to [10, 20] ms, i.e. "heterogeneous tau of 10-20 ms"
                   (membrane/synaptic time constants of cortical neurons; Hennequin 2014 and
                   Echeveste 2020 use tau_E ~ 20 ms, tau_I ~ 10 ms).
``mismatch``       device mismatch (:class:`TimescaleMismatch`): tau_i = tau * (1 + sigma * xi_i), frozen,
                   sigma = 0.1 by default (rockpool's DYNAP-SE mismatch model, 3 sigma = 30 %); a factor is
                   floored at 0.1.
``adiabatic``      tau_e = 0: the error units follow e(x, g(z)) instantaneously.

Gain units with per-unit tau_m (:func:`gain_decay`). A gain unit's one-step decay is beta_i = beta **
(tau_m / tau_m,i), beta the population's uniform decay (the configured decay of Algorithm 1, or
1 - dt / tau_m for ``precondition="rms"``): the exact one-step decay exp(-dt / tau_i) of a leaky
integrator whose time constant is tau_i = (tau_m,i / tau_m) * tau_bar, tau_bar = -dt / ln(beta) the leak
whose exact decay is beta. It lies in (0, 1) for every draw and any dt, so m stays >= 0 (issue 14: the
Euler step 1 - dt / tau_m,i was negative for a unit with tau_m,i < dt, which in the ``analog`` preset is
a 2.5-sigma mismatch draw when tau_m = dt / (1 - 0.25): one seed in five at d = 40, and sqrt(m) NaN).
The gain population keeps its mismatch in ``analog``: in an analog circuit a gain unit is a leaky
integrator like the value and error units, and the mismatch model (rockpool's p' = p (1 + sigma xi),
frozen per unit) applies to any per-unit parameter; ``populations`` can leave it out.

Any model may also set absolute medians ``tau_z`` / ``tau_e`` (seconds), which then override the
circuit config's values (a preset such as ``cortical`` uses this).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch

__all__ = ["TimescaleModel", "Uniform", "Heterogeneous", "TimescaleMismatch", "Adiabatic", "Timescales", "TIMESCALES",
           "make_timescales", "derive_seed", "gain_decay"]

POPULATIONS = ("value", "error", "gain")


def derive_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for a named random stream of a run (frozen noise, time constants, ...)."""
    return (int(seed) * 1_000_003 + 7919 * int(stream) + 0x5EED) % (2**63 - 1)


@dataclass
class Timescales:
    """Per-unit time constants: Python floats (uniform) or tensors with the unit shape.

    tau_z: value units (scalar or (d,)); tau_e: error units (scalar or the observation shape; 0 means
    adiabatic); tau_m: gain units (scalar or (d,)).
    """

    tau_z: float | torch.Tensor
    tau_e: float | torch.Tensor
    tau_m: float | torch.Tensor

    @property
    def adiabatic(self) -> bool:
        return not isinstance(self.tau_e, torch.Tensor) and self.tau_e == 0

    @staticmethod
    def smallest(tau) -> float:
        return float(tau.min()) if isinstance(tau, torch.Tensor) else float(tau)

    def to(self, device, dtype) -> "Timescales":
        def conv(t):
            return t.to(device=device, dtype=dtype) if isinstance(t, torch.Tensor) else t
        return Timescales(conv(self.tau_z), conv(self.tau_e), conv(self.tau_m))


def gain_decay(decay: float, tau_m: float | torch.Tensor, tau_nominal: float) -> float | torch.Tensor:
    """The gain units' decay per step: ``decay`` for uniform tau_m, else beta_i = decay ** (tau_nominal / tau_m,i).

    ``decay`` in (0, 1] is the uniform population's one-step decay (Algorithm 1's beta, or the Euler step
    1 - dt / tau_m of ``precondition="rms"``) and ``tau_nominal`` its time constant (``CircuitConfig.gain_tau``).
    A unit whose time constant is f_i = tau_m,i / tau_nominal times the nominal one decays as a leaky integrator
    tau_i dm = (s^2 - m) dt integrated exactly over a step with s held (the exponential integrator, as
    Brian2's "exact" method for linear equations and this package's flicker OU bank): beta_i = exp(-dt / tau_i)
    with tau_i = f_i tau_bar, where tau_bar = -dt / ln(decay) is the leak whose exact one-step decay is
    ``decay``. So beta_i = decay ** (1 / f_i): in (0, 1) for every f_i > 0 and any dt (m' = beta_i m +
    (1 - beta_i) s^2 is a convex combination, m stays >= 0), equal to ``decay`` at f_i = 1 (a unit without
    mismatch is the uniform unit bit for bit), and 1 - dt / tau_m,i + O((dt / tau_m,i)^2) when dt << tau_m,i.

    The other reading, Euler's beta_i = 1 - dt / tau_m,i, is negative for tau_m,i < dt (issue 14), and
    clamping it at 0 (tau_m,i >= dt) would make a tail of units memoryless (G = 1 / |s|) at a rate set by
    tau_m / dt; with tau_m = dt / (1 - beta) that rate does not depend on dt, so no dt could help either way.
    """
    if not isinstance(tau_m, torch.Tensor):
        return decay
    if not 0 < decay <= 1:
        raise ValueError(f"gain units: the uniform decay per step must be in (0, 1], got {decay!r} "
                         f"(for precondition='rms' this needs dt < precondition_tau)")
    return torch.pow(decay, tau_nominal / tau_m)


class TimescaleModel:
    """Base class. Subclasses define ``name``, ``defaults`` and :meth:`_draw`."""

    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"timescale model {self.name!r}: unknown parameter(s) {unknown}; "
                             f"known: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}
        for key in ("tau_z", "tau_e"):
            v = self.params.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"timescale model {self.name!r}: {key} must be a non-negative number or None, got {v!r}")
        if self.params.get("tau_z") == 0:
            raise ValueError(f"timescale model {self.name!r}: tau_z must be positive")
        self._validate()

    def _validate(self) -> None:
        pass

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, TimescaleModel) and self.to_dict() == other.to_dict()

    def medians(self, tau_z: float, tau_e: float) -> tuple[float, float]:
        """The configured medians, overridden by the model's own ``tau_z`` / ``tau_e`` when set."""
        tz = self.params.get("tau_z")
        te = self.params.get("tau_e")
        return (float(tz) if tz is not None else float(tau_z), float(te) if te is not None else float(tau_e))

    def build(self, tau_z: float, tau_e: float, tau_m: float, latent_dim: int, obs_shape: tuple[int, ...],
              seed: int = 0) -> Timescales:
        """Per-unit time constants (CPU float64 tensors, or floats for uniform populations)."""
        tz, te = self.medians(tau_z, tau_e)
        gen = torch.Generator().manual_seed(derive_seed(seed, 1))
        return self._draw(tz, te, float(tau_m), latent_dim, tuple(obs_shape), gen)

    def _draw(self, tau_z, tau_e, tau_m, d, obs_shape, gen) -> Timescales:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_sigma(model: TimescaleModel) -> None:
    s = model.params["sigma"]
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0):
        raise ValueError(f"timescale model {model.name!r}: sigma must be a non-negative number, got {s!r}")


def _check_populations(model: TimescaleModel) -> None:
    pops = model.params["populations"]
    if isinstance(pops, str):
        pops = (pops,)
    pops = tuple(pops)
    bad = sorted(set(pops) - set(POPULATIONS))
    if bad:
        raise ValueError(f"timescale model {model.name!r}: unknown population(s) {bad}; known: {POPULATIONS}")
    model.params["populations"] = list(pops)


class Uniform(TimescaleModel):
    """Every unit of a population has the configured time constant."""

    name = "uniform"
    defaults = {"tau_z": None, "tau_e": None}

    def _draw(self, tau_z, tau_e, tau_m, d, obs_shape, gen):
        return Timescales(tau_z, tau_e, tau_m)


class Heterogeneous(TimescaleModel):
    """Log-normal per unit: tau_i = tau * exp(sigma xi_i), xi_i ~ N(0, 1), clipped to [low, high] s.

    ``populations`` selects which of value / error / gain units are heterogeneous.
    """

    name = "heterogeneous"
    defaults = {"sigma": 0.25, "low": None, "high": None, "tau_z": None, "tau_e": None,
                "populations": ["value", "error"]}

    def _validate(self):
        _check_sigma(self)
        _check_populations(self)
        lo, hi = self.params["low"], self.params["high"]
        for k in ("low", "high"):
            v = self.params[k]
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"timescale model 'heterogeneous': {k} must be a positive number or None, got {v!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"timescale model 'heterogeneous': low={lo} > high={hi}")

    def _one(self, tau, shape, gen):
        t = tau * torch.exp(self.params["sigma"] * torch.randn(shape, generator=gen, dtype=torch.float64))
        lo, hi = self.params["low"], self.params["high"]
        if lo is not None or hi is not None:
            t = t.clamp(min=lo, max=hi)
        return t

    def _draw(self, tau_z, tau_e, tau_m, d, obs_shape, gen):
        pops = self.params["populations"]
        # draw all three streams unconditionally so one population's choice never shifts another's draws
        tz = self._one(tau_z, (d,), gen)
        te = self._one(tau_e, obs_shape, gen) if tau_e > 0 else 0.0
        tm = self._one(tau_m, (d,), gen)
        return Timescales(tz if "value" in pops else tau_z, te if ("error" in pops and tau_e > 0) else tau_e,
                          tm if "gain" in pops else tau_m)


class TimescaleMismatch(TimescaleModel):
    """Frozen device mismatch: tau_i = tau * max(1 + sigma xi_i, 0.1) (rockpool, sigma ~ 0.1).

    Gain units included by default; their per-step decay is :func:`gain_decay`'s, in (0, 1) for any draw.
    """

    name = "mismatch"
    defaults = {"sigma": 0.1, "tau_z": None, "tau_e": None, "populations": ["value", "error", "gain"]}

    def _validate(self):
        _check_sigma(self)
        _check_populations(self)

    def _one(self, tau, shape, gen):
        f = 1 + self.params["sigma"] * torch.randn(shape, generator=gen, dtype=torch.float64)
        return tau * f.clamp(min=0.1)

    def _draw(self, tau_z, tau_e, tau_m, d, obs_shape, gen):
        pops = self.params["populations"]
        tz = self._one(tau_z, (d,), gen)
        te = self._one(tau_e, obs_shape, gen) if tau_e > 0 else 0.0
        tm = self._one(tau_m, (d,), gen)
        return Timescales(tz if "value" in pops else tau_z, te if ("error" in pops and tau_e > 0) else tau_e,
                          tm if "gain" in pops else tau_m)


class Adiabatic(TimescaleModel):
    """tau_e = 0: error units settle instantly at e(x, g(z)) (the limit in which the circuit is LPC)."""

    name = "adiabatic"
    defaults = {"tau_z": None}

    def _draw(self, tau_z, tau_e, tau_m, d, obs_shape, gen):
        return Timescales(tau_z, 0.0, tau_m)


TIMESCALES: dict[str, type[TimescaleModel]] = {
    cls.name: cls for cls in (Uniform, Heterogeneous, TimescaleMismatch, Adiabatic)
}


def make_timescales(spec: str | Mapping[str, Any] | TimescaleModel | None) -> TimescaleModel:
    """A TimescaleModel from a registry name, a dict ``{"name": ..., **params}`` or a model (None = uniform)."""
    if spec is None:
        return Uniform()
    if isinstance(spec, TimescaleModel):
        return spec
    if isinstance(spec, str):
        if spec not in TIMESCALES:
            raise ValueError(f"unknown timescale model {spec!r}; choose one of {sorted(TIMESCALES)}")
        return TIMESCALES[spec]()
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if name not in TIMESCALES:
            raise ValueError(f"unknown timescale model {name!r} in {dict(spec)!r}; choose one of {sorted(TIMESCALES)}")
        return TIMESCALES[name](**params)
    raise TypeError(f"timescales must be a name, a dict or a TimescaleModel, got {type(spec).__name__}")


_RENAMED = {"Mismatch": "TimescaleMismatch"}  # old name -> new name (deprecated for one release)


def __getattr__(name: str):
    """``circuits.timescales.Mismatch`` (renamed, so as not to clash with the noise source
    ``circuits.noise.mismatch.Mismatch``): warn and return :class:`TimescaleMismatch`."""
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"circuits.timescales.{name} is deprecated; use circuits.timescales.{new}",
                      DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
