"""The LPC circuit (circuits.circuit / circuits.integrate) against limits and closed forms.

Every expectation comes from the mathematics: the adiabatic limit is discrete LPC (same random
numbers, same chain), the linear circuit's Euler-Maruyama chain has a stationary law given by a
discrete Lyapunov equation (and the SDE by a continuous one), EM has weak order 1, and the
noise-free circuit is an ODE that torchdiffeq integrates to high accuracy.
"""
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from circuits import Circuit, CircuitConfig, NoiseModel
from circuits.analysis import (euler_maruyama_stationary, gaussian_posterior, linear_circuit_matrices,
                               linear_sde_stationary, ula_stationary_eigen)
from circuits.integrate import stable_dt_bound
from neuro_lpc import (BernoulliLikelihood, DivergenceError, GaussianLikelihood, GenerativeModel,
                       LangevinSampler)
from neuro_lpc.record import Trajectory, read_status

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------------- helpers ----

def linear_model(d=3, n=5, sigma=0.5, seed=0, scale=1.0, learn_sigma=False):
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=F64) * scale / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=F64) * 0.1)
    model = GenerativeModel(dec, GaussianLikelihood(sigma, learn_sigma=learn_sigma).double())
    x1 = torch.randn(1, n, generator=g, dtype=F64)
    return model, x1


def mlp_model(d=3, n=6, sigma=0.5, seed=0):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, n)).double()
    return GenerativeModel(dec, GaussianLikelihood(sigma).double(), latent_dim=d)


def conv_model(d=4, sigma=0.5, seed=0, learn_sigma=False):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 8 * 2 * 2), nn.Unflatten(1, (8, 2, 2)), nn.SiLU(),
                        nn.ConvTranspose2d(8, 1, 4, 2, 1)).double()  # -> (1, 4, 4)
    return GenerativeModel(dec, GaussianLikelihood(sigma, learn_sigma=learn_sigma).double(), latent_dim=d)


def Wbx(model, x1):
    return model.decoder.weight.detach(), model.decoder.bias.detach(), x1[0]


def assert_moments(samples, mean, cov, n_sigma=5.0, n_eff=None):
    """Empirical mean/cov of samples (N, k) against (mean, cov) within n_sigma Monte Carlo errors."""
    samples = torch.as_tensor(samples, dtype=F64)
    mean, cov = torch.as_tensor(mean, dtype=F64), torch.as_tensor(cov, dtype=F64)
    N = samples.shape[0] if n_eff is None else n_eff
    var = torch.diagonal(cov)
    z_mean = (samples.mean(0) - mean).abs() / (var / N).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    z_cov = (torch.cov(samples.T) - cov).abs() / se_cov
    assert z_mean.max() < n_sigma, (samples.mean(0), mean, z_mean)
    assert z_cov.max() < n_sigma, (torch.cov(samples.T), cov, z_cov)
    return z_cov.max().item()


def max_z_cov(samples, cov):
    samples, cov = torch.as_tensor(samples, dtype=F64), torch.as_tensor(cov, dtype=F64)
    var = torch.diagonal(cov)
    se = ((var[:, None] * var[None, :] + cov**2) / samples.shape[0]).sqrt()
    return ((torch.cov(samples.T) - cov).abs() / se).max().item()


def relaxation_steps(A, dt):
    """Steps of one e-folding of the slowest mode of the linear drift A."""
    return 1.0 / (np.min(np.abs(np.linalg.eigvals(A).real)) * dt)


def stationary_samples(circuit, x1, chains, A, dt, records=10, record_eps=True, seed=0, z0=None, burn=8.0,
                       spacing=3.0):
    """(z, eps) samples: `records` snapshots spaced `spacing` relaxation times, after `burn` of burn-in."""
    e_fold = relaxation_steps(A, dt)
    spacing = int(math.ceil(spacing * e_fold))
    burn = int(math.ceil(burn * e_fold / spacing)) * spacing
    x = x1.expand(chains, -1)
    z0 = torch.zeros(chains, circuit.model.latent_dim, dtype=F64) if z0 is None else z0
    traj = circuit.simulate(x, z0, steps=burn + records * spacing, record_every=spacing, record_eps=record_eps,
                            generator=torch.Generator().manual_seed(seed))
    keep = slice(burn // spacing, None)
    z = traj.z[keep].reshape(-1, traj.z.shape[-1])
    if not record_eps:
        return z
    eps = traj.extras["eps"][keep].reshape(z.shape[0], -1)
    return torch.cat([z, eps], 1)


# ------------------------------------------------------------------- adiabatic == discrete LPC ----

@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
def test_adiabatic_circuit_is_discrete_lpc(kind):
    """tau_e = 0, T = 1, dt = gamma tau_z: the EM chain *is* ULA with step gamma, same random numbers."""
    if kind == "linear":
        model, x1 = linear_model(4, 12, 0.5, seed=1)
        x = x1.expand(6, -1).contiguous() + 0.1 * torch.randn(6, 12, generator=torch.Generator().manual_seed(0), dtype=F64)
    elif kind == "mlp":
        model = mlp_model(3, 6, seed=2)
        x = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    else:
        model = conv_model(4, seed=3)
        x = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(9), dtype=F64)
    gamma, tau_z, steps = 0.02, 0.01, 60
    ref = LangevinSampler(step_size=gamma, steps=steps).sample(model, x, z0, record_every=5,
                                                              generator=torch.Generator().manual_seed(42))
    circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, temperature=1.0, noise="ideal"))
    traj = circuit.simulate(x, z0, steps=steps, record_every=5, generator=torch.Generator().manual_seed(42))
    assert circuit.state["kernel"] == ("linear-plain-reduced" if kind == "linear" else "autograd")
    torch.testing.assert_close(traj.z, ref.z_trace, rtol=0, atol=1e-11)
    torch.testing.assert_close(traj.log_joint, ref.log_joint_trace, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(traj.t, torch.arange(1, steps // 5 + 1, dtype=F64) * 5 * gamma * tau_z)


def discrete_case(kind, batch=6):
    """(model, x, z0) of the adiabatic-limit tests: linear, MLP or conv decoder, float64."""
    if kind == "linear":
        model, x1 = linear_model(4, 12, 0.5, seed=1)
        x = x1.expand(batch, -1).contiguous() + 0.1 * torch.randn(batch, 12, generator=torch.Generator().manual_seed(0),
                                                                  dtype=F64)
    elif kind == "mlp":
        model = mlp_model(3, 6, seed=2)
        x = torch.randn(batch, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    else:
        model = conv_model(4, seed=3)
        x = torch.randn(batch, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(batch, model.latent_dim, generator=torch.Generator().manual_seed(9), dtype=F64)
    return model, x, z0


@pytest.mark.parametrize("beta", [0.25, 0.9])
@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
def test_adiabatic_preconditioned_circuit_is_algorithm_1(kind, beta):
    """precondition = beta (tau_m = dt / (1 - beta)), tau_e = 0, dt = gamma tau_z: the gain units advance first
    (m(t) = beta m(t-1) + (1 - beta) s^2 from m = 0) and G = 1 / (sqrt(m / (1 - beta^t)) + delta) uses the
    updated, bias-corrected m, so the EM chain is Algorithm 1: LangevinSampler(precondition=beta), same draws."""
    model, x, z0 = discrete_case(kind)
    gamma, tau_z, steps = 0.02, 0.01, 60
    ref = LangevinSampler(step_size=gamma, steps=steps, precondition=beta).sample(
        model, x, z0, record_every=5, generator=torch.Generator().manual_seed(42))
    circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, precondition=beta))
    traj = circuit.simulate(x, z0, steps=steps, record_every=5, generator=torch.Generator().manual_seed(42))
    assert circuit.state["kernel"] == ("linear" if kind == "linear" else "autograd")
    torch.testing.assert_close(traj.z, ref.z_trace, rtol=0, atol=1e-11)
    torch.testing.assert_close(traj.log_joint, ref.log_joint_trace, rtol=1e-12, atol=1e-9)
    # the recorded gain is the G of the step just taken: bias-corrected with t = steps at the end
    m_hat = circuit.state["m"] / (1 - beta**steps)
    torch.testing.assert_close(traj.extras["gain"][-1], 1 / (m_hat.sqrt() + 1e-8), rtol=1e-12, atol=0)


def test_preconditioned_decoder_gradients_equal_algorithm_1():
    """accumulate_grad with precondition = beta: the same grad_theta sums as LangevinSampler(precondition=beta)."""
    model = conv_model(4, seed=5, learn_sigma=True)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    gamma, tau_z, steps, beta = 0.02, 0.01, 20, 0.5
    LangevinSampler(step_size=gamma, steps=steps, precondition=beta).sample(
        model, x, z0, generator=torch.Generator().manual_seed(3), accumulate_grad=True)
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, precondition=beta))
    circuit.simulate(x, z0, steps=steps, generator=torch.Generator().manual_seed(3), accumulate_grad=True)
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("d, n", [(3, 7), (6, 4)])
@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_linear_kernels_agree(d, n, tau_e, form):
    """The fast linear kernels (reduced basis f = eps W when d < n, direct otherwise) give the same chain,
    records and final error units as the general kernel (forced by per-unit time constants of spread 0)."""
    model, x1 = linear_model(d, n, 0.5, seed=20)
    x = x1.expand(4, -1).contiguous() + 0.3 * torch.randn(4, n, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(4, d, generator=torch.Generator().manual_seed(2), dtype=F64)
    kw = dict(dt=2e-4, tau_z=1e-2, tau_e=tau_e, error_form=form)
    fast = Circuit(model, CircuitConfig(**kw))
    slow = Circuit(model, CircuitConfig(**kw, timescales={"name": "mismatch", "sigma": 0.0}))
    a = fast.simulate(x, z0, steps=300, record_every=7, record_eps=True)
    b = slow.simulate(x, z0, steps=300, record_every=7, record_eps=True)
    assert fast.state["kernel"] == ("linear-plain-reduced" if d < n else "linear-plain")
    assert slow.state["kernel"] == "linear"
    torch.testing.assert_close(a.z, b.z, rtol=0, atol=1e-11)
    torch.testing.assert_close(a.log_joint, b.log_joint, rtol=1e-12, atol=1e-9)
    for key in ("eps", "error_norm"):
        torch.testing.assert_close(a.extras[key], b.extras[key], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(fast.state["eps"], slow.state["eps"], rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("noise, tau_e", [("ideal", 2e-3), ("ideal", 0.0), ("analog", 2e-3)])
def test_snapshot_and_restore_replay_exactly(noise, tau_e):
    """What the divergence replay relies on: from a snapshot (state + generator) the run repeats bit for bit."""
    from circuits.circuit import CircuitRun
    model, x1 = linear_model(3, 7, 0.5, seed=21)
    c = Circuit(model, CircuitConfig(dt=2e-4, tau_e=tau_e, noise=noise))
    x = x1.expand(4, -1)
    run = CircuitRun(c, x, torch.zeros(4, 3, dtype=F64), torch.Generator().manual_seed(0))
    for _ in range(5):
        run.step()
    snap = run.snapshot()
    for _ in range(7):
        run.step()
    z1, e1 = run.z.clone(), run.eps.clone()
    run.restore(snap)
    assert run.k == 5
    for _ in range(7):
        run.step()
    assert torch.equal(run.z, z1) and torch.equal(run.eps, e1)


def test_adiabatic_decoder_gradients_equal_discrete_lpc():
    """accumulate_grad: the same grad_theta log p(x, z(t-1)) sums as LangevinSampler (learned sigma too)."""
    model = conv_model(4, seed=5, learn_sigma=True)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    gamma, tau_z, steps = 0.02, 0.01, 20
    LangevinSampler(step_size=gamma, steps=steps).sample(model, x, z0, generator=torch.Generator().manual_seed(3),
                                                        accumulate_grad=True)
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    for rule in ("hebbian", "exact"):
        circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, learning_rule=rule))
        circuit.simulate(x, z0, steps=steps, generator=torch.Generator().manual_seed(3), accumulate_grad=True)
        for p, r in zip(model.parameters(), ref):
            torch.testing.assert_close(p.grad, r, rtol=1e-9, atol=1e-12)
        model.zero_grad(set_to_none=True)


def test_online_learning_moves_weights_by_the_accumulated_gradient():
    """theta += lr * mean_b grad each step, so the total move is -lr * steps * (the accumulated .grad)."""
    model, x1 = linear_model(3, 6, 0.5, seed=4)
    x = x1.expand(8, -1)
    w0 = model.decoder.weight.detach().clone()
    circuit = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3))
    steps, lr = 200, 1e-3
    circuit.simulate(x, steps=steps, accumulate_grad=True, online_lr=lr)
    assert circuit.state["kernel"] == "autograd"
    moved = model.decoder.weight.detach() - w0
    assert moved.abs().max() > 0
    torch.testing.assert_close(moved, -lr * steps * model.decoder.weight.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lik", ["gaussian", "discretized"])
@pytest.mark.parametrize("noise", ["ideal", "thermal"])
def test_learning_with_finite_tau_e_and_a_learned_sigma(lik, noise):
    """accumulate_grad with finite tau_e and a learnable sigma: runs without a warning, and with the "exact"
    rule every gradient is -1/(B steps) sum_t grad_theta log p(x, z(t-1)) at the recorded states; "hebbian"
    gives the same sigma gradient (it comes from log p directly) and finite decoder gradients."""
    from neuro_lpc import DiscretizedGaussianLikelihood
    torch.manual_seed(30)
    dec = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 6)).double()
    likelihood = GaussianLikelihood(0.3, learn_sigma=True) if lik == "gaussian" else DiscretizedGaussianLikelihood()
    model = GenerativeModel(dec, likelihood.double(), latent_dim=3)
    g = torch.Generator().manual_seed(0)
    x = torch.round((torch.rand(4, 6, generator=g, dtype=F64) + 0.5) * 127.5) / 127.5 - 1  # bin centres
    z0 = torch.randn(4, 3, generator=g, dtype=F64)
    steps = 5
    grads = {}
    for rule in ("exact", "hebbian"):
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. float() of a sigma that requires grad
            circuit = Circuit(model, CircuitConfig(tau_e=2e-3, dt=1e-4, noise=noise, learning_rule=rule))
            traj = circuit.simulate(x, z0, steps=steps, record_every=1, accumulate_grad=True)
        grads[rule] = [p.grad.clone() for p in model.parameters()]
        for p in model.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0
    # reference: the states before each step are z0, z(1), ..., z(steps - 1)
    zs = torch.cat([z0[None], traj.z[:-1]]).reshape(-1, 3)
    model.zero_grad(set_to_none=True)
    loss = -model.log_joint(x.repeat(steps, 1), zs).sum() / (x.shape[0] * steps)
    loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    for got, r in zip(grads["exact"], ref):
        torch.testing.assert_close(got, r, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads["hebbian"][-1], ref[-1], rtol=1e-9, atol=1e-12)  # log sigma
    # without learning too (the linear kernel with noise sources, a learnable sigma)
    lm, x1 = linear_model(3, 5, 0.5, seed=31, learn_sigma=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Circuit(lm, CircuitConfig(tau_e=2e-3, dt=1e-4, noise=noise)).simulate(x1.expand(2, -1), steps=5, record_every=5)


@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
@pytest.mark.parametrize("record_eps", [False, True])
def test_records_take_the_log_joint_from_the_next_steps_forward(tmp_path, tau_e, record_eps):
    """No decoder forward per record: the log joint (and, adiabatic, the error) at a recorded state comes
    from the next step's forward, the last record from one forward at the end -- as LangevinSampler. A
    run is 1 forward (initial error units) + 1 per step + 1; the records are those of the true model."""
    model, dec = counted_model()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    cfg = CircuitConfig(dt=1e-4, tau_e=tau_e, noise="thermal", record_buffer=3)
    traj = Circuit(model, cfg).simulate(x, z0, steps=20, record_every=2, record_eps=record_eps)
    assert dec.calls == 1 + 20 + 1
    with torch.no_grad():
        mu = model.decoder(traj.z.reshape(-1, 3))
        lj = model.log_joint(x.repeat(10, 1), traj.z.reshape(-1, 3)).reshape(10, 3)
        err = model.error(x.repeat(10, 1), mu).reshape(10, 3, 6)
    torch.testing.assert_close(traj.log_joint, lj, rtol=1e-12, atol=1e-10)
    if tau_e == 0:
        torch.testing.assert_close(traj.extras["error_norm"], torch.linalg.vector_norm(err, dim=2), rtol=1e-12,
                                   atol=1e-10)
        if record_eps:
            torch.testing.assert_close(traj.extras["eps"], err, rtol=1e-12, atol=1e-10)
    # streamed in blocks of 3 records (the last record of a block is measured before its write): the same
    disk = Circuit(model, cfg).simulate(x, z0, steps=20, record_every=2, record_eps=record_eps,
                                        record_path=tmp_path / "r.h5")
    for key in ("z", "log_joint"):
        torch.testing.assert_close(getattr(disk, key), getattr(traj, key), rtol=0, atol=0)
    for key, v in traj.extras.items():
        torch.testing.assert_close(disk.extras[key], v, rtol=0, atol=0)
    # steps not a multiple of record_every: the last record is taken from the last step's forward
    dec.calls = 0
    Circuit(model, cfg).simulate(x, z0, steps=21, record_every=2)
    assert dec.calls == 1 + 21 + (1 if tau_e == 0 else 0)  # adiabatic: the final error units


# --------------------------------------------------------------------- linear-Gaussian theory ----

@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_linear_circuit_stationary_law_matches_discrete_lyapunov(form):
    """Finite tau_e: (z, eps) of 4000 chains match the EM chain's discrete Lyapunov solution, and the
    (clearly different) continuous solution is rejected at this coarse dt."""
    model, x1 = linear_model(3, 5, 0.5, seed=6)
    W, b, x = Wbx(model, x1)
    tau_z, tau_e = 1e-2, 2e-3
    dt = 0.25 * tau_e  # coarse: the EM bias is large
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e, 1.0, form)
    mean_em, cov_em = euler_maruyama_stationary(A, Bm, dt, c)
    mean_ct, cov_ct = linear_sde_stationary(A, Bm, c)
    circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, error_form=form))
    X = stationary_samples(circuit, x1, 4000, A, dt)
    assert_moments(X, mean_em, cov_em)
    assert max_z_cov(X, cov_ct) > 6  # the test has the power to see the O(dt) bias
    # the posterior mean is exact for any tau_e; the z covariance is not the posterior's
    post_mean, post_cov, _ = gaussian_posterior(W, b, x, 0.5)
    np.testing.assert_allclose(mean_ct[:3], post_mean, atol=1e-10)


def test_linear_circuit_small_dt_approaches_continuous_lyapunov():
    model, x1 = linear_model(3, 5, 0.5, seed=7)
    W, b, x = Wbx(model, x1)
    tau_z, tau_e, dt = 1e-2, 2e-3, 4e-5
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e)
    mean_ct, cov_ct = linear_sde_stationary(A, Bm, c)
    circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e))
    X = stationary_samples(circuit, x1, 4000, A, dt, records=6)
    assert_moments(X, mean_ct, cov_ct)
    # finite tau_e: the z-marginal is not the posterior (closed form, then seen in the samples)
    _, post_cov, _ = gaussian_posterior(W, b, x, 0.5)
    assert np.abs(cov_ct[:3, :3] - post_cov).max() > 0.05 * np.abs(post_cov).max()


def test_adiabatic_T1_samples_the_exact_posterior():
    """tau_e = 0: the stationary law is ULA's (discrete Lyapunov), which tends to the posterior as dt -> 0."""
    model, x1 = linear_model(3, 8, 0.5, seed=8)
    W, b, x = Wbx(model, x1)
    mean, cov, P = gaussian_posterior(W, b, x, 0.5)
    tau_z = 1e-2
    lam_max = np.linalg.eigvalsh(P).max()
    g = torch.Generator().manual_seed(0)
    L = torch.linalg.cholesky(torch.as_tensor(cov))
    z0 = torch.as_tensor(mean) + torch.randn(4000, 3, generator=g, dtype=F64) @ L.T  # start in the posterior
    for frac, power in ((0.8, True), (0.02, False)):
        gamma = frac / lam_max
        circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0))
        A = -P / tau_z
        Z = stationary_samples(circuit, x1, 4000, A, gamma * tau_z, records=6, record_eps=False, z0=z0, burn=2,
                               spacing=2)
        _, cov_ula = ula_stationary_eigen(P, mean, gamma)
        assert_moments(Z, mean, cov_ula)
        if power:
            assert max_z_cov(Z, cov) > 6  # the ULA step bias is visible at gamma lam_max = 0.8
        else:
            assert_moments(Z, mean, cov)  # and negligible at 0.02


def test_heterogeneous_time_constants_match_their_lyapunov_solution():
    """Per-unit tau (mismatch model): the drift is D^-1 M; EM's discrete Lyapunov solution holds."""
    model, x1 = linear_model(3, 5, 0.5, seed=9)
    W, b, x = Wbx(model, x1)
    cfg = CircuitConfig(dt=5e-4, tau_z=1e-2, tau_e=2e-3, timescales={"name": "mismatch", "sigma": 0.2}, seed=3)
    circuit = Circuit(model, cfg)
    tz = circuit.timescales.tau_z.numpy()
    te = circuit.timescales.tau_e.numpy()
    assert np.std(np.concatenate([tz / 1e-2, te / 2e-3])) > 0.05
    Wn, bn, xn = (t.numpy() for t in (W, b, x))
    M = np.block([[-np.eye(3), Wn.T], [-Wn / 0.25, -np.eye(5)]])
    tau = np.concatenate([tz, te])
    A = M / tau[:, None]
    c = np.concatenate([np.zeros(3), (xn - bn) / 0.25]) / tau
    Bm = np.concatenate([np.diag(np.sqrt(2 / tz)), np.zeros((5, 3))], 0)
    mean_em, cov_em = euler_maruyama_stationary(A, Bm, cfg.dt, c)
    X = stationary_samples(circuit, x1, 4000, A, cfg.dt)
    assert_moments(X, mean_em, cov_em)


def _exact_linear_mean(A, c, X0, t):
    Xs = -np.linalg.solve(A, c)
    return scipy.linalg.expm(A * t) @ (X0 - Xs) + Xs


def test_weak_error_is_first_order_in_dt():
    """log-log slope ~1 of (a) E[z(t_end)] from a deterministic start (EM vs the exact expm solution; by
    linearity E[z] is the noise-free trajectory) and (b) the stationary covariance (Lyapunov closed forms)."""
    model, x1 = linear_model(3, 5, 0.5, seed=10)
    W, b, x = Wbx(model, x1)
    tau_z, tau_e, t_end = 1e-2, 2e-3, 0.02
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e)
    z0 = torch.tensor([[1.0, -0.5, 0.3]], dtype=F64)
    with torch.no_grad():
        eps0 = model.error(x1, model.decoder(z0))
    X0 = torch.cat([z0, eps0], 1)[0].numpy()
    exact = _exact_linear_mean(A, c, X0, t_end)[:3]
    dts = [t_end / k for k in (200, 400, 800, 1600)]  # dt / tau_e from 0.05 down: the asymptotic regime
    errs = []
    for dt in dts:
        circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise="none"))
        traj = circuit.simulate(x1, z0, steps=round(t_end / dt), record_every=round(t_end / dt))
        errs.append(np.abs(traj.z[-1, 0].numpy() - exact).max())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1, (errs, slope)
    _, cov_ct = linear_sde_stationary(A, Bm, c)
    vdts = [1e-4, 5e-5, 2.5e-5, 1.25e-5]
    verr = [np.abs(euler_maruyama_stationary(A, Bm, dt, c)[1] - cov_ct).max() for dt in vdts]
    slope_v = np.polyfit(np.log(vdts), np.log(verr), 1)[0]
    assert 0.9 < slope_v < 1.1, (verr, slope_v)


def test_preset_none_converges_to_the_torchdiffeq_solution():
    """Nonlinear (MLP) decoder, finite tau_e, T = 0: EM -> the dopri5 solution with error ~ dt."""
    model = mlp_model(3, 6, seed=11)
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    t_end = 0.02
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="none")
    ode = Circuit(model, cfg).simulate_ode(x, z0, t_end=t_end, n_points=5, rtol=1e-11, atol=1e-13)
    assert ode.z.shape == (5, 2, 3) and float(ode.t[-1]) == t_end
    torch.testing.assert_close(ode.z[0], z0)
    dts = [t_end / k for k in (25, 50, 100, 200)]
    errs = []
    for dt in dts:
        c = Circuit(model, CircuitConfig(dt=dt, tau_z=1e-2, tau_e=2e-3, noise="none"))
        steps = round(t_end / dt)
        traj = c.simulate(x, z0, steps=steps, record_every=steps)
        errs.append((traj.z[-1] - ode.z[-1]).abs().max().item())
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.8 < slope < 1.2, (errs, slope)


def test_ode_flow_reaches_the_posterior_mean():
    """T = 0 gradient flow (adiabatic or not) settles at the MAP = posterior mean (linear-Gaussian)."""
    model, x1 = linear_model(3, 8, 0.5, seed=12)
    W, b, x = Wbx(model, x1)
    mean, _, _ = gaussian_posterior(W, b, x, 0.5)
    z0 = torch.zeros(1, 3, dtype=F64)
    for kw in ({"tau_e": 0.0}, {"tau_e": 2e-3}, {"tau_e": 2e-3, "error_form": "bogacz"}):
        c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, noise="none", **kw))
        ode = c.simulate_ode(x1, z0, t_end=1.0, n_points=3, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ode.z[-1, 0].numpy(), mean, atol=1e-6)
        em = c.simulate(x1, z0, steps=4000, record_every=4000)
        np.testing.assert_allclose(em.z[-1, 0].numpy(), mean, atol=1e-5)


def test_preconditioned_circuit_records_gain_and_keeps_the_posterior_mean():
    """Gain units: G = 1 / (sqrt(m) + delta) is recorded; the drift's fixed point (the posterior mean for a
    linear-Gaussian model) does not depend on G, so the chains stay centred on it."""
    model, x1 = linear_model(3, 8, 0.5, seed=13)
    W, b, x = Wbx(model, x1)
    mean, cov, _ = gaussian_posterior(W, b, x, 0.5)
    for pc in (True, 0.99):
        c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, precondition=pc, precondition_tau=0.05))
        traj = c.simulate(x1.expand(500, -1), steps=1500, record_every=100)
        g = traj.extras["gain"]
        assert g.shape == (15, 500, 3) and torch.isfinite(g).all() and (g > 0).all()
        zs = traj.z[5:].reshape(-1, 3)
        se = np.sqrt(np.diag(cov) / 500)  # records are correlated: one record's worth of samples
        assert (np.abs(zs.mean(0).numpy() - mean) < 6 * se).all()
    assert CircuitConfig(dt=1e-4, precondition=0.99).gain_tau() == pytest.approx(1e-2)


# ------------------------------------------------------------------------------ recording ----

def test_trajectory_contents_and_hdf5_streaming_match(tmp_path):
    model, x1 = linear_model(3, 5, 0.5, seed=14)
    x = x1.expand(4, -1)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="thermal", record_buffer=7, seed=5)
    mem = Circuit(model, cfg).simulate(x, steps=300, record_every=10)
    assert mem.z.shape == (30, 4, 3) and mem.log_joint.shape == (30, 4) and mem.extras["error_norm"].shape == (30, 4)
    torch.testing.assert_close(mem.t, torch.arange(1, 31, dtype=F64) * 10 * 1e-4)
    torch.testing.assert_close(mem.log_joint[-1], model.log_joint(x, mem.z[-1]).detach())
    path = tmp_path / "run.h5"
    disk = Circuit(model, cfg).simulate(x, steps=300, record_every=10, record_path=path)
    torch.testing.assert_close(disk.z, mem.z)
    back = Trajectory.from_hdf5(path)
    torch.testing.assert_close(back.z, mem.z)
    torch.testing.assert_close(back.extras["error_norm"], mem.extras["error_norm"])
    assert back.attrs["seed"] == 5 and back.attrs["config"]["noise"] == "thermal"
    assert read_status(path) == "complete"
    last = Circuit(model, cfg).simulate(x, steps=300, record_every=10, record_path=tmp_path / "b.h5", keep_records=False)
    assert last.z.shape == (1, 4, 3)
    torch.testing.assert_close(last.z[0], mem.z[-1])
    torch.testing.assert_close(last.t, mem.t[-1:])


def test_initial_states_prior_encoder_and_seed():
    model, x1 = linear_model(3, 5, 0.5, seed=15)
    x = x1.expand(3, -1)
    c = Circuit(model, CircuitConfig(dt=1e-4, seed=2))
    a = c.simulate(x, steps=20, record_every=10)
    b = c.simulate(x, z0="prior", steps=20, record_every=10)
    torch.testing.assert_close(a.z, b.z)  # None == "prior", same seed -> same run

    class Enc(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), 5.0, dtype=F64), torch.full((x.shape[0], 3), 1e-8, dtype=F64)

    e = c.simulate(x, z0="encoder", encoder=Enc(), steps=5, record_every=1, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    z0 = 5.0 + 1e-4 * torch.randn((3, 3), generator=g, dtype=F64)  # the reparameterised draw, then the run
    manual = c.simulate(x, z0, steps=5, record_every=1, generator=g)
    torch.testing.assert_close(e.z, manual.z)
    with pytest.raises(ValueError, match="encoder="):
        c.simulate(x, z0="encoder", steps=1, record_every=1)


def test_config_round_trip_and_validation():
    cfg = CircuitConfig(dt=2e-4, noise={"preset": "thermal", "temperature": 0.5}, timescales="mismatch", seed=4)
    d = cfg.to_dict()
    assert CircuitConfig.from_dict(d) == cfg
    cfg2 = CircuitConfig(noise=NoiseModel.preset("analog"))
    assert CircuitConfig.from_dict(cfg2.to_dict()).noise_model() == NoiseModel.preset("analog")
    assert cfg.resolved_temperature() == 0.5
    assert CircuitConfig(noise="none").resolved_temperature() == 0.0
    for bad in ({"dt": -1e-4}, {"tau_z": 0.0}, {"tau_e": -1e-3}, {"temperature": -1.0}, {"error_form": "x"},
                {"precondition": "adam"}, {"noise": "loud"}, {"timescales": "weird"}, {"check_every": 0},
                {"noise": {"sources": [{"type": "thermal", "value_std": -1}]}}):
        with pytest.raises(ValueError):
            CircuitConfig(**bad).validate()
    with pytest.raises(ValueError, match="unknown field"):
        CircuitConfig.from_dict({"dt": 1e-4, "tau": 1})


# ----------------------------------------------------------------------------- bad inputs ----

class CountingDecoder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, z):
        self.calls += 1
        return self.inner(z)


def counted_model():
    dec = CountingDecoder(nn.Sequential(nn.Linear(3, 6)).double())
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double(), latent_dim=3)
    model.output_shape  # probe once
    dec.calls = 0
    return model, dec


@pytest.mark.parametrize("kw, match", [
    ({"noise": "loud"}, "unknown noise preset"),
    ({"noise": {"sources": [{"type": "hum"}]}}, "unknown noise source"),
    ({"noise": {"sources": [{"type": "thermal", "volume": 1}]}}, "unknown parameter"),
    ({"noise": {"sources": [{"type": "thermal", "value_std": -0.1}]}}, "non-negative"),
    ({"dt": 5e-3, "tau_e": 2e-3}, "unstable"),
    ({"tau_z": -1e-2}, "tau_z must be positive"),
    ({"timescales": {"name": "mismatch", "sigma": -1}}, "sigma"),
])
def test_bad_configuration_raises_before_any_step(kw, match):
    model, dec = counted_model()
    with pytest.raises(ValueError, match=match):
        Circuit(model, CircuitConfig(**kw))
    assert dec.calls == 0


def test_dt_checks_name_the_stable_dt():
    model, x1 = linear_model(3, 20, 0.05, seed=16, scale=3.0)  # stiff: large precision
    bound, what = stable_dt_bound(Circuit(model, CircuitConfig(dt=1e-9, tau_e=0.0)))
    assert "stiffness" in what
    with pytest.raises(ValueError, match=r"dt < [0-9.e-]+ s") as err:
        Circuit(model, CircuitConfig(dt=1.2 * bound, tau_e=0.0))
    assert "stiffness" in str(err.value)
    Circuit(model, CircuitConfig(dt=0.9 * bound, tau_e=0.0))
    # finite tau_e: the 2x2-block eigenvalues agree with a dense eigen-decomposition
    c = Circuit(model, CircuitConfig(dt=1e-9, tau_e=2e-3))
    W, b, x = Wbx(model, x1)
    A, _, _ = linear_circuit_matrices(W, b, x, 0.05, 1.0, 1e-2, 2e-3)
    mu = np.linalg.eigvals(A)
    assert stable_dt_bound(c)[0] == pytest.approx(np.min(-2 * mu.real / np.abs(mu) ** 2), rel=1e-6)
    # heterogeneous tau: the smallest per-unit tau limits dt
    c = Circuit(model, CircuitConfig(dt=1e-9, noise="cortical"))
    assert stable_dt_bound(c)[0] <= 2 * float(c.timescales.tau_z.min())


def test_bad_inputs_to_simulate():
    model, dec = counted_model()
    c = Circuit(model, CircuitConfig(dt=1e-4))
    for kwargs, exc in (({"x": torch.zeros(2, 5, dtype=F64)}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "z0": torch.zeros(2, 4, dtype=F64)}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "steps": 0}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "record_every": 0}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "online_lr": -1.0}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "z0": "posterior"}, ValueError),
                        ({"x": torch.full((2, 6), float("nan"), dtype=F64)}, ValueError)):
        kwargs.setdefault("steps", 10)
        kwargs.setdefault("record_every", 5)
        with pytest.raises(exc):
            c.simulate(**kwargs)
    assert dec.calls == 0
    with pytest.raises(ValueError, match="GaussianLikelihood"):
        Circuit(GenerativeModel(nn.Linear(3, 6), BernoulliLikelihood()), CircuitConfig(error_form="bogacz"))
    with pytest.raises(ValueError, match="noise sources"):
        Circuit(model, CircuitConfig(noise="thermal")).simulate_ode(torch.zeros(1, 6, dtype=F64))


# ----------------------------------------------------------------------------- divergence ----

class Cubic(nn.Module):
    """g(z) = 3 z^3 (n = d): the feedback 9 z^2 (x - g) / sigma^2 makes EM blow up from a large start."""

    latent_dim = 2

    def forward(self, z):
        return 3 * z**3


def test_divergence_names_step_and_unit_and_keeps_the_recording(tmp_path):
    model = GenerativeModel(Cubic(), GaussianLikelihood(0.5).double(), latent_dim=2)
    x = torch.zeros(3, 2, dtype=F64)
    z0 = torch.tensor([[0.1, 0.1], [0.1, 0.1], [0.1, 3.0]], dtype=F64)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="none", check_every=50, record_buffer=4)
    path = tmp_path / "bad.h5"
    with pytest.raises(DivergenceError) as err:
        Circuit(model, cfg).simulate(x, z0, steps=2000, record_every=2, record_path=path)
    e = err.value
    assert e.step is not None and 0 < e.step < 2000
    assert e.chain == 2 and e.unit in ("z[1]", "eps[1]")
    assert f"step {e.step}" in str(e) and "chain 2" in str(e)
    # the replay is exact: a check at every step finds the same first bad step
    with pytest.raises(DivergenceError) as err1:
        Circuit(model, CircuitConfig(**{**cfg.to_dict(), "check_every": 1})).simulate(x, z0, steps=2000, record_every=2)
    assert err1.value.step == e.step and err1.value.unit == e.unit
    with pytest.warns(RuntimeWarning, match="failed"):
        back = Trajectory.from_hdf5(path)
    assert len(back) > 0 and torch.isfinite(back.z).all()
    assert float(back.t[-1]) < e.step * cfg.dt
    assert read_status(path).startswith("failed: DivergenceError")
