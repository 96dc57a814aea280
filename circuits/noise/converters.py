"""Converters and rails: DAC / ADC quantisation (of activities or weights) and saturation."""
from __future__ import annotations

import math

import torch

from neuro_lpc.distributed import shard_rand

from .base import ACTIVITY_SITES, STATE_SITES, BoundSource, NoiseSource, _sites

QUANT_DEFAULT_BITS = {"value": 7, "error": 7, "prediction": 9, "weights": 8}
QUANT_DEFAULT_BOUND = {"value": 3.0, "error": 3.0, "prediction": 2.0}  # prediction: headroom beyond [-1, 1]


def quantise(a: torch.Tensor, res: float, bound: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Clip to [-bound, bound], then round to the grid res * k (stochastic rounding when gen is given)."""
    a = a.clamp(-bound, bound) / res
    if gen is None:
        a = torch.round(a)
    else:
        a = torch.floor(a + shard_rand(a.shape, generator=gen, device=a.device, dtype=a.dtype))  # torch.rand off DDP
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

