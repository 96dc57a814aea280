"""Variability quenching and onset transients: across-trial statistics over time after stimulus onset.

An onset experiment runs S trials on one stimulus x from spontaneous states (prior draws, z(0) ~ N(0, s_p^2 I))
and records z (R, S, d).  At each record, across trials (ddof = 1),

    m_i(t) = mean_s z_{s,i}(t),      v_i(t) = var_s z_{s,i}(t),

and the quenching curve is the unit-averaged ratio  q(t) = mean_i v_i(t) / v_i^spont  (v^spont: the
spontaneous variance, e.g. s_p^2, or the variance at onset): a sampling-based circuit moves from the prior to
the narrower posterior, so q falls from 1 to  mean_i (posterior var_i) / s_p^2  (Orban et al. 2016, Neuron
92: 530; Churchland et al. 2010, Nat. Neurosci. 13: 369).

Onset overshoot: with Delta_i = m_i(final) - m_i(0),  overshoot = sum_i max_t [sign(Delta_i)(m_i(t) - m_i(final))]^+
/ sum_i |Delta_i|  -- the fraction by which the mean response passes its final level (0 for a monotone
approach; an underdamped value/error loop overshoots).  For a linear circuit the exact curves are
``ou_transient`` (mean(t) = mu + e^{At}(m0 - mu), cov(t) = Sigma + e^{At}(S0 - Sigma)e^{A^T t}), and
:func:`overshoot_fraction` applied to those means is the exact overshoot.
numpy float64 out; torch accepted.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _checks as ck

__all__ = ["AcrossTrial", "across_trial_moments", "overshoot_fraction", "Quenching", "quenching_curve"]


class AcrossTrial(NamedTuple):
    mean: np.ndarray       # (R, d)
    var: np.ndarray        # (R, d) ddof = 1
    mean_se: np.ndarray    # (R, d) sqrt(var / S)
    var_se: np.ndarray     # (R, d) var sqrt(2 / (S - 1)) (Gaussian)


def _trials(z_trace) -> np.ndarray:
    z = ck.array("z_trace", z_trace, (2, 3), min_len=2)
    z = z[:, :, None] if z.ndim == 2 else z
    if z.shape[1] < 2:
        raise ValueError(f"z_trace must have shape (R, S>=2 trials, d), got {z.shape}")
    return z


def across_trial_moments(z_trace) -> AcrossTrial:
    """Across-trial mean and variance at each record of z_trace (R, S, d) (or (R, S)), with standard errors."""
    z = _trials(z_trace)
    S = z.shape[1]
    mean, var = z.mean(1), z.var(1, ddof=1)
    return AcrossTrial(mean, var, np.sqrt(var / S), var * np.sqrt(2 / (S - 1)))


def _final_slice(R: int, final_fraction: float) -> slice:
    if not 0 < final_fraction <= 1:
        raise ValueError(f"final_fraction must be in (0, 1], got {final_fraction}")
    return slice(R - max(1, int(round(final_fraction * R))), R)


def overshoot_fraction(means, final_fraction: float = 0.25, final=None) -> tuple[float, int]:
    """(overshoot, record of the peak) of mean responses means (R, d) (module docstring).

    ``final``: the final level (d,) (default: the average over the last ``final_fraction`` of records).
    Returns (0, 0) when the mean does not move (sum |Delta| = 0).
    """
    m = ck.array("means", means, (1, 2), min_len=2)
    m = m[:, None] if m.ndim == 1 else m
    final = m[_final_slice(len(m), final_fraction)].mean(0) if final is None else ck.array("final", final, 1)
    if final.shape != m.shape[1:]:
        raise ValueError(f"final must have shape {m.shape[1:]}, got {final.shape}")
    delta = final - m[0]
    total = float(np.abs(delta).sum())
    if total == 0:
        return 0.0, 0
    past = np.sign(delta) * (m - final)                    # > 0 where the mean is beyond its final level
    per_record = np.clip(past, 0, None)
    peak = per_record.max(0)                               # (d,)
    record = int(np.argmax(per_record.sum(1)))
    return float(peak.sum() / total), record


class Quenching(NamedTuple):
    t: np.ndarray              # (R,)
    variance: np.ndarray       # (R,) mean_i v_i(t)
    ratio: np.ndarray          # (R,) mean_i v_i(t) / v_i^spont
    ratio_se: np.ndarray       # (R,) its standard error (Gaussian, units treated as independent)
    final_ratio: float         # ratio averaged over the last final_fraction of records
    quench_time: float         # first t with ratio below halfway between ratio(0) and final_ratio (NaN: never)
    overshoot: float           # onset overshoot of the mean (overshoot_fraction)
    overshoot_time: float      # t of its peak
    mean_noise: float          # typical standard error of a trial-averaged mean (the overshoot's noise floor)


def quenching_curve(z_trace, t=None, spontaneous_var=None, final_fraction: float = 0.25) -> Quenching:
    """Variability quenching and onset overshoot of an onset experiment z_trace (R, S, d) (module docstring).

    ``t`` (R,): record times (default 0..R-1).  ``spontaneous_var``: the reference variance, a number (e.g.
    s_p^2) or per unit (d,); default the across-trial variance at the first record (the onset state).
    """
    z = _trials(z_trace)
    R, S, d = z.shape
    t = np.arange(R, dtype=float) if t is None else ck.array("t", t, 1)
    if t.shape != (R,):
        raise ValueError(f"t must have shape (R={R},), got {t.shape}")
    mom = across_trial_moments(z)
    if spontaneous_var is None:
        ref = mom.var[0]
    else:
        ref = ck.array("spontaneous_var", spontaneous_var, (0, 1))
        ref = np.broadcast_to(ref, (d,)) if ref.ndim == 0 or ref.shape == (1,) else ref
        if ref.shape != (d,):
            raise ValueError(f"spontaneous_var must be a number or have shape (d={d},), got {ref.shape}")
    if np.any(ref <= 0):
        raise ValueError("the spontaneous variance must be positive in every unit")
    ratio_units = mom.var / ref
    ratio = ratio_units.mean(1)
    ratio_se = np.sqrt((ratio_units ** 2).sum(1) * 2 / (S - 1)) / d
    fin = _final_slice(R, final_fraction)
    final_ratio = float(ratio[fin].mean())
    half = 0.5 * (ratio[0] + final_ratio)
    below = np.nonzero(ratio <= half)[0] if ratio[0] > final_ratio else np.array([], int)
    quench_time = float(t[below[0]]) if len(below) else float("nan")
    over, rec = overshoot_fraction(mom.mean, final_fraction)
    return Quenching(t, mom.var.mean(1), ratio, ratio_se, final_ratio, quench_time, over, float(t[rec]),
                     float(np.median(mom.mean_se[fin])))
