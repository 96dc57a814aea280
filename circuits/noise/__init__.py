"""Analog and biological noise models for the LPC circuit: composable sources, presets, JSON configs.

A :class:`NoiseModel` is an ordered list of :class:`NoiseSource` s plus an optional temperature and
time-constant model. Sources are named in the registry :data:`NOISE_SOURCES`; named combinations
are in :data:`PRESETS` (``none``, ``ideal``, ``thermal``, ``analog``, ``cortical``). A model is given
to the circuit as a preset name, a dict (:meth:`NoiseModel.from_dict`), a JSON file
(:meth:`NoiseModel.from_file`) or an object, and is saved with every run (:meth:`NoiseModel.to_dict`).

Where noise enters (DESIGN.md section 3; the hooks a source may implement)
-------------------------------------------------------------------------
* *frozen draws* at circuit construction (device mismatch, programming noise, drift exponents,
  feedback mismatch), made on the CPU in float64 from a generator seeded by the config's seed, so
  they are identical across calls and devices with the same seed and differ across seeds;
* *fresh draws* every step (thermal, shot, read noise, stochastic rounding), from the run's
  generator, after the intrinsic Langevin noise (which is always the first draw of a step);
* *dynamic states* advanced with the circuit (the OU bank of 1/f noise);
* *weights*: the decoder's parameters on the forward path (quantisation, programming noise, drift,
  read noise; applied through ``torch.func.functional_call`` for a general decoder) and a separate
  perturbed copy for the feedback path J^T (feedback mismatch). Gradients pass straight through
  the perturbations to the unperturbed parameters;
* *activity transforms* of what downstream units see: value outputs z -> decoder ("value"), decoder
  outputs mu -> error units ("prediction"), error outputs eps -> feedback ("error"): gain/offset
  mismatch, DAC/ADC quantisation, saturation;
* *additive increments* on value units and on error units.

Units ("relative", the default, or "absolute")
---------------------------------------------
Amplitudes are relative to the natural scale of the site they act on: value units scale
s_p (the prior std), error units 1/sigma_x for a (discretised) Gaussian likelihood (the std of the
precision-weighted error e(x, g(z)) when x is drawn from the model; 1 for Bernoulli), predictions 1
(data live in [-1, 1]). Additive white noise is written like the intrinsic Langevin noise,

    tau dz += sqrt(2 tau) * sigma dW     (per step: sqrt(2 dt / tau) * sigma * xi),

so sigma is the stationary std the noise alone would give a unit with unit leak; the intrinsic
Langevin noise is this with sigma = sqrt(T), so a ``value_std`` of 0.1 is 10 % of the Langevin noise
at T = 1 (and raises the effective temperature to T + 0.01). "absolute" amplitudes are noise
densities in state units per sqrt(second): per step sigma * sqrt(dt) * xi. Adiabatic error units
(tau_e = 0) have no dynamics: their additive noise is drawn fresh at every evaluation with std sigma
(times the scale), so its effect on z scales with dt (documented; prefer a finite tau_e).

Every source's parameters, defaults and references are in its docstring and in ``docs/circuits.md``.

Layout
------
``base`` (:class:`CircuitContext`, :class:`BoundSource`, :class:`NoiseSource`, shared helpers), one
module per physical family -- ``units`` (thermal, shot, flicker and :class:`OUBank`), ``mismatch``
(gain/offset mismatch), ``weight_sources`` (programming noise, read noise, drift, pulsed updates),
``converters`` (quantisation, saturation), ``feedback`` (feedback mismatch) --, ``arrays`` (the analog
array the weight sources configure: :class:`AnalogArray`, :class:`PulsedDevice`, the device physics),
``presets`` (:data:`PRESETS`) and ``model`` (the registry :data:`NOISE_SOURCES`, :func:`make_noise`,
:class:`NoiseModel`).

This namespace holds public names only: the bound sources (``_Thermal``, ...) and the shared helpers
(``_add_scaled``, ...) are imported from their defining submodule. :class:`OUBank` (a bank of OU
processes whose sum has a 1/f spectrum) stays here: it is a building block for a user's own
noise source. ``circuits.noise.devices`` and ``circuits.noise.weights`` are deprecated aliases of
``arrays`` and ``weight_sources``.
"""
from .arrays import (WEIGHT_DEVICE_TYPES, AnalogArray, PulsedDevice, ReadNoiseHooks, apply_pulses, read_noise_std,
                     stochastic_round)
from .base import ACTIVITY_SITES, STATE_SITES, UNITS, BoundSource, CircuitContext, NoiseSource
from .converters import QUANT_DEFAULT_BITS, QUANT_DEFAULT_BOUND, Quantisation, Saturation, quantise
from .feedback import FeedbackMismatch
from .mismatch import Mismatch
from .model import NOISE_SOURCES, NoiseModel, make_noise
from .presets import PRESETS
from .units import Flicker, OUBank, Shot, Thermal
from .weight_sources import (Drift, PulsedUpdate, WeightProgramming, WeightRead, pcm_drift_nu_moments,
                             pcm_programming_std)

__all__ = [
    # the model, the registry, the presets
    "NoiseModel", "NOISE_SOURCES", "PRESETS", "make_noise",
    # writing a source
    "NoiseSource", "BoundSource", "CircuitContext", "OUBank", "ACTIVITY_SITES", "STATE_SITES", "UNITS",
    # the sources
    "Thermal", "Shot", "Flicker", "Mismatch", "WeightProgramming", "WeightRead", "Drift", "PulsedUpdate",
    "Quantisation", "Saturation", "FeedbackMismatch", "quantise", "QUANT_DEFAULT_BITS", "QUANT_DEFAULT_BOUND",
    # the analog array behind the weight sources
    "AnalogArray", "PulsedDevice", "ReadNoiseHooks", "WEIGHT_DEVICE_TYPES", "apply_pulses", "read_noise_std",
    "stochastic_round", "pcm_programming_std", "pcm_drift_nu_moments",
]
