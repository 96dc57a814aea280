"""Frozen per-unit gain and offset mismatch of what units pass downstream."""
from __future__ import annotations

import torch

from .base import ACTIVITY_SITES, BoundSource, NoiseSource, _sites

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

