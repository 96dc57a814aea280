"""The circuit-vs-discrete LPC study behind ``sims/run_circuit.py`` (the project's main job).

On one data set (the embedded animal-mnist by default), one row per method (``methods.default_methods``):
  1. training (``train``): discrete LPC (or a model loaded with --model), learning through the circuit under the
     chosen noise, noise-free PC (LPC at temperature 0), a VAE with the same optimiser steps and a VAE with the
     same wall time as discrete LPC; each row's optimiser steps, gradient evaluations and wall time;
  2. posterior comparison (``posterior``) on the discrete-LPC model, the same test images and warm starts:
     discrete LPC's sampler vs the circuit; log p(x, z), reconstruction error, chain spread, ESS where reliable;
  3. sample quality (``quality``): FID + KID (Inception by default, also on CPU), density, coverage, collapse flags;
  4. statuses, verdict and report (``report``): report.md (first lines: the table, then the verdict), report.json
     (with the stage times), figures, HDF5 recordings (``run``).

Time axes: the circuit's time is physical (seconds); a discrete chain with step gamma is placed on the same
axis by t = step * gamma * tau_z (the adiabatic limit: one discrete step = one EM step of dt = gamma tau_z).
"""
from .config import DEFAULT_NOISE, StudyConfig, StudyError, check_inputs, resolve_noise
from .methods import Method, StudyContext, default_methods
from .posterior import (PosteriorInputs, PosteriorRun, circuit_config_for, circuit_posterior, discrete_posterior,
                        posterior_summary, preconditioner_info)
from .quality import choose_feature, sample_quality
from .report import COLLAPSED, DIVERGED, LEARNED, NOT_RUN, STATUSES, add_row, decide_status, render_markdown, verdict
from .run import build_parser, main, run_study
from .train import (NotRun, Trained, fit_cached, train_circuit, train_config, train_discrete, train_pc, train_vae,
                    train_vae_same_wall)

__all__ = [
    "DEFAULT_NOISE", "StudyConfig", "StudyError", "check_inputs", "resolve_noise", "Method", "StudyContext",
    "default_methods", "PosteriorInputs", "PosteriorRun", "circuit_config_for", "circuit_posterior", "discrete_posterior",
    "posterior_summary", "preconditioner_info", "choose_feature", "sample_quality", "COLLAPSED", "DIVERGED", "LEARNED",
    "NOT_RUN", "STATUSES", "add_row", "decide_status", "render_markdown", "verdict", "build_parser", "main", "run_study",
    "NotRun", "Trained", "fit_cached", "train_circuit", "train_config", "train_discrete", "train_pc", "train_vae",
    "train_vae_same_wall",
]
