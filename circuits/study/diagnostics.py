"""The report's diagnostics section: the measurements of cortical-noise papers on every sampler row, side by side.

:func:`diagnostics_section` takes the posterior traces that ``run._posteriors`` returns (per row label:
``(z_trace (R, B, d), x)``, chains on B different test images) and their log-joint tuples (for the record
times), and computes per row on the stationary part of the chains (the second half, as ``posterior_summary``):

* **detailed balance** -- the within-chain fluctuations projected on their first two principal components
  (``analysis.pca_projection`` of the pooled fluctuations): circulation Q_12 (1/s) with its standard error
  across chains and z-score, rotation rate, time-reversal KL rate (``diagnostics.time_reversal_asymmetry``),
  and the binned probability flux for the figure.  Reversible samplers (ULA / the circuit with adiabatic error
  units and a fixed preconditioner) give Q_12 = 0 within error;
* **noise correlations** -- of the within-chain fluctuations (each chain one image): mean and mean |rho_ij|
  against the null spread, and the matrix for the figure;
* **Fano factor** of Poisson spike counts read out from the rectified value units (gain, window configurable;
  seeded), across the windows of each chain;
* **spontaneous vs evoked** -- KL(aggregate evoked || prior N(0, s_p^2 I)) by Gaussian moments with its null
  bias at the effective sample size (n / tau), the mean per-unit KL, the aggregate and the within-image
  ("quenched") variance relative to the prior variance.  The within-image variance is taken about each chain's
  own mean, whose removal biases it by the factor (R - tau)/(R - 1) (tau: integrated autocorrelation time in
  records, per unit); that factor is divided out (``within_reliable``: R >= 10 tau);
* **variability quenching and onset overshoot** -- only from an onset experiment (``onset_by_method``: per
  label, trials on one image started from prior draws, ``(t, z (R, S, d))``; :func:`onset_starts` makes the
  starts); without one the stationary quenching ratio above stands in and the curve is not drawn.

:func:`render_markdown` gives the section's table; figures: ``diagnostics_flux.png``,
``diagnostics_noise_correlations.png`` and, with onset traces, ``diagnostics_quenching.png``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import _checks, analysis


@dataclass
class DiagnosticsConfig:
    stationary_fraction: float = 0.5     # the last half of the records is treated as stationary
    rate_gain: float = 50.0              # Hz per unit of value-unit activity (rate = gain [z - threshold]^+)
    rate_threshold: float = 0.0
    count_window: float = 0.02           # s: spike-count window (10 records of the default 2 ms)
    seed: int = 0                        # Poisson read-out
    flux_bins: int = 8                   # per axis of the PC plane
    figures: bool = True


def _as_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


def _z_of(label: str, value) -> np.ndarray:
    z = value[0] if isinstance(value, (tuple, list)) else value
    z = _as_numpy(z)
    if z.ndim != 3 or z.shape[0] < 8 or z.shape[1] < 2 or z.shape[2] < 2:
        raise ValueError(f"trace of {label!r} must have shape (R>=8, B>=2 chains, d>=2), got {z.shape}")
    return z


def _dt_of(label: str, log_joints, dt_record) -> float:
    if log_joints is not None and label in log_joints:
        t = _as_numpy(log_joints[label][0] if isinstance(log_joints[label], (tuple, list)) else log_joints[label])
        if t.ndim == 1 and len(t) >= 2 and t[1] > t[0]:
            return float(t[1] - t[0])
    if dt_record is None:
        raise ValueError(f"no record times for {label!r}: pass log_joints_by_method (t first) or dt_record")
    return _checks.positive("dt_record", dt_record)


def onset_starts(model, n_trials: int, generator=None, like=None):
    """Spontaneous states for an onset experiment: n_trials prior draws z(0) ~ N(0, s_p^2 I) (the model's prior)."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 2:
        raise ValueError(f"n_trials must be an integer >= 2, got {n_trials!r}")
    return model.prior_sample(n_trials, generator=generator, like=like)


# ------------------------------------------------------------------------------------------- per row
def _pc_plane(fluct: np.ndarray) -> np.ndarray:
    """Top two principal directions of the pooled fluctuations (R, B, d) via ``analysis.pca_projection``. -> (2, d)."""
    stacked = fluct.reshape(-1, 1, fluct.shape[2])           # one long series: PCA of all fluctuations
    return analysis.pca_projection(stacked).directions[0]


def _row(z: np.ndarray, dt: float, prior_std: float, cfg: DiagnosticsConfig) -> tuple[dict, dict]:
    R = z.shape[0]
    zs = z[R - max(8, int(round(cfg.stationary_fraction * R))):]
    fluct = zs - zs.mean(0, keepdims=True)
    out = {"records_used": int(zs.shape[0]), "chains": int(zs.shape[1]), "units": int(zs.shape[2]), "dt_record_s": dt}
    fig = {}
    # detailed balance on the first two PCs
    directions = _pc_plane(fluct)
    coords = np.einsum("rbd,kd->rbk", fluct, directions)
    asym = analysis.time_reversal_asymmetry(coords, dt_record=dt, center="none")
    out["flux"] = {"circulation_12_per_s": float(asym.circulation[0, 1]),
                   "circulation_12_se": float(asym.circulation_se[0, 1]), "z_score": asym.max_abs_z,
                   "rotation_rate_per_s": asym.rotation_rate, "reversal_kl_per_s": asym.pair_kl_rate,
                   "significant": bool(asym.max_abs_z > 4)}
    fig["flux"] = analysis.probability_flux_field(coords, dt_record=dt, bins=cfg.flux_bins)
    # noise correlations
    nc = analysis.noise_correlations(zs, center="chain")
    out["noise_correlations"] = {"mean": nc.mean_offdiag, "mean_abs": nc.mean_abs_offdiag, "null_se": nc.null_se,
                                 "samples": nc.n}
    fig["corr"] = nc.corr
    # Fano through the Poisson read-out
    try:
        fano, counts = analysis.spike_count_fano(zs, dt, cfg.count_window, cfg.rate_gain, cfg.rate_threshold, cfg.seed)
        finite = np.isfinite(fano)
        out["fano"] = {"median": float(np.median(fano[finite])) if finite.any() else float("nan"),
                       "mean": float(np.mean(fano[finite])) if finite.any() else float("nan"),
                       "firing_fraction": float(finite.mean()), "mean_count": float(counts.mean()),
                       "windows_per_chain": int(counts.shape[0])}
    except ValueError as e:
        out["fano"] = {"error": str(e)}
    # spontaneous vs evoked
    Rs, Bs = zs.shape[:2]
    tau = analysis.integrated_autocorr_time(zs, chain_axis=1, min_length=0)        # (d,) records
    tau = np.where(np.isfinite(tau), np.clip(tau, 1.0, Rs / 2), Rs / 2)
    tau_med = float(np.median(tau))
    n = Rs * Bs
    se = analysis.spontaneous_evoked_kl(zs, prior_std=prior_std, n_eff=max(n / tau_med, 2.0))
    # within-chain variance about the chain's own mean: E[s^2] ~ var (R - tau) / (R - 1), undone per unit
    within_units = (fluct ** 2).sum((0, 1)) / (Bs * (Rs - tau))
    within = float(np.mean(within_units) / prior_std ** 2)
    out["spontaneous_evoked"] = {"kl": se.kl, "null_bias": se.null_bias, "kl_marginal": se.kl_marginal,
                                 "marginal_null_bias": se.marginal_null_bias, "aggregate_var_ratio": se.var_ratio,
                                 "within_image_var_ratio": within, "n_eff": se.n_eff, "tau_records": tau_med,
                                 "within_reliable": bool(tau_med * 10 <= Rs)}
    return out, fig


def _onset(label: str, value, prior_std: float, dt: float, cfg: DiagnosticsConfig) -> tuple[dict, object]:
    if isinstance(value, (tuple, list)):
        t, z = _as_numpy(value[0]), _as_numpy(value[1])
    else:
        z = _as_numpy(value)
        t = dt * np.arange(z.shape[0])
    if z.ndim != 3 or z.shape[1] < 2:
        raise ValueError(f"onset trace of {label!r} must have shape (R, S>=2 trials, d), got {z.shape}")
    q = analysis.quenching_curve(z, t - t[0], spontaneous_var=prior_std ** 2)
    fano_t = None
    try:
        fano, _ = analysis.spike_count_fano(z, float(t[1] - t[0]), cfg.count_window, cfg.rate_gain,
                                            cfg.rate_threshold, cfg.seed, axis=1)
        fano_t = float(np.nanmean(fano[0])), float(np.nanmean(fano[-1]))
    except ValueError:
        pass
    return {"trials": int(z.shape[1]), "final_var_ratio": q.final_ratio, "quench_time_s": q.quench_time,
            "overshoot": q.overshoot, "overshoot_time_s": q.overshoot_time, "mean_noise": q.mean_noise,
            "fano_first_window": fano_t[0] if fano_t else float("nan"),
            "fano_last_window": fano_t[1] if fano_t else float("nan")}, q


# ----------------------------------------------------------------------------------------- the section
def diagnostics_section(traces_by_method: dict, log_joints_by_method: dict | None = None, *, prior_std: float = 1.0,
                        onset_by_method: dict | None = None, out=None, dt_record: float | None = None,
                        config: DiagnosticsConfig | None = None) -> dict:
    """The diagnostics of every row (module docstring) -> a JSON-able dict; figures written to ``out`` (a folder).

    traces_by_method: label -> ``(z_trace (R, B, d), x)`` or z_trace (torch or numpy); log_joints_by_method:
    label -> ``(t (R,), ...)`` for the record spacing (else ``dt_record``); prior_std: the model's s_p;
    onset_by_method: label -> ``(t, z (R, S, d))`` of an onset experiment (optional).
    A row whose trace has non-finite values (a diverged chain) gets ``{"skipped": reason}`` instead.
    Returns ``{"rows": {label: {...}}, "config": ..., "figures": [...], "wall_s": ...}`` (JSON-able).
    """
    t0 = time.perf_counter()
    cfg = config or DiagnosticsConfig()
    if not isinstance(traces_by_method, dict) or not traces_by_method:
        raise ValueError("traces_by_method must be a non-empty dict: row label -> (z_trace (R, B, d), x)")
    prior_std = _checks.positive("prior_std", prior_std)
    if not 0 < cfg.stationary_fraction <= 1:
        raise ValueError(f"stationary_fraction must be in (0, 1], got {cfg.stationary_fraction}")
    _checks.positive("count_window", cfg.count_window)
    _checks.positive("rate_gain", cfg.rate_gain)
    zs = {label: _z_of(label, v) for label, v in traces_by_method.items()}
    dts = {label: _dt_of(label, log_joints_by_method, dt_record) for label in zs}
    unknown = [k for k in (onset_by_method or {}) if k not in zs]
    if unknown:
        raise ValueError(f"onset_by_method names rows without traces: {', '.join(map(repr, unknown))}")
    rows, figs, curves = {}, {}, {}
    for label, z in zs.items():
        if not np.all(np.isfinite(z)):              # a diverged chain is a result of its row, not an error here
            rows[label] = {"skipped": "non-finite values in the trace (the row diverged)"}
            continue
        rows[label], figs[label] = _row(z, dts[label], prior_std, cfg)
        if onset_by_method and label in onset_by_method:
            rows[label]["onset"], curves[label] = _onset(label, onset_by_method[label], prior_std, dts[label], cfg)
    section = {"rows": rows, "config": asdict(cfg), "prior_std": prior_std, "figures": []}
    if cfg.figures and out is not None:
        section["figures"] = _figures(Path(out), rows, figs, curves, prior_std)
    section["wall_s"] = time.perf_counter() - t0
    return section


# ------------------------------------------------------------------------------------------- figures
def _figures(out: Path, rows: dict, figs: dict, curves: dict, prior_std: float) -> list[str]:
    from .. import plots

    plt = plots.plt
    labels = list(figs)
    col = plots.colours(labels)
    names = []
    ncol = len(labels)
    fig, axes = plt.subplots(1, ncol, figsize=(3.6 * ncol, 3.6), squeeze=False)
    for ax, label in zip(axes[0], labels):
        f = figs[label]["flux"]
        centres = 0.5 * (f.edges[1:] + f.edges[:-1])
        ax.pcolormesh(f.edges, f.edges, f.density.T, cmap="Greys", shading="flat")
        X, Y = np.meshgrid(centres, centres, indexing="ij")
        ok = f.counts >= 30
        ax.quiver(X[ok], Y[ok], f.flux[..., 0][ok], f.flux[..., 1][ok], color=col[label], angles="xy")
        q = rows[label]["flux"]
        ax.set_title(f"{label}\nQ12 = {_f(q['circulation_12_per_s'])} ± {_f(q['circulation_12_se'], 2)} /s "
                     f"(z = {_f(q['z_score'], 2)})", fontsize=8)
        ax.set_xlabel("PC 1 of the fluctuations")
        ax.set_aspect("equal")
    axes[0, 0].set_ylabel("PC 2")
    fig.suptitle("probability flux J = p v on the first two PCs of the fluctuations (zero under detailed balance; "
                 "arrows: bins with >= 30 visits, scaled per panel)", fontsize=9)
    names.append(plots._save(fig, out / "diagnostics_flux.png").name)

    fig, axes = plt.subplots(1, ncol, figsize=(3.4 * ncol, 3.2), squeeze=False)
    for ax, label in zip(axes[0], labels):
        im = ax.imshow(figs[label]["corr"], vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("unit")
    axes[0, 0].set_ylabel("unit")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="noise correlation")
    names.append(plots._save(fig, out / "diagnostics_noise_correlations.png").name)

    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for i, (label, q) in enumerate(curves.items()):
            ax.plot(q.t, q.ratio, color=col[label], label=label, ls=("-", "--", ":", "-.")[i % 4])
            ax.fill_between(q.t, q.ratio - 2 * q.ratio_se, q.ratio + 2 * q.ratio_se, color=col[label], alpha=0.2)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xlabel("time after onset (s)")
        ax.set_ylabel(f"across-trial variance / prior variance ({prior_std:g}²)")
        ax.legend(fontsize=8)
        names.append(plots._save(fig, out / "diagnostics_quenching.png").name)
    return names


# ------------------------------------------------------------------------------------------ markdown
def _f(v, nd: int = 3) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:.{nd}g}"


def render_markdown(section: dict) -> str:
    """The section as markdown: one table of every row's diagnostics, a line per measure, the figures."""
    skipped = {k: r["skipped"] for k, r in section["rows"].items() if "skipped" in r}
    rows = {k: r for k, r in section["rows"].items() if "skipped" not in r}
    cfg = section["config"]
    if not rows:
        return "## Diagnostics\n\nNo row has finite traces: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "\n"
    head = "| | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows) + "\n"
    def line(name, fn):
        return f"| {name} | " + " | ".join(fn(r) for r in rows.values()) + " |\n"
    flux = lambda r: (f"{_f(r['flux']['circulation_12_per_s'])} ± {_f(r['flux']['circulation_12_se'], 2)} "  # noqa: E731
                      f"(z = {_f(r['flux']['z_score'], 2)})")
    table = head
    table += line("circulation Q₁₂ on PCs 1–2 (1/s)", flux)
    table += line("rotation rate (1/s)", lambda r: _f(r["flux"]["rotation_rate_per_s"]))
    table += line("time-reversal KL rate (nats/s)", lambda r: _f(r["flux"]["reversal_kl_per_s"]))
    table += line("noise correlation: mean / mean \\|ρ\\| (null se)", lambda r: (
        f"{_f(r['noise_correlations']['mean'], 2)} / {_f(r['noise_correlations']['mean_abs'], 2)} "
        f"({_f(r['noise_correlations']['null_se'], 1)})"))
    table += line(f"Fano factor, Poisson read-out (median; {cfg['count_window'] * 1e3:g} ms)",
                  lambda r: _f(r["fano"].get("median")))
    table += line("KL(evoked ‖ prior), nats (null bias)", lambda r: (
        f"{_f(r['spontaneous_evoked']['kl'])} ({_f(r['spontaneous_evoked']['null_bias'], 2)})"))
    table += line("per-unit KL, nats", lambda r: _f(r["spontaneous_evoked"]["kl_marginal"]))
    table += line("variance / prior variance: aggregate, within image", lambda r: (
        f"{_f(r['spontaneous_evoked']['aggregate_var_ratio'])}, {_f(r['spontaneous_evoked']['within_image_var_ratio'])}"))
    if any("onset" in r for r in rows.values()):
        table += line("onset: final variance ratio, quench time (s)", lambda r: (
            f"{_f(r['onset']['final_var_ratio'])}, {_f(r['onset']['quench_time_s'])}" if "onset" in r else "–"))
        table += line("onset overshoot of the mean (noise floor)", lambda r: (
            f"{_f(r['onset']['overshoot'], 2)} ({_f(r['onset']['mean_noise'], 1)})" if "onset" in r else "–"))
        table += line("onset Fano factor: first → last window", lambda r: (
            f"{_f(r['onset']['fano_first_window'])} → {_f(r['onset']['fano_last_window'])}" if "onset" in r else "–"))
    notes = (
        f"Stationary part: the last {cfg['stationary_fraction']:g} of each chain; fluctuations about each chain's own "
        "mean (one image per chain). Circulation: (C(Δ) − C(Δ)ᵀ)/2Δ of the fluctuations on their first two principal "
        "components, ± se across chains; zero under detailed balance (|z| > 4: a significant violation). Fano: Poisson "
        f"counts of rate {cfg['rate_gain']:g} Hz × [z − {cfg['rate_threshold']:g}]⁺ (1 for a constant rate). "
        "KL(aggregate evoked ‖ prior): Berkes et al. 2011's test, Gaussian moments; the null bias is its expectation "
        "for samples of the prior itself at the effective sample size (with B images in d dimensions the between-image "
        "covariance has rank < B: compare rows rather than reading the value against 0). "
        + ("" if any("onset" in r for r in rows.values()) else
           "No onset experiment was run: the within-image variance ratio is the stationary quenching; the quenching "
           "curve and onset overshoot need trials started from the prior. ")
        + "See docs/diagnostics.md.")
    notes += "".join(f" {k}: not measured ({v})." for k, v in skipped.items())
    figs = "".join(f"- `{f}`\n" for f in section.get("figures", []))
    return "## Diagnostics\n\n" + table + "\n" + notes + "\n" + ("\n" + figs if figs else "")
