"""Weights on analog arrays: the persistent device state behind the three learning modes.

An :class:`AnalogArray` holds, for every decoder weight tensor that a weight-device source acts on
(``weight_programming``, ``drift``, ``weight_read``, ``pulsed``; >= 2-d weights, biases only with
``include_bias``), the state of its devices. A source's ``include_bias`` is its own: a bias on the array because one
source covers it sees only the effects of the sources that include biases (no programming error, drift or pulses
from a source with ``include_bias=False``):

    s        stored conductance, in weight units: what the last write left on the device
             (the target plus that write's error)
    t_w      per device: the device-clock time of its last write (s)
    nu       per device: the drift exponent, frozen (a property of the device, drawn once)
    clock    the device clock (s): time since the array was first programmed

What a read sees at device time t (aihwkit's PCM drift with optional global compensation):

    w(t) = s * ((t - t_w + t0) / t0)^(-nu)            [ / mean over the tensor, with ``compensate``]

plus read noise, fresh per matrix-vector product (``read_noise_std`` / ``add_read_noise``):
y_i = sum_j (w_ij + sigma_r xi_ij) x_j has the law y_i = (W x)_i + sigma_r ||x|| xi_i, drawn per
output, per chain, per read; for a convolution the norm is that of the input patch. sigma_r =
``std * w_max`` with w_max the tensor's largest |w| at its last programming.

When noise is drawn, and on which clock
----------------------------------------
* programming error: per *write* (:meth:`AnalogArray.program`), N(0, sigma_p(|w|/w_max)^2 w_max^2)
  (aihwkit's PCM polynomial, or a constant std), from the generator given to the write;
* drift exponents nu: once per array (per physical device), from the array's seed;
* read noise: per matrix-vector product, from the run's generator, on the reads ``reads`` names (forward
  y = W x, transposed v = W^T eps: independent draws; :class:`ReadNoiseHooks`, :func:`transposed_read_noise_std`);
* accumulated 1/f noise (``drift.one_over_f``): xi per device at each write, from the array's seed, held until the
  next write; its std grows as sqrt(ln t) (:func:`pcm_accumulated_noise_std`);
* pulse noise: per pulse (cycle-to-cycle) at every pulsed write, device-to-device spread of the step
  frozen per array (:func:`apply_pulses`); spreads of the bounds and of the asymmetry frozen per array
  (:class:`PulsedDevice`: ``w_max_dtod``, ``w_min_dtod``, ``up_down_dtod``);
* differential pairs (``mapping="pair"``): programming, drift and 1/f act on each of (g+, g-)
  (:func:`pair_conductances`);
* the clock is *simulated device seconds*: a circuit that runs ``steps`` of ``dt`` sees the array at
  ``clock + k dt`` during the run; owners of a persistent array (the circuit trainer) advance it with
  :meth:`advance`. Drift therefore measures time since each device's last write.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from neuro_lpc.distributed import shard_randn

from ..timescales import derive_seed

__all__ = ["AnalogArray", "PulsedDevice", "apply_pulses", "stochastic_round", "read_noise_std",
           "transposed_read_noise_std", "ReadNoiseHooks", "pcm_programming_std", "pcm_drift_nu_moments",
           "pcm_accumulated_noise_std", "pair_conductances", "WEIGHT_DEVICE_TYPES", "READS", "MAPPINGS",
           "PCM_T_READ", "AIHWKIT_PULSED_SPREADS", "apply_pulse_counts"]

WEIGHT_DEVICE_TYPES = ("weight_programming", "drift", "weight_read", "pulsed")
READS = ("forward", "backward", "both")   # which array reads get read noise (``weight_read`` source's ``reads``)
MAPPINGS = ("signed", "pair")             # a weight as one signed conductance, or a differential pair (g+, g-)
AIHWKIT_PULSED_SPREADS = {"w_max_dtod": 0.3, "w_min_dtod": 0.3, "up_down_dtod": 0.01}   # aihwkit PulsedDevice defaults
PCM_T_READ = 250e-9                       # aihwkit PCMLikeNoiseModel(t_read=250.0e-9): the 1/f fit's read time (s)


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


def pcm_accumulated_noise_std(r: torch.Tensor, t: torch.Tensor | float, t_read: float = PCM_T_READ) -> torch.Tensor:
    """aihwkit's accumulated 1/f (read) noise of a PCM device, relative to the drifted |g|, at time t (s).

    ``aihwkit/inference/noise/pcm.py``, ``PCMLikeNoiseModel.apply_drift_noise_to_conductance`` (t = t_inference +
    t_0, t_0 = 20 s, t_read = 250 ns; Nandakumar et al., ICECS 2019):

        g(t) = g_drift + |g_drift| Q_s sqrt(ln((t + t_read) / (2 t_read))) xi,
        Q_s = min(0.0088 / max(r^0.65, 1e-3), 0.2),  r = |g_prog| / g_max.

    Returns Q_s sqrt(ln((t + t_read) / (2 t_read))) (0 where t <= t_read: no noise has accumulated).
    """
    qs = (0.0088 / r.abs().pow(0.65).clamp(min=1e-3)).clamp(max=0.2)
    t = torch.as_tensor(t, dtype=r.dtype, device=r.device)
    return qs * torch.log((t + t_read) / (2 * t_read)).clamp(min=0).sqrt()


def pair_conductances(w: torch.Tensor, w_max: float, g_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """aihwkit ``SinglePairConductanceConverter.convert_to_conductances`` (``inference/converter/conductance.py``;
    g_max = 25 uS, g_min = 0 by default), in units of g_max: scale = (1 - g_min) / w_max,

        g+ = clip(w scale, 0, 1) + g_min,   g- = clip(-w scale, 0, 1) + g_min,   w = (g+ - g-) / scale.

    One device of the pair sits at g_min; the largest |w| of the tensor maps to g_max."""
    sw = w * ((1.0 - g_min) / w_max)
    return sw.clamp(0.0, 1.0) + g_min, (-sw).clamp(0.0, 1.0) + g_min


# ================================================================================ pulses ====

def stochastic_round(a: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """floor(a + u), u ~ U[0, 1): unbiased, E = a, Var = f (1 - f) with f the fractional part."""
    return torch.floor(a + torch.rand(a.shape, generator=gen, device=a.device, dtype=a.dtype))


@dataclass
class PulsedDevice:
    """A pulsed resistive device (aihwkit's ``ConstantStepDevice`` / ``SoftBoundsDevice``), in device units.

    Device units: a weight tensor w maps to u = w / scale with scale = max|w_0| / (init_fraction w_max)
    at array creation (the initial weights use ``init_fraction`` of the upper bound, leaving room to grow).

    Parameters (defaults = aihwkit ``PulsedDevice`` defaults, ``UpdateParameters.desired_bl``):
        kind: "constant_step" (hard bounds) or "soft_bounds" (step shrinks towards each bound).
        dw_min (0.001): mean step of one pulse; dw_min_dtod (0.3): device-to-device spread of the
        step, relative, frozen per device; dw_min_std (0.3): cycle-to-cycle spread, relative, per pulse.
        up_down (0.0): asymmetry, up steps dw (1 + up_down), down steps dw (1 - up_down);
        w_max / w_min (0.6 / -0.6): bounds; max_pulses (31; None = unbounded): pulses per update;
        rounding ("stochastic" or "deterministic"): desired update / step -> pulse count.
        Device-to-device spreads, frozen per device (drawn once per array from its seed; applied as aihwkit's
        ``PulsedRPUDevice::populate`` in ``src/rpucuda/rpu_pulsed_device.cpp``; aihwkit's ``PulsedDevice`` defaults in
        ``simulator/configs/devices.py`` are the values in brackets, :data:`AIHWKIT_PULSED_SPREADS`; ours default to 0
        -- the devices, figures and pulse-arithmetic tests of before, whose closed forms assume uniform bounds):
        w_max_dtod (0.3) / w_min_dtod (0.3): each device's bounds
        w_max (1 + w_max_dtod xi), w_min (1 + w_min_dtod xi') (aihwkit's ``enforce_consistency``: swapped if
        crossed, then w_max >= 0 >= w_min); up_down_dtod (0.01): each device's asymmetry, additive in units of
        dw_min: up step dw_min (g (1 + up_down) + r), down step dw_min (g (1 - up_down) - r), r = up_down_dtod xi,
        g = 1 + dw_min_dtod xi'' the step's own spread (aihwkit: dw_min (g + r) / dw_min (g - r) at up_down = 0).
        All three at 0 give the devices of before these spreads existed, draw for draw.
    """

    kind: str = "constant_step"
    dw_min: float = 0.001
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    w_max: float = 0.6
    w_min: float = -0.6
    init_fraction: float = 0.5
    max_pulses: int | None = 31
    rounding: str = "stochastic"
    w_max_dtod: float = 0.0
    w_min_dtod: float = 0.0
    up_down_dtod: float = 0.0

    KINDS = ("constant_step", "soft_bounds")

    def validate(self) -> "PulsedDevice":
        def num(name, lo=None, hi=None, strict=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"pulsed device: {name} must be a finite number, got {v!r}")
            if lo is not None and (v < lo or (strict and v == lo)):
                raise ValueError(f"pulsed device: {name} must be {'>' if strict else '>='} {lo}, got {v!r}")
            if hi is not None and v >= hi:
                raise ValueError(f"pulsed device: {name} must be < {hi}, got {v!r}")
        if self.kind not in self.KINDS:
            raise ValueError(f"pulsed device: kind must be one of {self.KINDS}, got {self.kind!r}")
        num("dw_min", 0, strict=True)
        num("dw_min_dtod", 0, 1)
        num("dw_min_std", 0)
        for name in ("w_max_dtod", "w_min_dtod", "up_down_dtod"):
            num(name, 0)
        num("up_down", -1, strict=True)
        if self.up_down >= 1:
            raise ValueError(f"pulsed device: up_down must be in (-1, 1), got {self.up_down!r}")
        num("w_max", 0, strict=True)
        num("init_fraction", 0, strict=True)
        if self.init_fraction > 1:
            raise ValueError(f"pulsed device: init_fraction must be in (0, 1], got {self.init_fraction!r}")
        v = self.w_min
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v >= 0:
            raise ValueError(f"pulsed device: w_min must be a negative finite number, got {v!r}")
        mp = self.max_pulses
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp < 1):
            raise ValueError(f"pulsed device: max_pulses must be a positive integer or None, got {mp!r}")
        if self.rounding not in ("stochastic", "deterministic"):
            raise ValueError(f"pulsed device: rounding must be 'stochastic' or 'deterministic', got {self.rounding!r}")
        return self


def apply_pulses(u: torch.Tensor, du: torch.Tensor, dev: PulsedDevice, step_up: torch.Tensor | float,
                 step_down: torch.Tensor | float, gen: torch.Generator | None,
                 w_max: torch.Tensor | float | None = None, w_min: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a desired update ``du`` (device units) to devices at ``u`` by pulses; returns (u', pulses).

    ``w_max`` / ``w_min``: each device's own bounds (None: the device's nominal ``dev.w_max`` / ``dev.w_min``).

    Pulse count n = round(du / step) (step = step_up for du > 0, step_down for du < 0; stochastic or
    deterministic rounding), clipped to +-max_pulses. Then, with c = dw_min_std (per pulse):

    constant step: u' = clip(u + n step + step c sqrt(|n|) xi, w_min, w_max)  (the sum of |n| pulses
        of size step (1 + c xi_k), exact in law);
    soft bounds: an up pulse moves u by step (1 - u / w_max), a down pulse by -step (1 - u / w_min); n
        pulses in a row give the closed form u_n = b - (b - u) (1 - step / |b|)^|n| towards the bound b,
        plus the cycle-to-cycle term step c sqrt(|n|) xi (1 - u / b) (noise of each pulse at the
        starting slope: first order in step / |b|).
    """
    step = torch.where(du >= 0, torch.as_tensor(step_up, dtype=u.dtype, device=u.device),
                       torch.as_tensor(step_down, dtype=u.dtype, device=u.device))
    a = du / step
    n = stochastic_round(a, gen) if dev.rounding == "stochastic" else torch.round(a)
    if dev.max_pulses is not None:
        n = n.clamp(-dev.max_pulses, dev.max_pulses)
    return apply_pulse_counts(u, n, step, dev, gen, w_max, w_min)


def apply_pulse_counts(u: torch.Tensor, n: torch.Tensor, step: torch.Tensor | float, dev: PulsedDevice,
                       gen: torch.Generator | None, w_max: torch.Tensor | float | None = None,
                       w_min: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Send ``n`` pulses (signed integer counts, device units) of size ``step`` (each device's up step where n > 0,
    its down step where n < 0) to devices at ``u``; returns (u', n). The pulse arithmetic of :func:`apply_pulses`
    (which rounds a desired update to counts first); the local rule (``circuits.local_update``) has its counts."""
    hi = dev.w_max if w_max is None else torch.as_tensor(w_max, dtype=u.dtype, device=u.device)
    lo = dev.w_min if w_min is None else torch.as_tensor(w_min, dtype=u.dtype, device=u.device)
    m = n.abs()
    noise = None
    if dev.dw_min_std > 0:
        noise = torch.randn(u.shape, generator=gen, device=u.device, dtype=u.dtype) * (dev.dw_min_std * m.sqrt() * step)
    if dev.kind == "constant_step":
        out = u + n * step
        if noise is not None:
            out = out + noise * torch.sign(n)
        return _clip(out, lo, hi), n
    bound = torch.where(n >= 0, torch.as_tensor(hi, dtype=u.dtype, device=u.device).expand_as(u),
                        torch.as_tensor(lo, dtype=u.dtype, device=u.device).expand_as(u))
    safe = torch.where(bound == 0, torch.ones_like(bound), bound)   # a device whose bound is 0 cannot move that way
    slope = (1 - u / safe).clamp(min=0)
    shrink = (1 - step / safe.abs()).clamp(min=0) ** m
    out = bound - (bound - u) * shrink
    if noise is not None:
        out = out + noise * torch.sign(n) * slope
    return _clip(out, lo, hi), n


def _clip(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """clamp(x, lo, hi) for Python or per-device tensor bounds (float bounds: torch.clamp, as before)."""
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        return torch.minimum(torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype)), torch.as_tensor(hi, dtype=x.dtype))
    return x.clamp(lo, hi)


# ============================================================================ read noise ====

def read_noise_std(module: nn.Module, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """sigma ||x_patch|| per output of a layer that is linear in its input (Linear, Conv*, ConvTranspose*).

    ||x_patch||^2 is the same layer applied to x^2 with all-ones weights and no bias (for a Linear layer
    the squared norm of the input row, for a convolution that of each input patch). Every output channel
    sees the same patch norm, so the all-ones layer is run for a few output channels and its first one is
    broadcast (the result is an expanded view of the output's shape) -- where that reproduces the full
    all-ones layer bit for bit: checked once per layer and input shape (:func:`_patch_sq`).
    """
    sq, shape = _patch_sq(module, x.detach() * x.detach())
    return sq.clamp_(min=0).sqrt_().mul_(sigma).expand(shape)


_REDUCED_EXACT: dict = {}   # layer and input signature -> the reduced all-ones layer reproduces the full one exactly


def _all_ones_layer(module: nn.Module, x2: torch.Tensor, n_out: int | None) -> torch.Tensor:
    """The layer on x2 with all-ones weights and no bias, for its first ``n_out`` output channels (None: all)."""
    w = module.weight
    transposed = isinstance(module, nn.ConvTranspose2d)
    if n_out is None:
        ones = torch.ones_like(w)
    elif transposed:
        ones = w.new_ones((w.shape[0], n_out, *w.shape[2:]))
    else:
        ones = w.new_ones((n_out, *w.shape[1:]))
    if isinstance(module, nn.Linear):
        return F.linear(x2, ones)
    if transposed:
        return F.conv_transpose2d(x2, ones, None, module.stride, module.padding, module.output_padding, module.groups,
                                  module.dilation)
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError("weight read noise supports zero-padded convolutions only")
        return F.conv2d(x2, ones, None, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, nn.Conv1d):
        return F.conv1d(x2, ones, None, module.stride, module.padding, module.dilation, module.groups)
    raise ValueError(f"weight read noise: unsupported layer {type(module).__name__} (Linear, Conv1d/2d, "
                     f"ConvTranspose2d are supported)")


def _patch_sq(module: nn.Module, x2: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """(||x_patch||^2 per output, the layer's output shape): the all-ones layer on x2, broadcastable to that shape.

    The full all-ones layer costs as much as the layer itself (a whole forward per read for a decoder). All its
    output channels are the same sum, so a layer with a few output channels (8 for a matrix product, which a
    single column would turn into a matrix-vector product with another summation order; 1 for a convolution)
    gives it; it is used where it equals the full layer bit for bit, which is checked on the first call for each
    layer and input signature (and thread count) -- else the full layer runs, as before."""
    w = module.weight
    linear = isinstance(module, nn.Linear)
    n_full = module.out_features if linear else (w.shape[1] * module.groups if isinstance(module, nn.ConvTranspose2d)
                                                 else w.shape[0])
    k = min(n_full, 8 if linear else 1)
    if getattr(module, "groups", 1) != 1 or k == n_full:
        full = _all_ones_layer(module, x2, None)
        return full, full.shape
    key = (type(module), tuple(w.shape), tuple(getattr(module, a, None) for a in ("stride", "padding", "output_padding",
           "dilation")), tuple(x2.shape), tuple(x2.stride()), x2.dtype, str(x2.device), torch.get_num_threads())
    ok = _REDUCED_EXACT.get(key)
    if ok is False:
        full = _all_ones_layer(module, x2, None)
        return full, full.shape
    small = _all_ones_layer(module, x2, k)
    if linear:   # (..., out): the last dimension
        shape, small = (*small.shape[:-1], n_full), small[..., :1]
    else:        # (B, C, ...): the channel dimension
        shape, small = (small.shape[0], n_full, *small.shape[2:]), small[:, :1]
    if ok is None:
        full = _all_ones_layer(module, x2, None)
        _REDUCED_EXACT[key] = bool(torch.equal(full, small.expand(shape)))
        return full, shape
    return small, shape


def transposed_read_noise_std(module: nn.Module, g: torch.Tensor, x_shape, sigma: float) -> torch.Tensor:
    """sigma sqrt(sum_{i -> j} g_i^2) per input j of the layer's transposed read J^T g (the backward MVM).

    v_j = sum_i (w_ij + sigma xi_ij) g_i has the law v_j = (W^T g)_j + sigma ||g_patch(j)|| xi_j, with g_patch(j) the
    outputs input j feeds: for a Linear layer all of them (||g|| per chain), for a convolution the transposed
    patch -- the vector-Jacobian product of the all-ones layer (no bias) at the cotangent g^2."""
    g2 = g.detach() * g.detach()
    if isinstance(module, nn.Linear):
        sq = g2.sum(-1, keepdim=True).expand(*g2.shape[:-1], module.in_features)
    else:
        x0 = torch.zeros(x_shape, dtype=g.dtype, device=g.device, requires_grad=True)
        with torch.enable_grad():
            (sq,) = torch.autograd.grad(_all_ones_layer(module, x0, None), x0, g2)
    return sq.clamp(min=0).sqrt().mul(sigma)


class _GradTap(torch.autograd.Function):
    """Identity on a layer's output; its backward keeps the cotangent g (what the transposed read multiplies)."""

    @staticmethod
    def forward(ctx, y, cell):
        ctx.cell = cell
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        ctx.cell[0] = g
        return g, None


class _TransposedRead(torch.autograd.Function):
    """Identity on a layer's input; its backward adds the transposed read's noise to the input cotangent J^T g."""

    @staticmethod
    def forward(ctx, x, cell, module, sigma, hooks):
        ctx.cell, ctx.module, ctx.sigma, ctx.hooks, ctx.x_shape = cell, module, sigma, hooks, x.shape
        return x.view_as(x)

    @staticmethod
    def backward(ctx, gx):
        g = ctx.cell[0]
        std = transposed_read_noise_std(ctx.module, g, ctx.x_shape, ctx.sigma)
        xi = shard_randn(gx.shape, generator=ctx.hooks.generator, device=gx.device, dtype=gx.dtype)
        return gx + std * xi, None, None, None, None


class ReadNoiseHooks:
    """Module hooks adding fresh read noise to the array reads of every layer (per chain, per output, per read).

    * forward read (``forward``): y += sigma_r ||x_patch|| xi on the layer's output. The noise is a constant for
      autograd (it does not depend on the weights, and its dependence on x through ||x|| is not a path the physical
      feedback read takes);
    * transposed read (``backward``): the backward pass through the layer -- the feedback J^T eps, and in learning
      the error signals of the layers below -- is a read of the same devices with its own draw:
      J^T g += sigma_r ||g_patch|| xi (:func:`transposed_read_noise_std`), drawn when the backward runs.

    Use as a context manager around the forward; ``generator`` is read when the noise is drawn (set ``.generator``
    to switch). :meth:`transposed` gives hooks for the transposed reads only (a separate feedback forward).
    """

    SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)

    def __init__(self, decoder: nn.Module, sigmas: dict[str, float], generator: torch.Generator | None = None,
                 forward: bool = True, backward: bool = False):
        self.generator = generator
        self.forward, self.backward = bool(forward), bool(backward)
        self.handles = []
        self.targets = []
        modules = dict(decoder.named_modules())
        for pname, sigma in sigmas.items():
            mname = pname.rsplit(".", 1)[0] if "." in pname else ""
            if not pname.endswith("weight"):
                continue  # biases: read noise is per product; a bias is added in the periphery
            mod = modules.get(mname)
            if not isinstance(mod, self.SUPPORTED):
                raise ValueError(f"weight read noise: parameter {pname!r} belongs to a "
                                 f"{type(mod).__name__}, not a Linear / Conv layer")
            if sigma > 0:
                self.targets.append((mod, float(sigma)))

    def transposed(self) -> "ReadNoiseHooks":
        """The same layers and generator, noise on the transposed reads only (none when this has no backward)."""
        out = object.__new__(ReadNoiseHooks)
        out.__dict__.update(self.__dict__, forward=False, handles=[])
        if not self.backward:
            out.targets = []
        return out

    def __enter__(self):
        for mod, sigma in self.targets:
            cell = [None]   # the layer's output cotangent, from its tap to its input's transposed read
            if self.backward:
                self.handles.append(mod.register_forward_pre_hook(self._make_pre(sigma, cell)))
            if self.forward or self.backward:
                self.handles.append(mod.register_forward_hook(self._make(sigma, cell)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _make_pre(self, sigma, cell):
        def pre(module, inputs):
            x = inputs[0]
            if not (torch.is_grad_enabled() and x.requires_grad):
                return None
            return (_TransposedRead.apply(x, cell, module, sigma, self), *inputs[1:])
        return pre

    def _make(self, sigma, cell):
        def hook(module, inputs, output):
            if self.forward:
                std = read_noise_std(module, inputs[0], sigma)
                # per chain (dim 0): torch.randn off DDP, this rank's rows of the global batch's draw in a DDP rank
                xi = shard_randn(output.shape, generator=self.generator, device=output.device, dtype=output.dtype)
                output = output + (std * xi).detach()
            if self.backward and torch.is_grad_enabled() and output.requires_grad:
                output = _GradTap.apply(output, cell)
            return output
        return hook


# ================================================================================= array ====

def _covered(name: str, p: torch.Tensor, include_bias: bool) -> bool:
    return p.dim() >= 2 or (include_bias and p.dim() == 1)


BIAS_FAMILIES = ("programming", "drift", "read", "pulsed")   # the array's effects, each with its own include_bias


@dataclass
class _Programming:
    model: str = "pcm"
    std: float = 0.0175


@dataclass
class _Drift:
    t0: float = 20.0
    nu: Any = "pcm"
    nu_std: float = 0.0
    compensate: bool = False
    one_over_f: bool = False       # aihwkit's accumulated 1/f noise (:func:`pcm_accumulated_noise_std`)
    t_read: float = PCM_T_READ


class AnalogArray:
    """The decoder's weights as devices (module docstring). Built with :meth:`from_noise`.

    Attributes: ``names`` (covered parameter names), ``stored`` / ``t_write`` / ``nu`` (dicts of tensors),
    ``clock`` (s), ``programming`` / ``drift`` (settings or None), ``read_std`` (relative read noise or 0),
    ``pulsed`` (a PulsedDevice or None), ``writes`` (count of programming/pulse writes), ``bias_families`` (the
    effects among :data:`BIAS_FAMILIES` that act on biases).

    ``include_bias``: True (every effect acts on the biases), False (none), or the families whose source has
    ``include_bias`` (:meth:`from_noise`): a bias outside a family gets no programming error ("programming"),
    drift exponent 0 ("drift"), no read noise ("read") or exact writes instead of pulses ("pulsed").

    ``reads`` (:data:`READS`): which reads get read noise -- "forward" (the prediction g(z), as before), "backward"
    (the transposed read J^T eps) or "both" (independent draws per read).

    ``mapping`` (:data:`MAPPINGS`): "signed" (one signed conductance per weight, as before) or "pair" (aihwkit's
    differential pair, :func:`pair_conductances`, with ``g_min``): every tensor that programming acts on is held as
    (g+, g-) in units of g_max (``pair``); programming noise (clipped at g >= 0, as aihwkit), drift exponents and the
    1/f noise act on each conductance, and a read is w = (g+(t) - g-(t)) w_max / (1 - g_min). ``stored`` is then
    the written pair's signed weight. Not with pulsed writes.

    ``drift.one_over_f``: aihwkit's accumulated 1/f noise on each conductance,
    g(t) = g_drift + |g_drift| Q_s(|g_prog| / g_max) sqrt(ln((age + t0 + t_read) / (2 t_read))) xi
    (:func:`pcm_accumulated_noise_std`; age = time since the device's last write). xi is drawn per device at each
    write (``acc_xi``, from the array's seed) and held until the next: the realisation accumulated since the write,
    whose std grows with ln t as aihwkit's closed form (aihwkit draws it afresh per inference time).
    """

    def __init__(self, weights: dict[str, torch.Tensor], *, programming: _Programming | None = None,
                 drift: _Drift | None = None, read_std: float = 0.0, pulsed: PulsedDevice | None = None,
                 include_bias: bool | tuple | frozenset = False, seed: int = 0, clock: float = 0.0,
                 reads: str = "forward", mapping: str = "signed", g_min: float = 0.0):
        if reads not in READS:
            raise ValueError(f"analog array: reads must be one of {READS}, got {reads!r}")
        if mapping not in MAPPINGS:
            raise ValueError(f"analog array: mapping must be one of {MAPPINGS}, got {mapping!r}")
        if mapping == "pair" and pulsed is not None:
            raise ValueError("analog array: mapping='pair' does not take pulsed writes (in-memory learning); "
                             "use 'signed'")
        if not (isinstance(g_min, (int, float)) and not isinstance(g_min, bool) and 0 <= g_min < 1):
            raise ValueError(f"analog array: g_min must be a number in [0, 1) (units of g_max), got {g_min!r}")
        self.programming, self.drift, self.read_std, self.pulsed = programming, drift, float(read_std), pulsed
        self.reads, self.mapping, self.g_min = reads, mapping, float(g_min)
        if isinstance(include_bias, bool):
            include_bias = BIAS_FAMILIES if include_bias else ()
        self.bias_families = frozenset(include_bias)
        include_bias = bool(self.bias_families)
        self.include_bias = include_bias
        self.seed = int(seed)
        self.clock = float(clock)
        self.writes = 0
        self.names = [n for n, p in weights.items() if _covered(n, p, include_bias)]
        if not self.names:
            raise ValueError("the weight-device noise sources need a decoder with weights of >= 2 dimensions "
                             "(e.g. nn.Linear / nn.Conv2d layers); this decoder has none")
        gen = torch.Generator().manual_seed(derive_seed(seed, 11))
        self.stored, self.t_write, self.nu, self.w_max = {}, {}, {}, {}
        self.scale, self.step_up, self.step_down = {}, {}, {}
        self.w_hi, self.w_lo, self.pair, self.acc_xi = {}, {}, {}, {}
        self.acc_gen = torch.Generator().manual_seed(derive_seed(seed, 13))   # the 1/f realisations, per write
        d2d_gen = torch.Generator().manual_seed(derive_seed(seed, 12))        # bound / asymmetry spreads
        for n in self.names:
            w = weights[n].detach()
            self.stored[n] = w.clone()
            self.t_write[n] = torch.zeros_like(w)
            self.w_max[n] = float(w.abs().max().clamp(min=1e-30))
            if self.paired(n):
                self.pair[n] = torch.stack(pair_conductances(w, self.w_max[n], self.g_min))
            if drift is not None:
                g = self.pair[n] if self.paired(n) else w.abs() / self.w_max[n]   # (g+, g-) or |w| / w_max
                if drift.nu == "pcm":
                    mu, sd = pcm_drift_nu_moments(g)
                    xi = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
                    self.nu[n] = (mu + sd * xi).abs()
                else:
                    xi = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
                    self.nu[n] = (float(drift.nu) + drift.nu_std * xi).abs()
                if not self.acts("drift", n):   # drawn all the same: the other tensors' draws do not move
                    self.nu[n] = torch.zeros_like(g)
            if pulsed is not None:
                self._pulsed_device(n, w, pulsed, gen, d2d_gen)
        self._draw_one_over_f(None)

    def acts(self, family: str, name: str) -> bool:
        """Whether the effect ``family`` (one of :data:`BIAS_FAMILIES`) acts on the covered tensor ``name``."""
        return self.stored[name].dim() >= 2 or family in self.bias_families

    def paired(self, name: str) -> bool:
        """Whether the tensor ``name`` is held on differential pairs (``mapping="pair"`` and programming acts on it)."""
        return self.mapping == "pair" and self.acts("programming", name)

    def _pulsed_device(self, n: str, w: torch.Tensor, dev: PulsedDevice, gen, d2d_gen) -> None:
        """A tensor's frozen pulsed-device draws: the step's spread (from ``gen``, as always), then -- only when a
        spread is on, from their own stream -- each device's bounds and its up/down asymmetry
        (:class:`PulsedDevice`)."""
        self.scale[n] = self.w_max[n] / (dev.init_fraction * dev.w_max)
        xi = torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
        d2d = (1 + dev.dw_min_dtod * xi).clamp(min=0.05)  # a device's own step, frozen
        if dev.up_down_dtod == 0:
            self.step_up[n] = dev.dw_min * (1 + dev.up_down) * d2d
            self.step_down[n] = dev.dw_min * (1 - dev.up_down) * d2d
        if dev.w_max_dtod == 0 and dev.w_min_dtod == 0 and dev.up_down_dtod == 0:
            return

        def draw():
            return torch.randn(w.shape, generator=d2d_gen, dtype=torch.float64).to(w.device, w.dtype)
        hi, lo, r = dev.w_max * (1 + dev.w_max_dtod * draw()), dev.w_min * (1 + dev.w_min_dtod * draw()), draw()
        hi, lo = torch.maximum(hi, lo).abs(), -torch.minimum(hi, lo).abs()   # aihwkit's enforce_consistency
        if dev.w_max_dtod or dev.w_min_dtod:
            self.w_hi[n], self.w_lo[n] = hi, lo
        if dev.up_down_dtod:
            r = r * dev.up_down_dtod
            floor = 0.05 * dev.dw_min * (1 - abs(dev.up_down))   # a step never vanishes (as the spread's clamp)
            self.step_up[n] = (dev.dw_min * (d2d * (1 + dev.up_down) + r)).abs().clamp(min=floor)
            self.step_down[n] = (dev.dw_min * (d2d * (1 - dev.up_down) - r)).abs().clamp(min=floor)

    def _draw_one_over_f(self, where: dict[str, torch.Tensor] | None) -> None:
        """Fresh 1/f realisations xi for the devices just written (``where``: name -> written mask; None: all)."""
        if self.drift is None or not self.drift.one_over_f:
            return
        for n in self.names:
            if not self.acts("drift", n) or (where is not None and n not in where):
                continue
            shape = self.pair[n].shape if self.paired(n) else self.stored[n].shape
            ref = self.stored[n]
            xi = torch.randn(shape, generator=self.acc_gen, dtype=torch.float64).to(ref.device, ref.dtype)
            if where is None or n not in self.acc_xi:
                self.acc_xi[n] = xi
            else:
                self.acc_xi[n] = torch.where(where[n], xi, self.acc_xi[n])

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def from_noise(cls, weights: dict[str, torch.Tensor], sources, seed: int = 0,
                   program_gen: torch.Generator | None = None) -> "AnalogArray | None":
        """An array for the weight-device sources among ``sources`` (NoiseSource objects), or None.

        The array is programmed once from ``weights`` (a programming draw from ``program_gen``, default
        the seed's), and its clock starts at the drift source's ``t_start`` (time since programming when a
        simulation starts), so a stand-alone circuit sees the weights ``t_start`` seconds after programming.
        """
        prog = drift = pulsed = None
        read_std, t_start, reads, mapping, g_min = 0.0, 0.0, "forward", "signed", 0.0
        bias = {}   # family -> the include_bias of its (last) source
        for s in sources:
            p = s.params
            if s.type == "weight_programming":
                mapping, g_min = p.get("mapping", "signed"), p.get("g_min", 0.0)
                if p["model"] == "constant" and p["std"] == 0:
                    continue
                prog = _Programming(model=p["model"], std=p["std"])
                bias["programming"] = bool(p["include_bias"])
            elif s.type == "drift":
                drift = _Drift(t0=p["t0"], nu=p["nu"], nu_std=p["nu_std"], compensate=p["compensate"],
                               one_over_f=bool(p.get("one_over_f", False)), t_read=p.get("t_read", PCM_T_READ))
                bias["drift"] = bool(p["include_bias"])
                t_start = float(p["t_start"])
            elif s.type == "weight_read":
                if p["std"] > 0:
                    read_std, reads = float(p["std"]), p.get("reads", "forward")
                    bias["read"] = bool(p["include_bias"])
            elif s.type == "pulsed":
                pulsed = s.device()
                bias["pulsed"] = bool(p["include_bias"])
        if prog is None and drift is None and read_std == 0 and pulsed is None and mapping == "signed":
            return None
        arr = cls(weights, programming=prog, drift=drift, read_std=read_std, pulsed=pulsed,
                  include_bias=frozenset(f for f, on in bias.items() if on), seed=seed, clock=t_start,
                  reads=reads, mapping=mapping, g_min=g_min)
        if prog is not None:
            if program_gen is None:
                program_gen = torch.Generator().manual_seed(derive_seed(seed, 2))
            arr.program(weights, program_gen, at=0.0)
        return arr

    # ---------------------------------------------------------------------------------- writes
    def program(self, weights: dict[str, torch.Tensor], gen: torch.Generator | None, at: float | None = None) -> None:
        """Write ``weights`` onto the devices: stored = w + programming error (fresh draw), t_write = ``at``
        (default: the current clock). w_max (the read-noise and programming scale) follows the new weights."""
        t = self.clock if at is None else float(at)
        for n in self.names:
            w = weights[n].detach()
            wmax = float(w.abs().max().clamp(min=1e-30))
            self.w_max[n] = wmax
            if self.paired(n):
                self.stored[n] = self._program_pair(n, w, wmax, gen)
            else:
                s = w.clone()
                if self.programming is not None and self.acts("programming", n):
                    if self.programming.model == "pcm":
                        sigma = pcm_programming_std(w.abs() / wmax) * wmax
                    else:
                        sigma = self.programming.std * wmax
                    xi = torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
                    s = s + sigma * xi
                self.stored[n] = s
            self.t_write[n].fill_(t)
        self._draw_one_over_f(None)
        self.writes += 1

    def _program_pair(self, n: str, w: torch.Tensor, wmax: float, gen) -> torch.Tensor:
        """Write w onto its pair: targets (g+, g-) (:func:`pair_conductances`), each with its own programming error
        sigma(g) g_max xi (aihwkit ``apply_programming_noise_to_conductance``: the PCM polynomial at g / g_max, or the
        constant std), clipped at g >= 0; returns the pair's signed weight (g+ - g-) w_max / (1 - g_min)."""
        g = torch.stack(pair_conductances(w, wmax, self.g_min))
        if self.programming is not None:
            sigma = pcm_programming_std(g) if self.programming.model == "pcm" else self.programming.std
            xi = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
            g = (g + sigma * xi).clamp(min=0.0)
        self.pair[n] = g
        return (g[0] - g[1]) * (wmax / (1.0 - self.g_min))

    def pulse_update(self, desired: dict[str, torch.Tensor], gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Apply desired updates (weight units) by pulses (:func:`apply_pulses`); returns the pulse counts.

        Devices that received at least one pulse restart their drift clock (t_write = clock).
        """
        if self.pulsed is None:
            raise ValueError("pulse_update needs a 'pulsed' weight-device source")
        counts = {}
        for n in self.names:
            if n not in desired:
                continue
            sc = self.scale[n]
            u = self.stored[n] / sc
            if self.acts("pulsed", n):
                u_new, cnt = apply_pulses(u, desired[n].detach() / sc, self.pulsed, self.step_up[n], self.step_down[n],
                                          gen, self.w_hi.get(n), self.w_lo.get(n))
            else:   # a bias on the array for another source's sake: written exactly
                u_new, cnt = u + desired[n].detach() / sc, (desired[n].detach() != 0).to(u.dtype)
            self.stored[n] = u_new * sc
            self.t_write[n] = torch.where(cnt != 0, torch.full_like(u, self.clock), self.t_write[n])
            counts[n] = cnt
        self._draw_one_over_f({n: c != 0 for n, c in counts.items()})
        self.writes += 1
        return counts

    def advance(self, seconds: float) -> None:
        """Advance the device clock (time passes for drift)."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"advance: seconds must be a non-negative finite number, got {seconds!r}")
        self.clock += float(seconds)

    # ----------------------------------------------------------------------------------- reads
    @property
    def time_dependent(self) -> bool:
        return self.drift is not None

    def drift_factor(self, name: str, t: float = 0.0) -> torch.Tensor | None:
        """((clock + t - t_write + t0) / t0)^(-nu) (divided by its tensor mean with ``compensate``); for a paired
        tensor the (2, ...) factors of (g+, g-), compensated by their joint mean."""
        if self.drift is None:
            return None
        if self.paired(name):
            age = (self.clock + t - self.t_write[name]).clamp(min=0)
            f = torch.exp(-self.nu[name] * torch.log((age + self.drift.t0) / self.drift.t0))
            return f.div_(f.mean()) if self.drift.compensate else f
        log_age = self._uniform_log_age(name, t)
        if log_age is not None:  # one write time for the whole tensor (a programming): the same numbers, 2 passes not 7
            f = torch.mul(self.nu[name], log_age.neg()).exp_()   # nu * (-L) == (-nu) * L exactly
        else:
            age = (self.clock + t - self.t_write[name]).clamp(min=0)
            f = torch.exp(-self.nu[name] * torch.log((age + self.drift.t0) / self.drift.t0))
        if self.drift.compensate:
            f = f.div_(f.mean())
        return f

    def _uniform_log_age(self, name: str, t: float) -> torch.Tensor | None:
        """log((clock + t - t_write + t0) / t0) as a 1-element tensor when every device of the tensor has the same
        t_write (checked once per write of t_write) and that number is what the elementwise computation of
        :meth:`drift_factor` gives on every path (on the CPU its vectorised and scalar loops are both evaluated and
        compared; on CUDA every element runs the same code), else None. Remembered per write time and time asked."""
        tw = self.t_write[name]
        if tw.device.type not in ("cpu", "cuda") or tw.numel() == 0:
            return None
        memo = self.__dict__.setdefault("_tw_uniform", {})
        m = memo.get(name)
        if m is None or m[0] is not tw or m[1] != tw._version:
            first = tw.reshape(-1)[:1]
            uniform = bool((tw == first).all())
            m = (tw, tw._version, first.clone() if uniform else None, float(first) if uniform else None)
            memo[name] = m
        if m[2] is None:
            return None
        # the same number for every tensor written at that time, asked again for the same time: computed once
        key = (m[3], tw.dtype, tw.device, self.clock, t, self.drift.t0)
        known = self.__dict__.setdefault("_log_age", {})
        if key in known:
            return known[key]
        t0 = self.drift.t0
        probe = m[2].expand(64).contiguous()   # 64 elements: the CPU's vectorised loop (no scalar tail)
        log_vec = torch.log(((self.clock + t - probe).clamp(min=0) + t0) / t0)
        log_one = torch.log(((self.clock + t - m[2]).clamp(min=0) + t0) / t0)  # 1 element: the scalar loop
        if tw.device.type == "cpu" and not bool((log_vec == log_one).all()):
            log_one = None
        if len(known) >= 16:
            known.clear()
        known[key] = log_one
        return log_one

    def one_over_f_std(self, name: str, t: float = 0.0) -> torch.Tensor | None:
        """The accumulated 1/f std relative to |g_drift| at device time clock + t (None: off for this tensor):
        Q_s(|g_prog| / g_max) sqrt(ln((age + t0 + t_read) / (2 t_read))) (:func:`pcm_accumulated_noise_std`)."""
        if name not in self.acc_xi:
            return None
        age = (self.clock + t - self.t_write[name]).clamp(min=0)
        g = self.pair[name] if self.paired(name) else self.stored[name].abs() / self.w_max[name]
        return pcm_accumulated_noise_std(g, age + self.drift.t0, self.drift.t_read)

    def read(self, name: str, t: float = 0.0) -> torch.Tensor:
        """The conductance a read sees at device time clock + t (without read noise): stored x drift factor, plus
        the accumulated 1/f noise |g_drift| sigma_1/f xi; a pair reads (g+(t) - g-(t)) w_max / (1 - g_min), each
        conductance clipped at >= 0 (aihwkit)."""
        f = self.drift_factor(name, t)
        acc = self.one_over_f_std(name, t)
        if self.paired(name):
            g = self.pair[name] if f is None else self.pair[name] * f
            if acc is not None:
                g = (g + g.abs() * acc * self.acc_xi[name]).clamp(min=0.0)
            return (g[0] - g[1]) * (self.w_max[name] / (1.0 - self.g_min))
        s = self.stored[name]
        if acc is not None:
            s = s + s.abs() * acc * self.acc_xi[name]   # |g f| = |g| f: the noise scales with the drifted |g|
        return s if f is None else f.mul_(s)   # (a fresh f: stored * f in place)

    def read_all(self, t: float = 0.0) -> dict[str, torch.Tensor]:
        return {n: self.read(n, t) for n in self.names}

    def read_sigmas(self, direction: str = "forward") -> dict[str, float]:
        """sigma_r per covered weight tensor for the reads in ``direction`` ("forward": the prediction g(z);
        "backward": the transposed read J^T eps): read_std * w_max, {} when that read is noise-free (``reads``)."""
        if direction not in ("forward", "backward"):
            raise ValueError(f"read_sigmas: direction must be 'forward' or 'backward', got {direction!r}")
        if self.read_std == 0 or self.reads not in (direction, "both"):
            return {}
        return {n: self.read_std * self.w_max[n] for n in self.names if self.acts("read", n)}

    def read_hooks(self, decoder: nn.Module, generator: torch.Generator | None) -> ReadNoiseHooks | None:
        """Hooks for the decoder's noisy reads (:class:`ReadNoiseHooks`, forward and/or transposed as ``reads``)."""
        fwd, bwd = self.read_sigmas("forward"), self.read_sigmas("backward")
        if not (fwd or bwd):
            return None
        return ReadNoiseHooks(decoder, fwd or bwd, generator, forward=bool(fwd), backward=bool(bwd))

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {"clock": self.clock, "writes": self.writes, "stored": dict(self.stored), "t_write": dict(self.t_write),
                "nu": dict(self.nu), "w_max": dict(self.w_max), "scale": dict(self.scale),
                "step_up": dict(self.step_up), "step_down": dict(self.step_down), "w_hi": dict(self.w_hi),
                "w_lo": dict(self.w_lo), "pair": dict(self.pair), "acc_xi": dict(self.acc_xi),
                "acc_gen": self.acc_gen.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.clock, self.writes = float(sd["clock"]), int(sd["writes"])
        for key in ("stored", "t_write", "nu", "step_up", "step_down", "w_hi", "w_lo", "pair", "acc_xi"):
            for n, t in sd.get(key, {}).items():
                getattr(self, key)[n] = t.clone()
        if "acc_gen" in sd:
            self.acc_gen.set_state(sd["acc_gen"])
        self.w_max.update({n: float(v) for n, v in sd["w_max"].items()})
        self.scale.update({n: float(v) for n, v in sd.get("scale", {}).items()})
