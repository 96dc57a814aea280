"""Deprecated: the weight noise sources (WeightProgramming, WeightRead, Drift, PulsedUpdate) moved to
:mod:`circuits.noise.weight_sources`.

This module re-exports their public names for one release and warns on import.
"""
import warnings

from .weight_sources import (Drift, PulsedUpdate, WeightProgramming, WeightRead, pcm_drift_nu_moments,
                             pcm_programming_std)

warnings.warn("circuits.noise.weights is deprecated; use circuits.noise.weight_sources", DeprecationWarning,
              stacklevel=2)

__all__ = ["WeightProgramming", "WeightRead", "Drift", "PulsedUpdate", "pcm_programming_std", "pcm_drift_nu_moments"]
