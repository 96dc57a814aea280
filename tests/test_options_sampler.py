"""The sampler's options change the chain as predicted: ``delta`` (the gain G = 1 / (m_hat + delta)), ``max_gain``
(G capped), ``temperature`` (noise sqrt(2 gamma T G): one step in closed form, and the stationary law T times the
T = 1 ULA law) for ``LangevinSampler`` -- eager and its uncompiled fused path -- and ``temperature`` for the circuit
(``CircuitConfig``), against closed forms (neuro_lpc.theory), never stored numbers."""
import math

import numpy as np
import pytest
import torch

from circuits import Circuit, CircuitConfig
from neuro_lpc import LangevinSampler
from neuro_lpc.preconditioning import linear_gaussian_problem
from neuro_lpc.theory import gaussian_posterior, ula_stationary
from problems import F64, assert_moments

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = [None, "fused-eager"]     # the eager chain and the fast path's update (uncompiled: it runs on CPU)


def _problem(dim=3, chains=16, seed=1, kappa=10.0):
    model, x1 = linear_gaussian_problem(dim, kappa=kappa, seed=seed)
    z0 = torch.randn(chains, dim, generator=torch.Generator().manual_seed(seed + 10), dtype=F64)
    return model, x1.expand(chains, -1), z0


def _posterior(model, x1):
    W, b = model.decoder.weight.detach().numpy(), model.decoder.bias.detach().numpy()
    return gaussian_posterior(W, b, x1[0].numpy(), float(model.likelihood.sigma), model.prior_std)


def _first_noise(shape, seed):
    """The chain's first draw n ~ N(0, I) of a generator seeded ``seed`` (off DDP, shard_randn = torch.randn)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------------------------------ delta ----

@pytest.mark.parametrize("fast", FAST)
@pytest.mark.parametrize("delta", [1e-8, 0.5, 1e3])
def test_delta_sets_the_first_gain_in_closed_form(delta, fast):
    """delta: the first bias-corrected m_hat is |s(0)| (m(1) = (1 - beta) s^2, corrected by 1 - beta), so the first
    step's gain is G = 1 / (|s(0)| + delta) and the step z(1) = z(0) + gamma G s(0) + sqrt(2 gamma G) n.  With
    delta = 1e3 >> |s(0)| this is G ~ 1 / delta: the step shrinks ~1000-fold against delta = 1e-8."""
    model, x, z0 = _problem()
    gamma, seed = 0.05, 3
    s0 = model.score(x, z0)
    res = LangevinSampler(gamma, 1, precondition=0.9, delta=delta, fast=fast).sample(
        model, x, z0, generator=torch.Generator().manual_seed(seed))
    G = 1.0 / (s0.abs() + delta)
    assert G.max() < 1e4                                  # the default cap does not bind here
    torch.testing.assert_close(res.gain, G, rtol=1e-12, atol=0)
    n = _first_noise(z0.shape, seed)
    torch.testing.assert_close(res.z, z0 + gamma * G * s0 + (2 * gamma * G).sqrt() * n, rtol=1e-12, atol=1e-12)
    if delta > 100 * s0.abs().max():                      # the large-delta limit: G = (1 / delta) (1 + O(|s| / delta))
        assert ((res.gain * delta - 1).abs() <= s0.abs() / delta).all()


def test_large_delta_chain_is_plain_ula_with_step_gamma_over_delta():
    """delta >> the RMS score: G = 1 / (m_hat + delta) = (1 / delta)(1 - O(m_hat / delta)) at every step, so the
    preconditioned chain with step gamma = 100 is plain ULA with step gamma / delta (same noise: sqrt(2 gamma G) n ~
    sqrt(2 (gamma / delta)) n). delta = 1e4 follows ULA(0.01) and delta = 2e4 follows ULA(0.005), each within the
    bound below, while delta = 2e4 is far outside that bound from ULA(0.01): the displacement scales as 1 / delta."""
    model, x, z0 = _problem(chains=64)
    steps, seed, gamma = 200, 4, 100.0

    def chain(**kw):
        return LangevinSampler(kw.pop("step"), steps, **kw).sample(model, x, z0, record_every=1,
                                                                   generator=torch.Generator().manual_seed(seed)).z_trace

    def bound(ula, delta):
        """Each step's gain deviates from 1 / delta by at most rel = max|s| / delta (relative), so each step's drift
        and noise by at most rel times the step's size; the linear dynamics contract (gamma lambda_max / delta <= 0.2),
        so the deviations add up to at most rel * sum_t max|z(t) - z(t-1)|."""
        rel = float(torch.stack([model.score(x, z).abs().max() for z in ula]).max()) / delta
        assert rel < 0.01
        incr = torch.diff(torch.cat([z0[None], ula]), dim=0).abs().amax(dim=(1, 2)).sum()
        return rel * float(incr)

    ula = {1e4: chain(step=gamma / 1e4), 2e4: chain(step=gamma / 2e4)}
    pre = {d: chain(step=gamma, precondition=0.9, delta=d) for d in ula}
    for d in ula:
        assert (pre[d] - ula[d]).abs().max() < bound(ula[d], d)
    assert (pre[2e4] - ula[1e4]).abs().max() > 2 * bound(ula[1e4], 1e4)    # delta is not ignored


# --------------------------------------------------------------------------------------- max_gain ----

@pytest.mark.parametrize("fast", FAST)
def test_max_gain_caps_the_gain_at_its_value(fast):
    """max_gain = 3 (not the default 1e4): the first gain is min(1 / (|s(0)| + delta), 3), the cap binding exactly on
    the units whose |s(0)| < 1/3 (a start near the posterior mean has both kinds), and the step's noise std is
    sqrt(2 gamma 3) there."""
    model, x1 = linear_gaussian_problem(3, seed=1)
    mean, cov, _ = _posterior(model, x1)
    g = torch.Generator().manual_seed(5)
    z0 = torch.as_tensor(mean) + 0.05 * torch.randn(32, 3, generator=g, dtype=F64)
    x = x1.expand(32, -1)
    s0 = model.score(x, z0)
    cap, gamma = 3.0, 0.05
    free = 1.0 / (s0.abs() + 1e-8)
    assert (free > cap).any() and (free < cap).any()      # both branches are exercised
    res = LangevinSampler(gamma, 1, precondition=0.9, max_gain=cap, temperature=0.0, fast=fast).sample(
        model, x, z0, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(res.gain, free.clamp(max=cap), rtol=1e-12, atol=0)
    torch.testing.assert_close(res.z, z0 + gamma * free.clamp(max=cap) * s0, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------ temperature ----

@pytest.mark.parametrize("precondition,fast", [(None, None), (0.9, None), (0.9, "fused-eager")])
@pytest.mark.parametrize("temperature", [0.25, 4.0])
def test_temperature_scales_the_one_step_noise_as_sqrt_of_T(temperature, precondition, fast):
    """temperature T: one step's noise is sqrt(2 gamma T G) n (G = 1 without preconditioning): the step at T minus
    the noise-free step (T = 0, same start) is exactly sqrt(2 gamma T G) n -- sqrt(T) = 0.5 / 2 times the T = 1
    noise, where a bug sqrt(2 gamma G) T would give 0.25 / 4."""
    model, x, z0 = _problem()
    gamma, seed = 0.05, 7

    def step(T):
        return LangevinSampler(gamma, 1, precondition=precondition, temperature=T, fast=fast).sample(
            model, x, z0, generator=torch.Generator().manual_seed(seed)).z

    s0 = model.score(x, z0)
    G = torch.ones_like(z0) if precondition is None else 1.0 / (s0.abs() + 1e-8)
    n = _first_noise(z0.shape, seed)
    noise_T, noise_1 = step(temperature) - step(0.0), step(1.0) - step(0.0)
    torch.testing.assert_close(noise_T, math.sqrt(2 * gamma * temperature) * G.sqrt() * n, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(noise_T, math.sqrt(temperature) * noise_1, rtol=1e-9, atol=1e-12)


def test_temperature_scales_the_stationary_ula_law_by_T():
    """temperature T = 0.25: ULA on a Gaussian posterior of precision P is linear, z' = F z + c + sqrt(2 gamma T) n,
    so its stationary covariance solves C = F C F^T + 2 gamma T I: T times the T = 1 law (neuro_lpc.theory.
    ula_stationary), mean the posterior mean.  4000 chains within 5 standard errors; the T = 1 law (4x the
    variance) and the sqrt(2 gamma) T law (1/4 of it) are both rejected."""
    model, x1 = linear_gaussian_problem(2, kappa=3.0, seed=2)
    mean, _, P = _posterior(model, x1)
    T, gamma, N = 0.25, 0.1, 4000
    lam_min = np.linalg.eigvalsh(P).min()
    steps = int(10 / (gamma * lam_min)) + 1                 # 10 e-foldings of the slowest mode from the start
    z0 = torch.as_tensor(mean).expand(N, -1).clone()
    res = LangevinSampler(gamma, steps, temperature=T).sample(model, x1.expand(N, -1), z0,
                                                              generator=torch.Generator().manual_seed(8))
    _, cov1 = ula_stationary(P, mean, gamma)
    assert_moments(res.z, mean, T * cov1)
    var = res.z.var(0).numpy()
    for wrong in (cov1, T**2 * cov1):                    # T = 1, and the variance of the sqrt(2 gamma) T bug
        se = np.sqrt(2 / N) * np.diag(wrong)
        assert (np.abs(var - np.diag(wrong)) > 10 * se).all()


# ---------------------------------------------------------------------------- circuit temperature ----

def _adiabatic_circuit(model, T, gamma=0.1, tau_z=1e-2):
    """Adiabatic error units and dt = gamma tau_z: the circuit's Euler-Maruyama step is ULA with step gamma."""
    return Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, temperature=T, noise="ideal"))


@pytest.mark.parametrize("temperature", [0.25, 4.0])
def test_circuit_temperature_scales_the_one_step_noise_as_sqrt_of_T(temperature):
    """CircuitConfig.temperature T (overriding the "ideal" preset's T = 1): the value units' per-step noise is
    sqrt(2 T dt / tau_z) n = sqrt(2 gamma T) n, so one step at T minus the noise-free step is sqrt(T) times the
    T = 1 noise (a sqrt(2 gamma) T bug gives T times it)."""
    model, x, z0 = _problem()
    gamma = 0.05                                        # gamma lambda_max(P) = 1: stable

    def step(T):
        c = _adiabatic_circuit(model, T, gamma)
        return c.simulate(x, z0, steps=1, record_every=1, generator=torch.Generator().manual_seed(9)).z[-1]

    noise_T, noise_1 = step(temperature) - step(0.0), step(1.0) - step(0.0)
    assert noise_1.abs().max() > 0.01
    torch.testing.assert_close(noise_T, math.sqrt(temperature) * noise_1, rtol=1e-9, atol=1e-12)
    n = _first_noise(z0.shape, 9)
    torch.testing.assert_close(noise_T, math.sqrt(2 * gamma * temperature) * n, rtol=1e-9, atol=1e-12)


def test_circuit_temperature_scales_the_stationary_law_by_T():
    """CircuitConfig.temperature T = 0.25, adiabatic error units, dt = gamma tau_z: the circuit is ULA with step
    gamma at temperature T, stationary covariance T times neuro_lpc.theory.ula_stationary (within 5 standard
    errors of 4000 chains); the T = 1 law and the T^2 law of a sqrt(2 gamma) T bug are rejected."""
    model, x1 = linear_gaussian_problem(2, kappa=3.0, seed=2)
    mean, _, P = _posterior(model, x1)
    T, gamma, N = 0.25, 0.1, 4000
    steps = int(10 / (gamma * np.linalg.eigvalsh(P).min())) + 1
    z0 = torch.as_tensor(mean).expand(N, -1).clone()
    traj = _adiabatic_circuit(model, T, gamma).simulate(x1.expand(N, -1), z0, steps=steps, record_every=steps,
                                                        generator=torch.Generator().manual_seed(10))
    z = traj.z[-1]
    _, cov1 = ula_stationary(P, mean, gamma)
    assert_moments(z, mean, T * cov1)
    var = z.var(0).numpy()
    for wrong in (cov1, T**2 * cov1):
        se = np.sqrt(2 / N) * np.diag(wrong)
        assert (np.abs(var - np.diag(wrong)) > 10 * se).all()
