"""The base of the noise models: the circuit context, bound sources, the source base class and shared helpers.

Where noise enters, the hooks and the units of amplitudes are documented in the package docstring
(:mod:`circuits.noise`). Every source family lives in its own module and imports only this one.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from ..timescales import Timescales

ACTIVITY_SITES = ("value", "prediction", "error")
STATE_SITES = ("value", "error")
UNITS = ("relative", "absolute")
FROZEN_CACHE_ENTRIES = 64   # draws a CircuitContext.frozen_cache holds at most


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
    noise_state: dict | None = None   # persistent dynamic noise states across circuits (an owner's dict)
    gain: torch.Tensor | None = None  # the gain G of the current step (set by the run when preconditioned)
    frozen_cache: dict | None = None  # frozen draws kept across circuits (an owner's dict; see frozen_randn)

    @property
    def adiabatic(self) -> bool:
        return self.timescales.adiabatic

    def scale(self, site: str) -> float:
        return {"value": self.prior_std, "error": self.error_scale, "prediction": 1.0}[site]

    def frozen_randn(self, shape) -> torch.Tensor:
        """A frozen N(0, 1) draw: CPU float64 (device independent), then cast to the circuit's device/dtype.

        With ``frozen_cache`` (an owner that rebuilds circuits of the same seed, e.g. the circuit trainer every
        batch) a draw is made once: it is keyed by the generator's state before it (and shape, device, dtype), and
        a hit returns a copy of it and moves the generator to the state after it -- the same values and the same
        generator state as drawing again (a float64 draw of the ~0.7 M weights of a feedback copy costs ~15 ms)."""
        shape = tuple(shape)
        cache = self.frozen_cache
        if cache is None:
            return torch.randn(shape, generator=self.frozen_gen, dtype=torch.float64).to(self.device, self.dtype)
        key = (bytes(self.frozen_gen.get_state().numpy()), shape, str(self.device), self.dtype)
        hit = cache.get(key)
        if hit is not None:
            self.frozen_gen.set_state(hit[1])
            return hit[0].clone()
        out = torch.randn(shape, generator=self.frozen_gen, dtype=torch.float64).to(self.device, self.dtype)
        if len(cache) >= FROZEN_CACHE_ENTRIES:  # a changed model or seed: start afresh rather than grow
            cache.clear()
        cache[key] = (out.clone(), self.frozen_gen.get_state())
        return out

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
    weight_device: bool = False  # served by the circuit's analog array (circuits.noise.arrays), not by hooks

    def __init__(self, source: "NoiseSource", ctx: CircuitContext):
        self.source = source
        self.ctx = ctx
        self.frozen: dict[str, torch.Tensor] = {}

    def start(self, batch: int, gen: torch.Generator) -> None:
        """Per-run set-up (buffers, initial dynamic states) for ``batch`` chains."""

    def finish(self) -> None:
        """End of a run: hand dynamic states to ``ctx.noise_state`` when the circuit carries one."""

    def state_tensors(self) -> list[torch.Tensor]:
        """Dynamic state tensors (snapshotted for divergence replay)."""
        return []

    @property
    def active(self) -> bool:
        return self.weight_device or any(getattr(self, h) is not None for h in (
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

