"""CircuitRun: the state and the per-step kernel of one ``Circuit.simulate`` call (internal).

Used by ``circuits.integrate`` (the EM loop and the torchdiffeq reference). The equations of each
kind of unit are in one place, the "units" section of :class:`CircuitRun`; the kernels for an
``nn.Linear`` decoder are in ``circuits.kernels_linear``, the forward / feedback weights with the
noise sources' hooks in ``circuits.weights``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.func import functional_call

from neuro_lpc.distributed import shard_randn

from .kernels_linear import LinearKernels
from .run_records import RunRecords
from .timescales import gain_decay
from .weights import _Weights

if TYPE_CHECKING:
    from .circuit import Circuit

__all__ = ["CircuitRun"]


class CircuitRun(LinearKernels, RunRecords):
    """State and per-step kernel of one ``simulate`` call (internal; used by ``circuits.integrate``).

    Kernels (chosen once per run): "linear-plain-reduced" / "linear-plain" (nn.Linear decoder, Gaussian
    likelihood, uniform time constants, no noise sources, no preconditioning, no learning: one randn and
    3-4 in-place ops per step, in the reduced basis f = eps W when d < n, see ``_setup_plain``),
    "linear" (nn.Linear decoder, any options but learning: explicit matmuls) and "autograd" (any
    decoder: forward through ``functional_call`` and one vector-Jacobian product per step; learning).

    The units (one Euler-Maruyama step of the general kernel, :meth:`_step_general`; every unit
    advances from the old state, s = J_g(z)^T eps_fb - z / s_p^2 the drift at the old state):

    * value units z (:meth:`_advance_value`):
      z' = z + (dt / tau_z) G s + sqrt(2 T dt / tau_z) sqrt(G) n + (value-unit noise), G = 1 without gain units;
    * error units eps (:meth:`_advance_error`; :meth:`_settle_error` when adiabatic):
      eps' = eps + (dt / tau_e) (target - leak eps) + (error-unit noise), target e(x, mu) with leak 1
      (form "error") or x - mu with leak sigma_x^2 (form "bogacz"); adiabatic: eps = target / leak;
    * gain units m (:meth:`_advance_gain`, before the value units):
      m' = beta m + (1 - beta) s^2, beta = 1 - dt / tau_m (the configured beta of Algorithm 1), per unit
      beta ** (tau_m / tau_m,i) (``circuits.timescales.gain_decay``: in (0, 1) for any draw, so m >= 0),
      G = min(1 / (sqrt(m_hat) + delta), max_gain) (:meth:`_gain`); with preconditioner "frozen" they stop
      after ``freeze_at`` steps and G is held.

    What downstream units see passes through the noise sources' transforms: value outputs z -> decoder,
    predictions mu -> error units, error outputs eps -> feedback (eps_fb).
    """

    read_hooks = None   # read-noise hooks of the analog array (autograd kernel)
    read_sigma = 0.0    # read-noise sigma_r of an nn.Linear decoder's weight (linear kernel)
    record_device = False   # records measure log p(x, z) under the weights the circuit reads (records="device")

    def __init__(self, circuit: Circuit, x: torch.Tensor, z0: torch.Tensor, gen: torch.Generator,
                 accumulate_grad: bool = False, online_lr: float | None = None, records: str = "model"):
        c = self.c = circuit
        cfg = c.config
        self.x, self.gen = x, gen
        self.B = x.shape[0]
        self.k = 0
        self.dt = float(cfg.dt)
        model = c.model
        self.lik = model.likelihood
        # the likelihood's one-pass evaluator for this batch (log P, e and the log-sigma gradient together, bit for
        # bit its log_prob / error / autograd; neuro_lpc.likelihoods.DiscretizedGaussianEvaluator), where it has one
        self._likeval = self.lik.bind(x) if hasattr(self.lik, "bind") else None
        self._lik_memo = None
        self.sp2 = c.prior_std**2
        ts = c.timescales
        T = c.temperature
        self.noisy = T > 0
        self.az = self.dt / ts.tau_z
        self.cz = (2 * T * self.dt / ts.tau_z) ** 0.5 if self.noisy else 0.0
        self.ae = 0.0 if c.adiabatic else self.dt / ts.tau_e
        self.bogacz = cfg.error_form == "bogacz"
        self.leak = float(self.lik.sigma.detach()) ** 2 if self.bogacz else 1.0
        self.delta = float(cfg.precondition_delta)
        self.learning = bool(accumulate_grad or online_lr)
        self.accumulate = bool(accumulate_grad)
        self.online_lr = online_lr
        h = c.hooks
        self.value_tr, self.pred_tr, self.err_tr = h["value_transform"], h["prediction_transform"], h["error_transform"]
        self.pre_steps, self.val_inc, self.err_inc = h["pre_step"], h["value_increment"], h["error_increment"]
        self.clips, self.recorders = h["state_clip"], h["record"]
        for b in c.sources:
            b.start(self.B, gen)
        # state
        self.z = z0
        self.zn = torch.empty_like(z0)
        self.n = torch.empty_like(z0)
        with torch.no_grad():
            if c.adiabatic and (accumulate_grad or online_lr):
                # learning runs the autograd kernel, whose adiabatic error units are settled afresh in every step
                # before any use: the initial e(x, g(z0)) would be computed and thrown away
                self._eps = torch.zeros(x.shape, device=x.device, dtype=x.dtype)
            else:
                mu0 = model.decoder(z0)
                self._eps = model.error(x, mu0).detach().clone()
        self.en = None if c.adiabatic else torch.empty_like(self._eps)
        self.m = None
        # gain units: a decay beta is Algorithm 1 (m = 0, G from the bias-corrected m / (1 - beta^t));
        # the continuous form ("rms" / True) starts at the squared initial score, no bias correction
        self.bias_correct = isinstance(cfg.precondition, float) and c.preconditioned
        # the gain units' decay per step: the configured beta (Algorithm 1) or Euler's 1 - dt / tau_m ("rms") when
        # uniform; with per-unit tau_m,i that decay ** (tau_m / tau_m,i), in (0, 1) for any draw and dt (gain_decay)
        self.gain_beta = None
        if c.preconditioned:
            decay = float(cfg.precondition) if self.bias_correct else 1.0 - self.dt / cfg.gain_tau()
            self.gain_beta = gain_decay(decay, ts.tau_m, cfg.gain_tau())
        if self.bias_correct:
            self.m = torch.zeros_like(z0)
        elif c.preconditioned:
            s0 = model.score(x, z0)
            self.m = (s0 * s0).detach()
        # "frozen": the gain units adapt for the first freeze_at steps, then G is held (G_frozen)
        self.max_gain = None if cfg.precondition_max_gain is None else float(cfg.precondition_max_gain)
        self.freeze_at = cfg.warmup_steps() if self.m is not None else None
        self.G_frozen = None
        # learning
        self.learn_params = []
        if self.learning:
            self.dec_params = [p for p in model.decoder.parameters() if p.requires_grad]
            self.lik_params = [p for p in model.likelihood.parameters() if p.requires_grad]
            self.learn_params = self.dec_params + self.lik_params
            if not self.learn_params:
                raise ValueError("accumulate_grad / online_lr: the model has no parameters that require grad")
            self.acc = [torch.zeros_like(p) for p in self.learn_params] if self.accumulate else None
        # the likelihood's parameter gradient from its one-pass evaluator (d sum log P / d log sigma) instead of a
        # backward through another log_prob
        self._lik_fused = self._likeval is not None and (not self.learning or not self.lik_params or (
            len(self.lik_params) == 1 and self.lik_params[0] is getattr(self.lik, "log_sigma", None)))
        # kernel
        self._eps_fn = None
        self._state_names = ("z", "_eps", "m")
        plain = (c.linear_decoder and c.gaussian and not c.sources and c.uniform_timescales and not c.preconditioned
                 and not self.learning)
        if plain:
            self._setup_plain()
        else:
            self.kernel = "linear" if (c.linear_decoder and not self.learning) else "autograd"
            self.weights = _Weights(c, self.learning)
            arr = c.array
            self.read_hooks = arr.read_hooks(model.decoder, gen) if arr is not None else None
            self.read_sigma = arr.read_sigmas().get("weight", 0.0) if arr is not None else 0.0
            self._forward = self._forward_linear if self.kernel == "linear" else self._forward_autograd
            self._feedback = self._feedback_linear if self.kernel == "linear" else self._feedback_autograd
            self.step = self._step_general
        # records: log p(x, z) under the model (records="model": the decoder's own parameters) or under the weights
        # the circuit reads (records="device": the array's reads -- programming error, drift at the record's time --
        # and the static weight hooks, without per-read noise; what a hardware-aware trainer learns on, issue 14).
        # The log joint at a recorded state comes from the next step's forward (no forward per record) when that
        # forward is the recorded model's (no value transform; no weight perturbation, or with "device" no fresh draw)
        self.record_device = records == "device" and not plain and self.weights.any
        exact = (not plain and (self.weights.forward_exact if not self.record_device else
                                not self.weights.dynamic and self.read_hooks is None and not self.read_sigma))
        self.defer_records = exact and not self.value_tr
        self._request = None
        self._err_cache = None
        self._lean_record = c.linear_decoder and c.gaussian and not self.learning and not self.record_device
        if self._lean_record:  # read once, before the loop (sigma does not change without learning)
            self._record_prec = float(torch.exp(-2 * self.lik.log_sigma.detach()))
            self._lj_const()
            self.xmb_cache()

    # the error units: a tensor, or reconstructed on demand by the reduced linear kernels
    @property
    def eps(self) -> torch.Tensor:
        return self._eps_fn() if self._eps_fn is not None else self._eps

    @eps.setter
    def eps(self, value: torch.Tensor) -> None:
        self._eps = value

    # ------------------------------------------------------------------ the units
    def _step_general(self):
        """One Euler-Maruyama step of every unit (kernels "linear" and "autograd").

        Order: the intrinsic noise n (always the first draw of a step), this step's weights, dynamic
        noise states, the forward mu = g(z) through the value / prediction transforms, the error units'
        target, the drift s = J^T eps_fb - z / s_p^2, then the gain, value and error units (all from
        the old state), state clips and learning.
        """
        gen = self.gen
        if self.noisy:  # torch.randn off DDP; a data-parallel rank keeps its rows of the global batch's draw
            shard_randn(self.z.shape, generator=gen, out=self.n)
        self.weights.step(self.k * self.dt, gen)
        for f in self.pre_steps:
            f(gen)
        z = self.z
        z_in = z
        for tr in self.value_tr:
            z_in = tr(z_in)
        mu = self._forward(z_in)
        mu_true = mu  # the recorded model's g(z) when defer_records
        for tr in self.pred_tr:
            mu = tr(mu)
        self._mu_seen = mu
        target = self._target(mu)
        if self.c.adiabatic:
            eps_cur = self._settle_error(z, mu_true, target)
        else:
            eps_cur = self.eps
            if self._request is not None:
                self._fill_request(z, mu_true, None)
        eps_fb = eps_cur
        for tr in self.err_tr:
            eps_fb = tr(eps_fb)
        v = self._feedback(eps_fb, target)
        s = v.sub_(z, alpha=1.0 / self.sp2)  # the score-like drift J^T eps - z / s_p^2
        zn = self.zn
        self._advance_value(z, zn, s)
        if not self.c.adiabatic:
            self._advance_error(target)
        self.z, self.zn = zn, z
        for clip in self.clips:
            clip(self.z, None if self.c.adiabatic else self.eps)
        if self.learning:
            self._apply_learning()
        self._lik_memo = None
        self.k += 1

    def _advance_value(self, z, zn, s):
        """Value units: zn = z + (dt / tau_z) G s + sqrt(2 T dt / tau_z) sqrt(G) n + (value-unit noise).

        The EM step of tau_z dz = G [J_g(z)^T eps - z / s_p^2] dt + sqrt(2 T tau_z G) dW with s the drift
        at the old state and n the step's intrinsic draw; G = 1 without gain units, else the gain of the
        *updated* gain units (Algorithm 1's order). Value-unit noise sources add into zn (ref: old z).
        """
        if self.m is not None:
            G = self._advance_gain(s)
            if self.val_inc:  # unit noise follows the gain like the intrinsic noise (tau / G: T_eff = T + sigma^2)
                self.c.context.gain = G.clone()
            if isinstance(self.az, torch.Tensor):
                _axpy_into(zn, z, G * s, self.az)
            else:
                torch.addcmul(z, G, s, value=self.az, out=zn)
            if self.noisy:
                if isinstance(self.cz, torch.Tensor):
                    zn.addcmul_(self.n, G.sqrt_() * self.cz)
                else:
                    zn.addcmul_(G.sqrt_(), self.n, value=self.cz)
        else:
            _axpy_into(zn, z, s, self.az)
            if self.noisy:
                _axpy(zn, self.n, self.cz)
        for inc in self.val_inc:
            inc(z, zn, self.gen)

    def _advance_gain(self, s) -> torch.Tensor:
        """Gain units: m' = beta m + (1 - beta) s^2, then the gain G = 1 / (sqrt(m_hat) + delta) of m'.

        The EM step of tau_m dm = (s^2 - m) dt with beta = 1 - dt / tau_m (``gain_beta``; with per-unit
        tau_m,i the exact decay of ``circuits.timescales.gain_decay``, in (0, 1)); m_hat is m / (1 - beta^t)
        for a discrete decay beta (bias correction), else m (:meth:`_gain`).
        """
        # Algorithm 1's order: the gain units advance first (m' = beta m + (1 - beta) s^2, the EM step
        # of tau_m dm = (s^2 - m) dt), then z moves with the updated gain; written as the discrete
        # sampler writes it, so the adiabatic limit agrees with it bit for bit where it can
        if self.freeze_at is not None and self.k >= self.freeze_at:  # "frozen": held after the warm-up
            return self.G_frozen.clone()  # (the caller takes its square root in place)
        b = self.gain_beta
        if isinstance(b, torch.Tensor):
            self.m.mul_(b).addcmul_(s * s, 1.0 - b)
        else:
            self.m.mul_(b).addcmul_(s, s, value=1.0 - b)
        G = self._gain(self.k + 1)
        if self.freeze_at is not None and self.k + 1 == self.freeze_at:
            self.G_frozen = G.clone()
        return G

    def _gain(self, t: int) -> torch.Tensor:
        """G = min(1 / (sqrt(m_hat) + delta), max_gain) after t steps: m_hat = m / (1 - beta^t) for a decay
        beta, else m.  The cap is the gain unit's saturation (neuro_lpc.langevin: why 1e4 by default)."""
        if self.bias_correct:
            corr = 1 - self.gain_beta ** t  # per unit with per-unit tau_m
            G = (self.m / corr).sqrt_().add_(self.delta).reciprocal_()
        else:
            G = (self.m.sqrt() + self.delta).reciprocal_()
        return G if self.max_gain is None else G.clamp_(max=self.max_gain)

    def _advance_error(self, target):
        """Error units (finite tau_e): eps' = eps + (dt / tau_e) (target - leak eps) + (error-unit noise).

        The EM step of tau_e d eps = [e(x, g(z)) - eps] dt (form "error": target e(x, mu), leak 1) or
        tau_e d eps = [(x - g(z)) - sigma_x^2 eps] dt (form "bogacz": target x - mu, leak sigma_x^2).
        Error-unit noise sources add into eps' (ref: the old eps). ``target`` is consumed.
        """
        en = self.en
        drive = target.sub_(self.eps, alpha=self.leak)  # target is a fresh tensor
        _axpy_into(en, self.eps, drive, self.ae)
        for inc in self.err_inc:
            inc(self.eps, en, self.gen)
        self.eps, self.en = en, self.eps

    def _settle_error(self, z, mu_true, target) -> torch.Tensor:
        """Adiabatic error units (tau_e = 0): eps = target / leak = e(x, g(z)), no dynamics.

        Error-unit noise is drawn fresh at every evaluation (std independent of dt). Fills a pending
        record request from this forward. Returns the error units the feedback sees before transforms.
        """
        eps_cur = target / self.leak if self.bogacz else target
        if self._request is not None:
            self._fill_request(z, mu_true, None if self.pred_tr else eps_cur)
        if self.err_inc:
            ref = eps_cur
            eps_cur = eps_cur.clone()
            for inc in self.err_inc:
                inc(ref, eps_cur, self.gen)
        self.eps = eps_cur
        return eps_cur

    # ---------------------------------------------------- the general kernel's forward / feedback
    def _decode(self, params, z):
        dec = self.c.model.decoder
        return dec(z) if params is None else functional_call(dec, params, (z,))

    @torch.no_grad()
    def readout(self) -> torch.Tensor:
        """The prediction the error units see at the current z (the first half of :meth:`_step_general`, no state
        change): this step's weights, the dynamic noise states, the value transforms, the forward, the prediction
        transforms.  ``circuits.modes.ReadoutDecoder`` samples through it."""
        if not hasattr(self, "_forward"):            # the plain linear kernels: no source, no array
            return self.c.model.decoder(self.z)
        self.weights.step(self.k * self.dt, self.gen)
        for f in self.pre_steps:
            f(self.gen)
        z_in = self.z
        for tr in self.value_tr:
            z_in = tr(z_in)
        mu = self._forward(z_in)
        self._mu_graph = None
        for tr in self.pred_tr:
            mu = tr(mu)
        return mu

    def _forward_autograd(self, z_in):
        self._zleaf = z_in.detach().requires_grad_(True)
        with torch.enable_grad():
            if self.read_hooks is None:
                self._mu_graph = self._decode(self.weights.fwd, self._zleaf)
            else:  # read noise fresh per matrix-vector product: per chain, per output, per step
                with self.read_hooks:
                    self._mu_graph = self._decode(self.weights.fwd, self._zleaf)
        return self._mu_graph.detach()

    def finish(self) -> None:
        """End of the run: sources hand their dynamic states to the circuit's persistent noise_state."""
        for b in self.c.sources:
            b.finish()

    def _feedback_autograd(self, eps_fb, target):
        zleaf, mu_g = self._zleaf, self._mu_graph
        separate_fb = self.weights.fb is not self.weights.fwd
        if not self.learning:
            with torch.enable_grad():
                out = self._decode(self.weights.fb, zleaf) if separate_fb else mu_g
                (v,) = torch.autograd.grad(out, zleaf, grad_outputs=eps_fb)
            self._mu_graph = None
            return v.clone() if v.data_ptr() == eps_fb.data_ptr() else v
        # learning: parameter gradients of log p with the error signal of the learning rule
        exact = self.c.config.learning_rule == "exact" and not self.c.adiabatic
        if exact:
            with torch.no_grad():  # a cotangent: no graph (a learnable sigma would otherwise build one)
                cot = self._lik_eval(self._mu_seen)[1] if self._likeval is not None else self.lik.error(self.x, self._mu_seen)
        else:
            cot = eps_fb
        # the decoder's gradients come from the forward's graph (wrt the weights it read: the parameters, or the
        # straight-through leaves of circuits.weights); the likelihood's from its evaluator (or a log_prob backward)
        wrt, tail = self.weights.grad_leaves(self.dec_params), ()
        with torch.enable_grad():
            outputs, cots = [mu_g], [cot]
            if self.lik_params:
                if self._lik_fused:
                    tail = (self._lik_eval(self._mu_seen, sigma_grad=True)[2],)
                else:
                    outputs.append(self.lik.log_prob(self.x, self._mu_seen).sum())
                    cots.append(None)
                    wrt = wrt + self.lik_params
            if not separate_fb and not exact:
                grads = torch.autograd.grad(outputs, [zleaf, *wrt], cots, allow_unused=True)
                v, pgrads = grads[0], grads[1:]
            else:
                fb_out = self._decode(self.weights.fb, zleaf) if separate_fb else mu_g
                (v,) = torch.autograd.grad(fb_out, zleaf, grad_outputs=eps_fb, retain_graph=True)
                pgrads = torch.autograd.grad(outputs, wrt, cots, allow_unused=True)
        self._mu_graph = None
        self._pgrads = (*pgrads, *tail)
        return v.clone() if v.data_ptr() == eps_fb.data_ptr() else v

    def _apply_learning(self):
        for i, (p, g) in enumerate(zip(self.learn_params, self._pgrads)):
            if g is None:
                continue
            if self.accumulate:
                self.acc[i].add_(g)
            if self.online_lr:
                with torch.no_grad():
                    p.add_(g, alpha=self.online_lr / self.B)
        self._pgrads = None

    @torch.no_grad()
    def _target(self, mu_s):
        """What the error units relax to: e(x, mu) (form "error") or x - mu (form "bogacz").

        State update only, so without a graph: with a learnable sigma e(x, mu) would otherwise require
        grad (and the in-place / ``out=`` updates raise). Parameter gradients come from the learning
        backward in ``_feedback_autograd``, not from here.
        """
        if self.bogacz:
            return self.x - mu_s
        if self._likeval is not None:
            return self._lik_eval(mu_s, sigma_grad=self.learning and bool(self.lik_params) and self._lik_fused)[1]
        return self.lik.error(self.x, mu_s)

    @torch.no_grad()
    def _lik_eval(self, mu, error: bool = True, sigma_grad: bool = False):
        """(log p(x | mu) per element, e(x, mu) or None, d sum log p / d log sigma or None) in one pass of the
        likelihood's evaluator, remembered for the same ``mu`` (tensor identity; the last two) within a step."""
        memo = self._lik_memo or []
        for m in memo:   # the step's prediction and the record's (they differ with prediction transforms)
            if m[0] is mu and (m[2] is not None or not error) and (m[3] is not None or not sigma_grad):
                return m[1:]
        out = self._likeval.evaluate(mu, error=error, sigma_grad=sigma_grad)
        self._lik_memo = [m for m in memo if m[0] is not mu][-1:] + [(mu, *out)]
        return out

    def _log_lik(self, mu, error: bool = False):
        """(log p(x | mu) (B,), e(x, mu) if ``error`` else None) of the true likelihood."""
        if self._likeval is None:
            return self.lik.log_prob(self.x, mu), (self.lik.error(self.x, mu) if error else None)
        lp, err, _ = self._lik_eval(mu, error=error)
        return lp.reshape(lp.shape[0], -1).sum(1), err

    # ------------------------------------------------------------------- drift (ODE)
    def drift(self, z, eps, m):
        """Noise-free time derivatives (dz, deps or None, dm or None) at a state (for torchdiffeq)."""
        if self.kernel.startswith("linear-plain"):  # reuse the general forward/feedback for the ODE
            self.weights = _Weights(self.c, False)
            self._forward, self._feedback = self._forward_linear, self._feedback_linear
        mu = self._forward(z)
        target = self._target(mu)
        if self.c.adiabatic:
            eps = target / self.leak if self.bogacz else target
        v = self._feedback(eps, target)
        s = v - z / self.sp2
        if m is not None:
            if self.freeze_at is not None:
                raise ValueError("preconditioner='frozen' has a warm-up in steps: use simulate (Euler-Maruyama), "
                                 "not the ODE reference")
            G = 1.0 / (m.sqrt() + self.delta)
            if self.max_gain is not None:
                G = G.clamp(max=self.max_gain)
            dz = G * s * (1.0 / self.c.timescales.tau_z)
            dm = (s * s - m) / self.c.timescales.tau_m
        else:
            dz, dm = s / self.c.timescales.tau_z, None
        deps = None if self.c.adiabatic else (target - self.leak * eps) / self.c.timescales.tau_e
        return dz, deps, dm


def _axpy_into(out: torch.Tensor, base: torch.Tensor, t: torch.Tensor, coef) -> None:
    """out = base + coef * t (out preallocated; Python or tensor coefficient)."""
    if isinstance(coef, torch.Tensor):
        torch.addcmul(base, t, coef, out=out)
    else:
        torch.add(base, t, alpha=coef, out=out)


def _axpy(out: torch.Tensor, t: torch.Tensor, coef) -> None:
    """out += coef * t for a Python or tensor coefficient (broadcast over the batch)."""
    if isinstance(coef, torch.Tensor):
        out.addcmul_(t, coef)
    else:
        out.add_(t, alpha=coef)
