"""Kernels for an ``nn.Linear`` decoder g(z) = W z + b (a mixin of :class:`~circuits.run.CircuitRun`).

* the plain kernels "linear-plain" / "linear-plain-reduced" (Gaussian likelihood, uniform time
  constants, no noise sources, no preconditioning, no learning): :meth:`LinearKernels._setup_plain`
  chooses one and the ``_step_plain*`` / ``_step_reduced*`` methods advance it; ``_eps_*`` rebuild
  the error units of the reduced forms;
* the explicit-matmul forward W z + b and feedback eps W of the general kernel "linear".
"""
from __future__ import annotations

import torch

from neuro_lpc.distributed import shard_randn

__all__ = ["LinearKernels"]


class LinearKernels:
    """Linear-decoder kernels of :class:`~circuits.run.CircuitRun` (they use its state and coefficients)."""

    # ------------------------------------------------------------------ plain kernels
    def _setup_plain(self):
        """Linear decoder g(z) = W z + b, Gaussian likelihood, no noise sources (``circuits.circuit`` docstring).

        With the error units eps (B, n) and d < n the linear circuit is integrated in the reduced
        basis of its feedback f = eps W (B, d): since eps' = be eps + ae_k z W^T + xb,

            f' = be f + ae_k z G + xb W,   G = W^T W (d x d),   z' = bz z + az f + cz n,

        which is the same Euler-Maruyama recursion (to rounding) at O(B d^2) instead of O(B n d) per
        step. f is stored shifted by the constant f* = xb W / (1 - be), next to the running sum
        q' = be q + ae_k z, so one product [f - f*, q]' = be [f - f*, q] + ae_k z [G | I] advances both;
        a step is one randn and four small in-place ops. eps itself is rebuilt when needed (records,
        checks, the final state): eps_k = be^k eps_0 + (1 - be^k) / (1 - be) xb + q_k W^T. Adiabatic
        error units reduce likewise to z' = z M + h + cz n with M = bz I - az prec G, h = az prec (x - b) W.
        d >= n keeps the direct form (eps updated in place by one addmm per step).
        """
        dec = self.c.model.decoder
        W = dec.weight.detach()
        b = dec.bias.detach() if dec.bias is not None else torch.zeros(W.shape[0], device=W.device, dtype=W.dtype)
        self.W, self.Wt = W, W.t()
        n, d = W.shape
        prec = float(torch.exp(-2 * self.lik.log_sigma.detach()))
        self.prec = prec
        k = 1.0 if self.bogacz else prec
        self.bz = 1.0 - self.az / self.sp2
        self.xmb = (self.x - b).contiguous()
        reduced = d < n
        if self.c.adiabatic:
            if reduced:
                self.kernel = "linear-plain-reduced"
                G = self.Wt @ W
                self.M = torch.eye(d, device=W.device, dtype=W.dtype) * self.bz - (self.az * prec) * G
                self.h = (self.xmb @ W) * (self.az * prec)
                self._eps_fn = self._eps_adiabatic
                self._state_names = ("z",)
                self.step = self._step_reduced_adiabatic
            else:
                self.kernel = "linear-plain"
                self.xbp = self.xmb * prec
                self.step = self._step_plain_adiabatic
            return
        self.be = 1.0 - self.ae * self.leak
        self.ae_k = -self.ae * k
        self.xb = self.xmb * (self.ae * k)
        if reduced:
            self.kernel = "linear-plain-reduced"
            d_ = self.z.shape[1]
            eye = torch.eye(d_, device=W.device, dtype=W.dtype)
            self.GI = torch.cat([self.Wt @ W, eye], dim=1)  # [G | I], (d, 2d)
            self.Iaz = eye * self.az
            fstar = (self.xb @ W) / (1.0 - self.be)  # the constant part of f's fixed point
            self.cfz = fstar * self.az
            self.S = torch.cat([self._eps @ W - fstar, torch.zeros_like(self.z)], dim=1)  # [f - f*, q]
            self.fs, self.q = self.S[:, :d_], self.S[:, d_:]
            self.eps0 = self._eps
            self._eps_fn = self._eps_reduced
            self._state_names = ("z", "S")
            self.step = self._step_reduced
        else:
            self.kernel = "linear-plain"
            self.step = self._step_plain

    def _step_plain(self):
        if self.noisy:
            torch.randn(self.z.shape, generator=self.gen, out=self.n)
        torch.addmm(self.z, self._eps, self.W, beta=self.bz, alpha=self.az, out=self.zn)
        if self.noisy:
            self.zn.add_(self.n, alpha=self.cz)
        self._eps.addmm_(self.z, self.Wt, beta=self.be, alpha=self.ae_k).add_(self.xb)
        self.z, self.zn = self.zn, self.z
        self.k += 1

    def _step_plain_adiabatic(self):
        if self.noisy:
            torch.randn(self.z.shape, generator=self.gen, out=self.n)
        torch.addmm(self.xbp, self.z, self.Wt, alpha=-self.prec, out=self._eps)
        torch.addmm(self.z, self._eps, self.W, beta=self.bz, alpha=self.az, out=self.zn)
        if self.noisy:
            self.zn.add_(self.n, alpha=self.cz)
        self.z, self.zn = self.zn, self.z
        self.k += 1

    def _step_reduced(self):
        z, zn = self.z, self.zn
        if self.noisy:
            torch.randn(z.shape, generator=self.gen, out=self.n)
        torch.addmm(z, self.fs, self.Iaz, beta=self.bz, out=zn).add_(self.cfz)  # bz z + az f
        if self.noisy:
            zn.add_(self.n, alpha=self.cz)
        self.S.addmm_(z, self.GI, beta=self.be, alpha=self.ae_k)  # f - f* and q in one product
        self.z, self.zn = zn, z
        self.k += 1

    def _step_reduced_adiabatic(self):
        if self.noisy:
            torch.randn(self.z.shape, generator=self.gen, out=self.n)
        torch.addmm(self.h, self.z, self.M, out=self.zn)
        if self.noisy:
            self.zn.add_(self.n, alpha=self.cz)
        self.z, self.zn = self.zn, self.z
        self.k += 1

    def _eps_reduced(self) -> torch.Tensor:
        q = self.S[:, self.z.shape[1]:]
        pk = self.be ** self.k
        s = (1.0 - pk) / (1.0 - self.be)
        return torch.addmm(torch.add(self.eps0 * pk, self.xb, alpha=s), q, self.Wt)

    def _eps_adiabatic(self) -> torch.Tensor:
        return torch.addmm(self.xmb, self.z, self.Wt, alpha=-1).mul_(self.prec)

    # ------------------------------------------------- the general kernel's linear path
    def _forward_linear(self, z_in):
        w = self.weights.fwd
        if w is None:
            dec = self.c.model.decoder
            W, b = dec.weight.detach(), (dec.bias.detach() if dec.bias is not None else None)
        else:
            W, b = w["weight"], w.get("bias")
        mu = torch.addmm(b, z_in, W.t()) if b is not None else z_in @ W.t()
        if self.read_sigma:  # read noise per product: sigma_r ||z|| xi per output and chain (circuits.noise.devices)
            xi = shard_randn(mu.shape, generator=self.gen, device=mu.device, dtype=mu.dtype)  # torch.randn off DDP
            mu.addcmul_(xi, torch.linalg.vector_norm(z_in, dim=1, keepdim=True), value=self.read_sigma)
        return mu

    def _feedback_linear(self, eps_fb, target):
        w = self.weights.fb
        W = self.c.model.decoder.weight.detach() if w is None else w["weight"]
        return eps_fb @ W
