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
from .arrays import MAPPINGS, PCM_T_READ, READS, PulsedDevice, pcm_drift_nu_moments, pcm_programming_std

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

    ``mapping`` ("signed"): "pair" holds every weight on aihwkit's differential pair (``SinglePairConductanceConverter``
    in ``aihwkit/inference/converter/conductance.py``: g+ = clip(w scale, 0, g_max) + g_min, g- likewise for -w,
    scale = (g_max - g_min) / max|w|), and programming noise, drift and the 1/f noise act on each conductance
    (clipped at g >= 0); ``g_min`` (0.0, aihwkit's default, in units of g_max) is the idle device's conductance.
    The default "signed" is one signed conductance per weight, as before (the pair with a noise-free idle device).

    Sources: IBM aihwkit ``PCMLikeNoiseModel`` (c = [0.26348, 1.9650, -1.1731] uS, g_max = 25 uS);
    Sandia CrossSim treats programming error as frozen and read noise as fresh, the same split as here.
    """

    type = "weight_programming"
    defaults = {"model": "pcm", "std": 0.0175, "include_bias": False, "mapping": "signed", "g_min": 0.0}
    nonnegative = ("std", "g_min")
    choices = {"model": ("pcm", "constant"), "include_bias": (True, False), "mapping": MAPPINGS}

    def _validate(self):
        if self.params["g_min"] >= 1:
            raise ValueError(f"noise source 'weight_programming': g_min must be < 1 (units of g_max), "
                             f"got {self.params['g_min']!r}")

    def bind(self, ctx):
        if self.params["model"] == "constant" and self.params["std"] == 0 and self.params["mapping"] == "signed":
            return None
        return _WeightDevice(self, ctx)


class WeightRead(NoiseSource):
    """Weight read noise, fresh per matrix-vector product: y_i = sum_j (w_ij + std w_max xi_ij) x_j.

    In law y_i = (W x)_i + std w_max ||x|| xi_i, drawn per output, per chain and per read (for a
    convolution ||x|| is the norm of the input patch of each output). ``std`` (0.0175) is relative to
    the largest |weight| of each tensor at its last programming. ``reads`` says which array reads get it:
    "forward" (default, as before: the prediction g(z)), "backward" (the transposed read: the feedback J^T eps,
    v_j = (W^T eps)_j + std w_max ||eps_patch(j)|| xi_j, and in learning the error signals of the layers below) or
    "both" (an independent draw per read). ``include_bias`` (False) puts the biases on the array but gives them no
    read noise: read noise is per product, and a bias is added in the periphery.

    Source: aihwkit ``IOParameters`` weight noise per matrix-vector product, w_noise = sigma_w ~ 0.0175
    (y_i += sigma_w ||x|| xi); aihwkit's rpu configs carry one ``IOParameters`` per direction (``forward``,
    ``backward``), so the transposed read has its own noise.
    """

    type = "weight_read"
    defaults = {"std": 0.0175, "include_bias": False, "reads": "forward"}
    nonnegative = ("std",)
    choices = {"include_bias": (True, False), "reads": READS}

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
    compensation), ``include_bias`` (False), ``one_over_f`` (False) and ``t_read`` (250e-9 s): aihwkit's accumulated
    1/f conductance noise g += |g_drift| Q_s sqrt(ln((age + t0 + t_read) / (2 t_read))) xi,
    Q_s = min(0.0088 / (|g| / g_max)^0.65, 0.2) (:func:`circuits.noise.arrays.pcm_accumulated_noise_std`; xi per
    device, drawn at each write). Off by default so that a bare ``drift`` is the drift law alone, as before; the
    ``analog`` preset turns it on (aihwkit's ``PCMLikeNoiseModel`` always applies it).

    Source: IBM aihwkit PCM drift model (t0 = 20 s); ``PCMLikeNoiseModel.apply_drift_noise_to_conductance``
    (``aihwkit/inference/noise/pcm.py``: t_read = 250.0e-9, t_0 = 20.0; Nandakumar et al., ICECS 2019).
    """

    type = "drift"
    defaults = {"t0": 20.0, "t_start": 0.0, "nu": "pcm", "nu_std": 0.0, "compensate": False, "include_bias": False,
                "one_over_f": False, "t_read": PCM_T_READ}
    nonnegative = ("t_start", "nu_std")
    positive = ("t0", "t_read")
    choices = {"compensate": (True, False), "include_bias": (True, False), "one_over_f": (True, False)}

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
    ("stochastic" | "deterministic"), ``include_bias`` (False), and the device-to-device spreads of aihwkit's
    ``PulsedDevice`` (``simulator/configs/devices.py``): ``w_max_dtod``, ``w_min_dtod`` of each device's bounds and
    ``up_down_dtod`` of its asymmetry (frozen per array; :class:`circuits.noise.arrays.PulsedDevice`). Ours default to
    0 (the devices and figures of before); aihwkit's defaults are 0.3, 0.3 and 0.01
    (:data:`circuits.noise.arrays.AIHWKIT_PULSED_SPREADS`: ``{"type": "pulsed", **AIHWKIT_PULSED_SPREADS}``).
    The arithmetic is :func:`circuits.noise.arrays.apply_pulses`. It acts only on writes: learning mode ``in-memory``.
    """

    type = "pulsed"
    defaults = {"kind": "constant_step", "dw_min": 0.001, "dw_min_dtod": 0.3, "dw_min_std": 0.3, "up_down": 0.0,
                "w_max": 0.6, "w_min": -0.6, "init_fraction": 0.5, "max_pulses": 31, "rounding": "stochastic",
                "w_max_dtod": 0.0, "w_min_dtod": 0.0, "up_down_dtod": 0.0, "include_bias": False}
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
