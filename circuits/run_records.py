"""Records and divergence support of a circuit run (the base class of :class:`circuits.run.CircuitRun`).

Records measure log p(x, z) and the error norm under the true (noise-free) model -- from the next
step's forward when that forward is the true model's (``defer_records``), else with a forward of their
own; divergence support snapshots the state every host check and names the first non-finite unit.
"""
from __future__ import annotations

import math

import torch

from neuro_lpc.likelihoods import LOG_2PI

__all__ = ["RunRecords"]


class RunRecords:
    """Mixin: records (``measure``, deferred requests, ``gain``, noise records) and divergence support."""
    # ---------------------------------------------------------------------- records
    @torch.no_grad()
    def measure(self):
        """(log p(x, z) (B,), error norm (B,)) of the current state under the true (noise-free) model (records="device":
        under the weights the circuit reads, ``record_decode``)."""
        model, z, x = self.c.model, self.z, self.x
        if self._lean_record:
            dec = model.decoder
            r = torch.addmm(self.xmb_cache(), z, dec.weight.detach().t(), alpha=-1)  # x - b - W z
            prec = self._record_prec
            rn = torch.linalg.vector_norm(r, dim=1)
            zn = torch.linalg.vector_norm(z, dim=1)
            lj = rn.square().mul_(-0.5 * prec).add_(zn.square_(), alpha=-0.5 / self.sp2).add_(self._lj_const())
            en = rn.mul_(prec) if self.c.adiabatic else None
        else:
            mu = self.record_decode(z)
            lp, err = self.log_lik(mu, error=self.c.adiabatic)  # one pass of the likelihood for both
            lj = lp + model.log_prior(z)
            en = None
            if self.c.adiabatic:
                self._err_cache = (self.k, err)  # error_units() of this state without another forward
                en = torch.linalg.vector_norm(err.reshape(self.B, -1), dim=1)
        if en is None:
            en = torch.linalg.vector_norm(self.eps.reshape(self.B, -1), dim=1)
        return lj, en

    @torch.no_grad()
    def error_units(self) -> torch.Tensor:
        """The error units' state (for adiabatic units: e(x, g(z)) at the current z, noise-free)."""
        if not self.c.adiabatic:
            return self.eps
        if self._err_cache is not None and self._err_cache[0] == self.k:
            return self._err_cache[1]
        return self.c.model.error(self.x, self.record_decode(self.z))

    @torch.no_grad()
    def record_decode(self, z: torch.Tensor) -> torch.Tensor:
        """g(z) as records measure it: the decoder's own parameters, or (``record_device``, records="device") the
        weights the circuit reads at the current time (``circuits.run_weights.RunWeights.base``: the array's reads with
        programming error and drift, the static weight hooks), without per-read noise."""
        if not self.record_device:
            return self.c.model.decoder(z)
        return self.decode(self.weights.base(self.k * self.dt), z)

    # deferred records: the next step's forward fills what a record needs of the true model
    def request_record(self, lj: torch.Tensor, en: torch.Tensor | None, eps: torch.Tensor | None) -> None:
        """Have the next step write log p(x, z) of the current z into ``lj`` (and, adiabatic, ||e(x, g(z))||
        into ``en``, e(x, g(z)) into ``eps``), from the forward it does anyway (``defer_records`` only)."""
        self._request = (lj, en, eps)

    @torch.no_grad()
    def _fill_request(self, z, mu, err):
        lj, en, eps = self._request
        self._request = None
        need_err = err is None and not (en is None and eps is None)
        lp, e = self.log_lik(mu, error=need_err)
        torch.add(lp, self.c.model.log_prior(z), out=lj)
        if en is None and eps is None:
            return
        if err is None:
            err = e
        if en is not None:
            torch.linalg.vector_norm(err.reshape(self.B, -1), dim=1, out=en)
        if eps is not None:
            eps.copy_(err)

    def resolve_request(self) -> None:
        """Fill a pending record request now (one forward at the current state)."""
        if self._request is None:
            return
        lj, en, eps = self._request
        self._request = None
        lj_, en_ = self.measure()
        lj.copy_(lj_)
        if en is not None:
            en.copy_(en_)
        if eps is not None:
            eps.copy_(self.error_units())

    def drop_request(self) -> None:
        self._request = None

    def xmb_cache(self):
        if not hasattr(self, "_xmb"):
            dec = self.c.model.decoder
            self._xmb = (self.x - dec.bias.detach()) if dec.bias is not None else self.x
        return self._xmb

    def _lj_const(self) -> float:
        if not hasattr(self, "_ljc"):
            n = self.x[0].numel()
            d = self.z.shape[1]
            ls = float(self.lik.log_sigma.detach())
            self._ljc = -n * (ls + 0.5 * LOG_2PI) - d * (math.log(self.c.prior_std) + 0.5 * LOG_2PI)
        return self._ljc

    def gain(self):
        """The gain of the step just taken (the current state); the held G once "frozen" has frozen."""
        if self.freeze_at is not None and self.k >= self.freeze_at:
            return self.G_frozen.clone()
        return self.gain_at(self.k)

    def noise_records(self) -> dict[str, torch.Tensor]:
        out = {}
        for rec in self.recorders:
            out.update(rec())
        return out

    # ------------------------------------------------------------ divergence support
    def all_finite(self) -> bool:
        ok = None
        for name in self._state_names:
            t = getattr(self, name)
            if t is not None:
                f = torch.isfinite(t).all()
                ok = f if ok is None else ok & f
        return bool(ok)

    def snapshot(self) -> dict:
        snap = {"k": self.k, "gen": self.gen.get_state(),
                "state": {n: (None if getattr(self, n) is None else getattr(self, n).clone()) for n in self._state_names},
                "sources": [t.clone() for b in self.c.sources for t in b.state_tensors()]}
        if self.online_lr:
            snap["params"] = [p.detach().clone() for p in self.learn_params]
        return snap

    def restore(self, snap: dict) -> None:
        self.k = snap["k"]
        self._err_cache = None
        for name, t in snap["state"].items():
            cur = getattr(self, name)
            if t is not None and cur is not None and cur.shape == t.shape:
                cur.copy_(t)  # in place: views of the state (the reduced kernel's) stay valid
            else:
                setattr(self, name, None if t is None else t.clone())
        self.gen.set_state(snap["gen"])
        for t, s in zip([t for b in self.c.sources for t in b.state_tensors()], snap["sources"]):
            t.copy_(s)
        if "params" in snap:
            with torch.no_grad():
                for p, s in zip(self.learn_params, snap["params"]):
                    p.copy_(s)

    def describe_bad_units(self) -> tuple[str, int | None, str | None]:
        """(text, chain, unit) naming the first non-finite unit of the current state and its time constant
        in steps (tau / dt: the number a smaller dt or a larger time constant would raise)."""
        parts = []
        first = None
        ts = self.c.timescales
        for label, t, tau in (("value unit z", self.z, ts.tau_z), ("error unit eps", self.eps, ts.tau_e),
                              ("gain unit m", self.m, ts.tau_m)):
            if t is None:
                continue
            bad = (~torch.isfinite(t)).nonzero()
            if len(bad) == 0:
                continue
            chain = int(bad[0, 0])
            idx = ", ".join(str(int(i)) for i in bad[0, 1:])
            name = f"{label.split()[-1]}[{idx}]"
            if first is None:
                tau_i = float(tau[tuple(int(i) for i in bad[0, 1:])]) if isinstance(tau, torch.Tensor) else float(tau)
                when = f", tau = {tau_i:.3g} s = {tau_i / self.dt:.3g} dt" if tau_i > 0 else ""
                first = (f"{label}[{idx}] of chain {chain}{when}", chain, name)
            parts.append(f"{len(bad)} {label.rsplit(' ', 1)[0]}s")
        if first is None:
            return "no non-finite unit found", None, None
        text = f"non-finite {first[0]} ({', '.join(parts)} non-finite in all)"
        return text, first[1], first[2]

