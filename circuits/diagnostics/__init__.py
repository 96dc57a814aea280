"""Diagnostics researchers of cortical noise expect, each checked on a process whose answer is known.

* :mod:`.ou` -- exact OU / AR(1) theory: lagged covariance e^{At} Sigma, autocorrelation and integrated
  autocorrelation time of a unit or projection (continuous time, sampled, Euler-Maruyama), onset transients.
* :mod:`.flux` -- detailed-balance violation: circulation Q = (A Sigma - Sigma A^T)/2, rotation rate,
  entropy production, time-reversal KL, and their estimators from trajectories; the binned probability flux.
* :mod:`.quenching` -- variability quenching and onset overshoot across trials after stimulus onset.
* :mod:`.correlations` -- noise correlations; Poisson spike counts of a rectified rate read-out and Fano factors.
* :mod:`.spontaneous` -- spontaneous vs evoked: Gaussian-moment KL(aggregate evoked || spontaneous) with its
  null bias, and the closed form for a linear-Gaussian model (Berkes et al. 2011).

Everything is re-exported from ``circuits.analysis``; see docs/diagnostics.md.
"""
from .correlations import (NoiseCorrelations, noise_correlations, poisson_counts, poisson_fano_theory,
                           spike_count_fano)
from .flux import (FluxField, LinearFlux, ReversalAsymmetry, lagged_covariance, linear_flux_theory, pair_reversal_kl,
                   probability_flux_field, sampled_circulation, time_reversal_asymmetry)
from .ou import (ar1_integrated_autocorr_time, ar1_lagged_cov, ar1_stationary_cov, euler_maruyama_ar1,
                 ou_autocorrelation, ou_exact_ar1, ou_integrated_autocorr_time, ou_lagged_cov, ou_stationary_cov,
                 ou_transient)
from .quenching import AcrossTrial, Quenching, across_trial_moments, overshoot_fraction, quenching_curve
from .spontaneous import (SpontaneousEvoked, aggregate_posterior_kl_linear, gaussian_kl, gaussian_kl_null_bias,
                          spontaneous_evoked_kl)

__all__ = [
    "ou_stationary_cov", "ou_lagged_cov", "ou_autocorrelation", "ou_integrated_autocorr_time", "ou_exact_ar1",
    "euler_maruyama_ar1", "ar1_stationary_cov", "ar1_lagged_cov", "ar1_integrated_autocorr_time", "ou_transient",
    "LinearFlux", "linear_flux_theory", "sampled_circulation", "pair_reversal_kl", "ReversalAsymmetry",
    "lagged_covariance", "time_reversal_asymmetry", "FluxField", "probability_flux_field",
    "AcrossTrial", "across_trial_moments", "overshoot_fraction", "Quenching", "quenching_curve",
    "NoiseCorrelations", "noise_correlations", "poisson_counts", "spike_count_fano", "poisson_fano_theory",
    "gaussian_kl", "gaussian_kl_null_bias", "SpontaneousEvoked", "spontaneous_evoked_kl",
    "aggregate_posterior_kl_linear",
]
