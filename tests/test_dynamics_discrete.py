"""Discrete non-reversible and underdamped Langevin (issue 16, docs/dynamics.md) against closed forms.

Oracles written here, independently of neuro_lpc.theory: the linear recursions x' = F x + Q^(1/2) n of each family
built in numpy from the update equations, their stationary covariances by the Kronecker solve
vec(C) = (I - F (x) F)^-1 vec(Q), the LNP 2013 eigenvalue property, and autograd gradients from the recorded trace.
"""
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from neuro_lpc import GaussianLikelihood, GenerativeModel, LangevinSampler, TrainConfig
from neuro_lpc.dynamics import check_dynamics, mass_vector, optimal_skew, skew_matrix
from neuro_lpc.theory import (dynamics_decay_rate, dynamics_discrete_stationary, dynamics_recursion,
                              dynamics_stationary, gaussian_posterior)

from problems import Wbx, linear_model, max_z_cov

F64 = torch.float64


# ------------------------------------------------------------------------------------------------ oracles ----

def kron_lyapunov(F, Q):
    """C = F C F^T + Q by vec(C) = (I - F (x) F)^-1 vec(Q) (no scipy)."""
    n = F.shape[0]
    return np.linalg.solve(np.eye(n * n) - np.kron(F, F), Q.reshape(-1)).reshape(n, n)


def euler_recursion(P, h, J=None, T=1.0):
    """z' = z + h (I + J)(-P z) + sqrt(2 h T) n  ->  (F, Q)."""
    d = P.shape[0]
    J = np.zeros((d, d)) if J is None else J
    return np.eye(d) - h * (np.eye(d) + J) @ P, 2 * h * T * np.eye(d)


def baoab_recursion(P, h, friction, mass, T=1.0):
    """BAOAB on U = z^T P z / 2, state (z, v), composed by hand step by step from the update equations."""
    d = P.shape[0]
    m = np.broadcast_to(np.asarray(mass, float), (d,))
    c = np.exp(-friction * h / m)
    F = np.eye(2 * d)
    def B(F):   # v += h/2 (-P z)
        G = np.eye(2 * d); G[d:, :d] = -0.5 * h * P; return G @ F
    def A(F):   # z += h/2 v / m
        G = np.eye(2 * d); G[:d, d:] = np.diag(0.5 * h / m); return G @ F
    F = A(B(F))                        # first B then A
    F = np.diag(np.r_[np.ones(d), c]) @ F
    F = B(A(F))
    # noise: O adds N(0, T (1 - c^2) m) to v, then A and B act on it
    post = B(A(np.eye(2 * d)))
    Q = post @ np.diag(np.r_[np.zeros(d), T * (1 - c * c) * m]) @ post.T
    return F, Q


def conditioned_model(kappa, d=2, seed=0, sigma=0.5):
    """Linear decoder with posterior precision eigenvalues geomspace(1.5, 1.5 kappa) in a random basis."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(0, math.log10(kappa), d, dtype=F64) * 1.5
    R, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    W = torch.diag((lam - 1).sqrt() * sigma) @ R.T          # W^T W / sigma^2 + I = R diag(lam) R^T
    dec = nn.Linear(d, d).double()
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.zero_()
    model = GenerativeModel(dec, GaussianLikelihood(sigma).double())
    P = R @ torch.diag(lam) @ R.T
    return model, torch.zeros(1, d, dtype=F64), P.numpy(), R[:, 0].numpy()


def _random_spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    lam = torch.logspace(0, 2, d, dtype=F64)
    Q, _ = torch.linalg.qr(A)
    return Q @ torch.diag(lam) @ Q.T


# ---------------------------------------------------------------------------------------------- skews --------

@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_optimal_skew_puts_every_eigenvalue_at_the_mean_precision(d):
    P = _random_spd(d, d)
    J = optimal_skew(P)
    assert torch.allclose(J, -J.T, atol=0)
    mu = torch.linalg.eigvals((torch.eye(d, dtype=F64) + J) @ P)
    a = float(torch.trace(P)) / d
    assert torch.allclose(mu.real, torch.full((d,), a, dtype=F64), rtol=1e-8, atol=1e-8), (mu, a)
    # the rate improves from lambda_min to the mean: the skew is not a no-op
    assert float(mu.real.min()) > 5 * float(torch.linalg.eigvalsh(P)[0])


def test_random_skew_has_the_asked_spectral_norm_and_is_reproducible():
    J = skew_matrix("random", 5, scale=2.5, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(J, -J.T)
    assert abs(float(torch.linalg.matrix_norm(J, ord=2)) - 2.5) < 1e-10
    J2 = skew_matrix("random", 5, scale=2.5, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(J, J2)
    assert skew_matrix(None, 5) is None
    assert torch.equal(mass_vector(2.0, 3, dtype=F64), torch.full((3,), 2.0, dtype=F64))


def test_sampler_optimal_skew_uses_the_exact_precision_on_a_linear_model():
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    _, _, P = gaussian_posterior(*Wbx(model, x1), 0.5)
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    J = LangevinSampler(0.01, 5, dynamics="nonreversible", skew="optimal").skew_for(model, x1.expand(4, -1), z0)
    torch.testing.assert_close(J, optimal_skew(torch.tensor(P)))
    half = LangevinSampler(0.01, 5, dynamics="nonreversible", skew="optimal", skew_scale=0.5).skew_for(
        model, x1.expand(4, -1), z0)
    torch.testing.assert_close(half, 0.5 * J)


# ------------------------------------------------------------------------------------------- theory ----------

def test_theory_recursions_match_the_hand_built_ones_and_the_continuous_limits():
    P = _random_spd(3, 7).numpy()
    J = optimal_skew(torch.tensor(P)).numpy() * 0.1
    for h in (0.01, 0.003):
        F, Q = dynamics_recursion("nonreversible", P, h, J=J)
        Fr, Qr = euler_recursion(P, h, J)
        np.testing.assert_allclose(F, Fr, atol=1e-12)
        np.testing.assert_allclose(Q, Qr, atol=1e-12)
        np.testing.assert_allclose(dynamics_discrete_stationary("nonreversible", P, h, J=J), kron_lyapunov(Fr, Qr),
                                   rtol=1e-7, atol=1e-9)
        mass = np.array([0.5, 1.0, 2.0])
        F, Q = dynamics_recursion("underdamped", P, h * 10, friction=1.7, mass=mass)
        Fr, Qr = baoab_recursion(P, h * 10, 1.7, mass)
        np.testing.assert_allclose(F, Fr, atol=1e-12)
        np.testing.assert_allclose(Q, Qr, atol=1e-12)
    cov = np.linalg.inv(P)
    for fam, kw in [("overdamped", {}), ("nonreversible", dict(J=J)), ("underdamped", dict(friction=2.0, mass=3.0))]:
        C = dynamics_stationary(fam, P, **kw)
        np.testing.assert_allclose(C[:3, :3], cov, rtol=1e-8, atol=1e-10)
        if fam == "underdamped":
            np.testing.assert_allclose(C[3:, 3:], 3.0 * np.eye(3), atol=1e-8)
        # the discrete chain's bias -> 0 as the step -> 0: first order (Euler) or second (BAOAB's v)
        errs = [np.abs(dynamics_discrete_stationary(fam, P, h, **kw) - C).max() for h in (4e-3, 2e-3, 1e-3)]
        order = 4 if fam == "underdamped" else 2
        assert errs[0] > errs[1] > errs[2] and abs(errs[1] / errs[2] - order) < 0.3 * order, (fam, errs)


def test_decay_rates_closed_forms():
    lam = np.array([1.0, 10.0, 100.0])
    P = np.diag(lam)
    assert abs(dynamics_decay_rate("overdamped", P) - 1.0) < 1e-10
    assert abs(dynamics_decay_rate("overdamped", P, G=np.array([2.0, 1.0, 1.0])) - 2.0) < 1e-10
    J = optimal_skew(torch.tensor(P)).numpy()
    assert abs(dynamics_decay_rate("nonreversible", P, J=J) - lam.mean()) < 1e-8
    # underdamped, one mode: (gamma - sqrt(gamma^2 - 4 lam m)) / (2 m); the slowest over the modes
    for gamma, m in [(3.0, 1.0), (2.0, 1.0), (0.5, 2.0)]:
        disc = np.sqrt((gamma ** 2 - 4 * lam * m).astype(complex))
        want = np.min(((gamma - disc) / (2 * m)).real)
        assert abs(dynamics_decay_rate("underdamped", P, friction=gamma, mass=m) - want) < 1e-8


# ------------------------------------------------------------------------- stationary law of the chains -----

CASES = {
    "overdamped": (dict(), 0.9),
    "nonreversible-random": (dict(dynamics="nonreversible", skew="random", skew_scale=1.0), 0.6),
    "nonreversible-optimal": (dict(dynamics="nonreversible", skew="optimal", skew_scale=0.3), 0.5),
    "underdamped": (dict(dynamics="underdamped", friction=1.5), 1.2),
    "underdamped-mass": (dict(dynamics="underdamped", friction=2.0, mass=torch.tensor([0.5, 1.0, 2.0], dtype=F64)),
                         0.9),
}


def _stationary_run(kw, h, temperature=1.0, chains=3000, seed=0):
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    mu, _, P = gaussian_posterior(*Wbx(model, x1), 0.5)
    sampler = LangevinSampler(h, 400, temperature=temperature, **kw)
    z0 = torch.tensor(mu, dtype=F64).expand(chains, -1).clone()
    g = torch.Generator().manual_seed(seed)
    res = sampler.sample(model, x1.expand(chains, -1), z0, generator=g)
    J = sampler.skew_for(model, x1.expand(chains, -1), z0, torch.Generator().manual_seed(seed))
    return res, P, mu, (None if J is None else J.numpy())


@pytest.mark.parametrize("name", list(CASES))
def test_stationary_covariance_matches_the_discrete_recursion(name):
    kw, frac = CASES[name]
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    _, _, P = gaussian_posterior(*Wbx(model, x1), 0.5)
    lam_max = np.linalg.eigvalsh(P)[-1]
    under = kw.get("dynamics") == "underdamped"
    h = frac * 2 * np.sqrt(0.5 / lam_max) if under else frac / lam_max      # a step with a visible bias
    res, P, mu, J = _stationary_run(kw, h)
    if under:
        mass = kw.get("mass", 1.0)
        mass = mass.numpy() if isinstance(mass, torch.Tensor) else mass
        F, Q = baoab_recursion(P, h, kw["friction"], mass)
        C = kron_lyapunov(F, Q)
        samples = torch.cat([res.z - torch.tensor(mu), res.v], dim=1)
        exact = np.block([[np.linalg.inv(P), np.zeros((3, 3))], [np.zeros((3, 3)), np.diag(np.broadcast_to(mass, 3))]])
    else:
        F, Q = euler_recursion(P, h, J)
        C = kron_lyapunov(F, Q)
        samples = res.z - torch.tensor(mu)
        exact = np.linalg.inv(P)
    # at this step the discrete law is visibly biased: the same statistic rejects the continuous-time law
    assert max_z_cov(samples, exact) > 8.0
    assert abs(float(samples.mean(0).abs().max())) < 5 * math.sqrt(np.diag(C).max() / samples.shape[0])
    assert max_z_cov(samples, C) < 5.0
    # a 30% noise error (temperature 1.3^2) is rejected by the same statistic
    bad, *_ = _stationary_run(kw, h, temperature=1.3 ** 2)
    bad_samples = torch.cat([bad.z - torch.tensor(mu), bad.v], 1) if under else bad.z - torch.tensor(mu)
    assert max_z_cov(bad_samples, C) > 8.0


def test_nonreversible_with_a_zero_skew_is_the_overdamped_chain_bit_for_bit():
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    z0 = torch.zeros(8, 3, dtype=F64)
    a = LangevinSampler(0.05, 30).sample(model, x1.expand(8, -1), z0, generator=torch.Generator().manual_seed(2))
    b = LangevinSampler(0.05, 30, dynamics="nonreversible", skew=torch.zeros(3, 3, dtype=F64)).sample(
        model, x1.expand(8, -1), z0, generator=torch.Generator().manual_seed(2))
    c = LangevinSampler(0.05, 30, dynamics="nonreversible", skew=skew_matrix("random", 3, dtype=F64)).sample(
        model, x1.expand(8, -1), z0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.z, b.z) and a.v is None
    assert not torch.allclose(a.z, c.z)                      # a nonzero skew moves the chain


def test_fast_path_falls_back_to_eager_and_says_so():
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    z0 = torch.zeros(4, 3, dtype=F64)
    for kw in (dict(dynamics="underdamped"), dict(dynamics="nonreversible", skew="random")):
        ref = LangevinSampler(0.05, 10, **kw).sample(model, x1.expand(4, -1), z0,
                                                       generator=torch.Generator().manual_seed(0))
        res = LangevinSampler(0.05, 10, fast="fused", **kw).sample(model, x1.expand(4, -1), z0,
                                                                     generator=torch.Generator().manual_seed(0))
        assert res.path.startswith("eager: dynamics=") and torch.equal(res.z, ref.z)


def test_v0_continues_an_underdamped_chain_exactly():
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    z0, X = torch.zeros(4, 3, dtype=F64), x1.expand(4, -1)
    v0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    s20 = LangevinSampler(0.1, 20, dynamics="underdamped", friction=0.7)
    s10 = LangevinSampler(0.1, 10, dynamics="underdamped", friction=0.7)
    g = torch.Generator().manual_seed(1)
    whole = s20.sample(model, X, z0, generator=g, v0=v0)
    g = torch.Generator().manual_seed(1)
    first = s10.sample(model, X, z0, generator=g, v0=v0)
    second = s10.sample(model, X, first.z, generator=g, v0=first.v)
    torch.testing.assert_close(second.z, whole.z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second.v, whole.v, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ speed: closed-form IAT -------

def _slowest_mode_series(kappa, kw, h, chains, steps, thin, seed=0, block=2000):
    """(records, chains) projection of z on P's slowest eigenvector every ``thin`` steps, after one block of
    burn-in from the posterior mean; the chain continues across blocks (z, and v via ``v0``)."""
    model, x1, P, u = conditioned_model(kappa, seed=seed)
    sampler_kw = dict(kw)
    X, z = x1.expand(chains, -1), torch.zeros(chains, 2, dtype=F64)
    g, v, out = torch.Generator().manual_seed(seed), None, []
    under = kw.get("dynamics") == "underdamped"
    block = block // thin * thin
    for b in range(-(-steps // block) + 1):
        extra = {"v0": v} if under and v is not None else {}
        res = LangevinSampler(h, block, **sampler_kw).sample(model, X, z, record_every=thin, generator=g, **extra)
        z, v = res.z, res.v
        if b > 0:                              # the first block is burn-in
            out.append(res.z_trace @ torch.tensor(u))
    return torch.cat(out)[: steps // thin].numpy(), P, u


def _thinned(F, Q, k):
    """The AR(1) of every k-th state: x' = F^k x + noise with covariance sum_j F^j Q F^jT (j < k)."""
    Fk, Qk = np.eye(F.shape[0]), np.zeros_like(Q)
    for _ in range(k):
        Qk = F @ Qk @ F.T + Q
        Fk = F @ Fk
    return Fk, Qk


def _exact_iat(kw, P, u, h, J=None, thin=1):
    from circuits.diagnostics.ou import ar1_integrated_autocorr_time
    if kw.get("dynamics") == "underdamped":
        F, Q = baoab_recursion(P, h, kw["friction"], 1.0)
        proj = np.r_[u, 0 * u][None]
    else:
        F, Q = euler_recursion(P, h, J)
        proj = u[None]
    return ar1_integrated_autocorr_time(*_thinned(F, Q, thin), proj)[0]


def _iat_case(kappa, family):
    """(estimated, exact) IAT of the slowest mode in records.  The chains are concatenated along time before the
    estimator: it then centres with the grand mean; centring each chain by its own mean biases tau by about
    -10 tau / L (L the chain length, Sokal 1997), -15% at L = 50 tau, the joins only by about +-tau / (2 L)."""
    from circuits.diagnostics.mcmc import integrated_autocorr_time
    _, _, P, u = conditioned_model(kappa)
    lam_max = np.linalg.eigvalsh(P)[-1]
    if family == "overdamped":
        kw, h, J = {}, 0.9 * 2 / lam_max, None
    elif family == "nonreversible":
        J = 0.1 * optimal_skew(torch.tensor(P)).numpy()
        kw, h = dict(dynamics="nonreversible", skew=torch.tensor(J)), 0.9 * 2 / lam_max * 0.9
    else:
        kw, h, J = dict(dynamics="underdamped", friction=2 * math.sqrt(1.5)), 0.9 * 2 / math.sqrt(lam_max), None
    thin = max(1, int(_exact_iat(kw, P, u, h, J) // 100))
    want = _exact_iat(kw, P, u, h, J, thin)
    records = int(max(40 * want, 1000))
    chains = int(min(800, max(64, 25000 * want / records)))
    series, _, _ = _slowest_mode_series(kappa, kw, h, chains, records * thin, thin)
    got = float(integrated_autocorr_time(np.ascontiguousarray(series.T).reshape(-1)))
    return got, want


@pytest.mark.parametrize("kappa,family", [pytest.param(100, "overdamped", marks=pytest.mark.slow),
                                          (100, "nonreversible"), (100, "underdamped"), (1000, "nonreversible"),
                                          pytest.param(1000, "underdamped", marks=pytest.mark.slow),
                                          pytest.param(1000, "overdamped", marks=pytest.mark.slow)])
def test_slowest_mode_iat_matches_the_exact_recursion(kappa, family):
    got, want = _iat_case(kappa, family)
    print(f"\ncond {kappa} {family}: IAT of the slowest mode {got:.2f} (estimated) vs {want:.2f} (exact) records")
    assert abs(got / want - 1) < 0.10, (kappa, family, got, want)


def test_fair_comparison_at_condition_1000_reaches_10x():
    """Equal gradient evaluations (one per step), each family at 0.9 x its stability bound; prints the figure."""
    from circuits.diagnostics.ou import ar1_integrated_autocorr_time
    P = np.diag([1.0, 1000.0])
    u = np.array([[1.0, 0.0]])
    F, Q = euler_recursion(P, 0.9 * 2 / 1000)
    base = ar1_integrated_autocorr_time(F, Q, u)[0]
    J = 0.1 * optimal_skew(torch.tensor(P)).numpy()
    mu = np.linalg.eigvals((np.eye(2) + J) @ P)
    h_nr = 0.9 * np.min(2 * mu.real / np.abs(mu) ** 2)       # Euler's bound |1 - h mu| < 1
    F, Q = euler_recursion(P, h_nr, J)
    nonrev = ar1_integrated_autocorr_time(F, Q, u)[0]
    F, Q = baoab_recursion(P, 0.9 * 2 / math.sqrt(1000), 2.0, 1.0)   # critical damping of the slowest mode
    under = ar1_integrated_autocorr_time(F, Q, np.array([[1.0, 0, 0, 0]]))[0]
    print(f"\ncond 1000, slowest-mode IAT (steps): overdamped {base:.1f}, nonreversible (0.1 x LNP J) {nonrev:.1f} "
          f"({base / nonrev:.1f}x), underdamped (gamma_f = 2) {under:.1f} ({base / under:.1f}x)")
    assert max(base / nonrev, base / under) >= 10


# --------------------------------------------------------------------------------------- training -----------

def test_lpc_trainer_underdamped_accumulates_the_chain_gradient(monkeypatch):
    from neuro_lpc.networks import MLPDecoder, MLPImageEncoder
    from neuro_lpc.train import LPCTrainer
    torch.manual_seed(0)
    model = GenerativeModel(MLPDecoder(28, 1, latent_dim=4, hidden=(16,)), GaussianLikelihood(0.3, learn_sigma=True))
    enc = MLPImageEncoder(28, 1, latent_dim=4, hidden=(16,))
    cfg = TrainConfig(batch_size=3, langevin_steps=5, step_size=0.05, precondition=None, latent_dim=4,
                      dynamics="underdamped", friction=1.3, mass=0.7, prior_init_batches=0, sample_grid=0,
                      device="cpu").validate()
    tr = LPCTrainer(model, enc, cfg)
    assert (tr.sampler.dynamics, tr.sampler.friction, tr.sampler.mass) == ("underdamped", 1.3, 0.7)
    seen = {}
    original = tr.sampler.sample

    def spy(model_, x, z0, **kw):
        res = original(model_, x, z0, record_every=1, **kw)
        params = [p for p in model_.parameters() if p.requires_grad]
        seen["got"] = [p.grad.clone() for p in params]
        states = [z0] + [res.z_trace[t] for t in range(res.steps - 1)]   # theta-gradients at z(0..T-1)
        total = sum(model_.log_joint(x, zt.detach()).sum() for zt in states)
        seen["want"] = [-g / (x.shape[0] * res.steps) for g in torch.autograd.grad(total, params)]
        seen["v"] = res.v
        return res

    monkeypatch.setattr(tr.sampler, "sample", spy)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    tr.train_step(x)
    assert seen["v"] is not None and seen["v"].shape == (3, 4)
    for a, b in zip(seen["got"], seen["want"]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cli_flags_reach_the_config(tmp_path):
    from neuro_lpc.cli import prepare
    _, cfg, _ = prepare(["--out", str(tmp_path / "r"), "--dynamics", "nonreversible", "--skew", "random",
                         "--skew-scale", "0.5", "--precondition", "0"])
    assert (cfg.dynamics, cfg.skew, cfg.skew_scale) == ("nonreversible", "random", 0.5)
    assert TrainConfig.from_dict(cfg.to_dict()).dynamics == "nonreversible"
    _, cfg, _ = prepare(["--out", str(tmp_path / "s"), "--dynamics", "underdamped", "--friction", "2",
                         "--mass", "3", "--precondition", "0"])
    assert (cfg.dynamics, cfg.friction, cfg.mass) == ("underdamped", 2.0, 3.0)
    from neuro_lpc.train import LPCTrainer, build_model
    tr = LPCTrainer(*build_model(cfg, 28, 1), cfg)          # --precondition 0 means off (paper appendix)
    assert tr.sampler.dynamics == "underdamped" and tr.sampler.precondition is None and tr.sampler.friction == 2.0


# ------------------------------------------------------------------------------------------- bad input ------

_ASYM = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
BAD_SAMPLER = [
    (dict(dynamics="kinetic"), "dynamics must be one of"),
    (dict(skew="random"), "applies only to dynamics='nonreversible'"),
    (dict(dynamics="underdamped", skew="optimal"), "applies only to dynamics='nonreversible'"),
    (dict(dynamics="nonreversible", skew="best"), "skew must be None, one of"),
    (dict(dynamics="nonreversible", skew=_ASYM), "antisymmetric"),
    (dict(dynamics="nonreversible", skew=torch.zeros(2, 3)), "square 2-D"),
    (dict(dynamics="nonreversible", skew=torch.zeros(3)), "square 2-D"),
    (dict(dynamics="nonreversible", skew="random", skew_scale=-1.0), "skew_scale must be a finite number >= 0"),
    (dict(dynamics="nonreversible", skew="random", skew_scale=float("nan")), "skew_scale"),
    (dict(dynamics="nonreversible", skew=torch.zeros(2, 2), skew_scale=2.0), "skew_scale must be 1 with a tensor"),
    (dict(dynamics="underdamped", friction=0.0), "friction must be a positive finite"),
    (dict(dynamics="underdamped", friction=float("inf")), "friction must be a positive finite"),
    (dict(dynamics="underdamped", mass=-1.0), "mass must be a positive finite"),
    (dict(dynamics="underdamped", mass=torch.tensor([1.0, -2.0])), "mass must be positive and finite"),
    (dict(dynamics="underdamped", mass=torch.ones(2, 2)), "mass must be a positive number or a 1-D tensor"),
    (dict(dynamics="underdamped", precondition=0.25), "does not support preconditioning"),
    (dict(dynamics="nonreversible", metropolis=True), "supports only dynamics='overdamped'"),
]


@pytest.mark.parametrize("kw,msg", BAD_SAMPLER)
def test_bad_sampler_input_is_one_line(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)) as e:
        LangevinSampler(0.1, 10, **kw)
    assert "\n" not in str(e.value) and str(e.value).startswith("LangevinSampler")


def test_bad_input_at_sample_time_and_in_helpers():
    model, x1 = linear_model(d=3, n=5, sigma=0.5)
    X, z0 = x1.expand(2, -1), torch.zeros(2, 3, dtype=F64)
    cases = [
        (lambda: LangevinSampler(0.1, 3, dynamics="nonreversible", skew=torch.zeros(2, 2)).sample(model, X, z0),
         "skew must have shape (3, 3)"),
        (lambda: LangevinSampler(0.1, 3, dynamics="underdamped", mass=torch.ones(2)).sample(model, X, z0),
         "mass must have shape (3,)"),
        (lambda: LangevinSampler(0.1, 3).sample(model, X, z0, v0=z0), "v0 applies only to dynamics='underdamped'"),
        (lambda: LangevinSampler(0.1, 3, dynamics="underdamped").sample(model, X, z0, v0=torch.zeros(2, 2)),
         "v0 must be a finite tensor"),
        (lambda: optimal_skew(torch.diag(torch.tensor([1.0, -1.0]))), "symmetric positive definite"),
        (lambda: optimal_skew(torch.zeros(2, 3)), "square 2-D"),
        (lambda: skew_matrix("optimal", 3), "needs a precision of shape (3, 3)"),
        (lambda: skew_matrix(torch.zeros(2, 2), 3), "must have shape (3, 3)"),
        (lambda: mass_vector(torch.ones(2), 3), "shape (3,)"),
        (lambda: check_dynamics("overdamped", friction=-1, where="X"), "X: friction"),
        (lambda: TrainConfig(dynamics="underdamped").validate(), "set precondition to 0"),
        (lambda: TrainConfig(dynamics="nonreversible", skew="best").validate(), "TrainConfig: skew must be"),
        (lambda: dynamics_discrete_stationary("overdamped", np.eye(2) * 10, 0.5), "unstable"),
        (lambda: dynamics_recursion("underdamped", np.eye(2), 0.1, J=np.zeros((2, 2))), "J applies only"),
        (lambda: dynamics_recursion("overdamped", np.eye(2), 0.1, J=np.ones((2, 2))), "antisymmetric"),
        (lambda: dynamics_stationary("kinetic", np.eye(2)), "family must be one of"),
        (lambda: dynamics_stationary("underdamped", np.eye(2), friction=0.0), "friction"),
        (lambda: dynamics_stationary("underdamped", np.eye(2), mass=-1.0), "mass must be positive"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=re.escape(msg)) as e:
            fn()
        assert "\n" not in str(e.value), msg


def test_cli_refuses_a_bad_family_in_one_line(tmp_path, capsys):
    from neuro_lpc.cli import train_main
    assert train_main(["--out", str(tmp_path / "a"), "--dynamics", "underdamped"]) == 2
    err = capsys.readouterr().err.strip()
    assert "precondition" in err and len(err.splitlines()) == 1
    assert train_main(["--out", str(tmp_path / "b"), "--dynamics", "kinetic"]) == 2
    assert "dynamics must be one of" in capsys.readouterr().err
