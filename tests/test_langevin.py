"""Discrete LPC sampler against closed forms (linear-Gaussian posterior, ULA's Lyapunov solution)."""
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from neuro_lpc import DivergenceError, GaussianLikelihood, GenerativeModel, LangevinSampler
from neuro_lpc.networks import ConvDecoder


def linear_problem(d, n, sigma, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=torch.float64) * scale / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
    model = GenerativeModel(dec, GaussianLikelihood(sigma).double(), prior_std=1.0)
    x1 = torch.randn(1, n, generator=g, dtype=torch.float64)
    W, b = dec.weight.detach(), dec.bias.detach()
    P = W.T @ W / sigma**2 + torch.eye(d, dtype=torch.float64)          # posterior precision
    mean = torch.linalg.solve(P, W.T @ (x1[0] - b) / sigma**2)
    return model, x1, P, mean


def ula_cov_eigen(P, gamma):
    """ULA's stationary covariance along P's eigenvectors: 1 / (lam (1 - gamma lam / 2))."""
    lam, U = torch.linalg.eigh(P)
    return (U * (1 / (lam * (1 - gamma * lam / 2)))) @ U.T


def run_chains(model, x1, gamma, steps, nchains, seed, **kw):
    x = x1.expand(nchains, -1)
    z0 = torch.zeros(nchains, model.latent_dim, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return LangevinSampler(step_size=gamma, steps=steps, **kw).sample(model, x, z0, generator=g)


def assert_moments(z, mean, cov, n_sigma=5.0):
    N = z.shape[0]
    emp_mean = z.mean(0)
    emp_cov = torch.cov(z.T)
    se_mean = (torch.diagonal(cov) / N).sqrt()
    assert ((emp_mean - mean).abs() < n_sigma * se_mean).all(), (emp_mean, mean)
    var = torch.diagonal(cov)
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((emp_cov - cov).abs() < n_sigma * se_cov).all(), (emp_cov, cov)


@pytest.mark.parametrize("d,gamma_frac,seed", [(2, 0.2, 0), (3, 0.9, 1), (5, 1.5, 2), (8, 0.5, 3)])
def test_ula_stationary_moments_match_lyapunov(d, gamma_frac, seed):
    model, x1, P, mean = linear_problem(d, 12, 0.7, seed)
    lam = torch.linalg.eigvalsh(P)
    gamma = gamma_frac / lam.max().item()          # gamma * lam_max up to 1.5: large step bias
    steps = int(8 / (gamma * lam.min().item())) + 50  # several relaxation times of the slowest mode
    res = run_chains(model, x1, gamma, steps, 6000, seed)
    C = ula_cov_eigen(P, gamma)
    # cross-check the eigen form against the discrete Lyapunov equation C = F C F^T + 2 gamma I
    F = torch.eye(d, dtype=torch.float64) - gamma * P
    torch.testing.assert_close(F @ C @ F.T + 2 * gamma * torch.eye(d, dtype=torch.float64), C)
    assert_moments(res.z, mean, C)
    if gamma_frac >= 0.9:  # the step bias is real and detectable: the exact posterior is rejected
        post = torch.linalg.inv(P)
        assert (torch.diagonal(torch.cov(res.z.T)) / torch.diagonal(post)).max() > 1.2


def test_small_step_approaches_exact_posterior():
    model, x1, P, mean = linear_problem(3, 10, 0.5, 7)
    gamma = 0.01 / torch.linalg.eigvalsh(P).max().item()
    steps = int(6 / (gamma * torch.linalg.eigvalsh(P).min().item()))
    res = run_chains(model, x1, gamma, steps, 6000, 7)
    assert_moments(res.z, mean, torch.linalg.inv(P))


def test_mala_has_no_step_bias():
    model, x1, P, mean = linear_problem(3, 10, 0.7, 4)
    gamma = 1.2 / torch.linalg.eigvalsh(P).max().item()
    res = run_chains(model, x1, gamma, 400, 4000, 5, metropolis=True)
    assert 0.05 < res.accept_rate.mean() < 0.99
    assert_moments(res.z, mean, torch.linalg.inv(P))


@pytest.mark.parametrize("noise", ["correct", "literal"])
def test_preconditioned_step_follows_algorithm_1(noise):
    model, x1, P, mean = linear_problem(4, 9, 0.6, 3)
    x = x1.expand(5, -1)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    beta, gamma, delta = 0.9, 0.05, 1e-8
    res = LangevinSampler(gamma, 2, precondition=beta, delta=delta, noise=noise).sample(
        model, x, z0, generator=torch.Generator().manual_seed(9))
    g2 = torch.Generator().manual_seed(9)
    z, m = z0.clone(), torch.zeros_like(z0)
    for t in (1, 2):
        s = model.score(x, z)
        m = beta * m + (1 - beta) * s**2
        m_hat = (m / (1 - beta**t)).sqrt()
        G = 1 / (m_hat + delta)
        n = torch.randn(z.shape, generator=g2, dtype=torch.float64)
        z = z + gamma * G * s + (2 * gamma * (G if noise == "correct" else m_hat)).sqrt() * n
    torch.testing.assert_close(res.z, z)


def test_beta_zero_means_off():
    assert LangevinSampler(0.1, 5, precondition=0).precondition is None


def _small_conv_model():
    torch.manual_seed(0)
    dec = ConvDecoder(28, 1, latent_dim=6).double()
    return GenerativeModel(dec, GaussianLikelihood(0.3, learn_sigma=True).double())


def test_accumulated_gradient_equals_chain_mean_of_autograd_gradients():
    model = _small_conv_model()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    z0 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    T = 7
    res = LangevinSampler(0.01, T, precondition=0.5).sample(
        model, x, z0, record_every=1, generator=torch.Generator().manual_seed(4), accumulate_grad=True)
    got = [p.grad.clone() for p in model.parameters()]
    states = [z0] + [res.z_trace[t] for t in range(T - 1)]   # the chain evaluates theta-gradients at z(0..T-1)
    ref = [torch.zeros_like(p) for p in model.parameters()]
    for zt in states:
        model.zero_grad()
        (-model.log_joint(x, zt).mean() / T).backward()
        for r, p in zip(ref, model.parameters()):
            r += p.grad
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    # the recorded log-joint is log p(x, z(t)) at the recorded states
    torch.testing.assert_close(res.log_joint_trace[2], model.log_joint(x, res.z_trace[2]).detach())


def test_sampling_only_computes_no_parameter_gradients():
    model = _small_conv_model()
    x = torch.zeros(2, 1, 28, 28, dtype=torch.float64)
    LangevinSampler(0.01, 3).sample(model, x, torch.zeros(2, 6, dtype=torch.float64))
    assert all(p.grad is None for p in model.parameters())


def _peak_rss_kb():
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def test_peak_memory_does_not_grow_with_chain_length():
    torch.manual_seed(0)
    model = GenerativeModel(ConvDecoder(32, 3), GaussianLikelihood(0.1, learn_sigma=True))
    x = torch.zeros(64, 3, 32, 32)
    z0 = torch.zeros(64, 40)
    sampler = lambda T: LangevinSampler(0.001, T).sample(model, x, z0, accumulate_grad=True)  # noqa: E731
    sampler(3)  # warm up allocator
    if not _reset_peak():
        pytest.skip("cannot reset peak RSS on this kernel")
    sampler(5)
    short = _peak_rss_kb()
    _reset_peak()
    sampler(60)
    long = _peak_rss_kb()
    # a retained graph costs ~10 MB of activations per step at this size: 55 extra steps would add ~500 MB
    assert long - short < 60_000, (short, long)


class NaNAfter(nn.Module):
    """A decoder that outputs NaN from its k-th call on: the chain must stop at step k."""

    def __init__(self, k):
        super().__init__()
        self.lin = nn.Linear(3, 5)
        self.k, self.calls = k, 0

    def forward(self, z):
        self.calls += 1
        out = self.lin(z)
        return out * float("nan") if self.calls >= self.k else out


def test_divergence_names_the_step():
    model = GenerativeModel(NaNAfter(37), GaussianLikelihood(1.0))
    model.output_shape            # the shape probe calls the decoder once; count the chain's calls only
    model.decoder.calls = 0
    with pytest.raises(DivergenceError, match="step 37") as e:
        LangevinSampler(0.01, 200, check_every=50).sample(model, torch.zeros(4, 5), torch.zeros(4, 3))
    assert e.value.step == 37 and e.value.chain == 0


@pytest.mark.parametrize("kw,msg", [(dict(step_size=-0.1, steps=5), "step_size"), (dict(step_size=float("nan"), steps=5), "step_size"),
                                    (dict(step_size=0.1, steps=0), "steps"), (dict(step_size=0.1, steps=5, precondition=1.5), "precondition"),
                                    (dict(step_size=0.1, steps=5, noise="other"), "noise"),
                                    (dict(step_size=0.1, steps=5, metropolis=True, precondition=0.9), "MALA")])
def test_bad_sampler_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        LangevinSampler(**kw)


def test_bad_shapes_are_caught_before_work():
    model = GenerativeModel(nn.Linear(3, 7), GaussianLikelihood(0.5), prior_std=1.0)
    s = LangevinSampler(0.05, 10)
    with pytest.raises(ValueError, match="shape"):
        s.sample(model, torch.zeros(4, 8), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="z must have shape"):
        s.sample(model, torch.zeros(4, 7), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="record_every"):
        s.sample(model, torch.zeros(4, 7), torch.zeros(4, 3), record_every=11)


def test_public_api_example_from_issue():
    model = GenerativeModel(decoder=torch.nn.Linear(3, 7), likelihood=GaussianLikelihood(sigma=0.5), prior_std=1.0)
    x, z0 = torch.randn(4, 7), torch.zeros(4, 3)
    assert model.log_joint(x, z0).shape == (4,)
    s = model.score(x, z0)
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    torch.testing.assert_close(s, (x - b) @ W / 0.25)  # J^T e - z at z = 0
    res = LangevinSampler(step_size=0.05, steps=1000, precondition=None).sample(model, x, z0, record_every=10)
    assert res.z.shape == (4, 3) and res.z_trace.shape == (100, 4, 3) and res.log_joint_trace.shape == (100, 4)
    torch.testing.assert_close(res.z_trace[-1], res.z)
