"""Every sweep of ``sims/sweep.py`` (``circuits/sweep.py``) and ``sims/preconditioner_bias.py`` moves its output as
predicted along the swept parameter (issue 18, part 3).

The circuit / sampler sweeps run through ``run_sweeps`` itself (settings, sampler, ``posterior_summary``, the CSV),
with the trained model and the data swapped for a linear-Gaussian problem where every sweep has a closed form.  The
predictions are written here from the formulas (numpy), not from the project's theory module: with a linear decoder
W z + b and a Gaussian likelihood, log p(x, z) = log p(x, m) - (z - m)^T P (z - m) / 2 exactly (P = W^T W / sigma^2 +
I / s_p^2, m the posterior mean), every sampler of these sweeps is a linear recursion X' = F X + c + N(0, Q), so
E[log p(x, z_k)] given each chain's start follows from the recursion's mean and covariance at every step k -- exact,
transients included, with no stationarity assumed.  A row's ``log_joint_mean`` (chains x the second half of the
records) must lie within 5 standard errors (its own ``log_joint_mean_se``, across chains: it includes the spread of the
starts, so it over-covers a prediction made given the starts) of that prediction, and the rows must follow the
predicted trend wherever the predicted gap exceeds 10 combined standard errors.
"""
from __future__ import annotations

import csv
import importlib.util
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import circuits.sweep as sweep
import neuro_lpc.data
from circuits import Circuit, CircuitConfig
from circuits.noise import PRESETS
from neuro_lpc import GaussianLikelihood, GenerativeModel

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
N_SE = 5       # a row within 5 standard errors of its closed form (a false alarm < 1e-6 per row)
TREND_SE = 10  # a predicted gap larger than 10 combined standard errors must show in the measured rows


# ------------------------------------------------------------------------------------ the linear problem ----

class LinearProblem:
    """z ~ N(0, I), x | z ~ N(W z + b, sigma^2 I): the model, and its posterior written from the formulas."""

    def __init__(self, W, b, x):
        W, b = torch.as_tensor(W, dtype=F64), torch.as_tensor(b, dtype=F64)
        n, d = W.shape
        dec = nn.Linear(d, n).double()
        with torch.no_grad():
            dec.weight.copy_(W)
            dec.bias.copy_(b)
        self.model = GenerativeModel(dec, GaussianLikelihood(0.5).double())
        self.sigma = float(self.model.likelihood.sigma)      # 0.5 up to the float32 rounding of log sigma
        self.W, self.b, self.x = W.numpy(), b.numpy(), np.asarray(x, dtype=float)
        self.n, self.d = n, d
        self.P = self.W.T @ self.W / self.sigma**2 + np.eye(d)
        self.m = np.linalg.solve(self.P, self.W.T @ (self.x - self.b) / self.sigma**2)

    def log_joint(self, z):
        """log N(x; W z + b, sigma^2 I) + log N(z; 0, I), z (..., d)."""
        r = self.x - z @ self.W.T - self.b
        return (-0.5 * (r**2).sum(-1) / self.sigma**2 - self.n * math.log(self.sigma)
                - 0.5 * self.n * math.log(2 * math.pi)
                - 0.5 * (z**2).sum(-1) - 0.5 * self.d * math.log(2 * math.pi))

    def exact_starts(self, chains, seed):
        """Exact posterior draws (B, d): the chains start in the posterior, so small steps need no burn-in."""
        g = torch.Generator().manual_seed(seed)
        L = np.linalg.cholesky(np.linalg.inv(self.P))
        return torch.as_tensor(self.m + torch.randn(chains, self.d, generator=g, dtype=F64).numpy() @ L.T)

    def expected_log_joint(self, F, c, Q, X0, steps, every):
        """E[log p(x, z_k)] of X' = F X + c + N(0, Q) (z: the first d coordinates of X) from the starts X0 (B, D),
        averaged over chains and over the records k = every, 2 every, ..., steps of the second half -- the records
        ``posterior_summary`` averages."""
        mu, C = np.array(X0, dtype=float), np.zeros((F.shape[0], F.shape[0]))
        R, d, out = steps // every, self.d, []
        for k in range(1, steps + 1):
            mu, C = mu @ F.T + c, F @ C @ F.T + Q
            if k % every == 0 and k // every - 1 >= R // 2:
                dz = mu[:, :d] - self.m
                out.append(self.log_joint(self.m) - 0.5 * np.einsum("bi,ij,bj->b", dz, self.P, dz)
                           - 0.5 * np.trace(self.P @ C[:d, :d]))
        return float(np.mean(out))

    def ula(self, gamma, Q, z0, steps, every):
        """ULA / the circuit with adiabatic error units at dt = gamma tau_z: z' = z + gamma grad log p + N(0, Q)."""
        F = np.eye(self.d) - gamma * self.P
        return self.expected_log_joint(F, gamma * self.P @ self.m, Q, z0, steps, every)


def run_patched_sweeps(problem, z0, cfg, tmp: Path) -> dict[str, list[dict]]:
    """``run_sweeps(cfg)`` with its model (``_model``: trained or loaded) and its test images replaced by
    ``problem`` and the chains' start ``z0`` (the encoder's mean), and its figures by a recorder (matplotlib costs
    seconds here; the figures are not what is tested); returns each sweep's CSV rows (floats parsed)."""
    import circuits

    B = z0.shape[0]
    x = torch.as_tensor(problem.x, dtype=F64).expand(B, -1).clone()
    cfg.out = str(tmp)
    plotted = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "_model", lambda cfg, out, device: (problem.model, lambda xx: (z0, torch.ones_like(z0))))
        mp.setattr(neuro_lpc.data, "load_dataset", lambda name: (None, "test split", None))
        mp.setattr(neuro_lpc.data, "dataset_tensor", lambda test, n: (x, torch.zeros(B)))
        mp.setattr(circuits, "plots", SimpleNamespace(plot_sweep=lambda rows, x_key, *a, **k: plotted.append(x_key)),
                   raising=False)
        files = sweep.run_sweeps(cfg, log=lambda s: None)
    assert len(plotted) == len(files)                  # one figure per sweep
    rows = {}
    for name, path in files.items():
        with open(path, newline="") as f:
            rows[name] = [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return rows


def _parse(v: str):
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


def assert_rows_follow(rows, key, predicted, decreasing=True):
    """Each row's log_joint_mean within N_SE of its prediction; the predictions strictly monotone along ``key`` (the
    closed form's own trend); the measured rows monotone wherever the predicted gap exceeds TREND_SE combined se, which
    must hold at least between the first and the last row (the sweep resolves its trend at these sizes)."""
    lj = np.array([r["log_joint_mean"] for r in rows])
    se = np.array([r["log_joint_mean_se"] for r in rows])
    pred = np.asarray(predicted)
    for r, p in zip(rows, pred):
        assert abs(r["log_joint_mean"] - p) <= N_SE * r["log_joint_mean_se"], (key, r[key], r["log_joint_mean"], p,
                                                                                 r["log_joint_mean_se"])
    sign = -1 if decreasing else 1
    assert np.all(sign * np.diff(pred) > 0), (key, pred)
    assert sign * (pred[-1] - pred[0]) > TREND_SE * (se[0] + se[-1]), (key, pred, se)
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if abs(pred[j] - pred[i]) > TREND_SE * (se[i] + se[j]):
                assert sign * (lj[j] - lj[i]) > 0, (key, rows[i][key], rows[j][key], lj[i], lj[j])


# P has eigenvalues ~3 and ~102: ULA at gamma = 0.1 is unstable (gamma lambda_max > 2), the preconditioned chain is not
# (G ~ 1 / sqrt(lambda): gamma G lambda ~ 1); the circuit sweeps run at gamma = 0.005 (every tau_e of the tau sweep is
# a stable Euler-Maruyama step for this P).
STIFF = dict(W=[[5.0, 0.0], [0.0, 0.5], [0.5, 0.5]], b=[0.1, -0.2, 0.3], x=[1.0, -0.5, 0.8])
CHAINS, STEPS, EVERY = 1024, 100, 2   # 1024 chains: the step sweep's trend resolved (see its test)


@pytest.fixture(scope="module")
def linear_sweeps(tmp_path_factory):
    """The temperature, noise, step and tau sweeps of ``run_sweeps`` on the stiff linear problem (~1.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # many tiny steps (the single_thread fixture is per test; this runs once)
    try:
        prob = LinearProblem(**STIFF)
        z0 = prob.exact_starts(CHAINS, seed=5)
        cfg = sweep.SweepConfig(sweeps=("temperature", "noise", "step", "tau"), steps=STEPS, record_every=EVERY,
                                step_size=0.005, tau_z=0.01, device="cpu", seed=3)
        rows = run_patched_sweeps(prob, z0, cfg, tmp_path_factory.mktemp("sweep"))
    finally:
        torch.set_num_threads(threads)
    return prob, z0.numpy(), cfg, rows


def test_temperature_sweep_lowers_the_log_joint_as_the_closed_form_in_T(linear_sweeps):
    """Sweep ``temperature`` (circuit, preset ideal, adiabatic error units, dt = gamma tau_z): the chain is ULA with
    noise N(0, 2 gamma T I), so E[log p(x, z)] = log p(x, m) - tr(P C_k) / 2 - (transient) falls linearly in T.
    T = 0 is the noise-free gradient flow: each chain's record is deterministic, the prediction exact to rounding."""
    prob, z0, cfg, rows = linear_sweeps
    rows = rows["temperature"]
    assert [r["temperature"] for r in rows] == cfg.values("temperature")
    g = cfg.step_size
    pred = [prob.ula(g, 2 * g * r["temperature"] * np.eye(2), z0, STEPS, EVERY) for r in rows]
    assert rows[0]["temperature"] == 0.0
    assert rows[0]["log_joint_mean"] == pytest.approx(pred[0], rel=1e-10, abs=0)   # rounding of 300 float64 steps
    assert_rows_follow(rows[1:], "temperature", pred[1:])
    assert rows[1]["log_joint_mean"] < rows[0]["log_joint_mean"]                    # any T > 0 costs log p


def test_noise_sweep_thermal_amplitude_widens_the_chain_as_its_closed_form(linear_sweeps):
    """Sweep ``noise`` (thermal value_std = error_std = v on top of T = 1; relative units, s_p = 1): the value units
    get extra N(0, 2 gamma v^2) per step (effective temperature 1 + v^2), the adiabatic error units a fresh
    N(0, v^2 / sigma^2) that the feedback passes on as gamma W^T (.) -- per-step noise covariance
    Q = 2 gamma (1 + v^2) I + gamma^2 v^2 W^T W / sigma^2, so E[log p(x, z)] falls monotonically with v."""
    prob, z0, cfg, rows = linear_sweeps
    rows = rows["noise"]
    assert [r["thermal_std"] for r in rows] == cfg.values("noise")
    g, WtW = cfg.step_size, prob.W.T @ prob.W
    pred = [prob.ula(g, 2 * g * (1 + v * v) * np.eye(2) + g * g * v * v * WtW / prob.sigma**2, z0, STEPS, EVERY)
            for v in (r["thermal_std"] for r in rows)]
    assert_rows_follow(rows, "thermal_std", pred)


def test_step_sweep_ula_bias_grows_with_the_step_and_preconditioning_keeps_the_stiff_chain_stable(linear_sweeps):
    """Sweep ``step`` (discrete LPC, Fig. 4): without preconditioning the chain is ULA, z' = z + gamma grad + N(0, 2
    gamma I) -- its bias grows with gamma where it is stable (gamma lambda_max < 2; the closed form of each row), and
    where gamma lambda_max > 2 it grows geometrically (|1 - gamma lambda_max|^k: the row diverges -- recorded as
    such -- or its log p is astronomically low).  With preconditioning (beta = 0.25, 0.99; G ~ 1 / sqrt(lambda) at
    stationarity) the same gammas stay stable: no preconditioned row diverges and its variance ratio tr(P C) / d
    stays below 5 (docs/preconditioner.md measures at most 2.5 for Algorithm 1)."""
    prob, z0, cfg, rows = linear_sweeps
    rows = rows["step"]
    gammas = cfg.values("step")
    assert [(r["step_size"], r["precondition"]) for r in rows] == [(g, b) for g in gammas for b in ("", 0.25, 0.99)]
    lam_max = np.linalg.eigvalsh(prob.P).max()
    plain = [r for r in rows if r["precondition"] == ""]
    stable = [r for r in plain if r["step_size"] * lam_max < 2]
    unstable = [r for r in plain if r["step_size"] * lam_max > 2]
    assert len(stable) >= 3 and len(unstable) >= 2
    pred = [prob.ula(r["step_size"], 2 * r["step_size"] * np.eye(2), z0, STEPS, EVERY) for r in stable]
    assert not any(r["diverged"] for r in stable)
    assert_rows_follow(stable, "step_size", pred)
    for r in unstable:      # the closed form's own magnitude: |1 - gamma lambda_max|^(2 k) >= 2^100 by the records
        assert r["diverged"] or r["log_joint_mean"] < prob.log_joint(prob.m) - 1e6, r
    for r in rows:
        if r["precondition"] != "" and r["step_size"] in [u["step_size"] for u in unstable]:
            assert not r["diverged"], r
            ratio = -2 * (r["log_joint_mean"] - prob.log_joint(prob.m)) / prob.d
            assert 0 < ratio < 5, (r["step_size"], r["precondition"], ratio)


def test_tau_sweep_finite_error_time_constant_over_disperses_z(linear_sweeps):
    """Sweep ``tau`` (tau_e = v dt, preset ideal): with finite tau_e the circuit is the joint Euler-Maruyama recursion
    of [z, eps] (docs/analysis.md: tau_z dz = (W^T eps - z) dt + sqrt(2 tau_z) dW, tau_e d eps = ((x - W z - b) /
    sigma^2 - eps) dt; eps(0) settled at e(x, g(z0))): the error units low-pass the likelihood's restoring force, so
    z is over-dispersed -- E[log p(x, z)] falls monotonically with tau_e -- and v = 0 is ULA."""
    prob, z0, cfg, rows = linear_sweeps
    rows = rows["tau"]
    assert [r["tau_e_over_dt"] for r in rows] == cfg.values("tau")
    g, d, n, prec = cfg.step_size, prob.d, prob.n, 1 / prob.sigma**2
    eps0 = prec * (prob.x - z0 @ prob.W.T - prob.b)
    pred = []
    for r in rows:
        v = r["tau_e_over_dt"]
        assert r["tau_e"] == pytest.approx(v * g * cfg.tau_z, rel=1e-12)
        if v == 0:
            pred.append(prob.ula(g, 2 * g * np.eye(d), z0, STEPS, EVERY))
            continue
        a_e = 1 / v                                                   # dt / tau_e
        F = np.block([[(1 - g) * np.eye(d), g * prob.W.T], [-a_e * prec * prob.W, (1 - a_e) * np.eye(n)]])
        assert max(abs(np.linalg.eigvals(F))) < 1                     # a stable step at every v of the sweep
        c = np.concatenate([np.zeros(d), a_e * prec * (prob.x - prob.b)])
        Q = np.zeros((d + n, d + n))
        Q[:d, :d] = 2 * g * np.eye(d)
        pred.append(prob.expected_log_joint(F, c, Q, np.concatenate([z0, eps0], 1), STEPS, EVERY))
    assert_rows_follow(rows, "tau_e_over_dt", pred)


def test_step_sweep_records_a_diverged_row_and_goes_on(tmp_path):
    """Sweep ``step`` with --quick (gamma = 1e-4, 1e-3, 0.1; 60 steps) on a posterior with lambda_max ~ 1e4: ULA is
    stable at gamma lambda_max = 1 (its closed form), grows as |1 - gamma lambda_max|^k = 9^k at 1e-3 (finite after 60
    steps, log p astronomically low), and at 0.1 (999^k) overflows float64 within the run (k > 52): that row is recorded
    as diverged with the sampler's one-line error, and every other row of the sweep is still computed."""
    prob = LinearProblem(W=[[50.0, 0.0], [0.0, 0.5], [0.5, 0.5]], b=[0.1, -0.2, 0.3], x=[1.0, -0.5, 0.8])
    z0 = prob.exact_starts(64, seed=2)
    cfg = sweep.SweepConfig(sweeps=("step",), quick=True, device="cpu")
    rows = run_patched_sweeps(prob, z0, cfg, tmp_path)["step"]
    assert cfg.steps == 60 and len(rows) == 9
    plain = {r["step_size"]: r for r in rows if r["precondition"] == ""}
    lam_max = np.linalg.eigvalsh(prob.P).max()
    assert plain[1e-4]["step_size"] * lam_max < 2 and not plain[1e-4]["diverged"]
    pred = prob.ula(1e-4, 2e-4 * np.eye(2), z0.numpy(), cfg.steps, cfg.record_every)
    assert abs(plain[1e-4]["log_joint_mean"] - pred) <= N_SE * plain[1e-4]["log_joint_mean_se"]
    assert not plain[1e-3]["diverged"] and plain[1e-3]["log_joint_mean"] < prob.log_joint(prob.m) - 1e6
    assert plain[0.1]["diverged"] and "diverged" in plain[0.1]["error"]
    assert all(isinstance(r["log_joint_mean"], float) for r in rows if not r["diverged"])


# -------------------------------------------------------------------------------------------- sources ----

FAR = dict(W=[[1.0]], b=[0.0], x=[100.0])   # the posterior mean (80) far beyond every rail of the analog preset


def test_sources_sweep_rows_bind_one_analog_source_each_then_the_preset():
    """Sweep ``sources``: row k is the circuit with the analog preset's k-th source alone (its parameters as in the
    preset, active: bound to the circuit) on top of T = 1, the last row the whole preset (its sources and its
    time-constant mismatch)."""
    prob = LinearProblem(**FAR)
    cfg = sweep.SweepConfig(step_size=0.05, tau_z=0.01)
    srcs = PRESETS["analog"]["sources"]
    rows = list(sweep.settings("sources", cfg))
    assert len(rows) == len(srcs) + 1
    for k, (fields, kind, value) in enumerate(rows):
        c = Circuit(prob.model, CircuitConfig(dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, **value))
        bound = [b.source for b in c.sources]
        assert kind == "circuit" and fields["index"] == k and c.adiabatic and c.temperature == 1.0
        if k < len(srcs):
            assert [s.type for s in bound] == [srcs[k]["type"]], (k, fields)
            assert {p: bound[0].params[p] for p in srcs[k] if p != "type"} == {p: v for p, v in srcs[k].items()
                                                                               if p != "type"}
            assert fields["source"] == srcs[k]["type"] + (f"/{srcs[k]['site']}" if "site" in srcs[k] else "")
            assert type(c.timescale_model).__name__ == "Uniform"
        else:
            assert [s.type for s in bound] == [s["type"] for s in srcs] and fields["source"].startswith("all")
            assert type(c.timescale_model).__name__ != "Uniform"


def test_sources_sweep_rails_of_the_analog_preset_act_as_predicted():
    """Sweep ``sources`` with the posterior mean (80) beyond every rail, chains started at z0 = 5 (past them too):
    * ``saturation`` (value state clipped at +-4 s_p): every record is z = 4 exactly, log p = log p(x, 4);
    * ``quantisation/value`` (the DAC into the decoder clips z at 3 s_p), ``/prediction`` (the ADC clips W z + b at
      2), ``/error`` (the DAC into the feedback clips eps at 3 / sigma): the clipped unit passes a constant, each
      bound on its quantiser's grid, so the value unit is the linear recursion z' = (1 - gamma) z + gamma w e_c +
      N(0, 2 gamma) with e_c = (x - b - 3 w) / sigma^2, (x - 2) / sigma^2 and 3 / sigma -- the first two wind z up
      far past the posterior, the last holds it at w e_c = 6 -- each row within 5 se of its closed form."""
    prob = LinearProblem(**FAR)
    B = 64
    z0 = torch.full((B, 1), 5.0, dtype=F64)
    cfg = sweep.SweepConfig(sweeps=("sources",), steps=200, record_every=2, step_size=0.05, tau_z=0.01, device="cpu")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        rows = {r["source"]: r for r in run_patched_sweeps(prob, z0, cfg, Path(tmp))["sources"]}
    g, w, s, x, b = cfg.step_size, prob.W[0, 0], prob.sigma, prob.x[0], prob.b[0]
    sat = rows["saturation"]
    assert sat["log_joint_mean"] == pytest.approx(float(prob.log_joint(np.array([4.0]))), rel=1e-12)
    assert sat["log_joint_mean_se"] == 0 and sat["recon_mse"] == pytest.approx((x - b - 4 * w) ** 2, rel=1e-12)
    for label, e_c in (("quantisation/value", (x - b - 3 * w) / s**2), ("quantisation/prediction", (x - 2) / s**2),
                       ("quantisation/error", 3 / s)):
        r = rows[label]
        pred = prob.expected_log_joint(np.array([[1 - g]]), np.array([g * w * e_c]), np.array([[2 * g]]),
                                       z0.numpy(), cfg.steps, cfg.record_every)
        assert abs(r["log_joint_mean"] - pred) <= N_SE * r["log_joint_mean_se"], (label, r["log_joint_mean"], pred)
        # the alternative -- no rail -- would sample the posterior: log p(x, m) - 1/2, thousands of nats away
        assert abs(pred - (prob.log_joint(prob.m) - 0.5)) > 100 * N_SE * r["log_joint_mean_se"], label


# -------------------------------------------------------------------------------- learning and deployment ----

def test_learning_sources_sweep_trains_under_every_source(monkeypatch):
    """Sweep ``learning-sources`` (one short circuit training per source, learning mode ``--learning``): each row's
    trainer runs with that source alone (then the preset), in the sweep's learning mode (``deploy``: no weight device
    while learning), for ``train_batches`` batches; and each moves the decoder by exactly Adam's first step -- every
    weight by lr g / (|g| + 1e-8), i.e. ``decoder_change`` = max over weight matrices of lr sqrt(numel) / ||W_0|| --
    under every source (issue 7's bug: no gradient under a weight-perturbing source, change 0).  Tolerance 1e-3 below: entries with |g| < 1e-5 move by
    less than lr (1 - 1e-3); above: Adam's first step moves no weight by more than lr."""
    from circuits import learn
    from circuits.study import StudyConfig, train_config
    from neuro_lpc.train import build_model

    seen = []

    class Recording(learn.CircuitTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self)

    monkeypatch.setattr(learn, "CircuitTrainer", Recording)
    cfg = sweep.SweepConfig(quick=True, train_batches=1, learning="hardware-aware", device="cpu")
    tc = train_config(StudyConfig(quick=True, device="cpu").apply_quick(), "lpc")
    torch.manual_seed(cfg.seed)
    m0, _ = build_model(tc, 28, 1)
    change = max(tc.lr * math.sqrt(p.numel()) / float(p.detach().norm())
                 for p in m0.decoder.parameters() if p.dim() >= 2)
    srcs = PRESETS["analog"]["sources"]
    for fields, kind, noise in sweep.settings("learning-sources", cfg):
        row = sweep._learn_one(noise, cfg, None, torch.device("cpu"))
        tr = seen[-1]
        k = fields["index"]
        types = [s.type for s in tr.noise.sources]
        assert types == ([] if k < 0 else [srcs[k]["type"]] if k < len(srcs) else [s["type"] for s in srcs]), fields
        assert tr.mode == "hardware-aware" and tr.global_step == 1 and tr.config.max_batches_per_epoch == 1
        assert change * (1 - 1e-3) < row["decoder_change"] <= change * (1 + 1e-6), (fields, row["decoder_change"],
                                                                                     change)
    # --learning reaches the trainer: "deploy" learns on the digital weights (no weight device in its circuit)
    cfg.learning = "deploy"
    sweep._learn_one("analog", cfg, None, torch.device("cpu"))
    assert seen[-1].mode == "deploy" and not any(b.weight_device for b in seen[-1].circuit.sources)


def test_deploy_time_sweep_ages_only_the_subsets_with_drift():
    """Sweep ``deploy-time`` (the discrete model programmed once; 1 s and 1 month after programming): programming
    error and read noise have no clock -- their rows are identical at both times -- while every subset with drift
    (drift alone, the three weight devices, the whole preset) deploys a decoder further from the digital one after a
    month than after a second (compensated drift grows with time)."""
    from test_learning_modes import D, tiny_model

    cfg = sweep.SweepConfig(steps=20, record_every=2, step_size=0.05, tau_z=0.01, quick=True)
    z = torch.randn(8, D, generator=torch.Generator().manual_seed(0))
    clean, _ = tiny_model()
    with torch.no_grad():
        ref = clean.decoder(z)
    res = {}
    for fields, kind, value in sweep.settings("deploy-time", cfg):
        model, _ = tiny_model()
        row = sweep._deploy_one(value, model, torch.zeros(4, 1, 28, 28), torch.zeros(4, D), cfg, torch.device("cpu"),
                                torch.Generator().manual_seed(1), time.perf_counter())
        with torch.no_grad():
            err = float((row["_sampler"].decoder(z) - ref).norm())
        res.setdefault(fields["devices"], []).append((fields["t_seconds"], row["log_joint_mean"], err))
    assert set(res) == set(sweep.DEPLOY_SUBSETS)
    for subset, ((t1, lj1, e1), (t2, lj2, e2)) in res.items():
        assert t1 < t2
        if subset in ("weight_programming", "weight_read"):
            assert lj1 == lj2 and e1 == e2, subset
        else:
            assert e2 > 1.5 * e1, (subset, e1, e2)


# -------------------------------------------------------------------------------- sims/preconditioner_bias.py ----

def _load_sim():
    spec = importlib.util.spec_from_file_location("preconditioner_bias_sim", ROOT / "sims" / "preconditioner_bias.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table(text: str) -> list[dict]:
    """The rows of the script's markdown table."""
    head = None
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if head is None or cells == head:      # each run of the script prints its own header
            head = cells
        else:
            rows.append(dict(zip(head, cells)))
    return rows


def test_preconditioner_bias_flags_reach_every_call(monkeypatch, capsys):
    """sims/preconditioner_bias.py: --preconditioners x --betas x --step-sizes is the grid of calls, each with
    --chains, --dim, --kappa and --seed (none at its default)."""
    sim = _load_sim()
    calls = []

    def fake(beta, gamma, preconditioner, dim, kappa, chains, seed):
        calls.append((preconditioner, beta, gamma, dim, kappa, chains, seed))
        return {"eigenvalues": np.ones(dim), "diverged": None, "per_direction": np.ones(dim), "variance_ratio": 1.0,
                "se": 0.0, "fixed_gain_ratio": 1.0, "gain_median": 1.0, "steps": 1}

    monkeypatch.setattr(sim, "preconditioner_bias", fake)
    assert sim.main(["--betas", "0.5", "0.7", "--step-sizes", "0.02", "--preconditioners", "frozen", "adam",
                     "--chains", "11", "--dim", "3", "--kappa", "4", "--seed", "9"]) == 0
    assert calls == [(pc, b, 0.02, 3, 4.0, 11, 9) for pc in ("frozen", "adam") for b in (0.5, 0.7)]
    assert len(_table(capsys.readouterr().out)) == 4


def test_preconditioner_bias_rows_as_docs_predict(capsys):
    """sims/preconditioner_bias.py on a small run (200 chains, d = 2): "frozen" (beta = 0.99) is ULA with a fixed G, so
    its variance ratio equals the fixed-G closed form within 5 se and grows with gamma (ULA's step bias); Algorithm 1
    ("adam", beta = 0.25) is far above its own fixed-G law at the same gamma (> 20 se: the bias of adapting G)."""
    sim = _load_sim()
    assert sim.main(["--betas", "0.99", "--step-sizes", "0.03", "0.2", "--preconditioners", "frozen",
                     "--chains", "200", "--dim", "2"]) == 0
    assert sim.main(["--betas", "0.25", "--step-sizes", "0.03", "--preconditioners", "adam",
                     "--chains", "200", "--dim", "2"]) == 0
    rows = {(r["preconditioner"], float(r["beta"]), float(r["gamma"])): r for r in _table(capsys.readouterr().out)}
    assert len(rows) == 3

    def ratio(r):
        v, se = r["variance ratio (mean over directions)"].split("±")
        return float(v), float(se), float(r["fixed-G closed form"])

    lo, hi = ratio(rows[("frozen", 0.99, 0.03)]), ratio(rows[("frozen", 0.99, 0.2)])
    for v, se, fixed in (lo, hi):
        assert abs(v - fixed) <= N_SE * se, (v, se, fixed)
    assert hi[2] > lo[2] and hi[0] - lo[0] > TREND_SE * (lo[1] + hi[1])
    v, se, fixed = ratio(rows[("adam", 0.25, 0.03)])
    assert v - fixed > 20 * se, (v, se, fixed)
