"""The registry of source types (:data:`NOISE_SOURCES`), :func:`make_noise` and :class:`NoiseModel`.

The registry is built here from the family modules, which import only :mod:`.base`, so there is no cycle.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..timescales import TimescaleModel, make_timescales
from .base import BoundSource, CircuitContext, NoiseSource
from .converters import Quantisation, Saturation
from .feedback import FeedbackMismatch
from .mismatch import Mismatch
from .presets import PRESETS
from .units import Flicker, Shot, Thermal
from .weight_sources import Drift, PulsedUpdate, WeightProgramming, WeightRead

NOISE_SOURCES: dict[str, type[NoiseSource]] = {
    cls.type: cls for cls in (Thermal, Shot, Flicker, Mismatch, WeightProgramming, WeightRead, Drift, PulsedUpdate,
                              Quantisation, Saturation, FeedbackMismatch)
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
