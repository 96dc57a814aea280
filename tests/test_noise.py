"""Noise sources, presets and time-constant models (circuits.noise, circuits.timescales).

Each source's measured statistics are checked against its definition (variances, the 1/f slope,
formulas of the aihwkit models), frozen draws against the seed, and the presets against the circuit.
"""
import json
import math

import numpy as np
import pytest
import scipy.signal
import torch
from torch import nn

from circuits import NOISE_SOURCES, PRESETS, TIMESCALES, Circuit, CircuitConfig, NoiseModel, OUBank
from circuits.analysis import euler_maruyama_stationary, linear_circuit_matrices
from circuits.circuit import CircuitRun
from circuits.noise import pcm_drift_nu_moments, pcm_programming_std
from circuits.timescales import make_timescales
from neuro_lpc import GaussianLikelihood, GenerativeModel

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def linear_model(d=3, n=5, sigma=0.5, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).to(dtype)
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=dtype) / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=dtype) * 0.1)
    model = GenerativeModel(dec, GaussianLikelihood(sigma).to(dtype))
    return model, torch.randn(1, n, generator=g, dtype=dtype)


def conv_model(d=4, seed=0):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 32), nn.Unflatten(1, (8, 2, 2)), nn.SiLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1))
    return GenerativeModel(dec, GaussianLikelihood(0.5), latent_dim=d)


def bind(sources, model=None, **cfg):
    """A circuit with these sources and its bound sources."""
    model = model or linear_model()[0]
    circuit = Circuit(model, CircuitConfig(noise={"sources": sources}, **cfg))
    return circuit, circuit.sources


def increments(b, which, ref, batch, seed=0):
    """One draw of a bound source's additive increment for a batch (out starts at zero)."""
    gen = torch.Generator().manual_seed(seed)
    b.start(batch, gen)
    out = torch.zeros_like(ref)
    getattr(b, f"{which}_increment")(ref, out, gen)
    return out


# ------------------------------------------------------------------------- registry & config ----

def test_registries_and_presets():
    assert set(PRESETS) == {"none", "ideal", "thermal", "analog", "cortical"}
    assert set(NOISE_SOURCES) == {"thermal", "shot", "flicker", "mismatch", "weight_programming", "weight_read",
                                  "drift", "quantisation", "saturation", "feedback_mismatch"}
    assert set(TIMESCALES) == {"uniform", "heterogeneous", "mismatch", "adiabatic"}
    assert NoiseModel.preset("none").temperature == 0.0 and NoiseModel.preset("ideal").temperature == 1.0
    for name in PRESETS:
        nm = NoiseModel.preset(name)
        assert NoiseModel.from_dict(nm.to_dict()) == nm
        for cls in NOISE_SOURCES.values():  # every default parameter set validates
            cls()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_every_preset_runs_on_linear_and_conv_decoders(preset, kind):
    if kind == "linear":
        model, x1 = linear_model(4, 10, 0.5, seed=1, dtype=torch.float32)
        x = x1.expand(3, -1)
    else:
        model = conv_model()
        x = torch.rand(3, 1, 4, 4) * 2 - 1
    circuit = Circuit(model, CircuitConfig(dt=1e-4, noise=preset))
    traj = circuit.simulate(x, steps=40, record_every=10)
    assert torch.isfinite(traj.z).all() and torch.isfinite(traj.log_joint).all()
    assert circuit.temperature == (0.0 if preset == "none" else 1.0)
    if preset == "cortical":
        tz = circuit.timescales.tau_z
        assert isinstance(tz, torch.Tensor) and tz.min() >= 0.01 - 1e-9 and tz.max() <= 0.02 + 1e-9


def test_noise_config_round_trips_through_dict_and_json(tmp_path):
    nm = NoiseModel.from_dict({"preset": "thermal", "sources": [{"type": "flicker", "value_std": 0.2}],
                               "temperature": 0.5})
    assert [s.type for s in nm.sources] == ["thermal", "flicker"] and nm.temperature == 0.5
    path = tmp_path / "noise.json"
    nm.to_file(path)
    assert NoiseModel.from_file(path) == nm
    assert json.loads(path.read_text())["sources"][1]["value_std"] == 0.2
    cfg = CircuitConfig(noise=str(path))
    assert cfg.noise_model() == nm and cfg.resolved_temperature() == 0.5
    (tmp_path / "preset.json").write_text('"analog"')
    assert NoiseModel.from_file(tmp_path / "preset.json") == NoiseModel.preset("analog")


@pytest.mark.parametrize("spec, match", [
    ("loud", "unknown noise preset"),
    ({"sources": [{"type": "hum"}]}, "unknown noise source"),
    ({"sources": [{"value_std": 0.1}]}, "unknown noise source None"),
    ({"sources": [{"type": "thermal", "volume": 1}]}, r"unknown parameter\(s\) \['volume'\]"),
    ({"sources": [{"type": "thermal", "value_std": -0.1}]}, "non-negative"),
    ({"sources": [{"type": "shot", "error_fano": -1}]}, "non-negative"),
    ({"sources": [{"type": "flicker", "value_std": -1}]}, "non-negative"),
    ({"sources": [{"type": "flicker", "tau_min": 10, "tau_max": 1}]}, "tau_min"),
    ({"sources": [{"type": "mismatch", "gain_std": -0.1}]}, "non-negative"),
    ({"sources": [{"type": "mismatch", "sites": ["axon"]}]}, "unknown site"),
    ({"sources": [{"type": "weight_read", "std": -0.01}]}, "non-negative"),
    ({"sources": [{"type": "weight_programming", "model": "rram"}]}, "must be one of"),
    ({"sources": [{"type": "drift", "nu": -0.1}]}, "nu"),
    ({"sources": [{"type": "quantisation", "bits": 1}]}, "bits"),
    ({"sources": [{"type": "saturation", "bound": 0}]}, "positive"),
    ({"sources": [{"type": "saturation", "sites": ["prediction"], "on": "state"}]}, "unknown site"),
    ({"sources": [{"type": "feedback_mismatch", "std": -0.1}]}, "non-negative"),
    ({"temperature": -1}, "temperature"),
    ({"sauces": []}, "unknown key"),
])
def test_bad_noise_configs_raise_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        NoiseModel.resolve(spec)


def test_bad_noise_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        NoiseModel.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        NoiseModel.from_file(tmp_path / "bad.json")


# ------------------------------------------------------------------------- additive noise ----

@pytest.mark.parametrize("units", ["relative", "absolute"])
@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
def test_thermal_increment_variances(units, tau_e):
    dt, tau_z, sigma_x = 1e-4, 1e-2, 0.5
    circuit, (b,) = bind([{"type": "thermal", "value_std": 0.3, "error_std": 0.2, "units": units}],
                         dt=dt, tau_z=tau_z, tau_e=tau_e)
    B = 20000
    dv = increments(b, "value", torch.zeros(B, 3, dtype=F64), B)
    de = increments(b, "error", torch.zeros(B, 5, dtype=F64), B)
    if units == "relative":
        var_v = 0.3**2 * 2 * dt / tau_z
        var_e = (0.2 / sigma_x) ** 2 * (2 * dt / tau_e if tau_e else 1.0)
    else:
        var_v = 0.3**2 * dt
        var_e = 0.2**2 * (dt if tau_e else 1.0)
    tol = 5 * math.sqrt(2 / dv.numel())
    assert abs(dv.var().item() / var_v - 1) < tol
    assert abs(de.var().item() / var_e - 1) < 5 * math.sqrt(2 / de.numel())
    assert abs(dv.mean().item()) < 5 * math.sqrt(var_v / dv.numel())
    d2 = increments(b, "value", torch.zeros(B, 3, dtype=F64), B, seed=0)
    d3 = torch.zeros_like(d2)
    b.value_increment(None, d3, torch.Generator().manual_seed(1))
    assert torch.equal(dv, d2) and not torch.equal(d2, d3)  # reproducible from the seed, fresh per call


def test_thermal_noise_stationary_law_matches_lyapunov():
    """Finite tau_e linear circuit + thermal noise on both populations: the noise matrix gains
    sqrt(2/tau_z) value_std on z (effective temperature T + value_std^2) and sqrt(2/tau_e) error_std/sigma_x
    on eps; 4000 chains match the EM discrete Lyapunov solution."""
    model, x1 = linear_model(3, 5, 0.5, seed=3)
    W, b, x = model.decoder.weight.detach(), model.decoder.bias.detach(), x1[0]
    tau_z, tau_e, dt, sv, se = 1e-2, 2e-3, 2e-4, 0.7, 0.5
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e)
    B_noise = np.zeros((8, 8))
    B_noise[:3, :3] = np.eye(3) * math.sqrt(2 * (1 + sv**2) / tau_z)
    B_noise[3:, 3:] = np.eye(5) * math.sqrt(2 / tau_e) * se / 0.5
    mean, cov = euler_maruyama_stationary(A, B_noise, dt, c)
    noise = {"sources": [{"type": "thermal", "value_std": sv, "error_std": se}]}
    circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise=noise))
    e_fold = 1 / (np.min(np.abs(np.linalg.eigvals(A).real)) * dt)
    spacing = int(3 * e_fold) + 1
    chains, records = 4000, 8
    traj = circuit.simulate(x1.expand(chains, -1), torch.zeros(chains, 3, dtype=F64), steps=spacing * (records + 3),
                            record_every=spacing, record_eps=True)
    X = torch.cat([traj.z[3:], traj.extras["eps"][3:]], -1).reshape(-1, 8)
    emp = torch.cov(X.T).numpy()
    var = np.diag(cov)
    se_cov = np.sqrt((var[:, None] * var[None, :] + cov**2) / X.shape[0])
    assert (np.abs(emp - cov) / se_cov).max() < 5
    assert (np.abs(X.mean(0).numpy() - mean) / np.sqrt(var / X.shape[0])).max() < 5


def test_shot_noise_variance_is_proportional_to_activity():
    dt, tau_z, tau_e = 1e-4, 1e-2, 2e-3
    circuit, (b,) = bind([{"type": "shot", "value_fano": 0.2, "error_fano": 0.1}], dt=dt, tau_z=tau_z, tau_e=tau_e)
    B = 20000
    a = torch.tensor([0.25, 1.0, -2.0], dtype=F64).expand(B, 3)
    dv = increments(b, "value", a, B)
    ratio = dv.var(0) / a[0].abs()
    expect = 0.2 * 1.0 * 2 * dt / tau_z  # F * s_p * 2 dt / tau_z per unit |a|
    assert ((ratio / expect - 1).abs() < 5 * math.sqrt(2 / B)).all(), ratio / expect
    e = torch.tensor([0.5, 1.0, 2.0, 4.0, -8.0], dtype=F64).expand(B, 5)
    de = increments(b, "error", e, B)
    expect_e = 0.1 * (1 / 0.5) * 2 * dt / tau_e
    assert ((de.var(0) / e[0].abs() / expect_e - 1).abs() < 5 * math.sqrt(2 / B)).all()
    assert increments(b, "value", torch.zeros(B, 3, dtype=F64), B).abs().max() == 0  # silent at zero activity


def test_flicker_bank_has_a_one_over_f_spectrum():
    dt, steps, units = 1e-3, 2**16, 16
    taus = OUBank.log_spaced(2e-3, 20.0, per_decade=2)
    assert len(taus) == 9 and taus[0] == pytest.approx(2e-3) and taus[-1] == pytest.approx(20.0)
    bank = OUBank(taus, std=0.5, shape=(units,), dt=dt, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    bank.reset(gen)
    y = torch.empty(steps, units, dtype=F64)
    for k in range(steps):
        y[k] = bank.step(gen)
    assert abs(y.std().item() / 0.5 - 1) < 0.1  # stationary from the start, total std as set
    f, S = scipy.signal.welch(y.numpy(), fs=1 / dt, nperseg=2**13, axis=0)
    S = S.mean(1)
    band = (f > 0.3) & (f < 20)  # well inside the corners 1/(2 pi 20 s) = 0.008 Hz and 1/(2 pi 2 ms) = 80 Hz
    slope = np.polyfit(np.log(f[band]), np.log(S[band]), 1)[0]
    assert -1.15 < slope < -0.85, slope
    theory = bank.psd(torch.as_tensor(f[band])).numpy()
    slope_th = np.polyfit(np.log(f[band]), np.log(theory), 1)[0]
    assert -1.1 < slope_th < -0.9
    assert np.median(np.abs(np.log(S[band] / theory))) < 0.15  # matches the closed-form PSD


def test_flicker_source_in_the_circuit_records_its_current():
    model, x1 = linear_model(3, 5, 0.5, seed=4)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [
        {"type": "flicker", "value_std": 0.3, "error_std": 0.1, "record": True}]}))
    traj = c.simulate(x1.expand(64, -1), steps=400, record_every=10)
    fv, fe = traj.extras["noise_flicker_value"], traj.extras["noise_flicker_error"]
    assert fv.shape == (40, 64, 3) and fe.shape == (40, 64, 5)
    assert abs(fv.std().item() / 0.3 - 1) < 0.2  # std in units of s_p = 1
    assert abs(fe.std().item() / (0.1 / 0.5) - 1) < 0.2  # relative to the error scale 1/sigma_x


# --------------------------------------------------------------------------- frozen draws ----

def test_mismatch_is_frozen_by_the_seed():
    model = linear_model(8, 400, 0.5)[0]
    spec = [{"type": "mismatch", "gain_std": 0.1, "offset_std": 0.05}]
    _, (a,) = bind(spec, model, seed=1)
    _, (a2,) = bind(spec, model, seed=1)
    _, (b,) = bind(spec, model, seed=2)
    for key in ("value_gain", "error_gain", "error_offset"):
        assert torch.equal(a.frozen[key], a2.frozen[key])
        assert not torch.equal(a.frozen[key], b.frozen[key])
    g = a.frozen["error_gain"]
    assert abs(g.mean().item() - 1) < 0.02 and abs(g.std().item() / 0.1 - 1) < 0.15
    assert abs(a.frozen["error_offset"].std().item() / (0.05 * 2.0) - 1) < 0.15  # in units of 1/sigma_x
    z = torch.randn(10, 8, dtype=F64)
    torch.testing.assert_close(a.value_transform(z), z * a.frozen["value_gain"] + a.frozen["value_offset"])


def test_weight_programming_noise_follows_the_pcm_model():
    model = GenerativeModel(nn.Linear(40, 784).double(), GaussianLikelihood(0.5).double())
    w = model.decoder.weight.detach()
    wmax = w.abs().max()
    _, (b,) = bind([{"type": "weight_programming", "model": "pcm"}], model, seed=3)
    delta = b.frozen["weight"]
    assert "bias" not in b.frozen
    xi = delta / (pcm_programming_std(w.abs() / wmax) * wmax)
    assert abs(xi.std().item() - 1) < 0.03 and abs(xi.mean().item()) < 0.03
    assert pcm_programming_std(torch.tensor(0.0)) == pytest.approx(0.26348 / 25)
    assert pcm_programming_std(torch.tensor(1.0)) == pytest.approx((0.26348 + 1.9650 - 1.1731) / 25)
    _, (c,) = bind([{"type": "weight_programming", "model": "constant", "std": 0.02}], model, seed=3)
    assert abs(c.frozen["weight"].std().item() / (0.02 * wmax.item()) - 1) < 0.03
    _, (b2,) = bind([{"type": "weight_programming"}], model, seed=3)
    assert torch.equal(b2.frozen["weight"], delta)
    torch.testing.assert_close(b.weight_static("weight", w), w + delta)


def test_read_noise_is_fresh_every_step_and_shared_by_the_batch():
    model = GenerativeModel(nn.Linear(20, 300).double(), GaussianLikelihood(0.5).double())
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "weight_read", "std": 0.0175}]}))
    x = torch.zeros(4, 300, dtype=F64)
    run = CircuitRun(c, x, torch.zeros(4, 20, dtype=F64), torch.Generator().manual_seed(0))
    w = model.decoder.weight.detach()
    run.weights.step(0.0, run.gen)
    d1 = run.weights.fwd["weight"] - w
    run.weights.step(1e-4, run.gen)
    d2 = run.weights.fwd["weight"] - w
    assert not torch.equal(d1, d2)
    for d in (d1, d2):
        assert abs(d.std().item() / (0.0175 * w.abs().max().item()) - 1) < 0.05
    assert abs(torch.corrcoef(torch.stack([d1.flatten(), d2.flatten()]))[0, 1].item()) < 0.05
    assert torch.equal(run.weights.fwd["bias"], model.decoder.bias.detach())
    assert run.weights.fb is run.weights.fwd  # the same read feeds the feedback path


def test_drift_follows_the_power_law():
    model = GenerativeModel(nn.Linear(10, 200).double(), GaussianLikelihood(0.5).double())
    w = model.decoder.weight.detach()
    _, (b,) = bind([{"type": "drift", "t_start": 100.0}], model)
    nu = b.frozen["weight"]
    mu_lo, _ = pcm_drift_nu_moments(torch.tensor(1.0))
    assert (nu >= 0).all() and 0.02 < nu.mean().item() < 0.12 and mu_lo.item() == pytest.approx(0.049)
    t = 2.5
    expect = w * ((t + 100.0 + 20.0) / 20.0) ** (-nu)
    torch.testing.assert_close(b.weight_dynamic("weight", w, t, None), expect)
    _, (c,) = bind([{"type": "drift", "nu": 0.05, "t_start": 3600.0, "compensate": True}], model)
    assert c.factor("weight", 0.0).mean().item() == pytest.approx(1.0)
    _, (d,) = bind([{"type": "drift", "nu": 0.05, "t_start": 3600.0}], model)
    assert d.factor("weight", 0.0).mean().item() == pytest.approx((3620 / 20) ** -0.05)


def test_feedback_mismatch_perturbs_only_the_feedback_path():
    model = GenerativeModel(nn.Linear(20, 300).double(), GaussianLikelihood(0.5).double())
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "feedback_mismatch", "std": 0.1}]}))
    run = CircuitRun(c, torch.zeros(2, 300, dtype=F64), torch.zeros(2, 20, dtype=F64), torch.Generator())
    w = model.decoder.weight.detach()
    torch.testing.assert_close(run.weights.fwd["weight"], w)
    rel = run.weights.fb["weight"] / w - 1
    assert abs(rel.std().item() / 0.1 - 1) < 0.05


# ------------------------------------------------------------------------ transforms ----

def test_quantisation_grid_bounds_and_stochastic_rounding():
    _, (q,) = bind([{"type": "quantisation", "site": "value", "bits": 5, "bound": 2.0}])
    q.start(1, None)
    a = torch.linspace(-5, 5, 1001, dtype=F64)
    out = q.value_transform(a)
    res = 2 * 2.0 / (2**5 - 2)
    assert out.abs().max() <= 2.0 + 1e-12
    torch.testing.assert_close(out / res, torch.round(out / res))
    inside = a.abs() < 1.9
    assert ((out - a)[inside].abs() <= res / 2 + 1e-12).all()
    _, (qs,) = bind([{"type": "quantisation", "site": "error", "bits": 4, "bound": 1.0, "stochastic": True}])
    gen = torch.Generator().manual_seed(0)
    qs.start(1, gen)
    e = torch.full((200000,), 0.37 * 2.0, dtype=F64)  # error site scale 1/sigma_x = 2
    se = qs.error_transform(e)
    assert abs(se.mean().item() - 0.74) < 0.01 and len(torch.unique(se)) == 2  # unbiased, two neighbours
    _, (qw,) = bind([{"type": "quantisation", "site": "weights", "bits": 4}])
    w = torch.randn(30, 4, dtype=F64)
    wq = qw.weight_static("weight", w)
    assert len(torch.unique(wq)) <= 2**4 - 1


def test_saturation_on_outputs_and_on_the_state():
    _, (s,) = bind([{"type": "saturation", "sites": ["value", "prediction"], "bound": 1.5, "mode": "tanh"}])
    a = torch.linspace(-10, 10, 101, dtype=F64)
    torch.testing.assert_close(s.value_transform(a), 1.5 * torch.tanh(a / 1.5))
    assert s.prediction_transform(a).abs().max() < 1.5
    model, x1 = linear_model(3, 5, 0.5, seed=6)
    c = Circuit(model, CircuitConfig(dt=1e-4, temperature=4.0, noise={"sources": [
        {"type": "saturation", "sites": ["value"], "bound": 0.5, "on": "state"}]}))
    traj = c.simulate(x1.expand(50, -1), steps=300, record_every=10)
    assert traj.z.abs().max() <= 0.5 + 1e-12 and (traj.z.abs() == 0.5).any()


# ---------------------------------------------------------------- the circuit with noise ----

def test_linear_and_autograd_kernels_agree_under_the_analog_preset():
    """Two code paths (explicit matmuls vs functional_call + autograd) give the same chain, noise and all."""
    model, x1 = linear_model(3, 8, 0.5, seed=7)
    wrapped = GenerativeModel(nn.Sequential(model.decoder), model.likelihood, latent_dim=3)
    x = x1.expand(5, -1)
    a = Circuit(model, CircuitConfig(dt=1e-4, noise="analog", seed=3))
    b = Circuit(wrapped, CircuitConfig(dt=1e-4, noise="analog", seed=3))
    ta, tb = a.simulate(x, steps=200, record_every=10), b.simulate(x, steps=200, record_every=10)
    assert a.state["kernel"] == "linear" and b.state["kernel"] == "autograd"
    torch.testing.assert_close(ta.z, tb.z, rtol=0, atol=1e-12)


def test_seeds_make_runs_reproducible_and_distinct():
    model, x1 = linear_model(3, 8, 0.5, seed=8)
    x = x1.expand(4, -1)
    runs = [Circuit(model, CircuitConfig(dt=1e-4, noise="analog", seed=s)).simulate(x, steps=50, record_every=10).z
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_sources_with_nothing_to_do_are_dropped_at_construction():
    circuit, sources = bind([{"type": "thermal", "value_std": 0.0, "error_std": 0.0},
                             {"type": "weight_read", "std": 0.0}, {"type": "shot", "value_fano": 0, "error_fano": 0}])
    assert sources == [] and all(not h for h in circuit.hooks.values())
    c = Circuit(linear_model()[0], CircuitConfig(noise={"sources": [{"type": "thermal", "error_std": 0.0}]}))
    assert c.hooks["value_increment"] and not c.hooks["error_increment"]


# ------------------------------------------------------------------------- time constants ----

def test_timescale_models():
    het = make_timescales({"name": "heterogeneous", "sigma": 0.3})
    a = het.build(1e-2, 2e-3, 0.1, 2000, (500,), seed=1)
    b = het.build(1e-2, 2e-3, 0.1, 2000, (500,), seed=1)
    c = het.build(1e-2, 2e-3, 0.1, 2000, (500,), seed=2)
    assert torch.equal(a.tau_z, b.tau_z) and not torch.equal(a.tau_z, c.tau_z)
    logs = torch.log(a.tau_z / 1e-2)
    assert abs(logs.std().item() / 0.3 - 1) < 0.1 and abs(logs.mean().item()) < 0.03
    assert a.tau_e.shape == (500,) and a.tau_m == 0.1  # gain units stay uniform by default
    mis = make_timescales("mismatch").build(1e-2, 2e-3, 0.1, 5000, (10,), seed=0)
    assert abs((mis.tau_z / 1e-2 - 1).std().item() / 0.1 - 1) < 0.1
    ad = make_timescales("adiabatic").build(1e-2, 2e-3, 0.1, 3, (4,))
    assert ad.adiabatic and ad.tau_e == 0.0
    cort = NoiseModel.preset("cortical").timescales.build(1.0, 1.0, 0.1, 3000, (100,))
    assert cort.tau_z.min() >= 0.01 and cort.tau_z.max() <= 0.02 and 0.013 < cort.tau_z.median() < 0.0155
    with pytest.raises(ValueError, match="unknown timescale model"):
        make_timescales("bursty")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_timescales({"name": "mismatch", "spread": 0.1})
    # the config's choice wins over the preset's, and the time constants reach the circuit
    model = linear_model()[0]
    circuit = Circuit(model, CircuitConfig(dt=1e-4, noise="cortical", timescales="uniform"))
    assert circuit.uniform_timescales
