"""The general kernels of a circuit run: every option (noise sources, analog arrays, per-unit time constants, gain
units, learning), one Euler-Maruyama step of every unit per call.

* :class:`LinearKernel` ("linear"): an ``nn.Linear`` decoder by explicit matmuls (``circuits.kernels_linear``);
* :class:`AutogradKernel` ("autograd"): any decoder, the forward through ``torch.func.functional_call`` and one
  vector-Jacobian product per step for the feedback J_g(z)^T eps; with learning the same backward gives the
  parameter gradients of log p(x, z) (the learning rule's error signal as the cotangent).

One step (:meth:`GeneralKernel.step`; every unit advances from the old state, the units' equations from
``circuits.units``): the intrinsic noise n (always the first draw of a step), this step's weights, dynamic noise
states, the forward mu = g(z) through the value / prediction transforms, the error units' target, the drift
s = J^T eps_fb - z / s_p^2, then the gain units (Algorithm 1's order: z moves with the gain of the *updated* gain
units), the value units and the error units, state clips and learning.  What downstream units see passes through the
noise sources' transforms: value outputs z -> decoder, predictions mu -> error units, error outputs eps -> feedback.
"""
from __future__ import annotations

import torch

from neuro_lpc.distributed import shard_randn

from . import units
from .kernels_linear import linear_feedback, linear_forward
from .run_weights import RunWeights

__all__ = ["GeneralKernel", "LinearKernel", "AutogradKernel"]


class GeneralKernel:
    """The general step (module docstring); subclasses supply :meth:`forward` and :meth:`feedback`."""

    name = "general"
    state_names = ("z", "_eps", "m", "v")

    def __init__(self, run):
        self.r = run
        c = run.c
        self.weights = RunWeights(c, run.learning)
        arr = c.array
        self.read_hooks = arr.read_hooks(c.model.decoder, run.gen) if arr is not None else None
        self.read_sigma = arr.read_sigmas().get("weight", 0.0) if arr is not None else 0.0
        self.read_sigma_b = arr.read_sigmas("backward").get("weight", 0.0) if arr is not None else 0.0  # J^T eps read
        h = c.hooks
        self.value_tr, self.pred_tr, self.err_tr = h["value_transform"], h["prediction_transform"], h["error_transform"]
        self.pre_steps, self.val_inc, self.err_inc = h["pre_step"], h["value_increment"], h["error_increment"]
        self.clips = h["state_clip"]
        self.mu_seen = None   # the prediction the error units saw this step (after the prediction transforms)

    def eps(self):
        return None   # the run's own error-unit tensor

    # ------------------------------------------------------------------------------ one step
    def step(self):
        """One Euler-Maruyama step of every unit (module docstring)."""
        r = self.r
        if r.noisy:  # torch.randn off DDP; a data-parallel rank keeps its rows of the global batch's draw
            shard_randn(r.z.shape, generator=r.gen, out=r.n)
        z = r.z
        mu, mu_true = self._predict()
        target = r.target(mu)
        if r.c.adiabatic:
            eps_cur = self._settle_error(z, mu_true, target)
        else:
            eps_cur = r.eps
            if r._request is not None:
                r._fill_request(z, mu_true, None)
        eps_fb = eps_cur
        for tr in self.err_tr:
            eps_fb = tr(eps_fb)
        s = units.value_score(self.feedback(eps_fb), z, r.sp2, inplace=True)   # J^T eps - z / s_p^2
        zn = r.zn
        self._advance_value(z, zn, s)
        if not r.c.adiabatic:
            self._advance_error(target)
        r.z, r.zn = zn, z
        for clip in self.clips:
            clip(r.z, None if r.c.adiabatic else r.eps)
        if r.learning:
            r.apply_learning()
        r._lik_memo = None
        r.k += 1

    def _predict(self):
        """(mu as the error units see it, the recorded model's g(z)): this step's weights, the dynamic noise states,
        the value transforms, the forward, the prediction transforms."""
        r = self.r
        self.weights.step(r.k * r.dt, r.gen)
        for f in self.pre_steps:
            f(r.gen)
        z_in = r.z
        for tr in self.value_tr:
            z_in = tr(z_in)
        mu = mu_true = self.forward(z_in)
        for tr in self.pred_tr:
            mu = tr(mu)
        self.mu_seen = mu
        return mu, mu_true

    @torch.no_grad()
    def readout(self) -> torch.Tensor:
        """The prediction the error units see at the current z (the first half of a step, no state change)."""
        mu, _ = self._predict()
        self.release_graph()
        return mu

    def release_graph(self) -> None:
        """Drop what the forward kept for the feedback (nothing for explicit matmuls)."""

    # ------------------------------------------------------------------------------ the units
    def _advance_value(self, z, zn, s):
        """Value units: zn = z + a_z G s + c_z sqrt(G) n + (value-unit noise) (``units.value_rate``,
        ``units.value_noise_scale``); G = 1 without gain units, else the gain of the *updated* gain units.
        Value-unit noise sources add into zn (ref: old z).  "nonreversible": plus dt K s (``units.skew_force``);
        "underdamped": :meth:`_advance_momentum` instead."""
        r = self.r
        if r.underdamped:
            self._advance_momentum(z, zn, s)
        elif r.m is not None:
            G = self._advance_gain(s)
            if self.val_inc:  # unit noise follows the gain like the intrinsic noise (tau / G: T_eff = T + sigma^2)
                r.c.context.gain = G.clone()
            if isinstance(r.az, torch.Tensor):
                units.euler_step_into(zn, z, G * s, r.az)
            else:
                torch.addcmul(z, G, s, value=r.az, out=zn)
            if r.noisy:
                if isinstance(r.cz, torch.Tensor):
                    zn.addcmul_(r.n, G.sqrt_() * r.cz)
                else:
                    zn.addcmul_(G.sqrt_(), r.n, value=r.cz)
        else:
            units.euler_step_into(zn, z, s, r.az)
            if r.noisy:
                units.add_scaled_(zn, r.n, r.cz)
        if r.Kdt is not None:   # the skew lateral connections, from the same s (old state)
            zn.add_(units.skew_force(s, r.Kdt))
        for inc in self.val_inc:
            inc(z, zn, r.gen)

    def _advance_momentum(self, z, zn, s):
        """Underdamped value units and their momentum units (``circuits.units``), both from the old state:
        zn = z + a_z M^-1 v,  vn = v + a_z (s - gamma_f M^-1 v) + c_v n."""
        r = self.r
        v, vn = r.v, r.vn
        if r.baoab:
            self._baoab(z, zn, s)
            return
        units.euler_step_into(zn, z, units.momentum_velocity(v, r.inv_mass), r.az)
        units.euler_step_into(vn, v, units.momentum_force(s, v, r.inv_mass, r.friction), r.az)
        if r.noisy:
            units.add_scaled_(vn, r.n, r.cv)
        r.v, r.vn = vn, v

    def _baoab(self, z, zn, s):
        """BAOAB (Leimkuhler & Matthews 2013) with one force per step: the momentum units hold u = v - (h/2) s(z), so
        the closing half kick of a step and the opening one of the next (both at s(z_k)) are one full kick:
        u + h s (B B), z + (h/2) M^-1 u (A), u <- c u + sigma n (O, ``units.momentum_ou_step``), z + (h/2) M^-1 u (A)."""
        r = self.r
        v, vn = r.v, r.vn
        units.euler_step_into(vn, v, s, r.az)                                        # B B
        units.euler_step_into(zn, z, units.momentum_velocity(vn, r.inv_mass), r.half_az)   # A
        vn.mul_(r.ou_c)                                                              # O
        if r.noisy:
            vn.addcmul_(r.n, r.ou_sigma)
        zn.add_(units.momentum_velocity(vn, r.inv_mass) * r.half_az)                 # A
        r.v, r.vn = vn, v

    def _advance_gain(self, s) -> torch.Tensor:
        """Gain units: m' = beta m + (1 - beta) s^2 (``units.gain_update_``), then G of m' (``CircuitRun.gain_at``);
        with preconditioner "frozen" held after ``freeze_at`` steps."""
        r = self.r
        if r.freeze_at is not None and r.k >= r.freeze_at:  # "frozen": held after the warm-up
            return r.G_frozen.clone()  # (the caller takes its square root in place)
        units.gain_update_(r.m, s, r.gain_beta)
        G = r.gain_at(r.k + 1)
        if r.freeze_at is not None and r.k + 1 == r.freeze_at:
            r.G_frozen = G.clone()
        return G

    def _advance_error(self, target):
        """Error units (finite tau_e): eps' = eps + a_e (target - leak eps) + (error-unit noise) (``units``).
        Error-unit noise sources add into eps' (ref: the old eps). ``target`` is consumed."""
        r = self.r
        en = r.en
        units.euler_step_into(en, r.eps, units.error_force_into(target, r.eps, r.c.error_form.leak), r.ae)
        for inc in self.err_inc:
            inc(r.eps, en, r.gen)
        r.eps, r.en = en, r.eps

    def _settle_error(self, z, mu_true, target) -> torch.Tensor:
        """Adiabatic error units (tau_e = 0): eps = target / leak = e(x, g(z)) (``units.settled_error``).

        Error-unit noise is drawn fresh at every evaluation (std independent of dt). Fills a pending
        record request from this forward. Returns the error units the feedback sees before transforms.
        """
        r = self.r
        eps_cur = units.settled_error(target, r.c.error_form)
        if r._request is not None:
            r._fill_request(z, mu_true, None if self.pred_tr else eps_cur)
        if self.err_inc:
            ref = eps_cur
            eps_cur = eps_cur.clone()
            for inc in self.err_inc:
                inc(ref, eps_cur, r.gen)
        r.eps = eps_cur
        return eps_cur


class LinearKernel(GeneralKernel):
    """"linear": an ``nn.Linear`` decoder by explicit matmuls, every option but learning."""

    name = "linear"

    @staticmethod
    def unsupported(circuit, learning: bool) -> str | None:
        if not circuit.linear_decoder:
            return "the decoder is not an nn.Linear"
        return "learning" if learning else None

    def forward(self, z_in):
        return linear_forward(self.r.c.model.decoder, self.weights.fwd, z_in, self.read_sigma, self.r.gen)

    def feedback(self, eps_fb):
        return linear_feedback(self.r.c.model.decoder, self.weights.fb, eps_fb, self.read_sigma_b, self.r.gen)


class AutogradKernel(GeneralKernel):
    """"autograd": any decoder, every option (module docstring)."""

    name = "autograd"

    @staticmethod
    def unsupported(circuit, learning: bool) -> str | None:
        return None

    def __init__(self, run):
        super().__init__(run)
        self._zleaf = self._mu_graph = None

    def release_graph(self) -> None:
        self._mu_graph = None

    def _decode_fb(self, zleaf):
        """The separate feedback forward (feedback mismatch); its backward is the transposed read (read noise there
        when the array's ``reads`` include "backward": ``ReadNoiseHooks.transposed``)."""
        if self.read_hooks is None:
            return self.r.decode(self.weights.fb, zleaf)
        with self.read_hooks.transposed():
            return self.r.decode(self.weights.fb, zleaf)

    def forward(self, z_in):
        self._zleaf = z_in.detach().requires_grad_(True)
        with torch.enable_grad():
            if self.read_hooks is None:
                self._mu_graph = self.r.decode(self.weights.fwd, self._zleaf)
            else:  # read noise fresh per matrix-vector product: per chain, per output, per step
                with self.read_hooks:
                    self._mu_graph = self.r.decode(self.weights.fwd, self._zleaf)
        return self._mu_graph.detach()

    def feedback(self, eps_fb):
        zleaf, mu_g = self._zleaf, self._mu_graph
        separate_fb = self.weights.fb is not self.weights.fwd
        if not self.r.learning:
            with torch.enable_grad():
                out = self._decode_fb(zleaf) if separate_fb else mu_g
                (v,) = torch.autograd.grad(out, zleaf, grad_outputs=eps_fb)
            self._mu_graph = None
            return v.clone() if v.data_ptr() == eps_fb.data_ptr() else v
        v = self._feedback_and_gradients(eps_fb, zleaf, mu_g, separate_fb)
        self._mu_graph = None
        return v.clone() if v.data_ptr() == eps_fb.data_ptr() else v

    def _feedback_and_gradients(self, eps_fb, zleaf, mu_g, separate_fb):
        """J^T eps_fb and (into ``run.pgrads``) the parameter gradients of log p with the learning rule's error signal:
        the decoder's from the forward's graph (wrt the weights it read: the parameters, or the straight-through leaves
        of ``circuits.run_weights``), the likelihood's from its one-pass evaluator (or a log_prob backward)."""
        r = self.r
        exact = r.c.config.learning_rule == "exact" and not r.c.adiabatic
        if exact:
            with torch.no_grad():  # a cotangent: no graph (a learnable sigma would otherwise build one)
                cot = r.lik_eval(self.mu_seen)[1] if r.likeval is not None else r.lik.error(r.x, self.mu_seen)
        else:
            cot = eps_fb
        wrt, tail = self.weights.grad_leaves(r.dec_params), ()
        with torch.enable_grad():
            outputs, cots = [mu_g], [cot]
            if r.lik_params:
                if r.lik_fused:
                    tail = (r.lik_eval(self.mu_seen, sigma_grad=True)[2],)
                else:
                    outputs.append(r.lik.log_prob(r.x, self.mu_seen).sum())
                    cots.append(None)
                    wrt = wrt + r.lik_params
            if not separate_fb and not exact:
                grads = torch.autograd.grad(outputs, [zleaf, *wrt], cots, allow_unused=True)
                v, pgrads = grads[0], grads[1:]
            else:
                fb_out = self._decode_fb(zleaf) if separate_fb else mu_g
                (v,) = torch.autograd.grad(fb_out, zleaf, grad_outputs=eps_fb, retain_graph=True)
                pgrads = torch.autograd.grad(outputs, wrt, cots, allow_unused=True)
        r.pgrads = (*pgrads, *tail)
        return v
