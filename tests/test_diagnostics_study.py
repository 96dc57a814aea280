"""The report's diagnostics section (circuits.study.diagnostics) on synthetic traces of the default size with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from circuits.analysis import ou_exact_ar1, ou_transient
from circuits.study.diagnostics import DiagnosticsConfig, diagnostics_section, onset_starts, render_markdown
from helpers_diagnostics import simulate_ar1

R, B, D, DT = 200, 16, 40, 2e-3          # the default run: 400 steps recorded every 2, 16 chains, latent dim 40


def drift(rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """A d-dim OU whose two largest-variance directions (units 0, 1: variance 4) rotate at ``rotation`` rad/s;
    the other units are reversible with variance 0.25.  Relaxation rate 50/s (tau_z-like)."""
    gamma = 50.0
    A = -gamma * np.eye(D)
    A[0, 1], A[1, 0] = -rotation, rotation
    var = np.r_[4.0, 4.0, np.full(D - 2, 0.25)]
    return A, np.diag(np.sqrt(2 * gamma * var))


def traces(rotation: float, seed: int, offsets: bool = True):
    A, Bm = drift(rotation)
    F, Q = ou_exact_ar1(A, Bm, DT)
    z = simulate_ar1(F, Q, R, B, seed)
    if offsets:                                       # one image per chain: a per-chain posterior mean
        z = z + np.random.default_rng(seed + 1).normal(0, 0.5, (1, B, D))
    t = DT * np.arange(R)
    return (torch.as_tensor(z, dtype=torch.float32), None), (t, np.zeros((R, B)), np.zeros(B))


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    tr, lj = {}, {}
    for label, rot, seed in (("discrete", 0.0, 0), ("circuit", 60.0, 1)):
        tr[label], lj[label] = traces(rot, seed)
    return diagnostics_section(tr, lj, prior_std=1.0, out=out), out


def test_flux_is_flagged_only_for_the_rotating_row(section):
    sec, _ = section
    rev, rot = sec["rows"]["discrete"]["flux"], sec["rows"]["circuit"]["flux"]
    assert not rev["significant"] and rev["z_score"] < 4
    assert rot["significant"] and rot["z_score"] > 6
    # sampled theory on the PC plane (units 0, 1; Sigma = 4 I there): |Q_12| = 4 |e^{A dt} sin| / dt ~ 4 x 60 e^{-50 dt}
    A, _ = drift(60.0)
    F = scipy.linalg.expm(DT * A[:2, :2])
    expected = 4 * abs(F[1, 0] - F[0, 1]) / (2 * DT)
    assert abs(abs(rot["circulation_12_per_s"]) - expected) < 4 * rot["circulation_12_se"]
    assert abs(rev["circulation_12_per_s"]) < 4 * rev["circulation_12_se"]


def test_noise_correlations_fano_and_spontaneous_rows(section):
    sec, _ = section
    row = sec["rows"]["discrete"]
    nc = row["noise_correlations"]
    assert abs(nc["mean"]) < 3 * nc["null_se"]              # independent units, per-chain offsets removed
    assert row["fano"]["median"] > 1.0                      # a fluctuating rate: Fano above Poisson
    se = row["spontaneous_evoked"]
    var = np.r_[4.0, 4.0, np.full(D - 2, 0.25)]
    assert se["within_image_var_ratio"] == pytest.approx(var.mean(), rel=0.1)
    assert se["aggregate_var_ratio"] == pytest.approx(var.mean() + 0.25, rel=0.15)
    assert se["kl"] > 5 * se["null_bias"]                   # evoked law far from the prior N(0, I)


def test_evoked_equal_to_the_prior_gives_kl_near_the_null_bias():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((R, B, D))                      # independent prior draws: n_eff = n
    sec = diagnostics_section({"prior": z}, dt_record=DT, config=DiagnosticsConfig(figures=False))
    se = sec["rows"]["prior"]["spontaneous_evoked"]
    assert se["kl"] < 1.5 * se["null_bias"] and se["kl"] > 0.5 * se["null_bias"]
    assert abs(se["aggregate_var_ratio"] - 1) < 0.05


def test_onset_experiment_gives_the_quenching_curve_and_figures(section, tmp_path):
    A, Bm = drift(0.0)
    F, Q = ou_exact_ar1(A, Bm, DT)
    S = 64
    z0 = onset_starts_numpy(S, seed=5)
    z = simulate_ar1(F, Q, 100, S, seed=6, x0=z0)
    t = DT * np.arange(100)
    tr, lj = traces(0.0, 0)
    sec = diagnostics_section({"discrete": tr}, {"discrete": lj}, prior_std=1.0, onset_by_method={"discrete": (t, z)},
                              out=tmp_path)
    onset = sec["rows"]["discrete"]["onset"]
    _, covs = ou_transient(A, Bm, t, np.zeros(D), np.eye(D))
    theory = np.diagonal(covs, axis1=1, axis2=2)[-25:].mean()
    assert onset["final_var_ratio"] == pytest.approx(theory, rel=0.1)
    assert set(sec["figures"]) == {"diagnostics_flux.png", "diagnostics_noise_correlations.png",
                                   "diagnostics_quenching.png"}
    assert all((tmp_path / f).stat().st_size > 1000 for f in sec["figures"])
    md = render_markdown(sec)
    assert md.startswith("## Diagnostics") and "onset overshoot" in md and "| discrete |" in md


def onset_starts_numpy(S, seed):
    return np.random.default_rng(seed).standard_normal((S, D))


def test_onset_starts_draw_from_the_model_prior():
    from neuro_lpc import GaussianLikelihood, GenerativeModel

    model = GenerativeModel(decoder=torch.nn.Linear(3, 5), likelihood=GaussianLikelihood(sigma=0.5), prior_std=2.0)
    z = onset_starts(model, 4000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4000, 3) and abs(float(z.std()) - 2.0) < 0.05
    with pytest.raises(ValueError, match="n_trials"):
        onset_starts(model, 1)


def test_markdown_table_without_onset(section):
    sec, out = section
    md = render_markdown(sec)
    assert "| discrete | circuit |" in md and "No onset experiment" in md
    assert sec["figures"] == ["diagnostics_flux.png", "diagnostics_noise_correlations.png"]


def test_section_is_json_and_a_diverged_row_is_skipped(section):
    import json

    sec, _ = section
    json.dumps(sec)
    z = np.random.default_rng(0).standard_normal((20, 4, 3))
    bad = z.copy()
    bad[5, 1, 0] = np.nan
    two = diagnostics_section({"ok": z, "diverged": bad}, dt_record=1.0, config=DiagnosticsConfig(figures=False))
    assert "skipped" in two["rows"]["diverged"] and "flux" in two["rows"]["ok"]
    assert "diverged: not measured" in render_markdown(two)


@pytest.mark.parametrize("args, kw, match", [
    (({},), {}, "non-empty dict"),
    (({"a": np.zeros((5, 4, 3))},), {"dt_record": 1.0}, r"R>=8"),
    (({"a": np.ones((20, 4, 3))},), {}, "record times"),
    (({"a": np.random.rand(20, 4, 3)},), {"dt_record": 1.0, "onset_by_method": {"b": None}}, "onset_by_method"),
    (({"a": np.random.rand(20, 4, 3)},), {"dt_record": 1.0, "prior_std": -1}, "prior_std"),
    (({"a": np.random.rand(20, 4, 3)},), {"dt_record": 1.0, "config": DiagnosticsConfig(count_window=0)}, "count_window"),
])
def test_bad_input_is_one_line_value_error(args, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        diagnostics_section(*args, **kw)
    assert "\n" not in str(e.value)
