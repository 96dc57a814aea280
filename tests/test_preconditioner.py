"""The preconditioner forms of LangevinSampler: "adam" (Algorithm 1), "frozen" (G held after a warm-up), the
gain cap, and the measured stationary bias (neuro_lpc.preconditioning) -- against re-implementations and
closed forms (circuits.analysis), never stored numbers."""
import math

import numpy as np
import pytest
import torch

from circuits.analysis import gaussian_posterior, ula_stationary
from neuro_lpc import LangevinSampler
from neuro_lpc.langevin import DEFAULT_MAX_GAIN
from neuro_lpc.preconditioning import linear_gaussian_problem, preconditioner_bias

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")   # many tiny steps (tests/conftest.py)


def closed_form(model, x1):
    """(mean (d,), cov, precision) of the exact posterior of a linear decoder with a Gaussian likelihood."""
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    return gaussian_posterior(W, b, x1[0], float(model.likelihood.sigma), model.prior_std)


def algorithm_1(model, x, z0, gamma, beta, steps, seed, noise="correct", delta=1e-8, freeze_at=None):
    """Algorithm 1 written out step by step (the same torch operations in the same order as the sampler, so
    that the comparison can be bitwise): m = beta m + (1 - beta) s^2, m_hat = sqrt(m / (1 - beta^t)),
    G = 1 / (m_hat + delta), z += gamma G s + sqrt(2 gamma) sqrt(G or m_hat) n.  With ``freeze_at`` G and
    the noise's scale are held from that step on.  Returns (states z(1..T) (T, B, d), G per step (T, B, d))."""
    g = torch.Generator().manual_seed(seed)
    z, m = z0.clone(), torch.zeros_like(z0)
    states, gains = [], []
    for t in range(1, steps + 1):
        s = model.score(x, z)
        n = torch.randn(z.shape, generator=g, dtype=z.dtype)
        if freeze_at is None or t <= freeze_at:
            m = torch.addcmul(m * beta, s, s, value=1 - beta)
            m_hat = (m / (1 - beta**t)).sqrt()
            G = 1.0 / (m_hat + delta)
            sd = (G if noise == "correct" else m_hat).sqrt()
        z = torch.addcmul(z, G, s, value=gamma)
        z = torch.addcmul(z, sd, n, value=math.sqrt(2 * gamma))
        states.append(z)
        gains.append(G)
    return torch.stack(states), torch.stack(gains)


def start(model, n_chains, seed):
    return torch.randn(n_chains, model.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------------------ "adam" = Algorithm 1 ----

@pytest.mark.parametrize("noise", ["correct", "literal"])
@pytest.mark.parametrize("beta", [0.25, 0.99])
def test_adam_is_algorithm_1_bit_for_bit(beta, noise):
    model, x1 = linear_gaussian_problem(4, seed=1)
    x, z0 = x1.expand(50, -1), start(model, 50, 2)
    gamma, T = 0.05, 200
    res = LangevinSampler(gamma, T, precondition=beta, noise=noise).sample(
        model, x, z0, record_every=1, generator=torch.Generator().manual_seed(3))
    ref, gains = algorithm_1(model, x, z0, gamma, beta, T, seed=3, noise=noise)
    assert gains.max() < DEFAULT_MAX_GAIN          # the cap never bound: this is the uncapped algorithm
    assert torch.equal(res.z_trace, ref)
    assert torch.equal(res.gain, gains[-1])


def test_frozen_is_algorithm_1_during_the_warmup_then_holds_the_gain():
    model, x1 = linear_gaussian_problem(4, seed=1)
    x, z0 = x1.expand(50, -1), start(model, 50, 2)
    gamma, beta, T, warm = 0.05, 0.9, 120, 40
    sampler = LangevinSampler(gamma, T, precondition=beta, preconditioner="frozen", warmup=warm)
    res = sampler.sample(model, x, z0, record_every=1, generator=torch.Generator().manual_seed(3))
    adam = LangevinSampler(gamma, T, precondition=beta).sample(model, x, z0, record_every=1,
                                                                generator=torch.Generator().manual_seed(3))
    assert torch.equal(res.z_trace[:warm], adam.z_trace[:warm])
    assert not torch.equal(res.z_trace[warm:], adam.z_trace[warm:])
    ref, gains = algorithm_1(model, x, z0, gamma, beta, T, seed=3, freeze_at=warm)
    assert torch.equal(res.z_trace, ref)
    assert torch.equal(res.gain, gains[warm - 1]) and torch.equal(gains[-1], gains[warm - 1])


def test_default_warmup_is_documented_value():
    assert LangevinSampler(0.1, 1000, precondition=0.9, preconditioner="frozen").warmup_steps() == 100
    assert LangevinSampler(0.1, 60, precondition=0.9, preconditioner="frozen").warmup_steps() == 30
    assert LangevinSampler(0.1, 60, precondition=0.9).warmup_steps() is None


@pytest.mark.parametrize("kw,msg", [
    (dict(preconditioner="rms", precondition=0.9), "preconditioner must be one of"),
    (dict(preconditioner="frozen"), "needs a decay precondition"),
    (dict(preconditioner="frozen", precondition=0), "needs a decay precondition"),
    (dict(warmup=5, precondition=0.9), "warmup applies only"),
    (dict(preconditioner="frozen", precondition=0.9, warmup=0), "warmup must be an integer"),
    (dict(preconditioner="frozen", precondition=0.9, warmup=50), "warmup must be an integer"),
    (dict(preconditioner="frozen", precondition=0.9, warmup=2.5), "warmup must be an integer"),
    (dict(max_gain=0.0, precondition=0.9), "max_gain must be"),
    (dict(max_gain=-1.0, precondition=0.9), "max_gain must be"),
])
def test_bad_preconditioner_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        LangevinSampler(0.1, 50, **kw)
    with pytest.raises(ValueError, match="steps >= 2"):
        LangevinSampler(0.1, 1, precondition=0.9, preconditioner="frozen")


# ------------------------------------------------------------------------------------- gain cap ----

@pytest.mark.parametrize("preconditioner", ["adam", "frozen"])
def test_gain_cap_is_inactive_in_a_normal_run(preconditioner):
    model, x1 = linear_gaussian_problem(4, seed=1)
    x, z0 = x1.expand(64, -1), start(model, 64, 5)
    kw = dict(precondition=0.25, preconditioner=preconditioner)
    capped = LangevinSampler(0.1, 300, **kw).sample(model, x, z0, record_every=1,
                                                   generator=torch.Generator().manual_seed(6))
    free = LangevinSampler(0.1, 300, max_gain=None, **kw).sample(model, x, z0, record_every=1,
                                                                generator=torch.Generator().manual_seed(6))
    assert torch.equal(capped.z_trace, free.z_trace) and torch.equal(capped.gain, free.gain)


def test_gain_cap_stops_the_explosion_of_a_chain_started_at_the_mode():
    """At the posterior mode s(0) = 0 (to rounding), so the first bias-corrected m_hat = |s(0)| ~ 0 and
    uncapped G = 1 / (m_hat + delta) ~ 1e8: the first step's noise has std sqrt(2 gamma 1e8) and the chain
    never comes back within T steps.  With the cap the first step's std is at most sqrt(2 gamma max_gain)."""
    model, x1 = linear_gaussian_problem(4, seed=1)
    mean, cov, _ = closed_form(model, x1)
    mu, sd = torch.as_tensor(mean), torch.as_tensor(np.sqrt(np.diag(cov)))
    x, z0 = x1.expand(200, -1), mu.expand(200, -1).clone()
    assert model.score(x, z0).abs().max() < 1e-6
    gamma, T = 0.1, 2000
    runs = {cap: LangevinSampler(gamma, T, precondition=0.9, max_gain=cap).sample(
        model, x, z0, record_every=1, generator=torch.Generator().manual_seed(7)) for cap in (None, DEFAULT_MAX_GAIN)}
    wild, tame = runs[None], runs[DEFAULT_MAX_GAIN]
    assert (wild.z_trace[0] - mu).abs().max() > 1000                  # exploded: ~sqrt(2 gamma / delta) = 4.5e3
    assert (((wild.z - mu) / sd) ** 2).mean() > 1e4                     # and far away at the end
    first_step_bound = 6 * math.sqrt(2 * gamma * DEFAULT_MAX_GAIN)     # 6 std of the capped first step
    assert (tame.z_trace - mu).abs().max() < first_step_bound
    assert (((tame.z - mu) / sd) ** 2).mean() < 3                       # back in the typical set


# -------------------------------------------------------------- "frozen": invariant for ULA's law ----

def test_frozen_chain_settles_at_the_ula_lyapunov_law_of_the_gain_it_froze():
    """After the warm-up chain b is ULA with its own fixed diagonal G_b, whose stationary law is N(mu, C_b),
    C_b = F C_b F^T + 2 gamma G_b, F = I - gamma G_b P (circuits.analysis.ula_stationary).  Whitening each
    chain's final state with its own C_b must give N(0, I) across chains; whitening with the exact
    posterior must not (the step bias at this gamma is many standard errors: the test has power)."""
    model, x1 = linear_gaussian_problem(3, kappa=10.0, seed=4)
    mean, cov, P = closed_form(model, x1)
    mu = torch.as_tensor(mean)
    N, gamma, beta, warm, T = 4000, 0.15, 0.9, 50, 3000
    z0 = mu + start(model, N, 8) @ torch.linalg.cholesky(torch.as_tensor(cov)).T   # exact posterior draws
    res = LangevinSampler(gamma, T, precondition=beta, preconditioner="frozen", warmup=warm).sample(
        model, x1.expand(N, -1), z0, generator=torch.Generator().manual_seed(9))
    G = res.gain.numpy()
    # the premise: every chain forgot its warm-up state.  The slowest mode of chain b contracts by
    # (1 - rate_b) per step, rate_b the smallest eigenvalue of gamma G_b P; some chains froze a small G
    # (their warm-up met large scores), hence the long chain: the residual is below e^-(2 * 10)
    rates = [np.min(np.linalg.eigvals(gamma * g[:, None] * P).real) for g in G]
    assert min(rates) * (T - warm) > 10
    dev = (res.z - mu).numpy()
    chol = np.stack([np.linalg.cholesky(ula_stationary(P, mean, gamma, G=g)[1]) for g in G])
    w = np.linalg.solve(chol, dev[:, :, None])[:, :, 0]                      # (N, d), N(0, I) if right
    d = w.shape[1]
    assert np.all(np.abs(w.mean(0)) < 5 / math.sqrt(N))
    emp = w.T @ w / N                                                       # known mean 0
    se = np.sqrt((1 + np.eye(d)) / N)                                       # sd of the entries of a Wishart / N
    assert np.all(np.abs(emp - np.eye(d)) < 5 * se), emp
    w_post = np.linalg.solve(np.linalg.cholesky(cov), dev.T).T              # the exact posterior instead
    assert np.max(np.abs(w_post.T @ w_post / N - np.eye(d)) / se) > 10


# ----------------------------------------------------------------------- the measured bias ----

def test_bias_measurement_of_frozen_matches_its_closed_form():
    """For "frozen" the measured variance ratio is the fixed-gain closed form (within Monte Carlo error)."""
    r = preconditioner_bias(0.9, 0.1, preconditioner="frozen", chains=300, seed=1)
    assert r["diverged"] is None and r["unstable_fraction"] == 0
    assert abs(r["variance_ratio"] - r["fixed_gain_ratio"]) < 5 * r["se"], r
    assert r["per_direction"].shape == (4,) and np.all(np.diff(r["eigenvalues"]) > 0)


def test_bias_measurement_detects_the_adaptive_bias_of_algorithm_1():
    """Algorithm 1 with beta = 0.25 (G from ~one score) is far from its own fixed-gain law: the bias of
    adapting G, not of the step (which the fixed-gain closed form carries)."""
    r = preconditioner_bias(0.25, 0.1, chains=300, seed=2)
    assert r["variance_ratio"] - r["fixed_gain_ratio"] > 20 * r["se"], r
