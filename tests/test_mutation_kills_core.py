"""Checks written against the mutants that survived the K = 20 sampled mutation run of 2026-12-07 (issue 18;
docs/mutation.md): reproducibility under a seeded generator (a draw that silently used the global stream), the
documented closed forms of the preconditioner study's test problem and run length, record times, per-device spreads
switched on one at a time, the frozen-draw cache as a fast path that must not redraw, float64 draws staying float64,
likelihood samples, and the one-line errors naming what they refuse. Each test names the option or function it pins.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.local_update import PulseUpdateConfig, coincidences
from circuits.noise import NoiseModel
from circuits.noise.arrays import AnalogArray, PulsedDevice
from neuro_lpc import GaussianLikelihood, GenerativeModel
from neuro_lpc.dynamics import skew_matrix
from neuro_lpc.langevin import LangevinSampler
from neuro_lpc.likelihoods import DiscretizedGaussianLikelihood
from neuro_lpc.preconditioning import linear_gaussian_problem, preconditioner_bias
from problems import linear_model

F64 = torch.float64


def _perturb_global_stream():
    torch.manual_seed(12345)
    torch.rand(7)


# ------------------------------------------------------------------ seeded generators, not the global stream ----

def test_mala_accept_draws_come_from_the_given_generator():
    """LangevinSampler(metropolis=True): the accept / reject uniforms come from ``generator``: two runs with the same
    seeded generator and a different global stream give the same chain."""
    model, x1 = linear_model(3, 5, sigma=0.5, seed=2)
    x = x1.expand(6, -1)
    z0 = torch.zeros(6, 3, dtype=F64)
    runs = []
    for g in (1, 2):
        torch.manual_seed(g)
        res = LangevinSampler(0.3, 30, metropolis=True).sample(model, x, z0, generator=torch.Generator().manual_seed(5))
        runs.append(res.z)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_poisson_pulse_counts_come_from_the_given_generator():
    """PulseUpdateConfig(trains="poisson"): the counts are drawn from ``gen``: the same seed gives the same counts
    whatever the global stream."""
    g = torch.Generator().manual_seed(0)
    a, d = torch.rand(40, 6, generator=g, dtype=F64), torch.rand(40, 5, generator=g, dtype=F64) - 0.5
    cfg = PulseUpdateConfig(trains="poisson")
    out = []
    for s in (1, 2):
        torch.manual_seed(s)
        out.append(coincidences(a, d, 0.05, 1e-3, cfg, torch.Generator().manual_seed(9)))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert float(out[0][0].sum()) > 0


def test_linear_gaussian_problem_is_seeded_and_has_the_documented_spectrum():
    """preconditioning.linear_gaussian_problem: the same seed gives the same model and x whatever the global stream
    (other seeds differ), and the posterior precision P = W^T W / sigma^2 + I has eigenvalues
    geomspace(lam_min, kappa lam_min, dim) (its docstring)."""
    _perturb_global_stream()
    m1, x1 = linear_gaussian_problem(dim=5, kappa=30.0, lam_min=3.0, sigma=0.4, seed=4)
    torch.manual_seed(999)
    m2, x2 = linear_gaussian_problem(dim=5, kappa=30.0, lam_min=3.0, sigma=0.4, seed=4)
    m3, _ = linear_gaussian_problem(dim=5, kappa=30.0, lam_min=3.0, sigma=0.4, seed=5)
    for a, b in ((m1.decoder.weight, m2.decoder.weight), (m1.decoder.bias, m2.decoder.bias), (x1, x2)):
        assert torch.equal(a, b)
    assert not torch.equal(m1.decoder.weight, m3.decoder.weight)
    W = m1.decoder.weight.detach().numpy()
    P = W.T @ W / 0.4 ** 2 + np.eye(5)
    np.testing.assert_allclose(np.linalg.eigvalsh(P), np.geomspace(3.0, 90.0, 5), rtol=1e-10)


# ------------------------------------------------------------------ preconditioner_bias: its documented output ----

def _expected_steps(step_size, beta, dim=4, kappa=10.0):
    """The docstring's default run length, from the problem's P computed here: max(400, 2 ceil(8 / (gamma lambda_min
    g_min)), 2 ceil(5 / (1 - beta))), g_min = 1 / sqrt(max_i P_ii)."""
    model, _ = linear_gaussian_problem(dim, kappa)
    W = model.decoder.weight.detach().numpy()
    P = W.T @ W / float(model.likelihood.sigma) ** 2 + np.eye(dim)
    g_min = 1.0 / math.sqrt(np.max(np.diag(P)))
    memory = 1.0 / (1.0 - beta) if beta else 1.0
    return max(400, 2 * math.ceil(8.0 / (step_size * np.linalg.eigvalsh(P)[0] * g_min)), 2 * math.ceil(5 * memory))


@pytest.mark.parametrize("step_size, beta, which", [(0.1, 0.25, "floor"), (0.004, 0.25, "relaxation"),
                                                    (0.1, 0.995, "memory")])
def test_preconditioner_bias_default_length_and_its_report(step_size, beta, which):
    """preconditioner_bias with steps=None runs the documented length (each of its three terms the largest once);
    the report holds the run's settings and one r_k and one se per eigendirection."""
    want = _expected_steps(step_size, beta)
    terms = {"floor": 400, "memory": 2 * math.ceil(5 / (1 - beta))}
    if which in terms:
        assert want == terms[which]
    else:
        assert want > max(400, 2 * math.ceil(5 / (1 - beta)))
    out = preconditioner_bias(beta, step_size, chains=4, seed=1)
    assert out["steps"] == want and out["burn"] == want // 2
    assert (out["beta"], out["step_size"], out["chains"]) == (beta, step_size, 4)
    assert out["per_direction"].shape == (4,) and out["per_direction_se"].shape == (4,)
    assert np.all(out["per_direction_se"] > 0) and out["diverged"] is None


def test_preconditioner_bias_reports_a_diverged_run():
    """A step far past stability: the report says where it diverged and keeps every field (nan / inf)."""
    out = preconditioner_bias(None, 5.0, chains=3, steps=200)
    assert out["diverged"].startswith("DivergenceError at step")
    assert out["variance_ratio"] == float("inf") and math.isnan(out["fixed_gain_ratio"])
    assert out["per_direction_se"].shape == (4,) and np.all(np.isnan(out["per_direction_se"]))


# ------------------------------------------------------------------ records and the sampler families ----

@pytest.mark.parametrize("record_every", [1, 5])
def test_underdamped_chain_records_its_final_state(record_every):
    """dynamics="underdamped" with record_every dividing T: the last record is z(T) at t = T, with its log joint and
    score norm."""
    model, x1 = linear_model(3, 5, sigma=0.5, seed=3)
    res = LangevinSampler(0.05, 20, dynamics="underdamped", friction=1.0).sample(
        model, x1.expand(4, -1), torch.zeros(4, 3, dtype=F64), record_every=record_every,
        generator=torch.Generator().manual_seed(1))
    assert res.t.tolist() == list(range(record_every, 21, record_every))      # records after steps k e, k >= 1
    torch.testing.assert_close(res.z_trace[-1], res.z, rtol=0, atol=0)
    x = x1.expand(4, -1)                     # the last record's log joint and score norm are those at z(T)
    torch.testing.assert_close(res.log_joint_trace[-1], model.log_joint(x, res.z).detach(), rtol=1e-12, atol=1e-12)
    z = res.z.clone().requires_grad_(True)
    (s,) = torch.autograd.grad(model.log_joint(x, z).sum(), z)
    torch.testing.assert_close(res.score_norm_trace[-1], s.norm(dim=1), rtol=1e-10, atol=1e-12)


def test_plain_linear_kernel_with_finite_error_units_records_its_step_times():
    """The folded 'linear-plain' kernel (d >= n) with finite tau_e: the k-th record (k >= 1) is at
    t = k * record_every * dt."""
    model, x1 = linear_model(4, 3, sigma=0.5, seed=1)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=4e-4, noise="ideal")
    traj = Circuit(model, cfg).simulate(x1.expand(2, -1), torch.zeros(2, 4, dtype=F64), steps=12, record_every=3,
                                        generator=torch.Generator().manual_seed(0))
    assert traj.attrs["kernel"] == "linear-plain"
    torch.testing.assert_close(traj.t.double(), torch.arange(3, 13, 3, dtype=F64) * 1e-4)


def test_random_skew_in_one_dimension_is_the_zero_matrix():
    J = skew_matrix("random", 1, generator=torch.Generator().manual_seed(0))
    assert J.shape == (1, 1) and float(J.abs().max()) == 0.0


def test_optimal_skew_error_names_the_precision_shape_it_got():
    with pytest.raises(ValueError, match=r"needs a precision of shape \(3, 3\), got \(3, 2\)$"):
        skew_matrix("optimal", 3, precision=torch.ones(3, 2))


# ------------------------------------------------------------------ devices ----

def test_bound_spread_of_the_lower_bound_alone_gives_per_device_lower_bounds():
    """PulsedDevice(w_min_dtod > 0) with the other spreads 0: every device gets its own lower bound
    w_min (1 + w_min_dtod xi) (std 0.3 x 0.6 in device units) and the nominal upper bound."""
    w = torch.randn(60, 50, generator=torch.Generator().manual_seed(0), dtype=F64)
    arr = AnalogArray({"w": w}, pulsed=PulsedDevice(w_min_dtod=0.3, dw_min_dtod=0.0), seed=2)
    lo, hi = arr.w_lo["w"], arr.w_hi["w"]
    assert float(lo.std()) == pytest.approx(0.3 * 0.6, rel=0.1) and float(lo.mean()) == pytest.approx(-0.6, abs=0.02)
    assert float((hi - 0.6).abs().max()) < 0.6 * 0.3 * 6      # |max(hi, lo)|: the nominal 0.6 unless lo crossed it
    assert "w" not in AnalogArray({"w": w}, pulsed=PulsedDevice(dw_min_dtod=0.0), seed=2).w_lo


def test_one_over_f_noise_acts_on_biases_with_the_drift_sources_include_bias():
    """drift(one_over_f, include_bias): a bias on the array gets the accumulated 1/f noise too, std
    Q_s sqrt(ln((t + t_read) / (2 t_read))) relative to |g| (Q_s = 0.0088 at |g| = g_max)."""
    g = torch.Generator().manual_seed(3)
    b = torch.where(torch.rand(2000, generator=g, dtype=F64) < 0.5, -1.0, 1.0).to(F64)
    w = torch.where(torch.rand(20, 30, generator=g, dtype=F64) < 0.5, -1.0, 1.0).to(F64)
    src = NoiseModel([{"type": "drift", "nu": 0.0, "one_over_f": True, "t_start": 100.0, "include_bias": True}])
    arr = AnalogArray.from_noise({"w": w, "b": b}, src.sources, seed=3)
    dev = (arr.read("b") - b) / b.abs()
    t_read = 250e-9
    assert float(dev.std()) == pytest.approx(0.0088 * math.sqrt(math.log((120 + t_read) / (2 * t_read))), rel=0.08)


def test_frozen_draw_cache_returns_the_cached_draw_without_drawing(monkeypatch):
    """CircuitContext.frozen_randn with a frozen_cache: the first call stores (values, generator state after); a call
    from the same generator state returns a copy of the stored values and moves the generator on -- without a draw."""
    model, _ = linear_model(3, 5, sigma=0.5, seed=1)
    cache = {}
    ctx = Circuit(model, CircuitConfig(dt=1e-4, noise="ideal")).context
    ctx.frozen_cache = cache
    ctx.frozen_gen = torch.Generator().manual_seed(7)
    first = ctx.frozen_randn((4, 5))
    after = ctx.frozen_gen.get_state()
    assert len(cache) == 1 and torch.equal(next(iter(cache.values()))[0], first)
    ctx.frozen_gen = torch.Generator().manual_seed(7)

    def no_draw(*a, **k):
        raise AssertionError("frozen_randn drew again on a cache hit")
    monkeypatch.setattr(torch, "randn", no_draw)
    again = ctx.frozen_randn((4, 5))
    assert torch.equal(again, first) and again is not first
    assert torch.equal(ctx.frozen_gen.get_state(), after)


def test_shot_noise_of_a_float64_circuit_draws_float64_normals():
    """Shot source, float64 circuit: the value-unit increment is sqrt(|a| var_v) xi with xi the generator's float64
    normals (not float32 ones cast up)."""
    model, _ = linear_model(3, 5, sigma=0.5, seed=1)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "shot", "value_fano": 0.2}]}))
    from circuits.noise.units import _Shot
    shot = _Shot(NoiseModel([{"type": "shot", "value_fano": 0.2}]).sources[0], c.context)
    shot.start(4, torch.Generator().manual_seed(0))
    ref = torch.linspace(0.1, 2.0, 12, dtype=F64).reshape(4, 3)
    out = torch.zeros(4, 3, dtype=F64)
    shot.value_increment(ref, out, torch.Generator().manual_seed(8))
    xi = torch.randn(4, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    torch.testing.assert_close(out, xi * (ref.abs() * shot.var_v).sqrt(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("sites", ["value", ["value"]])
def test_a_single_site_may_be_given_as_a_string(sites):
    """A source's ``sites`` as one string is that one site (stored as a list)."""
    src = NoiseModel([{"type": "mismatch", "sites": sites}]).sources[0]
    assert src.params["sites"] == ["value"]


def test_noise_sources_compare_by_their_settings_and_expose_them_as_attributes():
    a, b, c = (NoiseModel([s]).sources[0] for s in ({"type": "thermal", "value_std": 0.1},
                                                    {"type": "thermal", "value_std": 0.1},
                                                    {"type": "thermal", "value_std": 0.2}))
    assert a == b and a != c and a != "thermal"
    assert a.value_std == 0.1 and c.value_std == 0.2
    with pytest.raises(AttributeError):
        a.not_a_parameter


# ------------------------------------------------------------------ likelihood samples ----

def test_gaussian_likelihood_samples_have_its_mean_and_sigma():
    mu = torch.linspace(-1, 1, 50, dtype=F64).expand(4000, -1)
    x = GaussianLikelihood(0.3).double().sample(mu, torch.Generator().manual_seed(1))
    assert x.shape == mu.shape
    assert float((x - mu).mean()) == pytest.approx(0.0, abs=3 * 0.3 / math.sqrt(x.numel()))
    assert float((x - mu).std()) == pytest.approx(0.3, rel=0.01)


def test_discretised_gaussian_samples_are_clamped_to_the_pixel_range_and_on_the_grid():
    mu = torch.linspace(-1.2, 1.2, 49, dtype=F64).expand(2000, -1)
    x = DiscretizedGaussianLikelihood(0.2).double().sample(mu, torch.Generator().manual_seed(2))
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    torch.testing.assert_close((x + 1) * 127.5, torch.round((x + 1) * 127.5), rtol=0, atol=1e-9)
    mid = mu[0].abs() < 0.4                                      # away from the edges: mean mu (bins of 1/127.5)
    assert float((x[:, mid] - mu[:, mid]).mean()) == pytest.approx(0.0, abs=0.01)


# ------------------------------------------------------------------ metrics ----

def test_default_cache_dir_is_the_environment_variable_or_the_users_cache(monkeypatch, tmp_path):
    from pathlib import Path

    from neuro_lpc.metrics._util import default_cache_dir
    monkeypatch.setenv("NEURO_LPC_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NEURO_LPC_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == Path(tmp_path) / ".cache" / "neuro_lpc"


def test_small_classifier_runs_on_8x8_images():
    """SmallClassifier's docstring: images >= 8x8 (two 2x2 poolings: 8 -> 4 -> 2)."""
    from neuro_lpc.metrics.classifier import SmallClassifier
    net = SmallClassifier(1, 3)
    assert net.body[:6](torch.zeros(2, 1, 8, 8)).shape == (2, 32, 2, 2)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_classifier_cache_records_what_it_was_trained_on(monkeypatch, tmp_path):
    """SmallClassifierFeatures.for_dataset: trains on ``load_dataset(dataset, root)`` and its cache file records the
    data set, epochs and seed beside the weights."""
    import neuro_lpc.metrics.classifier as C

    seen = {}

    class Info:
        channels, image_size, num_classes = 1, 8, 3

    def fake_load(dataset, root):
        seen["load"] = (dataset, root)
        return "train", "test", Info

    def fake_train(train, info, epochs, seed, device, test_dataset=None):
        return C.SmallClassifier(1, 3), 0.5

    monkeypatch.setattr(C, "load_dataset", fake_load)
    monkeypatch.setattr(C, "train_small_classifier", fake_train)
    C.SmallClassifierFeatures.for_dataset("mnist", root="/data/r", cache_dir=tmp_path, epochs=2, seed=3)
    assert seen["load"] == ("mnist", "/data/r")
    state = torch.load(tmp_path / "classifier-mnist-e2-s3.pt", weights_only=True)
    assert (state["dataset"], state["epochs"], state["seed"], state["feature_dim"]) == ("mnist", 2, 3, 128)


def test_classifier_cache_is_loaded_with_its_own_feature_width(tmp_path):
    """A cached classifier is rebuilt with the feature width it was saved with (here 16, not the default 128)."""
    import neuro_lpc.metrics.classifier as C

    net = C.SmallClassifier(1, 3, feature_dim=16)
    torch.save(dict(state_dict=net.state_dict(), channels=1, image_size=8, num_classes=3, feature_dim=16,
                    test_accuracy=0.9, dataset="mnist", epochs=1, seed=0), tmp_path / "classifier-mnist-e1-s0.pt")
    feats = C.SmallClassifierFeatures.for_dataset("mnist", cache_dir=tmp_path, epochs=1, seed=0)
    assert feats(torch.zeros(2, 1, 8, 8)).shape == (2, 16)


def test_metric_errors_name_what_they_refuse():
    from neuro_lpc.metrics.evaluate import make_feature_network
    from neuro_lpc.metrics.frechet import frechet_distance
    with pytest.raises(ValueError, match=r"^unknown feature network 'nope'; choose one of "):
        make_feature_network("nope")
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(np.zeros(2), np.array([[1.0, np.nan], [0.0, 1.0]]), np.zeros(2), np.eye(2))


def test_device_errors_start_with_their_own_words():
    from circuits.noise.converters import Quantisation
    with pytest.raises(ValueError, match=r"^analog array: mapping='pair' does not take pulsed writes"):
        AnalogArray({"w": torch.ones(2, 2)}, pulsed=PulsedDevice(), mapping="pair")
    with pytest.raises(ValueError, match=r"^noise source 'quantisation': stochastic rounding applies to activities"):
        Quantisation(site="weights", stochastic=True, bits=8)


def test_linear_dynamics_drift_defaults_and_limits():
    """circuits.units.linear_dynamics_drift: the default family is overdamped (linear_drift itself); nonreversible
    without a skew is the same matrix; an unknown family is refused naming the three."""
    from circuits.units import error_form, linear_drift, linear_dynamics_drift
    W = np.random.default_rng(0).normal(size=(5, 3))
    form = error_form("error", 0.5)
    for adiabatic in (True, False):
        A = linear_drift(W, 1.0, form, adiabatic)
        np.testing.assert_array_equal(linear_dynamics_drift(W, 1.0, form, adiabatic), A)
        np.testing.assert_allclose(linear_dynamics_drift(W, 1.0, form, adiabatic, "nonreversible"), A, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^dynamics must be 'overdamped', 'nonreversible' or 'underdamped', got 'x'$"):
        linear_dynamics_drift(W, 1.0, form, True, "x")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_arguments_keep_their_tensors_on_cuda():
    """CUDA-only mutants (docs/mutation_equivalent.txt): a dropped device argument leaves a tensor on the CPU."""
    from neuro_lpc.dynamics import mass_vector, optimal_skew
    from circuits.noise.arrays import _Drift
    assert mass_vector(torch.ones(3), 3, device="cuda").device.type == "cuda"
    P = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64, device="cuda"))
    assert optimal_skew(P).device.type == "cuda"
    model, _ = linear_model(3, 5, sigma=0.5, seed=1)
    ctx = Circuit(model.to("cuda"), CircuitConfig(dt=1e-4, noise="ideal", device="cuda")).context
    assert ctx.frozen_randn((2, 3)).device.type == "cuda"
    w = torch.randn(30, 20, dtype=F64, device="cuda")
    arr = AnalogArray({"w": w}, drift=_Drift(nu=0.05), seed=1)
    arr.read("w", 10.0)
    assert arr.__dict__.get("_log_age")             # the uniform-age fast path ran on CUDA


# ------------------------------------------------------------------ second batch (the run's last survivors) ----

def test_linear_feedback_is_noise_free_by_default_and_seeded_with_read_noise():
    """circuits.kernels_linear.linear_feedback: eps W by default; with read_sigma the noise comes from ``gen``
    (the same seed gives the same product whatever the global stream) and has std sigma_r ||eps|| per entry."""
    from circuits.kernels_linear import linear_feedback
    dec = nn.Linear(3, 400).double()
    eps = torch.randn(6, 400, generator=torch.Generator().manual_seed(1), dtype=F64)
    want = eps @ dec.weight.detach()
    torch.testing.assert_close(linear_feedback(dec, None, eps), want, rtol=0, atol=0)
    runs = []
    for s in (1, 2):
        torch.manual_seed(s)
        runs.append(linear_feedback(dec, None, eps, read_sigma=0.1, gen=torch.Generator().manual_seed(4)))
    assert torch.equal(runs[0], runs[1])
    z = (runs[0] - want) / (0.1 * eps.norm(dim=1, keepdim=True))
    assert float(z.abs().max()) > 0.1 and float(z.std()) < 3


def test_folded_linear_kernels_say_why_they_cannot_run_a_preconditioned_circuit():
    from circuits.kernels_linear import plain_unsupported
    model, _ = linear_model(3, 5, sigma=0.5, seed=1)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise="ideal", precondition=0.25))
    assert plain_unsupported(c, False) == "gain units (preconditioning)"


def test_noise_model_keeps_no_timescales_unless_given_and_names_a_bad_source_list():
    assert NoiseModel([{"type": "thermal"}]).timescales is None
    with pytest.raises(TypeError, match=r"^sources must be a list of noise sources \(dicts or NoiseSource objects\)$"):
        NoiseModel("thermal")


def test_sampler_errors_name_the_sampler_by_default():
    from neuro_lpc.dynamics import check_dynamics
    with pytest.raises(ValueError, match=r"^LangevinSampler: dynamics must be one of"):
        check_dynamics("bad")


def test_model_and_likelihood_refuse_non_positive_or_infinite_scales():
    for bad in (0.0, -1.0, float("inf")):       # the one-line refusal, not a math domain error further on
        with pytest.raises(ValueError, match=r"^GaussianLikelihood: sigma must be a positive finite number"):
            GaussianLikelihood(bad)
        with pytest.raises(ValueError):
            GenerativeModel(nn.Linear(3, 5), GaussianLikelihood(0.5), prior_std=bad)
    with pytest.raises(ValueError, match=r"^cannot infer the latent dimension from the decoder: pass latent_dim=$"):
        GenerativeModel(nn.Sequential(nn.Tanh()), GaussianLikelihood(0.5))
    model, _ = linear_model(3, 5, sigma=0.5, seed=1)
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor, got list$"):
        model.check_inputs([1.0])


def test_image_checks_refuse_empty_batches_and_wrong_ranks_naming_the_input():
    from neuro_lpc.metrics._util import _check_images
    from neuro_lpc.metrics.frechet import frechet_distance_features
    assert _check_images(torch.zeros(2, 1, 4, 4), (1,)).shape == (2, 1, 4, 4)
    for bad in (torch.zeros(0, 1, 4, 4), torch.zeros(4, 1, 28), torch.zeros(2, 1, 4, 4, 1)):
        with pytest.raises(ValueError, match=r"^images must be \(N, C, H, W\)"):
            _check_images(bad, (1,))
    with pytest.raises(ValueError, match=r"^fake_features must be \(N, D\)"):
        frechet_distance_features(np.zeros(3), np.zeros((4, 2)))


def test_inception_pool_conversion_keeps_ceil_mode():
    from types import SimpleNamespace

    from neuro_lpc.metrics.inception import _pool
    for name in ("MaxPool2d", "AvgPool2d"):
        layer = SimpleNamespace(original_name=name, kernel_size=3, stride=2, padding=0, ceil_mode=True,
                                count_include_pad=False)
        pool = _pool(layer)
        assert pool.ceil_mode is True and pool(torch.zeros(1, 1, 8, 8)).shape[-1] == 4      # ceil((8 - 3) / 2) + 1


def test_inception_precision_reason_on_an_x86_cpu_without_native_bf16(monkeypatch):
    import neuro_lpc.metrics.inception as I
    monkeypatch.setattr(I, "cpu_bf16_capabilities", lambda: ())
    monkeypatch.setattr(I, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64"}, raising=False)
    assert "auto on a CPU without native bf16" in I.precision_reason("auto", "cpu")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "aarch64"}, raising=False)
    assert "auto on a aarch64 CPU" in I.precision_reason("auto", "cpu")


def test_atomic_write_creates_folders_and_writes_through_a_hidden_temporary(tmp_path):
    """neuro_lpc.metrics._util._atomic_write: missing parent folders are made; while writing, the data sit in a hidden
    ``.<name>.*.tmp`` beside the target (never a name a cache lookup matches), which a failed write removes."""
    from neuro_lpc.metrics._util import _atomic_write
    target = tmp_path / "a" / "b" / "f.pt"
    seen = []

    def write(f):
        seen.extend(p.name for p in target.parent.iterdir())
        f.write(b"ok")
    _atomic_write(target, write)
    assert target.read_bytes() == b"ok"
    assert len(seen) == 1 and seen[0].startswith(".f.pt.") and seen[0].endswith(".tmp")

    def fail(f):
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        _atomic_write(tmp_path / "a" / "b" / "g.pt", fail)
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.pt"]


def test_tau_theta_is_checked_even_offline_and_warned_about_only_below_ten_tau_z():
    """CircuitTrainConfig: tau_theta must be > 0 seconds (or None / inf) whether or not online; online with
    tau_theta < 10 tau_z warns (the rule then follows single samples), at 10 tau_z it does not."""
    import warnings

    from circuits.learn import CircuitTrainConfig
    with pytest.raises(ValueError, match="tau_theta"):
        CircuitTrainConfig(tau_theta=-1.0).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CircuitTrainConfig(online=True, tau_theta=0.1, tau_z=0.01).validate()           # exactly 10 tau_z
    with pytest.warns(UserWarning, match="not much slower than tau_z"):
        CircuitTrainConfig(online=True, tau_theta=0.099, tau_z=0.01).validate()


def test_duplicate_fraction_compares_equal_numbers_of_fake_and_real_points():
    """metrics.diversity.duplicate_fraction: both sets are cut to n = min(M, N, max_n) rows. With M = N = n every point
    is used, so the answer is the closed form on the whole sets (independent of the subset's order): fakes whose nearest
    other fake is within ratio x the median real NN distance. With fewer fakes (M = 4 < N = 60) the real reference
    is the (lower) median NN distance of a seeded 4-row subset (numpy default_rng(seed).choice, the documented seeding), not of
    all 60 rows."""
    from neuro_lpc.metrics.diversity import duplicate_fraction

    def nn(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        return d.min(1)

    def lower_median(v):                     # torch.median's: the lower of the two middle values
        return np.sort(v)[(len(v) - 1) // 2]

    rng = np.random.default_rng(5)
    fake, real = rng.normal(size=(10, 2)), rng.normal(size=(10, 2))      # dim 2 < n = 10
    want = float(np.mean(nn(fake) <= 0.7 * lower_median(nn(real))))
    assert duplicate_fraction(fake, real, ratio=0.7) == pytest.approx(want)
    fake4, real60 = rng.normal(size=(4, 3)), rng.normal(size=(60, 3))
    sub = real60[np.random.default_rng(0).choice(60, 4, replace=False)]
    want4 = float(np.mean(nn(fake4) <= 1.2 * lower_median(nn(sub))))
    assert duplicate_fraction(fake4, real60, ratio=1.2, seed=0) == pytest.approx(want4) == 0.5
    assert lower_median(nn(sub)) > 1.5 * lower_median(nn(real60))    # the subset's reference really differs


def test_thermal_noise_of_a_float64_circuit_draws_float64_normals():
    """Thermal source, float64 circuit: the value-unit increment is coef_v xi with xi the generator's float64 normals."""
    from circuits.noise.units import _Thermal
    model, _ = linear_model(3, 5, sigma=0.5, seed=1)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "thermal", "value_std": 0.2}]}))
    th = _Thermal(NoiseModel([{"type": "thermal", "value_std": 0.2}]).sources[0], c.context)
    th.start(4, torch.Generator().manual_seed(0))
    out = torch.zeros(4, 3, dtype=F64)
    th.value_increment(torch.zeros(4, 3, dtype=F64), out, torch.Generator().manual_seed(8))
    xi = torch.randn(4, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    torch.testing.assert_close(out, xi * th.coef_v, rtol=1e-13, atol=0)


def test_feature_network_registry_passes_its_arguments_and_names_bad_input(monkeypatch):
    """make_feature_network("classifier", ...): the data set, root, cache folder and device (default "cpu") reach the
    classifier's loader; a non-dict noise source and bad features are refused naming what they got."""
    import neuro_lpc.metrics.evaluate as E
    from neuro_lpc.metrics.frechet import frechet_distance_se
    seen = {}
    monkeypatch.setattr(E.SmallClassifierFeatures, "for_dataset",
                        classmethod(lambda cls, dataset, root=None, cache_dir=None, device=None:
                                    seen.update(dataset=dataset, root=root, cache_dir=cache_dir, device=device)))
    E.make_feature_network("classifier", "mnist", cache_dir="/c", root="/r")
    assert seen == dict(dataset="mnist", root="/r", cache_dir="/c", device="cpu")
    with pytest.raises(TypeError, match=r"got int$"):
        NoiseModel([5])
    with pytest.raises(ValueError, match=r"^fake_features must be \(N, D\)"):
        frechet_distance_se(np.zeros(3), np.zeros((4, 2)))


def test_a_numeric_noise_parameter_refuses_a_boolean():
    """NoiseSource: true / false is not a number (bool is an int subclass in Python)."""
    with pytest.raises(ValueError, match="value_std"):
        NoiseModel([{"type": "thermal", "value_std": True}])
