"""Linear-Gaussian theory and sampling diagnostics for LPC chains and circuits: the public facade.

Every name here is defined in a module of one job and re-exported, so ``from circuits.analysis import ...``
reaches all of them:

Theory (numpy / scipy, float64; torch tensors are accepted and converted)
-------------------------------------------------------------------------
Model: z ~ N(0, s_p^2 I), x | z ~ N(W z + b, sigma_x^2 I), W of shape (n, d).

* :mod:`neuro_lpc.theory`: :func:`gaussian_posterior` (the exact posterior N(mu, P^-1));
  :func:`ula_stationary`, :func:`ula_stationary_eigen` (where (preconditioned) ULA on that posterior
  settles: the discretisation bias of discrete LPC, paper eq. 5); :func:`linear_sde_stationary`,
  :func:`euler_maruyama_stationary` (the stationary law of any affine linear SDE
  dX = (A X + c) dt + B dW and of its Euler-Maruyama chain); :func:`euler_stable_dt` (the largest
  stable Euler step for a drift's eigenvalues).
* :mod:`circuits.theory`: :func:`linear_circuit_matrices`, :func:`linear_circuit_z_stationary` (the LPC
  circuit with a linear decoder written as such an SDE, with error units of finite time constant tau_e).

Finding (see ``docs/analysis.md``): with finite tau_e the circuit's z-marginal keeps the exact
posterior *mean* but not its *covariance*; the covariance tends to T P^-1 only as tau_e -> 0.

Diagnostics (torch or numpy in, the same type out; float64; vectorised over chains)
---------------------------------------------------------------------------------
Time is axis 0 throughout.

* :mod:`circuits.diagnostics.mcmc`: :func:`autocorrelation`, :func:`integrated_autocorr_time` (Sokal's
  automatic window), :func:`effective_sample_size`, :func:`ess_per_unit_time`, :func:`ess_summary` (tau
  and ESS with Madras-Sokal standard errors, reported as reliable only with >= 50 records per tau),
  :func:`split_rhat`, :func:`time_to_typical_set`.
* :mod:`circuits.diagnostics.trajectory`: :func:`fano_factor`, :func:`across_chain_spread`,
  :func:`pca_projection` (paper Appendix A.2) and :func:`pca_landscape_grid`.
* :mod:`circuits.diagnostics` (numpy): OU / AR(1) theory, probability flux and time-reversal asymmetry,
  variability quenching, noise correlations and spike-count Fano factors, spontaneous vs evoked activity.
"""
from __future__ import annotations

from neuro_lpc.theory import (euler_maruyama_stationary, euler_stable_dt, gaussian_posterior, linear_sde_stationary,
                              ula_stationary, ula_stationary_eigen)

from .diagnostics import (AcrossTrial, FluxField, LinearFlux, NoiseCorrelations, Quenching, ReversalAsymmetry,
                          SpontaneousEvoked, aggregate_posterior_kl_linear, ar1_integrated_autocorr_time,
                          ar1_lagged_cov, ar1_stationary_cov, across_trial_moments, euler_maruyama_ar1, gaussian_kl,
                          gaussian_kl_null_bias, lagged_covariance, linear_flux_theory, noise_correlations,
                          ou_autocorrelation, ou_exact_ar1, ou_integrated_autocorr_time, ou_lagged_cov,
                          ou_stationary_cov, ou_transient, overshoot_fraction, pair_reversal_kl, poisson_counts,
                          poisson_fano_theory, probability_flux_field, quenching_curve, sampled_circulation,
                          spike_count_fano, spontaneous_evoked_kl, time_reversal_asymmetry)
from .diagnostics.mcmc import (autocorrelation, effective_sample_size, ess_per_unit_time, ess_summary,
                               integrated_autocorr_time, split_rhat, time_to_typical_set)
from .diagnostics.trajectory import (PCAProjection, across_chain_spread, fano_factor, pca_landscape_grid,
                                     pca_projection)
from .theory import linear_circuit_matrices, linear_circuit_z_stationary

__all__ = [
    # theory
    "gaussian_posterior", "ula_stationary", "ula_stationary_eigen",
    "linear_sde_stationary", "euler_maruyama_stationary", "euler_stable_dt",
    "linear_circuit_matrices", "linear_circuit_z_stationary",
    # MCMC and trajectory diagnostics
    "autocorrelation", "integrated_autocorr_time", "effective_sample_size", "ess_per_unit_time", "ess_summary",
    "split_rhat", "time_to_typical_set", "fano_factor", "across_chain_spread",
    "PCAProjection", "pca_projection", "pca_landscape_grid",
    # circuits.diagnostics
    "ou_stationary_cov", "ou_lagged_cov", "ou_autocorrelation", "ou_integrated_autocorr_time", "ou_exact_ar1",
    "euler_maruyama_ar1", "ar1_stationary_cov", "ar1_lagged_cov", "ar1_integrated_autocorr_time", "ou_transient",
    "LinearFlux", "linear_flux_theory", "sampled_circulation", "pair_reversal_kl", "ReversalAsymmetry",
    "lagged_covariance", "time_reversal_asymmetry", "FluxField", "probability_flux_field",
    "AcrossTrial", "across_trial_moments", "overshoot_fraction", "Quenching", "quenching_curve",
    "NoiseCorrelations", "noise_correlations", "poisson_counts", "spike_count_fano", "poisson_fano_theory",
    "gaussian_kl", "gaussian_kl_null_bias", "SpontaneousEvoked", "spontaneous_evoked_kl",
    "aggregate_posterior_kl_linear",
]

# names the single-module version exposed by accident (its imports and its private check), kept one release
_DEPRECATED = {
    "_positive": ("circuits._checks", "positive"),
    "np": ("numpy", None), "scipy": ("scipy", None), "torch": ("torch", None), "warnings": ("warnings", None),
    "NamedTuple": ("typing", "NamedTuple"),
}


def __getattr__(name: str):
    """``circuits.analysis._positive``, ``.np``, ``.scipy``, ``.torch``, ``.warnings``, ``.NamedTuple``: deprecated."""
    if name not in _DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    module_name, attr = _DEPRECATED[name]
    new = module_name if attr is None else f"{module_name}.{attr}"
    warnings.warn(f"circuits.analysis.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)
