"""The folded kernels of the linear circuit, and the linear decoder's forward / feedback for the general kernel.

The plain kernels run an ``nn.Linear`` decoder g(z) = W z + b with a Gaussian likelihood, uniform time constants, no
noise sources, no gain units and no learning.  The units' equations (``circuits.units``) are then affine, and their
Euler steps fold into a few in-place products with constants computed once from the same unit constants
(a_z = ``value_rate``, c_z = ``value_noise_scale``, a_e = ``error_rate``, (k, leak) = ``error_form``):

    z'   = b_z z + a_z eps W + c_z n,                       b_z = 1 - a_z / s_p^2
    eps' = b_e eps + a_e,k z W^T + x_b,                      b_e = 1 - a_e leak,  a_e,k = -a_e / k,  x_b = a_e (x - b) / k
    adiabatic (eps = prec (x - b - W z), prec = 1 / sigma_x^2):   z' = b_z z + a_z prec (x - b - W z) W + c_z n.

* :class:`PlainLinearKernel` ("linear-plain"): these recursions directly (eps updated in place by one addmm);
* :class:`ReducedLinearKernel` ("linear-plain-reduced"): the same recursion in the reduced basis of the feedback
  f = eps W, O(B d^2) instead of O(B n d) per step -- chosen when d < n (:meth:`ReducedLinearKernel.__init__`).

Both draw the intrinsic noise n as exactly one ``torch.randn(z.shape, generator=...)`` first in every step, as the
general kernel does.  :func:`linear_forward` / :func:`linear_feedback` are the general kernel "linear"'s explicit
matmuls (``circuits.kernels_general``).
"""
from __future__ import annotations

import torch

from neuro_lpc.distributed import shard_randn

__all__ = ["PlainLinearKernel", "ReducedLinearKernel", "plain_unsupported", "linear_forward", "linear_feedback"]


def plain_unsupported(circuit, learning: bool) -> str | None:
    """Why the folded linear kernels cannot run this circuit (None when they can)."""
    if not circuit.linear_decoder:
        return "the decoder is not an nn.Linear"
    if not circuit.gaussian:
        return "the likelihood is not Gaussian"
    if circuit.sources:
        return "noise sources " + ", ".join(b.source.type for b in circuit.sources)
    if not circuit.uniform_timescales:
        return "per-unit time constants"
    if circuit.preconditioned:
        return "gain units (preconditioning)"
    if learning:
        return "learning"
    if circuit.dynamics != "overdamped":
        return f"dynamics={circuit.dynamics!r} (the folded recursions are the overdamped circuit's)"
    return None


class _FoldedLinear:
    """The constants both folded kernels share (module docstring), from the run's unit coefficients."""

    unsupported = staticmethod(plain_unsupported)

    def __init__(self, run):
        self.r = run
        dec = run.c.model.decoder
        W = dec.weight.detach()
        b = dec.bias.detach() if dec.bias is not None else torch.zeros(W.shape[0], device=W.device, dtype=W.dtype)
        self.W, self.Wt = W, W.t()
        self.prec = float(torch.exp(-2 * run.lik.log_sigma.detach()))
        self.bz = 1.0 - run.az / run.sp2
        self.xmb = (run.x - b).contiguous()
        if not run.c.adiabatic:
            form = run.c.error_form
            self.be = 1.0 - run.ae * form.leak
            self.ae_k = -run.ae * (1.0 if form.name == "bogacz" else self.prec)
            self.xb = self.xmb * (run.ae * (1.0 if form.name == "bogacz" else self.prec))

    def readout(self) -> torch.Tensor:
        return self.r.c.model.decoder(self.r.z)


class PlainLinearKernel(_FoldedLinear):
    """"linear-plain": the folded recursions directly (module docstring)."""

    name = "linear-plain"
    state_names = ("z", "_eps", "m")

    def __init__(self, run):
        super().__init__(run)
        if run.c.adiabatic:
            self.xbp = self.xmb * self.prec
            self.step = self._step_adiabatic
        else:
            self.step = self._step

    def eps(self):
        return None   # the run's own error-unit tensor

    def _step(self):
        r = self.r
        if r.noisy:
            torch.randn(r.z.shape, generator=r.gen, out=r.n)
        torch.addmm(r.z, r._eps, self.W, beta=self.bz, alpha=r.az, out=r.zn)
        if r.noisy:
            r.zn.add_(r.n, alpha=r.cz)
        r._eps.addmm_(r.z, self.Wt, beta=self.be, alpha=self.ae_k).add_(self.xb)
        r.z, r.zn = r.zn, r.z
        r.k += 1

    def _step_adiabatic(self):
        r = self.r
        if r.noisy:
            torch.randn(r.z.shape, generator=r.gen, out=r.n)
        torch.addmm(self.xbp, r.z, self.Wt, alpha=-self.prec, out=r._eps)
        torch.addmm(r.z, r._eps, self.W, beta=self.bz, alpha=r.az, out=r.zn)
        if r.noisy:
            r.zn.add_(r.n, alpha=r.cz)
        r.z, r.zn = r.zn, r.z
        r.k += 1


class ReducedLinearKernel(_FoldedLinear):
    """"linear-plain-reduced": the linear circuit in the reduced basis of its feedback f = eps W (B, d).

    Since eps' = b_e eps + a_e,k z W^T + x_b,

        f' = b_e f + a_e,k z G + x_b W,   G = W^T W (d x d),   z' = b_z z + a_z f + c_z n,

    the same Euler-Maruyama recursion (to rounding) at O(B d^2) instead of O(B n d) per step.  f is stored shifted by
    the constant f* = x_b W / (1 - b_e), next to the running sum q' = b_e q + a_e,k z, so one product
    [f - f*, q]' = b_e [f - f*, q] + a_e,k z [G | I] advances both; a step is one randn and four small in-place ops.
    eps itself is rebuilt when needed (records, checks, the final state):
    eps_k = b_e^k eps_0 + (1 - b_e^k) / (1 - b_e) x_b + q_k W^T.  Adiabatic error units reduce likewise to
    z' = z M + h + c_z n with M = b_z I - a_z prec G, h = a_z prec (x - b) W.
    """

    name = "linear-plain-reduced"

    def __init__(self, run):
        super().__init__(run)
        W, d = self.W, run.z.shape[1]
        eye = torch.eye(d, device=W.device, dtype=W.dtype)
        if run.c.adiabatic:
            self.M = eye * self.bz - (run.az * self.prec) * (self.Wt @ W)
            self.h = (self.xmb @ W) * (run.az * self.prec)
            self.state_names = ("z",)
            self.eps = self._eps_adiabatic
            self.step = self._step_adiabatic
            return
        self.GI = torch.cat([self.Wt @ W, eye], dim=1)  # [G | I], (d, 2d)
        self.Iaz = eye * run.az
        fstar = (self.xb @ W) / (1.0 - self.be)  # the constant part of f's fixed point
        self.cfz = fstar * run.az
        run.S = torch.cat([run._eps @ W - fstar, torch.zeros_like(run.z)], dim=1)  # [f - f*, q]: run state
        self.fs = run.S[:, :d]
        self.eps0 = run._eps
        self.state_names = ("z", "S")
        self.eps = self._eps_reduced
        self.step = self._step

    def _step(self):
        r = self.r
        z, zn = r.z, r.zn
        if r.noisy:
            torch.randn(z.shape, generator=r.gen, out=r.n)
        torch.addmm(z, self.fs, self.Iaz, beta=self.bz, out=zn).add_(self.cfz)  # bz z + az f
        if r.noisy:
            zn.add_(r.n, alpha=r.cz)
        r.S.addmm_(z, self.GI, beta=self.be, alpha=self.ae_k)  # f - f* and q in one product
        r.z, r.zn = zn, z
        r.k += 1

    def _step_adiabatic(self):
        r = self.r
        if r.noisy:
            torch.randn(r.z.shape, generator=r.gen, out=r.n)
        torch.addmm(self.h, r.z, self.M, out=r.zn)
        if r.noisy:
            r.zn.add_(r.n, alpha=r.cz)
        r.z, r.zn = r.zn, r.z
        r.k += 1

    def _eps_reduced(self) -> torch.Tensor:
        r = self.r
        q = r.S[:, r.z.shape[1]:]
        pk = self.be ** r.k
        s = (1.0 - pk) / (1.0 - self.be)
        return torch.addmm(torch.add(self.eps0 * pk, self.xb, alpha=s), q, self.Wt)

    def _eps_adiabatic(self) -> torch.Tensor:
        r = self.r
        return torch.addmm(self.xmb, r.z, self.Wt, alpha=-1).mul_(self.prec)


# ------------------------------------------------------------- the general kernel "linear"'s matmuls

def linear_forward(decoder, weights, z_in: torch.Tensor, read_sigma: float, gen) -> torch.Tensor:
    """mu = W z + b with this step's forward weights (``weights``: a dict, or None for the decoder's own), plus the
    read noise of an analog array, fresh per product: sigma_r ||z|| xi per output and chain (circuits.noise.arrays)."""
    if weights is None:
        W, b = decoder.weight.detach(), (decoder.bias.detach() if decoder.bias is not None else None)
    else:
        W, b = weights["weight"], weights.get("bias")
    mu = torch.addmm(b, z_in, W.t()) if b is not None else z_in @ W.t()
    if read_sigma:
        xi = shard_randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)  # torch.randn off DDP
        mu.addcmul_(xi, torch.linalg.vector_norm(z_in, dim=1, keepdim=True), value=read_sigma)
    return mu


def linear_feedback(decoder, weights, eps_fb: torch.Tensor, read_sigma: float = 0.0, gen=None) -> torch.Tensor:
    """J_g^T eps = eps W with this step's feedback weights (None: the decoder's own), plus the transposed read's noise
    of an analog array (``reads`` "backward" / "both"), fresh per product: sigma_r ||eps|| xi per input and chain."""
    W = decoder.weight.detach() if weights is None else weights["weight"]
    v = eps_fb @ W
    if read_sigma:
        xi = shard_randn(v.shape, generator=gen, device=v.device, dtype=v.dtype)  # torch.randn off DDP
        v.addcmul_(xi, torch.linalg.vector_norm(eps_fb, dim=1, keepdim=True), value=read_sigma)
    return v
