"""Langevin samplers for p(z | x; theta): ULA (paper eq. 5), Adam-preconditioned ULA (Algorithm 1) and MALA.

ULA (eq. 5), at temperature T (T = 1 is the paper's sampler):
    z(t) = z(t-1) + gamma G s(t-1) + sqrt(2 gamma T G) n,   n ~ N(0, I),   s = grad_z log p(x, z)
Preconditioning (Algorithm 1, Adam's second moment with decay beta):
    m(t) = beta m(t-1) + (1 - beta) s(t-1)^2,   m_hat = sqrt(m(t) / (1 - beta^t)),   G = 1 / (m_hat + delta)
Without preconditioning G = 1.  Algorithm 1 adapts G from the current score at every step, so G depends
on the state; the position-dependent-metric SDE (eq. 18-19) then needs the correction Gamma_i = sum_j
d G_ij / d z_j (eq. 20), which the paper drops, and the chain no longer leaves the posterior invariant
(measured in docs/preconditioner.md).  Two forms (``preconditioner``):
  "adam"   (default) Algorithm 1 exactly: G(t) from m(t) at every step.
  "frozen" Algorithm 1's update for the first ``warmup`` steps, then G held at G(warmup) for the rest of
           the chain: from step warmup + 1 on the chain is ULA with a fixed diagonal preconditioner,
               z(t) = z(t-1) + gamma G s(t-1) + sqrt(2 gamma T G) n,
           which leaves its own (ULA-) stationary law invariant: N(mu, C) with C = F C F^T + 2 gamma G,
           F = I - gamma G P, on a Gaussian posterior of precision P (neuro_lpc.theory.ula_stationary),
           -> the posterior as gamma -> 0.  Gamma = 0 exactly, since G no longer depends on z.
Gain bound: with delta = 1e-8 and the first bias-corrected m_hat = |s(0)|, a chain started near a stationary
point (s(0) ~ 0) gets G ~ 1/delta = 1e8 and a first step of noise std sqrt(2 gamma 1e8): it explodes.
G is therefore capped, G = min(1 / (m_hat + delta), max_gain), default max_gain = 1e4 (None = no cap,
Algorithm 1 as printed).  Why a cap on G rather than a floor on m_hat: G is the quantity that explodes
(the step's noise std is sqrt(2 gamma G)), it is the gain unit's output in the circuit (an analog gain
saturates), and a cap reads the same for both noise forms.  Why 1e4: the cap binds only where the RMS
score over the preconditioner's memory is below 1e-4, i.e. within ~1e-4 posterior standard deviations of
a stationary point in every recent step (the stationary RMS score of a unit is sqrt(E_post[s_i^2]) =
sqrt(E_post[-d^2 log p / d z_i^2]) >= 1 / prior_std for a log-concave likelihood); a normal run never
gets there and its chain is bit for bit the uncapped one (tests/test_preconditioner.py), while a chain
started at a mode takes a first step of at most sqrt(2 gamma 1e4) (14 at gamma = 0.01) instead of
sqrt(2 gamma 1e8) (1400).
Ambiguities of the paper, decided here (docs/design.md):
  (a) Algorithm 1 prints the noise as N(0, 2 gamma m_hat); for the drift gamma G s the noise whose
      invariant density is the posterior (ignoring the Gamma term, eq. 18-20) is N(0, 2 gamma G).
      Default ``noise="correct"``; ``noise="literal"`` gives the printed form.
  (b) ``precondition=None`` or ``0`` means *off* (the appendix's "beta = 0 (no preconditioning)").
  (c) The decoder gradient is the average over the chain (eq. 8), not the sum.
MALA (``metropolis=True``): the same proposal with G = 1 and a Metropolis-Hastings correction, the exact
baseline reviewers ask for; sampling only.

Training use: with ``accumulate_grad=True`` each step does ONE backward of log p(x, z(t-1)) that gives
both the drift s and grad_theta log p(x, z(t-1)) (accumulated in the parameters' ``.grad``; constant
memory in T).  At the end ``.grad`` holds ``grad_scale`` times the sum, by default -1/(B T): the
gradient of the loss -(1/B) sum_b (1/T) sum_t log p(x_b, z_b(t-1)) (eq. 8).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .chain import FiniteWatch, SampleResult, check_finite_input, describe_bad_log_joint, raise_divergence
from .distributed import shard_randn
from .gain import gain_of_rms, rms, second_moment_update_
from .fast import FAST_MODES, fast_unavailable_reason, sample_fast
from .model import GenerativeModel

# SampleResult and describe_bad_log_joint live in neuro_lpc.chain; re-exported here for the imports that predate it
__all__ = ["LangevinSampler", "NOISE_FORMS", "PRECONDITIONERS", "DEFAULT_MAX_GAIN", "DEFAULT_WARMUP",
           "SampleResult", "describe_bad_log_joint"]

NOISE_FORMS = ("correct", "literal")
PRECONDITIONERS = ("adam", "frozen")
DEFAULT_MAX_GAIN = 1e4       # cap on G (module docstring: why a cap and why this value)
DEFAULT_WARMUP = 100         # steps of Algorithm 1 before "frozen" holds G: min(100, steps // 2) by default


@dataclass
class LangevinSampler:
    """Unadjusted (optionally preconditioned) Langevin sampler; MALA with ``metropolis=True``.

    Args:
        step_size: gamma > 0.
        steps: T, the number of Langevin steps.
        precondition: decay beta in (0, 1) of the Adam-like diagonal preconditioner; None or 0 = off.
        preconditioner: "adam" (Algorithm 1: G adapted at every step, default) or "frozen" (Algorithm 1
            for ``warmup`` steps, then G held fixed: ULA with a fixed diagonal G, invariant for its own law).
        warmup: steps of adaptation before "frozen" holds G; None = min(100, steps // 2); must be in
            [1, steps) (``warmup_steps()`` gives the resolved value). Only with preconditioner="frozen".
        delta: the preconditioner's floor (Adam's epsilon).
        max_gain: cap on G (G = min(1 / (m_hat + delta), max_gain)); None = uncapped. Default 1e4: binds
            only near stationary points (module docstring), so normal chains are unchanged bit for bit.
        noise: "correct" (N(0, 2 gamma G), default) or "literal" (Algorithm 1's N(0, 2 gamma m_hat)).
        temperature: T in sqrt(2 gamma T G); 1 samples the posterior, 0 is classic (noise-free) PC.
        metropolis: MALA instead of ULA (no preconditioning, temperature 1, sampling only).
        check_every: host check for NaN/inf every this many steps (the failing step is tracked on the device).
        fast: None (eager), "fused" (the preconditioner's elementwise work as one torch.compile'd kernel),
            "fused-eager" (the same function uncompiled) or "graphs" (CUDA graphs of ``graph_block`` steps; eager
            off CUDA); trajectories with records, MALA and "frozen" run eager. See neuro_lpc.fast.
        graph_block: steps per captured CUDA graph (the largest divisor of ``steps`` not above it).
    """

    step_size: float
    steps: int
    precondition: float | None = None
    delta: float = 1e-8
    preconditioner: str = "adam"
    warmup: int | None = None
    max_gain: float | None = DEFAULT_MAX_GAIN
    noise: str = "correct"
    temperature: float = 1.0
    metropolis: bool = False
    check_every: int = 50
    fast: str | None = None
    graph_block: int = 50

    def __post_init__(self):
        if not (isinstance(self.step_size, (int, float)) and math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"step_size must be a positive finite number, got {self.step_size}")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.precondition is not None and not (0 <= self.precondition < 1):
            raise ValueError(f"precondition (decay beta) must be in [0, 1) or None, got {self.precondition}")
        if self.precondition == 0:
            self.precondition = None
        if not (self.delta > 0):
            raise ValueError(f"delta must be positive, got {self.delta}")
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}")
        if self.preconditioner == "frozen" and self.precondition is None:
            raise ValueError("preconditioner='frozen' needs a decay precondition=beta in (0, 1) to adapt G during the warm-up")
        if self.warmup is not None and self.preconditioner != "frozen":
            raise ValueError(f"warmup applies only to preconditioner='frozen', got preconditioner={self.preconditioner!r}")
        if self.preconditioner == "frozen" and self.steps < 2:
            raise ValueError(f"preconditioner='frozen' needs steps >= 2 (a warm-up and a frozen phase), got {self.steps}")
        if self.warmup is not None and not (isinstance(self.warmup, int) and 1 <= self.warmup < self.steps):
            raise ValueError(f"warmup must be an integer in [1, steps={self.steps}), got {self.warmup!r}")
        if self.max_gain is not None and not (isinstance(self.max_gain, (int, float)) and self.max_gain > 0):
            raise ValueError(f"max_gain must be a positive number or None (no cap), got {self.max_gain!r}")
        if self.noise not in NOISE_FORMS:
            raise ValueError(f"noise must be one of {NOISE_FORMS}, got {self.noise!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if self.metropolis and (self.precondition is not None or self.temperature != 1.0):
            raise ValueError("metropolis=True (MALA) supports neither preconditioning nor temperature != 1")
        if self.check_every < 1:
            raise ValueError("check_every must be >= 1")
        if self.fast not in FAST_MODES:
            raise ValueError(f"fast must be one of {FAST_MODES}, got {self.fast!r}")
        if isinstance(self.graph_block, bool) or not isinstance(self.graph_block, int) or self.graph_block < 1:
            raise ValueError(f"graph_block must be a positive integer, got {self.graph_block!r}")

    def config(self) -> dict:
        return asdict(self)

    def warmup_steps(self) -> int | None:
        """Steps of adaptation before "frozen" holds G (``warmup``, or min(100, steps // 2)); None for "adam"."""
        if self.preconditioner != "frozen":
            return None
        return self.warmup if self.warmup is not None else min(DEFAULT_WARMUP, self.steps // 2)

    # ---------------------------------------------------------------- public
    def sample(
        self,
        model: GenerativeModel,
        x: torch.Tensor,
        z0: torch.Tensor,
        record_every: int | None = None,
        generator: torch.Generator | None = None,
        accumulate_grad: bool = False,
        grad_scale: float | None = None,
        track_moments: bool = False,
    ) -> SampleResult:
        """Run the chain from z0 for ``self.steps`` steps.  See the module docstring for the maths."""
        model.check_inputs(x, z0)
        if record_every is not None and record_every != 0:
            if not (isinstance(record_every, int) and 1 <= record_every <= self.steps):
                raise ValueError(f"record_every must be an integer in [1, steps={self.steps}], got {record_every!r}")
        else:
            record_every = None
        check_finite_input(x)
        if not torch.isfinite(z0).all():
            raise ValueError("z0 contains NaN or inf")
        if self.metropolis:
            if accumulate_grad:
                raise ValueError("MALA is a sampling baseline: accumulate_grad is not supported with metropolis=True")
            return self._sample_mala(model, x, z0, record_every, generator)
        return self._sample_ula(model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments)

    # --------------------------------------------------------------- helpers
    def _alloc_records(self, z0, record_every):
        if record_every is None:
            return None, None, None, None
        R = self.steps // record_every
        B, d = z0.shape
        z_tr = torch.empty(R, B, d, device=z0.device, dtype=z0.dtype)
        lj_tr = torch.empty(R, B, device=z0.device, dtype=z0.dtype)
        sn_tr = torch.empty(R, B, device=z0.device, dtype=z0.dtype)
        t = torch.arange(1, R + 1, device=z0.device) * record_every
        return t, z_tr, lj_tr, sn_tr

    @staticmethod
    def _set_aside_param_grads(model, accumulate_grad: bool):
        """The parameters whose gradient the chain accumulates, and their current ``.grad`` (now set to None).

        The chain sums grad_theta log p(x, z(t-1)) over its steps into ``.grad`` from zero; the gradient set
        aside is added back at the end (:meth:`_scale_param_grads`) or restored on divergence."""
        params = [p for p in model.parameters() if p.requires_grad] if accumulate_grad else []
        stash = [p.grad for p in params]
        for p in params:
            p.grad = None
        return params, stash

    @staticmethod
    def _restore_param_grads(params, stash) -> None:
        """Put back the ``.grad`` set aside by :meth:`_set_aside_param_grads` (a diverged chain leaves none)."""
        for p, g in zip(params, stash):
            p.grad = g

    @staticmethod
    def _scale_param_grads(params, stash, scale: float) -> None:
        """.grad <- scale * sum_t grad_theta log p(x, z(t-1)) + the gradient set aside.

        scale defaults to -1/(B T) in the caller: the gradient of -(1/B) sum_b (1/T) sum_t log p(x_b, z_b(t-1))
        (eq. 8)."""
        for p, g in zip(params, stash):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.mul_(scale)
            if g is not None:
                p.grad.add_(g)

    @staticmethod
    def _record_final_state(model, x, z, lj_tr, sn_tr) -> None:
        """The last record's log-joint and score norm, at the final state z(T).

        Inside the loop the log-joint and score of record k are those step t + 1 computes anyway at z(t);
        the final state has no next step, so they are evaluated here."""
        lj_end, s_end = model.log_joint_and_score(x, z)
        lj_tr[-1] = lj_end
        sn_tr[-1] = s_end.norm(dim=1)

    def _sample_ula(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments):
        if self.fast is not None:   # neuro_lpc.fast: fused preconditioner / CUDA graphs; None = not applicable here
            res = sample_fast(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments)
            if res is not None:
                return res
        res = self._sample_ula_eager(model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments)
        if self.fast is not None:
            res.path = f"eager: {fast_unavailable_reason(self, record_every, z0.device)}"
        return res

    def _sample_ula_eager(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments):
        T, gamma, beta = self.steps, float(self.step_size), self.precondition
        B = z0.shape[0]
        t_rec, z_tr, lj_tr, sn_tr = self._alloc_records(z0, record_every)
        params, stash = self._set_aside_param_grads(model, accumulate_grad)
        z = z0.detach().clone()
        m = torch.zeros_like(z) if beta is not None else None
        z_sum = torch.zeros_like(z) if track_moments else None
        z_sq = torch.zeros_like(z) if track_moments else None
        watch = FiniteWatch(z, self.check_every)
        noise_scale = math.sqrt(2 * gamma * self.temperature)
        lj_total = torch.zeros((), device=z.device, dtype=z.dtype) if accumulate_grad else None
        freeze_at = self.warmup_steps() if beta is not None else None   # "frozen": G held from this step on
        gain = G_frozen = sd_frozen = None
        for t in range(1, T + 1):
            z.requires_grad_(True)
            with torch.enable_grad():
                lj = model.log_joint(x, z)
                if accumulate_grad:
                    torch.autograd.backward(lj.sum(), inputs=[z, *params])
                    s = z.grad
                else:
                    (s,) = torch.autograd.grad(lj.sum(), z)
            z = z.detach()
            if accumulate_grad:
                lj_total += lj.detach().sum()
            if record_every is not None and (t - 1) % record_every == 0 and t > 1:
                k = (t - 1) // record_every - 1
                lj_tr[k] = lj.detach()
                sn_tr[k] = s.norm(dim=1)
            n = shard_randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)  # torch.randn off DDP
            if beta is None:
                z.add_(s, alpha=gamma).add_(n, alpha=noise_scale)
            elif freeze_at is not None and t > freeze_at:   # "frozen": ULA with the fixed diagonal G
                z.addcmul_(G_frozen, s, value=gamma)
                z.addcmul_(sd_frozen, n, value=noise_scale)
            else:                                           # Algorithm 1 (eq. 18-19 without Gamma)
                second_moment_update_(m, s, beta)            # the gain units (neuro_lpc.gain)
                m_hat = rms(m, 1 - beta**t)
                G = gain_of_rms(m_hat, self.delta, self.max_gain)   # the cap: the identity unless G > max_gain
                z.addcmul_(G, s, value=gamma)
                noise_var = G if self.noise == "correct" else m_hat
                if t == T or t == freeze_at:
                    gain = G.clone()
                z.addcmul_(noise_var.sqrt_(), n, value=noise_scale)
                if t == freeze_at:
                    G_frozen, sd_frozen = gain, noise_var
                    gain = G_frozen
            if track_moments:
                z_sum.add_(z)
                z_sq.addcmul_(z, z)
            if record_every is not None and t % record_every == 0:
                z_tr[t // record_every - 1] = z
            watch.note(z, t, lj)
            if t % self.check_every == 0 or t == T:
                found = watch.first_bad_chain(t)
                if found is not None:
                    self._restore_param_grads(params, stash)
                    raise_divergence(z, found[0], chain=found[1], model=model, x=x)
        if record_every is not None and T % record_every == 0:
            self._record_final_state(model, x, z, lj_tr, sn_tr)
        if accumulate_grad:
            self._scale_param_grads(params, stash, grad_scale if grad_scale is not None else -1.0 / (B * T))
        return SampleResult(z=z, steps=T, t=t_rec, z_trace=z_tr, log_joint_trace=lj_tr, score_norm_trace=sn_tr,
                            z_sum=z_sum, z_sqsum=z_sq, log_joint_sum=lj_total, gain=gain)

    def _sample_mala(self, model, x, z0, record_every, generator):
        T, gamma = self.steps, float(self.step_size)
        t_rec, z_tr, lj_tr, sn_tr = self._alloc_records(z0, record_every)
        z = z0.detach().clone()
        lj, s = model.log_joint_and_score(x, z)
        accepted = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        watch = FiniteWatch(z, self.check_every)
        scale = math.sqrt(2 * gamma)
        for t in range(1, T + 1):
            n = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            prop = z + gamma * s + scale * n
            lj_p, s_p = model.log_joint_and_score(x, prop)
            back = z - prop - gamma * s_p
            log_alpha = lj_p - lj - (back * back).sum(1) / (4 * gamma) + 0.5 * (n * n).sum(1)
            u = torch.rand(z.shape[0], generator=generator, device=z.device, dtype=z.dtype)
            acc = (torch.log(u) < log_alpha) & torch.isfinite(lj_p)
            z = torch.where(acc[:, None], prop, z)
            lj = torch.where(acc, lj_p, lj)
            s = torch.where(acc[:, None], s_p, s)
            accepted += acc.to(z.dtype)
            if record_every is not None and t % record_every == 0:
                k = t // record_every - 1
                z_tr[k], lj_tr[k], sn_tr[k] = z, lj, s.norm(dim=1)
            watch.note(z, t)
            if t % self.check_every == 0 or t == T:
                fb = watch.first_bad(t)
                if fb is not None:
                    raise_divergence(z, fb, "MALA chain")
        return SampleResult(z=z, steps=T, t=t_rec, z_trace=z_tr, log_joint_trace=lj_tr, score_norm_trace=sn_tr,
                            accept_rate=accepted / T)
