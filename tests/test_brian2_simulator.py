"""``simulate_brian2`` (circuits.brian) against the torch circuit, the Lyapunov solution and a two-sample test.

* Noise-free runs (T = 0) are the same deterministic Euler recursion in both simulators: the trajectories
  agree to float64 rounding for linear and fully connected decoders, both error forms, adiabatic and finite
  tau_e, and every frozen source Brian2 expresses (mismatch, feedback mismatch, programming noise, per-unit
  time constants). A wrong sign, order or weight anywhere would show as an O(1) difference.
* Linear circuits (also with per-unit time constants and thermal noise in relative and absolute units): the
  stationary mean / covariance of z in Brian2 and in torch equal the discrete Lyapunov solution of the EM chain (``circuits.analysis``) within Monte Carlo error. Tolerance: 5 standard errors,
  se(mean_i) = sqrt(S_ii / N_eff), se(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / N_eff) (Gaussian z), with
  N_eff = (records kept x chains) / tau_rec and tau_rec the exact integrated autocorrelation time of z_i in
  records (the slowest over i: conservative, and the tau of z_i^2 is smaller still). Brian2 vs torch: 5 sqrt(2)
  se. A noise amplitude off by sqrt(2) scales every covariance entry by 2, i.e. > 10 se away.
* A nonlinear decoder: ``two_sample_test`` (its power is derived in its docstring) accepts torch vs Brian2 and
  rejects Brian2 with the temperature doubled.
"""
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("brian2")

from circuits import Circuit, CircuitConfig  # noqa: E402
from circuits.analysis import euler_maruyama_stationary, linear_circuit_matrices  # noqa: E402
from circuits.brian import BrianUnsupported, simulate_brian2  # noqa: E402
from circuits.brian.compare import linear_reference, two_sample_test  # noqa: E402
from neuro_lpc import BernoulliLikelihood, GaussianLikelihood, GenerativeModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")   # tiny steps: one torch thread (tests/conftest.py)

ALL_FROZEN = {"temperature": 0.0, "timescales": {"name": "heterogeneous", "sigma": 0.3},
              "sources": [{"type": "mismatch", "sites": ["value", "prediction", "error"]},
                          {"type": "feedback_mismatch", "std": 0.2}, {"type": "weight_programming"}]}


def make_model(decoder, sigma_x=0.7, prior_std=1.2, seed=0):
    torch.manual_seed(seed)
    dec = decoder if isinstance(decoder, nn.Module) else decoder()
    return GenerativeModel(dec.double(), GaussianLikelihood(sigma_x), prior_std=prior_std).double()


def mlp2():
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3), nn.SiLU(), nn.Linear(3, 4))


def mlp1_relu():
    return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 4), nn.Sigmoid())


@pytest.mark.parametrize("decoder,kw", [
    (lambda: nn.Linear(2, 4), dict(tau_e=2e-3)),
    (lambda: nn.Linear(2, 4), dict(tau_e=0.0, error_form="bogacz")),
    (mlp2, dict(tau_e=2e-3)),
    (mlp1_relu, dict(tau_e=0.0, error_form="bogacz")),
    (mlp2, dict(tau_e=2e-3, noise=ALL_FROZEN)),
    (lambda: nn.Linear(2, 4), dict(tau_e=0.0, noise=ALL_FROZEN)),
], ids=["linear", "linear-adiabatic-bogacz", "mlp2", "mlp-relu-adiabatic", "mlp2-frozen-noise", "linear-frozen-noise"])
def test_noise_free_run_is_the_torch_trajectory(decoder, kw):
    model = make_model(decoder)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, **({"noise": "none"} | kw))
    gen = torch.Generator().manual_seed(3)
    x, z0 = torch.randn(3, 4, generator=gen, dtype=torch.float64), 1.5 * torch.randn(3, 2, generator=gen, dtype=torch.float64)
    tr = Circuit(model, cfg).simulate(x, z0, steps=200, record_every=10, record_eps=True)
    br = simulate_brian2(model, x, cfg, z0=z0, steps=200, record_every=10, record_eps=True)
    assert br.z.shape == tr.z.shape == (20, 3, 2) and br.z.dtype == torch.float64
    torch.testing.assert_close(br.extras["eps"], tr.extras["eps"], rtol=0, atol=1e-9)
    torch.testing.assert_close(br.t, tr.t, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(br.z, tr.z, rtol=0, atol=1e-10)
    torch.testing.assert_close(br.log_joint, tr.log_joint, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(br.extras["error_norm"], tr.extras["error_norm"], rtol=1e-10, atol=1e-9)
    assert (br.z[-1] - z0).abs().max() > 0.1            # the run moved: the comparison is not vacuous
    assert br.attrs["simulator"] == "brian2" and br.attrs["steps"] == 200


def test_default_z0_is_the_torch_prior_draw():
    model = make_model(lambda: nn.Linear(2, 4))
    cfg = CircuitConfig(dt=1e-4, noise="none", seed=5)
    x = torch.zeros(2, 4, dtype=torch.float64)
    tr = Circuit(model, cfg).simulate(x, steps=20, record_every=20)
    br = simulate_brian2(model, x, cfg, steps=20, record_every=20)
    torch.testing.assert_close(br.z, tr.z, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- linear: Lyapunov
def lyapunov_z(W, b, x, sigma_x, prior_std, tau_z, tau_e, T, dt, q_extra_z=0.0, q_e=0.0, form="error"):
    """Stationary (mean, cov) of z of the EM chain and the exact tau_int (s) of each z_i, with extra white noise
    q = sigma^2 tau on z and on eps; tau_z, tau_e scalars or per unit (each row of the drift is divided by its
    unit's tau, so A = diag(1 / tau) A_1 with A_1 the matrices at unit time constants)."""
    n, d = W.shape
    adiabatic = np.all(np.asarray(tau_e) == 0)
    A1, c1, _ = linear_circuit_matrices(W, b, x, sigma_x, prior_std, 1.0, 0.0 if adiabatic else 1.0, T, form)
    tau = np.concatenate([np.broadcast_to(tau_z, d)] + ([] if adiabatic else [np.broadcast_to(tau_e, n)]))
    A, c = A1 / tau[:, None], c1 / tau
    q = np.full(len(tau), q_e, dtype=float)
    q[:d] = 2 * T + q_extra_z
    mean, cov = euler_maruyama_stationary(A, np.diag(np.sqrt(q / tau)), dt, c)
    # exact integrated autocorrelation time (continuous OU, in seconds): 2 [(-A)^-1 Sigma]_ii / Sigma_ii
    tau_int = 2 * np.diag(np.linalg.solve(-A, cov))[:d] / np.diag(cov)[:d]
    return mean[:d], cov[:d, :d], tau_int


@pytest.mark.parametrize("d,n,tau_e,T,thermal", [
    (1, 3, 0.0, 1.0, None),
    (2, 4, 2e-3, 1.0, None),
    (3, 6, 0.0, 0.5, None),
    (2, 5, 2e-3, 2.0, None),
    (2, 4, 2e-3, 1.0, {"value_std": 0.5, "error_std": 2.0}),   # error noise doubles the z-covariance
    (3, 5, 0.0, 1.0, {"value_std": 30.0, "error_std": 0.0, "units": "absolute", "timescales": 0.3}),
], ids=["d1-adiabatic-T1", "d2-finite-T1", "d3-adiabatic-T0.5", "d2-finite-T2", "d2-finite-thermal",
        "d3-adiabatic-heterogeneous-tau-absolute-thermal"])
def test_linear_stationary_law_equals_lyapunov_and_torch(d, n, tau_e, T, thermal):
    rng = np.random.default_rng(d * 10 + n)
    W, b, xv = 0.8 * rng.normal(size=(n, d)), 0.1 * rng.normal(size=n), rng.normal(size=n)
    sigma_x, prior_std, tau_z, dt = 0.8, 1.3, 1e-2, 1e-4
    model = make_model(nn.Linear(d, n), sigma_x, prior_std)
    with torch.no_grad():
        model.decoder.weight.copy_(torch.as_tensor(W))
        model.decoder.bias.copy_(torch.as_tensor(b))
    thermal = dict(thermal or {})
    spread = thermal.pop("timescales", None)
    noise = {"temperature": T, "sources": [{"type": "thermal", **thermal}] if thermal else []}
    if spread:
        noise["timescales"] = {"name": "heterogeneous", "sigma": spread}
    cfg = CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise=noise, seed=4)
    taus = Circuit(model, cfg).timescales
    tz = taus.tau_z.numpy() if spread else tau_z                  # per unit: the circuit's frozen draw
    if spread:
        assert np.ptp(tz) > 0.2 * tau_z
    absolute = thermal.get("units") == "absolute"
    q_z = (thermal["value_std"] ** 2 * tz if absolute else 2 * (thermal["value_std"] * prior_std) ** 2) if thermal else 0.0
    q_e = 2 * (thermal["error_std"] / sigma_x) ** 2 if thermal else 0.0
    mean, cov, tau_int = lyapunov_z(W, b, xv, sigma_x, prior_std, tz, tau_e, T, dt, q_z, q_e)
    if not thermal:   # the project's own reference (z-block of the same solution) agrees
        ref = linear_reference(model, torch.as_tensor(np.tile(xv, (2, 1))), cfg)
        np.testing.assert_allclose(ref["cov"], cov, rtol=1e-6)
    chains, steps, every, burn = 128, 3000, 10, 100
    x = torch.as_tensor(np.tile(xv, (chains, 1)))
    z0 = torch.as_tensor(np.tile(mean, (chains, 1)))           # start at the stationary mean: short burn-in
    runs = {"torch": Circuit(model, cfg).simulate(x, z0, steps=steps, record_every=every).z.numpy(),
            "brian2": simulate_brian2(model, x, cfg, z0=z0, steps=steps, record_every=every).z.numpy()}
    n_eff = (steps // every - burn) * chains / max(1.0, tau_int.max() / (every * dt))
    sd = np.sqrt(np.diag(cov))
    se_mean = sd / np.sqrt(n_eff)
    se_cov = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / n_eff)
    stats = {}
    for name, z in runs.items():
        kept = z[burn:].reshape(-1, d)
        stats[name] = (kept.mean(0), np.atleast_2d(np.cov(kept.T)))
        assert np.all(np.abs(stats[name][0] - mean) < 5 * se_mean), (name, stats[name][0], mean, se_mean)
        assert np.all(np.abs(stats[name][1] - cov) < 5 * se_cov), (name, stats[name][1], cov, se_cov)
    assert np.all(np.abs(stats["torch"][0] - stats["brian2"][0]) < 5 * np.sqrt(2) * se_mean)
    assert np.all(np.abs(stats["torch"][1] - stats["brian2"][1]) < 5 * np.sqrt(2) * se_cov)
    assert np.all(5 * se_cov.diagonal() < 0.5 * cov.diagonal())   # a factor-2 error in the noise would fail


# ------------------------------------------------------------------------------- nonlinear: two samples
def test_nonlinear_decoder_two_sample_agreement_and_power():
    """128 chains from prior draws, records 200 steps = 40 ms apart (4 relaxation times tau_z s_p^2 = 10 ms of the
    prior's leak: correlation <= e^-4 between records) after 600 steps: 1024 nearly independent samples per
    simulator. Same law: accepted at alpha = 0.01 (Bonferroni over 6 tests). Brian2 at 2 T: the z-variance ratio
    is ~2, |log 2| / se ~ 0.69 / 0.065 ~ 10 >> z_{1-0.01/12} = 3.1, so the test rejects with probability ~1."""
    model = make_model(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 4)), sigma_x=0.5, prior_std=1.0, seed=2)
    chains, steps, every = 128, 2000, 200
    x = model.sample(1, generator=torch.Generator().manual_seed(1), mean=False).repeat(chains, 1)
    cfg = CircuitConfig(dt=2e-4, tau_z=1e-2, tau_e=2e-3, noise="ideal", seed=7)
    samples = lambda tr: tr.z[2:].reshape(-1, 2).numpy()  # noqa: E731  (records at 600, 800, ..., 2000 steps)
    a = samples(Circuit(model, cfg).simulate(x, steps=steps, record_every=every))
    b = samples(simulate_brian2(model, x, cfg, steps=steps, record_every=every))
    hot = samples(simulate_brian2(model, x, CircuitConfig(dt=2e-4, tau_z=1e-2, tau_e=2e-3, noise="ideal", seed=7,
                                                          temperature=2.0), steps=steps, record_every=every))
    same, wrong = two_sample_test(a, b), two_sample_test(a, hot)
    assert not same["reject"], same["p"]
    assert wrong["reject"] and wrong["p_min"] < 1e-6, wrong["p"]


def test_two_sample_test_size_and_power_on_known_laws():
    rng = np.random.default_rng(0)
    rejections = sum(two_sample_test(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)))["reject"] for _ in range(40))
    assert rejections <= 3                                   # size <= 0.01 each; 40 tries: P(> 3) < 1e-3
    assert two_sample_test(rng.normal(size=(800, 2)), 1.5 * rng.normal(size=(800, 2)))["reject"]


# ------------------------------------------------------------------------------------------ refusals
def _cfg(**kw):
    return CircuitConfig(**(dict(dt=1e-4, tau_z=1e-2, tau_e=2e-3) | kw))


@pytest.mark.parametrize("model_kw,cfg_kw,match", [
    ({}, dict(noise={"sources": [{"type": "shot"}]}), "noise source 'shot'.*multiplicative"),
    ({}, dict(noise={"sources": [{"type": "flicker"}]}), "noise source 'flicker'"),
    ({}, dict(noise={"sources": [{"type": "weight_read"}]}), "noise source 'weight_read'"),
    ({}, dict(noise={"sources": [{"type": "drift"}]}), "noise source 'drift'.*time-dependent"),
    ({}, dict(noise={"sources": [{"type": "quantisation"}]}), "noise source 'quantisation'"),
    ({}, dict(noise={"sources": [{"type": "saturation"}]}), "noise source 'saturation'"),
    ({}, dict(noise={"sources": [{"type": "pulsed"}]}), "noise source 'pulsed'.*inference only"),
    ({}, dict(noise="analog"), "Brian2 cannot express noise source"),
    ({}, dict(precondition=0.9), "preconditioning"),
    ({}, dict(record_path="/tmp/x.h5"), "record_path"),
    ({}, dict(tau_e=0.0, noise={"sources": [{"type": "thermal", "error_std": 0.1}]}), "adiabatic"),
    (dict(decoder=nn.Sequential(nn.Linear(2, 16), nn.Unflatten(1, (1, 4, 4)), nn.Conv2d(1, 1, 3, padding=1))),
     {}, "convolutional decoder"),
    (dict(decoder=nn.Sequential(nn.Linear(2, 4), nn.ELU())), {}, "module 1 \\(ELU\\)"),
    (dict(likelihood=BernoulliLikelihood()), {}, "BernoulliLikelihood"),
])
def test_what_brian2_cannot_express_is_refused_in_one_line(model_kw, cfg_kw, match):
    torch.manual_seed(0)
    dec = model_kw.get("decoder", nn.Linear(2, 4))
    model = GenerativeModel(dec.double(), model_kw.get("likelihood", GaussianLikelihood(0.5)), latent_dim=2).double()
    x = torch.zeros(1, *model.output_shape, dtype=torch.float64)
    with pytest.raises(BrianUnsupported, match=match) as info:
        simulate_brian2(model, x, _cfg(**cfg_kw), steps=10, record_every=10)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kw,match", [(dict(target="cuda"), "target must be"), (dict(steps=0), "steps"),
                                      (dict(record_every=20), "record_every"), (dict(seed=-1), "seed")])
def test_bad_arguments_are_refused(kw, match):
    model = make_model(nn.Linear(2, 4))
    args = dict(steps=10, record_every=10) | kw
    with pytest.raises(ValueError, match=match):
        simulate_brian2(model, torch.zeros(1, 4, dtype=torch.float64), _cfg(), **args)


def test_exact_linear_reference_autocorrelation_time_is_the_ou_integral():
    """d = 1, adiabatic: z is OU with rate k = (w^2 / s^2 + 1 / s_p^2) / tau_z, so tau_int = 2 / k."""
    model = make_model(nn.Linear(1, 1), sigma_x=0.5, prior_std=1.0)
    with torch.no_grad():
        model.decoder.weight.fill_(2.0)
    ref = linear_reference(model, torch.zeros(2, 1, dtype=torch.float64), _cfg(tau_e=0.0))
    k = (4 / 0.25 + 1) / 1e-2
    assert ref["tau_int"][0] == pytest.approx(2 / k, rel=1e-6)
    # the EM chain z' = (1 - k dt) z + ...: variance (2 k / 17) dt / (1 - (1 - k dt)^2) = (1 / 17) / (1 - k dt / 2)
    assert ref["cov"][0, 0] == pytest.approx((1 / 17) / (1 - k * 1e-4 / 2), rel=1e-7)


@pytest.mark.slow
def test_cython_target_is_the_same_circuit():
    """The cython target (compiled once, cached in ~/.cython) runs the same recursion: equal to torch at T = 0."""
    model = make_model(mlp2)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise=ALL_FROZEN)
    gen = torch.Generator().manual_seed(3)
    x, z0 = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 2, generator=gen, dtype=torch.float64)
    tr = Circuit(model, cfg).simulate(x, z0, steps=100, record_every=10)
    br = simulate_brian2(model, x, cfg, z0=z0, steps=100, record_every=10, target="cython")
    assert br.attrs["target"] == "cython"
    torch.testing.assert_close(br.z, tr.z, rtol=0, atol=1e-10)
