"""Weight devices: programming noise, read noise and conductance drift (aihwkit's PCM model)."""
from __future__ import annotations

import math

import torch

from .base import BoundSource, NoiseSource, _is_weight

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

