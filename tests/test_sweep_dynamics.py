"""The ``dynamics`` sweep (circuits/sweep_dynamics.py; issue 16 parts 2 and 4).

Oracles written here from the formulas (numpy), not from neuro_lpc.theory: the Euler AR(1) of an overdamped mode
(IAT (1 + rho) / (1 - rho), rho = 1 - h lambda), BAOAB's 2 x 2 recursion of one mode (its autocorrelation summed
as a series), the entropy production of the rotating 2-D OU (2 w^2 / gamma) and of the non-reversible drift
(tr(J^T J P) with G = I, T = 1), and the posterior precision of a linear-Gaussian decoder (W^T W / sigma^2 + I).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import circuits.plots
import circuits.sweep as sweep
import circuits.sweep_dynamics as sd
from neuro_lpc import GaussianLikelihood, GenerativeModel

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def linear():
    return {r["label"]: r for r in sd.linear_rows(quick=False)}, sd.linear_precision()


def _iat_series(F, S, u, n=200_000):
    """1 + 2 sum_k u F^k S u / (u S u), summed until the terms vanish (an independent oracle of the exact IAT)."""
    total, v = 0.0, S @ u
    for _ in range(n):
        v = F @ v
        term = float(u @ v)
        total += term
        if abs(term) < 1e-13 * float(u @ S @ u):
            break
    return 1 + 2 * total / float(u @ S @ u)


def _baoab_mode(lam, h, gamma):
    """BAOAB (B A O A B, Leimkuhler & Matthews 2013) of one mode z' = v, v' = -lam z - gamma v + noise, M = T = 1:
    its 2 x 2 matrix and noise covariance, written out step by step."""
    c = math.exp(-gamma * h)
    B = np.array([[1.0, 0.0], [-h / 2 * lam, 1.0]])
    A = np.array([[1.0, h / 2], [0.0, 1.0]])
    O = np.diag([1.0, c])
    F = B @ A @ O @ A @ B
    N = (B @ A) @ np.diag([0.0, 1 - c * c]) @ (B @ A).T
    S = np.eye(2)
    for _ in range(100_000):          # stationary covariance by fixed-point iteration
        S_new = F @ S @ F.T + N
        if np.abs(S_new - S).max() < 1e-15:
            break
        S = S_new
    return F, S


def test_overdamped_row_matches_the_euler_ar1_closed_form(linear):
    rows, P = linear
    lam = np.linalg.eigvalsh(P)
    r = rows["overdamped"]
    h = sd.STABILITY_FRACTION * 2 / lam[-1]
    rho = 1 - h * lam[0]
    assert r["step"] == pytest.approx(h, rel=1e-12)
    assert r["iat_slowest"] == pytest.approx((1 + rho) / (1 - rho), rel=1e-6)
    assert r["ess_per_grad"] == pytest.approx((1 - rho) / (1 + rho), rel=1e-6)
    assert r["relaxation"] == pytest.approx(1 / (1 - max(abs(1 - h * lam))), rel=1e-6)
    assert r["speedup"] == 1.0


def test_underdamped_rows_match_an_independent_baoab_mode_and_their_speedup(linear):
    """The slowest mode of BAOAB on N(0, P^-1) with M = I decouples (P's eigenbasis): a 2 x 2 recursion.  The
    speed-up column is the overdamped Euler IAT over it -- >= 10x at condition 1000 (the issue's goal)."""
    rows, P = linear
    lam = np.linalg.eigvalsh(P)
    h_o = sd.STABILITY_FRACTION * 2 / lam[-1]
    iat_o = (2 - h_o * lam[0]) / (h_o * lam[0])
    for ratio in sd.FRICTIONS:
        r = rows[f"underdamped {ratio:g} gamma_c"]
        h = sd.STABILITY_FRACTION * 2 / math.sqrt(lam[-1])
        gamma = ratio * 2 * math.sqrt(lam[0])
        assert (r["step"], r["friction"]) == pytest.approx((h, gamma), rel=1e-12)
        F, S = _baoab_mode(lam[0], h, gamma)
        iat = _iat_series(F, S, np.array([1.0, 0.0]))
        assert r["iat_slowest"] == pytest.approx(iat, rel=1e-6)
        assert r["speedup"] == pytest.approx(iat_o / iat, rel=1e-6)
        assert S[0, 0] == pytest.approx(1 / lam[0], rel=1e-9) and r["zcov_max_rel_error"] < 1e-8  # BAOAB: exact z
    assert rows["underdamped 1 gamma_c"]["speedup"] >= 10
    # friction sweeps the strength: lighter damping -> shorter IAT of the slowest coordinate (oscillation)
    iats = [rows[f"underdamped {f:g} gamma_c"]["iat_slowest"] for f in sd.FRICTIONS]
    assert iats == sorted(iats)


def test_small_step_limit_gives_the_sde_decay_rate():
    """h -> 0: the overdamped slowest-mode IAT in time units -> 2 / lambda_min (one exponential, rate lambda_min)."""
    P = sd.linear_precision(100.0, 4, seed=1)
    r = sd.linear_row(sd.family_settings(True)[0], P, fraction=1e-3)
    assert r["iat_slowest"] * r["step"] == pytest.approx(2 / np.linalg.eigvalsh(P)[0], rel=1e-3)
    assert r["ess_per_time"] == pytest.approx(1 / (r["iat_slowest"] * r["step"]))


def test_entropy_production_columns(linear):
    """Overdamped: 0.  Non-reversible (G = I, T = 1): tr(J^T J P), so it grows as skew_scale^2.  Underdamped: 0
    with v odd under time reversal (the definition used), infinite when v is treated as even (z has no noise)."""
    from neuro_lpc.dynamics import optimal_skew

    rows, P = linear
    assert rows["overdamped"]["entropy_production_rate"] == pytest.approx(0, abs=1e-9)
    assert rows["overdamped"]["z_pair_kl_per_step"] == pytest.approx(0, abs=1e-9)
    J1 = optimal_skew(torch.as_tensor(P)).numpy()
    for s in sd.SCALES:
        r = rows[f"nonreversible {s:g} J_opt"]
        want = float(np.trace((s * J1).T @ (s * J1) @ P))
        assert r["entropy_production_rate"] == pytest.approx(want, rel=1e-6)
        assert r["entropy_production_all_even"] == pytest.approx(want, rel=1e-6)   # no odd coordinate
        assert r["entropy_production_per_grad"] == pytest.approx(want * r["step"], rel=1e-9)
        assert r["z_pair_kl_per_step"] > 0
    for f in sd.FRICTIONS:
        r = rows[f"underdamped {f:g} gamma_c"]
        assert r["entropy_production_rate"] == pytest.approx(0, abs=1e-9)
        assert r["entropy_production_all_even"] == math.inf
        assert r["z_pair_kl_per_step"] == pytest.approx(0, abs=1e-9)


def test_entropy_production_of_the_rotating_ou_and_parity():
    """dX = (-g I + w R) X dt + sqrt(2 g) dW (R the 90-degree rotation): e_p = 2 w^2 / g with both coordinates
    even; declaring one coordinate odd changes the answer (the parity option is not ignored)."""
    g, w = 0.7, 1.3
    A = np.array([[-g, -w], [w, -g]])
    D = 2 * g * np.eye(2)
    assert sd.entropy_production(A, D) == pytest.approx(2 * w * w / g, rel=1e-9)
    assert sd.entropy_production(-g * np.eye(2), D) == pytest.approx(0, abs=1e-12)
    assert sd.entropy_production(A, D, parity=[1, -1]) != pytest.approx(2 * w * w / g, rel=1e-3)


@pytest.mark.parametrize("family", ["overdamped", "nonreversible", "underdamped"])
def test_stable_step_is_each_familys_own_bound(family):
    """Just below the bound the recursion is stable, just above it is not (spectral radius of F from the family's
    matrices, written here)."""
    from neuro_lpc.dynamics import optimal_skew

    P = sd.linear_precision(50.0, 4, seed=2)
    d = len(P)
    J = 0.3 * optimal_skew(torch.as_tensor(P)).numpy() if family == "nonreversible" else np.zeros((d, d))
    hb = sd.stable_step(family, P, J)

    def radius(h):
        if family != "underdamped":
            F = np.eye(d) - h * (np.eye(d) + J) @ P
        else:
            I, Z = np.eye(d), np.zeros((d, d))
            B, A = np.block([[I, Z], [-h / 2 * P, I]]), np.block([[I, h / 2 * I], [Z, I]])
            F = B @ A @ np.block([[I, Z], [Z, math.exp(-h) * I]]) @ A @ B
        return np.abs(np.linalg.eigvals(F)).max()

    assert radius(0.99 * hb) < 1 < radius(1.01 * hb)


def test_nonreversible_strength_interpolates_the_decay_rate(linear):
    """J = s J_opt: the slowest rate min Re eig((I + J) P) rises from lambda_min (s = 0) towards tr(P)/d (s = 1,
    Lelievre, Nier & Pavliotis 2013) with s; at s = 1 it equals tr(P)/d."""
    rows, P = linear
    lam = np.linalg.eigvalsh(P)
    rates = [rows[f"nonreversible {s:g} J_opt"]["decay_rate"] for s in sd.SCALES]
    assert lam[0] < rates[0] < rates[1] < rates[2] < lam.mean()
    one = sd.linear_row(dict(family="nonreversible", label="x", skew_scale=1.0, friction_ratio=math.nan), P)
    assert one["decay_rate"] == pytest.approx(lam.mean(), rel=1e-6)


# ------------------------------------------------------------------------------------------ decoder ----

def _linear_model(seed=0, n=12, d=3, sigma=0.5):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.zero_()
    model = GenerativeModel(dec, GaussianLikelihood(sigma).double())
    return model, W.numpy(), float(model.likelihood.sigma)


def test_posterior_precisions_of_a_linear_decoder():
    model, W, sigma = _linear_model()
    x = torch.randn(4, 12, dtype=torch.float64)
    z = torch.randn(4, 3, dtype=torch.float64)
    P = sd.posterior_precisions(model, x, z)
    want = W.T @ W / sigma**2 + np.eye(3)
    assert P.shape == (4, 3, 3)
    np.testing.assert_allclose(P, np.broadcast_to(want, P.shape), rtol=1e-9)


@pytest.mark.slow
def test_decoder_rows_on_a_linear_decoder_match_the_closed_form():
    """On a linear-Gaussian decoder the Laplace approximation is exact: the decoder rows' Laplace IAT equals the
    linear rows' closed form on the same P, and the measured IAT (chains) agrees within 25%."""
    from types import SimpleNamespace

    model, W, sigma = _linear_model()
    x = torch.randn(8, 12, dtype=torch.float64)
    z0 = torch.zeros(8, 3, dtype=torch.float64)
    cfg = SimpleNamespace(quick=True, dyn_steps=20000, record_every=1, seed=0)
    rows = {r["label"]: r for r in sd.decoder_rows(model, x, z0, cfg, log=lambda s: None)}
    P = W.T @ W / sigma**2 + np.eye(3)
    for label, r in rows.items():
        if r["family"] == "nonreversible":
            continue   # its J is the batch-mean optimal skew: the same P here, but skip the float32 J rounding
        lin = sd.linear_row({k: r[k] for k in ("family", "label", "skew_scale", "friction_ratio")}, P)
        assert r["iat_slowest_laplace"] == pytest.approx(lin["iat_slowest"], rel=1e-6), label
        assert r["circuit_iat_laplace"] == pytest.approx(lin["circuit_iat"], rel=1e-6), label
        assert r["iat_slowest"] == pytest.approx(lin["iat_slowest"], rel=0.25), label


def test_learning_settings_follow_the_best_decoder_rows():
    """One training per family, at the step (and friction / skew norm) of that family's fastest stable decoder
    row; a random skew of the same spectral norm for the non-reversible family; diverged rows are skipped."""
    rows = [dict(family="overdamped", label="o", step=1e-4, speedup_laplace=1.0),
            dict(family="nonreversible", label="n1", step=2e-4, speedup_laplace=3.0, skew_norm=5.0),
            dict(family="nonreversible", label="n2", step=3e-4, speedup_laplace=9.0, skew_norm=7.0),
            dict(family="underdamped", label="u1", step=1e-2, speedup_laplace=50.0, friction=2.0),
            dict(family="underdamped", label="u2", step=1e-2, speedup_laplace=80.0, friction=1.0, diverged=True)]
    got = {s["family"]: s for s in sd.learning_settings(rows)}
    assert got["overdamped"]["train"] == dict(dynamics="overdamped", step_size=1e-4, precondition=None)
    assert got["nonreversible"]["train"] == dict(dynamics="nonreversible", step_size=3e-4, precondition=None,
                                                 skew="random", skew_scale=7.0)
    assert got["underdamped"]["train"] == dict(dynamics="underdamped", step_size=1e-2, precondition=None,
                                               friction=2.0, mass=1.0)


def test_quick_and_full_settings():
    quick, full = sd.family_settings(True), sd.family_settings(False)
    assert [r["family"] for r in quick] == ["overdamped", "nonreversible", "underdamped"]
    assert len(full) == 1 + len(sd.SCALES) + len(sd.FRICTIONS)


# ------------------------------------------------------------------------------------------ the CLI ----

@pytest.mark.parametrize("argv,match", [
    (["--seeds", "0"], "seeds"),
    (["--seeds", "11"], "seeds"),
    (["--dyn-steps", "50"], "dyn_steps (--dyn-steps)"),
    (["--dyn-steps", "two"], "invalid int value"),
    (["--sweep", "dynamic"], "unknown sweep"),
])
def test_sweep_cli_bad_input_is_one_line(argv, match, tmp_path, capsys):
    try:
        code = sweep.main(["--out", str(tmp_path / "o"), *argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_dynamics_flags_reach_the_sweep(tmp_path, monkeypatch):
    """--seeds sets the trainings per family; --dyn-steps the length of every decoder chain (--quick caps it)."""
    cfg = sweep.prepare(["--out", str(tmp_path / "a"), "--sweep", "dynamics", "--train", "--seeds", "3",
                         "--dyn-steps", "700"])
    assert (cfg.sweeps, cfg.seeds, cfg.dyn_steps, cfg.train) == (("dynamics",), 3, 700, True)
    calls = []
    monkeypatch.setattr(sd, "learn_row", lambda s, seed, *a: (calls.append((s["family"], seed)) or
                                                              (dict(family=s["family"], seed=seed), None)))
    monkeypatch.setattr(sd, "score_samples", lambda *a: {"fd": 0.0, "_samples": torch.zeros(1, 1, 2, 2)})
    lengths = []

    def fake_decoder_rows(model, x, z0, c, log):
        lengths.append(c.dyn_steps)
        return [dict(family=f, label=f, step=1e-3, speedup_laplace=1.0, skew_norm=1.0, friction=1.0)
                for f in ("overdamped", "nonreversible", "underdamped")]

    monkeypatch.setattr(sd, "decoder_rows", fake_decoder_rows)
    monkeypatch.setattr(sd, "plot_tradeoff", lambda *a: None)
    monkeypatch.setattr(circuits.plots, "plot_sample_grids", lambda grids, path: None)
    monkeypatch.setattr(sd, "linear_rows", lambda q: [dict(family="overdamped", label="o", ess_per_grad=1.0,
                                                           entropy_production_rate=0.0)])
    out = tmp_path / "a"
    sd.run_dynamics_sweep(cfg, None, None, None, out, "cpu", log=lambda s: None)
    assert calls == [(f, s) for s in (0, 1, 2) for f in ("overdamped", "nonreversible", "underdamped")]
    assert lengths == [700]
    assert (out / "sweep_dynamics.csv").is_file() and (out / "sweep_dynamics.md").is_file()
    quick = sweep.prepare(["--out", str(tmp_path / "b"), "--quick", "--dyn-steps", "5000"])
    assert quick.dyn_steps == 5000      # --quick caps it when the sweep runs (run_sweeps), not when parsed


def test_circuit_form_columns_match_the_continuous_time_closed_forms(linear):
    """Continuous time at equal fastest rate: overdamped IAT 2 / lambda_min in units of 1 / lambda_max, i.e. 2 kappa;
    underdamped (M = 1) the damped oscillator's position IAT 2 gamma_f / lambda_min (spectral density at 0 over the
    variance) in units of 1 / sqrt(lambda_max) (its fastest mode is under-damped: |mu| = sqrt(lambda_max))."""
    rows, P = linear
    lam = np.linalg.eigvalsh(P)
    kappa = lam[-1] / lam[0]
    assert rows["overdamped"]["circuit_iat"] == pytest.approx(2 * kappa, rel=1e-6)
    for f in sd.FRICTIONS:
        r = rows[f"underdamped {f:g} gamma_c"]
        want = 2 * r["friction"] / lam[0] * math.sqrt(lam[-1])
        assert r["circuit_fastest_rate"] == pytest.approx(math.sqrt(lam[-1]), rel=1e-9)
        assert r["circuit_iat"] == pytest.approx(want, rel=1e-6)
        assert r["circuit_speedup"] == pytest.approx(2 * kappa / want, rel=1e-6)


def test_dynamics_runs_only_when_named(tmp_path):
    """The default sweep list is unchanged by the new sweep (it is long); naming it selects it."""
    assert "dynamics" not in sweep.prepare(["--out", str(tmp_path / "a")]).sweeps
    assert "dynamics" not in sweep.SweepConfig().sweeps
    assert sweep.prepare(["--out", str(tmp_path / "b"), "--sweep", "dynamics"]).sweeps == ("dynamics",)
