"""Deprecated: the analog arrays (AnalogArray, PulsedDevice, device physics) moved to :mod:`circuits.noise.arrays`.

This module re-exports their public names for one release and warns on import.
"""
import warnings

from .arrays import (WEIGHT_DEVICE_TYPES, AnalogArray, PulsedDevice, ReadNoiseHooks, apply_pulses, pcm_drift_nu_moments,
                     pcm_programming_std, read_noise_std, stochastic_round)

warnings.warn("circuits.noise.devices is deprecated; use circuits.noise.arrays", DeprecationWarning, stacklevel=2)

__all__ = ["AnalogArray", "PulsedDevice", "apply_pulses", "stochastic_round", "read_noise_std",
           "ReadNoiseHooks", "pcm_programming_std", "pcm_drift_nu_moments", "WEIGHT_DEVICE_TYPES"]
