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

Sampler families (``dynamics``; issue 16, docs/dynamics.md, neuro_lpc.dynamics):
  "overdamped"    (default) the chains above, unchanged bit for bit.
  "nonreversible" z(t) = z(t-1) + gamma (G + J) s(t-1) + sqrt(2 gamma T G) n, J a constant antisymmetric matrix
                  (``skew``: None, "random", "optimal" or a tensor, times ``skew_scale``).  Invariance: with a
                  constant G (no preconditioning, or "frozen" after its warm-up) the SDE dz = (G + J) s dt +
                  sqrt(2 T G) dW leaves the posterior invariant for ANY antisymmetric J (div(J grad p) = 0), and the
                  Euler chain carries an O(gamma) bias (neuro_lpc.theory.dynamics_discrete_stationary); with the
                  adapting G of Algorithm 1 ("adam") it is not invariant, as for the reversible chain.  "optimal" on
                  a nonlinear model uses the precision P = -(1/B) sum_b Hess_z log p(x_b, z0_b), computed once at
                  the start from z0 (eigenvalues floored at 1e-6 lambda_max to make it SPD), and J = LNP 2013's
                  optimal skew for G = I (:func:`neuro_lpc.dynamics.optimal_skew`); "random" is drawn from
                  ``generator`` before the chain.
  "underdamped"   BAOAB (Leimkuhler & Matthews 2013, "Rational construction of stochastic numerical methods for
                  molecular sampling", AMRX) for dz = M^-1 v dt, dv = (s - gamma_f M^-1 v) dt + sqrt(2 gamma_f T) dW,
                  step h = ``step_size``, friction gamma_f = ``friction``, diagonal mass M = ``mass``:
                      B: v += h/2 s(z);  A: z += h/2 M^-1 v;  O: v <- c v + sqrt(T (1 - c^2)) M^(1/2) xi,
                      c = exp(-gamma_f h / M) (the exact OU step);  A: z += h/2 M^-1 v;  B: v += h/2 s(z).
                  Warm start v(0) ~ N(0, T M) (drawn from ``generator`` before the chain).  The closing B of step t
                  and the opening B of step t + 1 use the same score s(z(t)): ONE gradient evaluation per step
                  (at z(t-1), as the overdamped chain), plus one at z(T) for the last half kick (T + 1 in all).
                  Stationary law of the SDE: p(z | x)^(1/T) (x) N(0, T M); on a Gaussian, BAOAB's z-marginal is
                  exact at any stable h and v's carries an O(h^2) bias (theory.dynamics_discrete_stationary).  No
                  preconditioner (a state-dependent mass would need its own correction terms: refused), no MALA.
  ``fast=`` applies to "overdamped" only; the other families run eager and say so in ``SampleResult.path``.

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
from .dynamics import check_dynamics, mass_vector, skew_matrix
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
        dynamics: "overdamped" (default, the chains above), "nonreversible" (drift (G + J) s) or "underdamped"
            (BAOAB with momenta v); module docstring and neuro_lpc.dynamics.
        skew: J for "nonreversible": None (J = 0), "random" (spectral norm ``skew_scale``), "optimal" (LNP 2013,
            times ``skew_scale``) or a (d, d) antisymmetric tensor (used as given).
        skew_scale: >= 0, the scale of a named skew.
        friction: gamma_f > 0 of "underdamped".
        mass: M of "underdamped": a positive number or a (d,) positive tensor (diagonal mass).
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
    dynamics: str = "overdamped"
    skew: object = None
    skew_scale: float = 1.0
    friction: float = 1.0
    mass: object = 1.0

    def __post_init__(self):
        check_dynamics(self.dynamics, self.skew, self.skew_scale, self.friction, self.mass, where="LangevinSampler")
        if self.dynamics != "overdamped" and self.metropolis:
            raise ValueError(f"LangevinSampler: metropolis=True (MALA) supports only dynamics='overdamped', "
                             f"got dynamics={self.dynamics!r}")
        if self.dynamics == "underdamped" and self.precondition not in (None, 0):   # 0 = off, as below
            raise ValueError("LangevinSampler: dynamics='underdamped' does not support preconditioning (a "
                             "state-dependent mass needs correction terms); use precondition=None")
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
        v0: torch.Tensor | None = None,
    ) -> SampleResult:
        """Run the chain from z0 for ``self.steps`` steps.  See the module docstring for the maths.

        ``v0`` (B, d): initial momenta of a dynamics="underdamped" chain (None: v(0) ~ N(0, T M)); pass a previous
        result's ``v`` to continue a chain across calls."""
        model.check_inputs(x, z0)
        if v0 is not None:
            if self.dynamics != "underdamped":
                raise ValueError(f"v0 applies only to dynamics='underdamped', got dynamics={self.dynamics!r}")
            if not isinstance(v0, torch.Tensor) or tuple(v0.shape) != tuple(z0.shape) or not torch.isfinite(v0).all():
                raise ValueError(f"v0 must be a finite tensor of z0's shape {tuple(z0.shape)}")
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
        if self.dynamics == "underdamped":
            return self._sample_underdamped(model, x, z0, record_every, generator, accumulate_grad, grad_scale,
                                            track_moments, v0)
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

    def skew_for(self, model: GenerativeModel, x: torch.Tensor, z0: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The constant skew J (d, d) the "nonreversible" chain uses for this call (None: no skew / other family).

        "optimal" needs a precision: P = -(1/B) sum_b Hess_z log p(x_b, z0_b) at the warm start, symmetrised,
        eigenvalues floored at 1e-6 lambda_max (module docstring)."""
        if self.dynamics != "nonreversible" or self.skew is None:
            return None
        d = z0.shape[1]
        if isinstance(self.skew, torch.Tensor) and tuple(self.skew.shape) != (d, d):
            raise ValueError(f"LangevinSampler: skew must have shape ({d}, {d}) for latent dimension {d}, "
                             f"got {tuple(self.skew.shape)}")
        precision = self._warm_start_precision(model, x, z0) if self.skew == "optimal" else None
        J = skew_matrix(self.skew, d, scale=self.skew_scale, precision=precision, generator=generator,
                        dtype=z0.dtype, device=z0.device)
        return J.to(dtype=z0.dtype, device=z0.device)

    @staticmethod
    def _warm_start_precision(model, x, z0) -> torch.Tensor:
        """-(1/B) sum_b Hess_z log p(x_b, z0_b) (d, d), float64, SPD (eigenvalues floored at 1e-6 lambda_max)."""
        z = z0.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (s,) = torch.autograd.grad(model.log_joint(x, z).sum(), z, create_graph=True)
            rows = [torch.autograd.grad(s[:, i].sum(), z, retain_graph=True)[0].mean(0) for i in range(z.shape[1])]
        P = -torch.stack(rows).detach().double()
        lam, U = torch.linalg.eigh(0.5 * (P + P.T))
        lam = lam.clamp_min(1e-6 * max(float(lam[-1]), 1e-12))
        return (U * lam) @ U.T

    def _sample_ula(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments):
        J = self.skew_for(model, x, z0, generator)
        if self.fast is not None and J is None and self.dynamics == "overdamped":
            # neuro_lpc.fast: fused preconditioner / CUDA graphs; None = not applicable here
            res = sample_fast(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments)
            if res is not None:
                return res
        res = self._sample_ula_eager(model, x, z0, record_every, generator, accumulate_grad, grad_scale,
                                     track_moments, J)
        if self.fast is not None:
            res.path = f"eager: {fast_unavailable_reason(self, record_every, z0.device)}"
        return res

    def _sample_ula_eager(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments,
                          J=None):
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
            lj, s = self._score_step(model, x, z, params, accumulate_grad)
            if accumulate_grad:
                lj_total += lj.sum()
            self._record_score(t, record_every, lj, s, lj_tr, sn_tr)
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
            if J is not None:                               # "nonreversible": + gamma J s (rows: s J^T)
                z.add_(s @ J.T, alpha=gamma)
            self._end_of_step(t, z, lj, record_every, z_tr, z_sum, z_sq, watch, params, stash, model, x)
        if record_every is not None and T % record_every == 0:
            self._record_final_state(model, x, z, lj_tr, sn_tr)
        if accumulate_grad:
            self._scale_param_grads(params, stash, grad_scale if grad_scale is not None else -1.0 / (B * T))
        return SampleResult(z=z, steps=T, t=t_rec, z_trace=z_tr, log_joint_trace=lj_tr, score_norm_trace=sn_tr,
                            z_sum=z_sum, z_sqsum=z_sq, log_joint_sum=lj_total, gain=gain)

    def _score_step(self, model, x, z, params, accumulate_grad):
        """(log p(x, z) detached, s = grad_z log p(x, z)) with ONE backward; with ``accumulate_grad`` the same
        backward adds grad_theta log p(x, z) to the parameters' ``.grad``."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            lj = model.log_joint(x, z)
            if accumulate_grad:
                torch.autograd.backward(lj.sum(), inputs=[z, *params])
                s = z.grad
            else:
                (s,) = torch.autograd.grad(lj.sum(), z)
        return lj.detach(), s

    @staticmethod
    def _record_score(t, record_every, lj, s, lj_tr, sn_tr) -> None:
        """Record k's log-joint and score norm at z(t-1): those step t computes anyway (the final state's are
        evaluated after the loop)."""
        if record_every is not None and (t - 1) % record_every == 0 and t > 1:
            k = (t - 1) // record_every - 1
            lj_tr[k], sn_tr[k] = lj, s.norm(dim=1)

    def _end_of_step(self, t, z, lj, record_every, z_tr, z_sum, z_sq, watch, params, stash, model, x) -> None:
        """After step t of any family: the running moments, the z record, and the finite-value watch (a host check
        every ``check_every`` steps and at the last; a diverged chain restores the set-aside gradients and raises)."""
        if z_sum is not None:
            z_sum.add_(z)
            z_sq.addcmul_(z, z)
        if record_every is not None and t % record_every == 0:
            z_tr[t // record_every - 1] = z
        watch.note(z, t, lj)
        if t % self.check_every == 0 or t == self.steps:
            found = watch.first_bad_chain(t)
            if found is not None:
                self._restore_param_grads(params, stash)
                raise_divergence(z, found[0], chain=found[1], model=model, x=x)

    def _underdamped_constants(self, z0, generator, v0=None):
        """(1/M, c = exp(-gamma_f h / M), sqrt(T (1 - c^2) M), v(0)) for BAOAB, each (d,) / (B, d); v(0) is a copy
        of ``v0`` or drawn ~ N(0, T M)."""
        h, temp = float(self.step_size), float(self.temperature)
        M = mass_vector(self.mass, z0.shape[1], dtype=torch.float64, device=z0.device)
        c = torch.exp(-float(self.friction) * h / M)
        o_sd = (temp * (1 - c * c) * M).sqrt()
        if v0 is not None:
            v0 = v0.detach().to(dtype=z0.dtype, device=z0.device).clone()
        else:
            n = shard_randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
            v0 = n * (temp * M).sqrt().to(z0.dtype)
        return (1 / M).to(z0.dtype), c.to(z0.dtype), o_sd.to(z0.dtype), v0

    def _sample_underdamped(self, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments,
                            v0=None):
        """BAOAB (module docstring): step t evaluates s(z(t-1)) once (the closing half kick of step t-1 and the
        opening half kick of step t), then A O A; s(z(T)) gives the last half kick."""
        if isinstance(self.mass, torch.Tensor) and tuple(self.mass.shape) != (z0.shape[1],):
            raise ValueError(f"LangevinSampler: mass must have shape ({z0.shape[1]},) for latent dimension "
                             f"{z0.shape[1]}, got {tuple(self.mass.shape)}")
        T, h = self.steps, float(self.step_size)
        B = z0.shape[0]
        t_rec, z_tr, lj_tr, sn_tr = self._alloc_records(z0, record_every)
        inv_m, c, o_sd, v = self._underdamped_constants(z0, generator, v0)
        params, stash = self._set_aside_param_grads(model, accumulate_grad)
        z = z0.detach().clone()
        z_sum = torch.zeros_like(z) if track_moments else None
        z_sq = torch.zeros_like(z) if track_moments else None
        watch = FiniteWatch(z, self.check_every)
        lj_total = torch.zeros((), device=z.device, dtype=z.dtype) if accumulate_grad else None
        half_m = 0.5 * h * inv_m
        for t in range(1, T + 1):
            lj, s = self._score_step(model, x, z, params, accumulate_grad)
            if accumulate_grad:
                lj_total += lj.sum()
            self._record_score(t, record_every, lj, s, lj_tr, sn_tr)
            v.add_(s, alpha=h if t > 1 else 0.5 * h)              # B (closing of step t-1) + B (opening of t)
            z.addcmul_(half_m, v)                                   # A
            xi = shard_randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            v.mul_(c).addcmul_(o_sd, xi)                            # O: exact OU step
            z.addcmul_(half_m, v)                                   # A
            self._end_of_step(t, z, lj, record_every, z_tr, z_sum, z_sq, watch, params, stash, model, x)
        lj_end, s_end = model.log_joint_and_score(x, z)
        v.add_(s_end, alpha=0.5 * h)                                # the last B
        if record_every is not None and T % record_every == 0:
            lj_tr[-1], sn_tr[-1] = lj_end.detach(), s_end.norm(dim=1)
        if accumulate_grad:
            self._scale_param_grads(params, stash, grad_scale if grad_scale is not None else -1.0 / (B * T))
        res = SampleResult(z=z, steps=T, t=t_rec, z_trace=z_tr, log_joint_trace=lj_tr, score_norm_trace=sn_tr,
                           z_sum=z_sum, z_sqsum=z_sq, log_joint_sum=lj_total, v=v)
        if self.fast is not None:
            res.path = f"eager: {fast_unavailable_reason(self, record_every, z0.device)}"
        return res

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
