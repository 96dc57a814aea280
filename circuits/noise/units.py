"""Noise of the units themselves: thermal (white), shot (signal-dependent) and flicker (1/f, an OU bank)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from neuro_lpc.distributed import shard_randn

from .base import STATE_SITES, UNITS, BoundSource, NoiseSource, _add_scaled, _white_coefs

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
        shard_randn(self.buf_v.shape, generator=gen, out=self.buf_v)  # torch.randn off DDP
        G = getattr(self.ctx, "gain", None)
        if G is not None:  # the gain G modulates the value unit's time constant (tau / G), noise included
            self.buf_v.mul_(G.sqrt())
        _add_scaled(out, self.buf_v, self.coef_v)

    def _inc_e(self, ref, out, gen):
        shard_randn(self.buf_e.shape, generator=gen, out=self.buf_e)
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
        shard_randn(buf.shape, generator=gen, out=buf)  # torch.randn off DDP
        out.addcmul_(buf, (ref.abs() * var).sqrt_())

    def _inc_v(self, ref, out, gen):
        G = getattr(self.ctx, "gain", None)
        self._inc(ref, out, gen, self.buf_v, self.var_v if G is None else self.var_v * G)

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
        """New banks in their stationary law, or -- when the circuit carries a persistent noise state (a
        trainer's, across presentations) -- the banks where the last run left them, so the slow components
        are 1/f noise across training rather than a fresh offset per run (chains beyond the stored ones
        start stationary)."""
        c = self.ctx
        self.banks = {site: OUBank(self.taus, 1.0, (batch, *c.unit_shape(site)), c.dt, c.device, c.dtype)
                      for site in self.sites}
        store = getattr(c, "noise_state", None)
        for site, bank in self.banks.items():
            bank.reset(gen)
            saved = store.get(self._key(site)) if store is not None else None
            if saved is not None and saved.shape[0] == bank.K and saved.shape[2:] == bank.y.shape[2:]:
                k = min(batch, saved.shape[1])
                bank.y[:, :k].copy_(saved[:, :k])
                torch.sum(bank.y, dim=0, out=bank.out)

    def _key(self, site):
        return f"flicker:{site}:{sorted(self.source.params.items())}"

    def finish(self):
        store = getattr(self.ctx, "noise_state", None)
        if store is not None:
            for site, bank in self.banks.items():
                store[self._key(site)] = bank.y.detach().clone()

    def state_tensors(self):
        return [t for bank in self.banks.values() for t in (bank.y, bank.out)]

    def _advance(self, gen):
        for bank in self.banks.values():
            bank.step(gen)

    def _inc_v(self, ref, out, gen):
        G = getattr(self.ctx, "gain", None)
        y = self.banks["value"].out
        _add_scaled(out, y if G is None else y * G, self.coefs["value"])  # a current: scaled like the drift, G s

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

