"""CircuitRun: the state of one run of a circuit, and the table of kernels that step it.

A run holds the units' state (value units z, error units eps, gain units m, the step count k and the run's
generator), their Euler coefficients (``circuits.units``), the likelihood's one-pass evaluator for the batch, the
learning accumulators, and one *kernel* -- the object whose ``step()`` advances every unit by one Euler-Maruyama
step.  Kernels are named in :data:`KERNELS` (as torchdiffeq names its solvers); each declares what it cannot run
(``unsupported(circuit, learning) -> reason or None``, as torchsde's solvers declare what they support), and
:func:`choose_kernel` is the one place that picks the fastest that can:

    "linear-plain-reduced"  the folded linear recursion in the reduced basis f = eps W (d < n)   kernels_linear
    "linear-plain"          the folded linear recursion, eps updated in place (d >= n)            kernels_linear
    "linear"                an nn.Linear decoder by explicit matmuls, every option but learning  kernels_general
    "autograd"              any decoder, every option, learning                                   kernels_general

A private ``kernel=`` argument forces one (tests compare them on the same circuit).  Records and divergence support
(measure, snapshot / restore, naming the first non-finite unit) are in ``circuits.run_records``.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from . import units
from .bound import BoundCircuit
from .kernels_general import AutogradKernel, LinearKernel
from .kernels_linear import PlainLinearKernel, ReducedLinearKernel
from .run_records import RunRecords
from .timescales import gain_decay

__all__ = ["CircuitRun", "KERNELS", "choose_kernel"]

KERNELS = {k.name: k for k in (ReducedLinearKernel, PlainLinearKernel, LinearKernel, AutogradKernel)}


def choose_kernel(circuit: BoundCircuit, learning: bool) -> str:
    """The fastest kernel that can run this circuit: the folded linear recursions when nothing but the linear
    Gaussian circuit is asked for (reduced when d < n, where it is cheaper), else "linear" for an nn.Linear
    decoder without learning, else "autograd"."""
    if PlainLinearKernel.unsupported(circuit, learning) is None:
        n, d = circuit.model.decoder.weight.shape
        return "linear-plain-reduced" if d < n else "linear-plain"
    return "linear" if LinearKernel.unsupported(circuit, learning) is None else "autograd"


class CircuitRun(RunRecords):
    """State and kernel of one ``simulate`` call (internal; used by ``circuits.integrate`` and ``circuits.fast``).

    Coefficients (``circuits.units``): a_z = dt / tau_z, c_z = sqrt(2 T dt / tau_z), a_e = dt / tau_e (0 when
    adiabatic); gain units m' = beta m + (1 - beta) s^2 with beta the configured decay (Algorithm 1: m = 0 at the
    start, G from the bias-corrected m / (1 - beta^t)) or Euler's 1 - dt / tau_m ("rms": m starts at the squared
    initial score), per unit beta ** (tau_m / tau_m,i) (``circuits.timescales.gain_decay``).
    """

    record_device = False   # records measure log p(x, z) under the weights the circuit reads (records="device")

    def __init__(self, circuit: BoundCircuit, x: torch.Tensor, z0: torch.Tensor, gen: torch.Generator,
                 accumulate_grad: bool = False, online_lr: float | None = None, records: str = "model",
                 kernel: str | None = None):
        self.c = circuit
        self.x, self.gen = x, gen
        self.B = x.shape[0]
        self.k = 0
        self.dt = float(circuit.config.dt)
        self.lik = circuit.model.likelihood
        # the likelihood's one-pass evaluator for this batch (log P, e and the log-sigma gradient together, bit for
        # bit its log_prob / error / autograd; neuro_lpc.likelihoods.DiscretizedGaussianEvaluator), where it has one
        self.likeval = self.lik.bind(x) if hasattr(self.lik, "bind") else None
        self._lik_memo = None
        self.learning = bool(accumulate_grad or online_lr)
        self.accumulate = bool(accumulate_grad)
        self.online_lr = online_lr
        self._init_coefficients()
        for b in circuit.sources:
            b.start(self.B, gen)
        self._init_state(z0)
        self._init_gain_units(z0)
        self._init_learning()
        self.kernel = self._check_kernel(kernel) if kernel is not None else choose_kernel(circuit, self.learning)
        self.kernel_impl = KERNELS[self.kernel](self)
        self.step = self.kernel_impl.step
        self.weights = getattr(self.kernel_impl, "weights", None)
        self._init_records(records)

    # ---------------------------------------------------------------------------- set-up
    def _check_kernel(self, name: str) -> str:
        if name not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {name!r}")
        why = KERNELS[name].unsupported(self.c, self.learning)
        if why is not None:
            raise ValueError(f"kernel {name!r} cannot run this circuit: {why}")
        return name

    def _init_coefficients(self) -> None:
        c = self.c
        ts, T = c.timescales, c.temperature
        self.sp2 = c.prior_std**2
        self.noisy = T > 0
        self.az = units.value_rate(self.dt, ts.tau_z)
        self.cz = units.value_noise_scale(self.dt, ts.tau_z, T)
        self.ae = 0.0 if c.adiabatic else units.error_rate(self.dt, ts.tau_e)
        self.delta = float(c.config.precondition_delta)
        # the value units' family (circuits.units): skew step matrix dt K, or momentum units' constants
        self.Kdt = None if c.skew is None else units.skew_rate(c.skew, ts.tau_z, self.dt)
        self.underdamped = c.dynamics == "underdamped"
        self.friction = float(c.config.friction)
        self.inv_mass = 1.0 / c.mass if self.underdamped else None
        self.cv = units.momentum_noise_scale(self.dt, ts.tau_z, T, self.friction) if self.underdamped else 0.0
        self.baoab = self.underdamped and c.config.integrator == "baoab"
        if self.baoab:   # half drift a_z / 2 and the exact O step of the momentum units (per unit, (d,))
            self.ou_c, self.ou_sigma = units.momentum_ou_step(self.dt, ts.tau_z, T, self.friction, c.mass)
            self.half_az = self.az / 2

    def _init_state(self, z0: torch.Tensor) -> None:
        c, x = self.c, self.x
        self.z = z0
        self.zn = torch.empty_like(z0)
        self.n = torch.empty_like(z0)
        with torch.no_grad():
            if c.adiabatic and self.learning:
                # learning runs the autograd kernel, whose adiabatic error units are settled afresh in every step
                # before any use: the initial e(x, g(z0)) would be computed and thrown away
                self._eps = torch.zeros(x.shape, device=x.device, dtype=x.dtype)
            else:
                self._eps = c.model.error(x, c.model.decoder(z0)).detach().clone()
        self.en = None if c.adiabatic else torch.empty_like(self._eps)
        self.v = self.vn = None
        if self.underdamped:   # momentum units start in their stationary law N(0, T M) (from the run generator)
            self.v = torch.randn(z0.shape, generator=self.gen, device=z0.device, dtype=z0.dtype)
            self.v.mul_((c.temperature * c.mass).sqrt())
            self.vn = torch.empty_like(self.v)

    def _init_gain_units(self, z0: torch.Tensor) -> None:
        """Gain units: a decay beta is Algorithm 1 (m = 0, G from the bias-corrected m / (1 - beta^t)); the continuous
        form ("rms" / True) starts at the squared initial score, no bias correction; "frozen" adapts for the first
        ``freeze_at`` steps, then G is held (``G_frozen``)."""
        c, cfg = self.c, self.c.config
        self.m = self.gain_beta = None
        self.bias_correct = isinstance(cfg.precondition, float) and c.preconditioned
        if c.preconditioned:
            decay = float(cfg.precondition) if self.bias_correct else 1.0 - self.dt / cfg.gain_tau()
            self.gain_beta = gain_decay(decay, c.timescales.tau_m, cfg.gain_tau())
            if self.bias_correct:
                self.m = torch.zeros_like(z0)
            else:
                s0 = c.model.score(self.x, z0)
                self.m = (s0 * s0).detach()
        self.max_gain = None if cfg.precondition_max_gain is None else float(cfg.precondition_max_gain)
        self.freeze_at = cfg.warmup_steps() if self.m is not None else None
        self.G_frozen = None

    def _init_learning(self) -> None:
        model = self.c.model
        self.learn_params, self.dec_params, self.lik_params, self.acc, self.pgrads = [], [], [], None, None
        if self.learning:
            self.dec_params = [p for p in model.decoder.parameters() if p.requires_grad]
            self.lik_params = [p for p in model.likelihood.parameters() if p.requires_grad]
            self.learn_params = self.dec_params + self.lik_params
            if not self.learn_params:
                raise ValueError("accumulate_grad / online_lr: the model has no parameters that require grad")
            self.acc = [torch.zeros_like(p) for p in self.learn_params] if self.accumulate else None
        # the likelihood's parameter gradient from its one-pass evaluator (d sum log P / d log sigma) instead of a
        # backward through another log_prob
        self.lik_fused = self.likeval is not None and (not self.learning or not self.lik_params or (
            len(self.lik_params) == 1 and self.lik_params[0] is getattr(self.lik, "log_sigma", None)))

    def _init_records(self, records: str) -> None:
        """Records measure log p(x, z) under the model (records="model": the decoder's own parameters) or under the
        weights the circuit reads (records="device": the array's reads -- programming error, drift at the record's
        time -- and the static weight hooks, without per-read noise; what a hardware-aware trainer learns on).  The
        log joint at a recorded state comes from the next step's forward (no forward per record) when that forward is
        the recorded model's (no value transform; no weight perturbation, or with "device" no fresh draw)."""
        w, general = self.weights, self.weights is not None
        self.record_device = records == "device" and general and w.any
        exact = general and (w.forward_exact if not self.record_device else
                             not w.dynamic and self.kernel_impl.read_hooks is None and not self.kernel_impl.read_sigma)
        self.defer_records = exact and not self.kernel_impl.value_tr
        self.recorders = self.c.hooks["record"]
        self._request = None
        self._err_cache = None
        self._lean_record = (self.c.linear_decoder and self.c.gaussian and not self.learning
                             and not self.record_device)
        if self._lean_record:  # read once, before the loop (sigma does not change without learning)
            self._record_prec = float(torch.exp(-2 * self.lik.log_sigma.detach()))
            self._lj_const()
            self.xmb_cache()

    # ------------------------------------------------------------------------------ state
    @property
    def eps(self) -> torch.Tensor:
        """The error units: the run's tensor, or rebuilt on demand by the reduced linear kernel."""
        rebuilt = self.kernel_impl.eps()
        return self._eps if rebuilt is None else rebuilt

    @eps.setter
    def eps(self, value: torch.Tensor) -> None:
        self._eps = value

    @property
    def _state_names(self) -> tuple[str, ...]:
        return self.kernel_impl.state_names

    @property
    def read_sigma(self) -> float:
        return getattr(self.kernel_impl, "read_sigma", 0.0)

    def gain_at(self, t: int) -> torch.Tensor:
        """G of the gain units after t steps (``units.gain_of``; bias-corrected by 1 - beta^t for a decay beta)."""
        return units.gain_of(self.m, self.delta, self.max_gain, (1 - self.gain_beta ** t) if self.bias_correct else None)

    def readout(self) -> torch.Tensor:
        """The prediction the error units see at the current z (no state change); ``circuits.modes.ReadoutDecoder``
        samples through it."""
        return self.kernel_impl.readout()

    def finish(self) -> None:
        """End of the run: sources hand their dynamic states to the circuit's persistent noise_state."""
        for b in self.c.sources:
            b.finish()

    # ------------------------------------------------------------------------- learning
    def apply_learning(self) -> None:
        """Accumulate this step's parameter gradients and / or move the weights online."""
        for i, (p, g) in enumerate(zip(self.learn_params, self.pgrads)):
            if g is None:
                continue
            if self.accumulate:
                self.acc[i].add_(g)
            if self.online_lr:
                with torch.no_grad():
                    p.add_(g, alpha=self.online_lr / self.B)
        self.pgrads = None

    # ----------------------------------------------------------------------- likelihood
    def decode(self, params, z):
        """g(z) with ``params`` (a dict for ``functional_call``) or the decoder's own parameters (None)."""
        dec = self.c.model.decoder
        return dec(z) if params is None else functional_call(dec, params, (z,))

    @torch.no_grad()
    def target(self, mu_s):
        """What the error units relax to: e(x, mu) (form "error") or x - mu (form "bogacz").

        State update only, so without a graph: with a learnable sigma e(x, mu) would otherwise require
        grad (and the in-place / ``out=`` updates raise). Parameter gradients come from the learning
        backward of the autograd kernel, not from here.
        """
        if self.c.error_form.name == "bogacz":
            return self.x - mu_s
        if self.likeval is not None:
            return self.lik_eval(mu_s, sigma_grad=self.learning and bool(self.lik_params) and self.lik_fused)[1]
        return self.lik.error(self.x, mu_s)

    @torch.no_grad()
    def lik_eval(self, mu, error: bool = True, sigma_grad: bool = False):
        """(log p(x | mu) per element, e(x, mu) or None, d sum log p / d log sigma or None) in one pass of the
        likelihood's evaluator, remembered for the same ``mu`` (tensor identity; the last two) within a step."""
        memo = self._lik_memo or []
        for m in memo:   # the step's prediction and the record's (they differ with prediction transforms)
            if m[0] is mu and (m[2] is not None or not error) and (m[3] is not None or not sigma_grad):
                return m[1:]
        out = self.likeval.evaluate(mu, error=error, sigma_grad=sigma_grad)
        self._lik_memo = [m for m in memo if m[0] is not mu][-1:] + [(mu, *out)]
        return out

    def log_lik(self, mu, error: bool = False):
        """(log p(x | mu) (B,), e(x, mu) if ``error`` else None) of the true likelihood."""
        if self.likeval is None:
            return self.lik.log_prob(self.x, mu), (self.lik.error(self.x, mu) if error else None)
        lp, err, _ = self.lik_eval(mu, error=error)
        return lp.reshape(lp.shape[0], -1).sum(1), err

    # ------------------------------------------------------------------------ drift (ODE)
    def drift(self, z, eps, m, v=None):
        """Noise-free time derivatives (dz, deps or None, dm or None) at a state (for torchdiffeq): the units' ODE
        forms (``units.value_drift``, ``error_drift``, ``gain_drift``; ``skew_force`` for "nonreversible") through a
        general kernel's forward / feedback.  Underdamped circuits pass the momentum units ``v`` and get
        (dz, deps, dm, dv) with dz = M^-1 v / tau_z, dv = (s - gamma_f M^-1 v) / tau_z."""
        impl, c = self.kernel_impl, self.c
        if not hasattr(impl, "forward"):
            raise ValueError(f"drift needs a general kernel (linear / autograd), not {self.kernel!r}")
        mu = impl.forward(z)
        target = self.target(mu)
        if c.adiabatic:
            eps = units.settled_error(target, c.error_form)
        s = units.value_score(impl.feedback(eps), z, self.sp2)
        ts = c.timescales
        deps = None if c.adiabatic else units.error_drift(target, eps, c.error_form.leak, ts.tau_e)
        if self.underdamped:
            if v is None:
                raise ValueError("drift of an underdamped circuit needs the momentum units v")
            dz = units.value_drift(units.momentum_velocity(v, self.inv_mass), ts.tau_z)
            return dz, deps, None, units.value_drift(units.momentum_force(s, v, self.inv_mass, self.friction), ts.tau_z)
        if m is None:
            dz, dm = units.value_drift(s, ts.tau_z), None
        else:
            if self.freeze_at is not None:
                raise ValueError("preconditioner='frozen' has a warm-up in steps: use simulate (Euler-Maruyama), "
                                 "not the ODE reference")
            dz = units.value_drift(s, ts.tau_z, units.gain_of(m, self.delta, self.max_gain))
            dm = units.gain_drift(s, m, ts.tau_m)
        if c.skew is not None:
            dz = dz + units.skew_force(s, units.skew_rate(c.skew, ts.tau_z))
        return dz, deps, dm
