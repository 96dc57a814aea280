"""Weight noise sources: programming noise, read noise, conductance drift (aihwkit's PCM model) and pulsed updates.

These sources configure the decoder's *analog array* (:class:`circuits.noise.arrays.AnalogArray`):
they hold no draws of their own. The circuit reads its forward weights from the array (programming
error of the last write, drift since each device's last write at the array's clock), adds read noise
per matrix-vector product (fresh per chain, per output, per read), and the learning modes write the
array (``circuits.modes``): once at programming (``deploy``), every batch (``hardware-aware``) or by
pulses (``in-memory``, the ``pulsed`` source). When each draw is made is documented in
:mod:`circuits.noise.arrays`.
"""
from __future__ import annotations

import math

from .base import BoundSource, NoiseSource
from .arrays import PulsedDevice, pcm_drift_nu_moments, pcm_programming_std

__all__ = ["WeightProgramming", "WeightRead", "Drift", "PulsedUpdate", "pcm_programming_std", "pcm_drift_nu_moments"]


class _WeightDevice(BoundSource):
    """A weight-device source bound to a circuit: served by the circuit's array (no hooks of its own)."""

    weight_device = True


class WeightProgramming(NoiseSource):
    """Weight programming noise, drawn at every write of the array, relative to the largest |weight| of each tensor.

    w' = w + sigma(|w| / w_max) w_max xi. ``model="pcm"`` (default) uses aihwkit's PCMLikeNoiseModel
    programming polynomial (:func:`pcm_programming_std`: 1-4 % of w_max); ``model="constant"`` uses
    sigma = ``std`` (0.0175) for every weight. ``include_bias`` (False): also 1-d parameters. A stand-alone
    circuit programs its array once at construction from ``config.seed`` (one draw per circuit); the
    learning modes program per deployment, per batch, or only at the first write (``circuits.modes``).

    Sources: IBM aihwkit ``PCMLikeNoiseModel`` (c = [0.26348, 1.9650, -1.1731] uS, g_max = 25 uS);
    Sandia CrossSim treats programming error as frozen and read noise as fresh, the same split as here.
    """

    type = "weight_programming"
    defaults = {"model": "pcm", "std": 0.0175, "include_bias": False}
    nonnegative = ("std",)
    choices = {"model": ("pcm", "constant"), "include_bias": (True, False)}

    def bind(self, ctx):
        if self.params["model"] == "constant" and self.params["std"] == 0:
            return None
        return _WeightDevice(self, ctx)


class WeightRead(NoiseSource):
    """Weight read noise, fresh per matrix-vector product: y_i = sum_j (w_ij + std w_max xi_ij) x_j.

    In law y_i = (W x)_i + std w_max ||x|| xi_i, drawn per output, per chain and per read (for a
    convolution ||x|| is the norm of the input patch of each output). ``std`` (0.0175) is relative to
    the largest |weight| of each tensor at its last programming. Read noise acts on the forward
    (prediction) reads; the feedback read J^T eps is not perturbed by it. ``include_bias`` (False) puts the biases
    on the array but gives them no read noise: read noise is per product, and a bias is added in the periphery.

    Source: aihwkit ``IOParameters`` weight noise per matrix-vector product, w_noise = sigma_w ~ 0.0175
    (y_i += sigma_w ||x|| xi).
    """

    type = "weight_read"
    defaults = {"std": 0.0175, "include_bias": False}
    nonnegative = ("std",)
    choices = {"include_bias": (True, False)}

    def bind(self, ctx):
        if self.params["std"] == 0:
            return None
        return _WeightDevice(self, ctx)


class Drift(NoiseSource):
    """Conductance drift: w(t) = w_written ((t - t_write + t0) / t0)^(-nu), nu frozen per device.

    t - t_write is the time since each device's last write on the array's clock. Parameters: ``t0``
    (20 s), ``t_start`` (0 s: the array's clock when a stand-alone circuit starts, i.e. the time since
    programming; the ``analog`` preset uses 3600 s), ``nu`` ("pcm": nu ~ |N(mu_nu, sigma_nu)| from
    aihwkit's formulas in |w| / w_max, :func:`pcm_drift_nu_moments`; or a number), ``nu_std`` (0.0:
    spread of a numeric nu), ``compensate`` (False: divide by the mean factor, aihwkit's global drift
    compensation), ``include_bias`` (False).

    Source: IBM aihwkit PCM drift model (t0 = 20 s).
    """

    type = "drift"
    defaults = {"t0": 20.0, "t_start": 0.0, "nu": "pcm", "nu_std": 0.0, "compensate": False, "include_bias": False}
    nonnegative = ("t_start", "nu_std")
    positive = ("t0",)
    choices = {"compensate": (True, False), "include_bias": (True, False)}

    def _validate(self):
        nu = self.params["nu"]
        if nu != "pcm" and not (isinstance(nu, (int, float)) and not isinstance(nu, bool) and math.isfinite(nu) and nu >= 0):
            raise ValueError(f"noise source 'drift': nu must be 'pcm' or a non-negative number, got {nu!r}")

    def bind(self, ctx):
        return _WeightDevice(self, ctx)


class PulsedUpdate(NoiseSource):
    """Pulsed writes of in-memory learning (aihwkit ``ConstantStepDevice`` / ``SoftBoundsDevice``).

    Parameters (defaults: aihwkit's ``PulsedDevice`` and ``UpdateParameters.desired_bl``): ``kind``
    ("constant_step" | "soft_bounds"), ``dw_min`` (0.001), ``dw_min_dtod`` (0.3), ``dw_min_std`` (0.3),
    ``up_down`` (0.0), ``w_max`` / ``w_min`` (0.6 / -0.6, device units), ``init_fraction`` (0.5: the
    initial max |w| maps to this fraction of w_max), ``max_pulses`` (31; None = unbounded), ``rounding``
    ("stochastic" | "deterministic"), ``include_bias`` (False). The arithmetic is
    :func:`circuits.noise.arrays.apply_pulses`. It acts only on writes: learning mode ``in-memory``.
    """

    type = "pulsed"
    defaults = {"kind": "constant_step", "dw_min": 0.001, "dw_min_dtod": 0.3, "dw_min_std": 0.3, "up_down": 0.0,
                "w_max": 0.6, "w_min": -0.6, "init_fraction": 0.5, "max_pulses": 31, "rounding": "stochastic",
                "include_bias": False}
    choices = {"include_bias": (True, False)}

    def _validate(self):
        self.device()

    def device(self) -> PulsedDevice:
        p = {k: v for k, v in self.params.items() if k != "include_bias"}
        try:
            return PulsedDevice(**p).validate()
        except ValueError as err:
            raise ValueError(f"noise source 'pulsed': {str(err).removeprefix('pulsed device: ')}") from None

    def bind(self, ctx):
        return _WeightDevice(self, ctx)
