"""Non-reversible and underdamped value units of the circuit (issue 16; docs/circuits_dynamics.md).

Oracles: the exact stationary law of the circuit's linear Euler-Maruyama recursion (``ar1_stationary_cov`` of
``euler_maruyama_ar1``), the continuous Lyapunov solution and the Gaussian posterior written out in numpy here, the
exact finite-run variance of a time average of that recursion, and ``linear_flux_theory``'s entropy production.
Each statistical test also runs the same circuit with a 30% noise error (T = 1.3) and checks that it fails.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.diagnostics.flux import linear_flux_theory, time_reversal_asymmetry
from circuits.diagnostics.ou import ar1_stationary_cov, euler_maruyama_ar1, ou_integrated_autocorr_time
from circuits.integrate import run_em
from circuits.theory import fastest_rate, linear_circuit_matrices, slowest_decay_rate
from neuro_lpc import GaussianLikelihood, GenerativeModel
from neuro_lpc.dynamics import optimal_skew
from neuro_lpc.theory import euler_stable_dt
from problems import Wbx, linear_model, mlp_model

F64 = torch.float64
FAMILIES = {   # name: CircuitConfig fields; skews small enough that the finite-tau_e circuit stays stable
    "overdamped": {},
    "nonreversible": {"dynamics": "nonreversible", "skew": "random", "skew_scale": 0.5},
    "nonreversible-optimal": {"dynamics": "nonreversible", "skew": "optimal"},
    "underdamped": {"dynamics": "underdamped", "friction": 2.0, "mass": 0.5},
}


def _theory(circuit, W, b, x, tau_e, temperature=1.0):
    cfg = circuit.config
    kw = {"dynamics": cfg.dynamics}
    if circuit.skew is not None:
        kw["skew"] = circuit.skew.numpy()
    if cfg.dynamics == "underdamped":
        kw.update(friction=cfg.friction, mass=cfg.mass)
    sigma_x = float(circuit.model.likelihood.sigma)
    return linear_circuit_matrices(W, b, x, sigma_x, circuit.prior_std, cfg.tau_z, tau_e, temperature, **kw)


def _max_rel_error(emp, exact):
    """max_ij |emp - exact| / sqrt(exact_ii exact_jj): each entry's Monte-Carlo se is <= sqrt(2 / N)."""
    s = np.sqrt(np.diag(exact))
    return float(np.max(np.abs(emp - exact) / np.outer(s, s)))


def _stationary_samples(family, tau_e, temperature):
    """Final states (z, v or None) of 3000 independent chains after 60 relaxation times of the slowest mode."""
    model, x1 = linear_model(d=3, n=5)
    cfg = CircuitConfig(dt=2e-4, tau_z=1e-2, tau_e=tau_e, temperature=temperature, **FAMILIES[family])
    c = Circuit(model, cfg)
    x = x1.repeat(3000, 1)
    c.simulate(x, steps=1500, record_every=1500)
    v = c.state["v"].numpy() if c.state["v"] is not None else None
    return c, model, x1, c.state["z"].numpy(), v


# the optimal skew of this posterior is too strong for finite tau_e: that linear circuit has no stationary law
# (an eigenvalue with Re > 0; the circuit refuses it, test_bad_input_at_the_circuit_is_one_line)
CASES = [(f, 0.0) for f in FAMILIES] + [(f, 2e-3) for f in FAMILIES if f != "nonreversible-optimal"]


@pytest.mark.parametrize("family, tau_e", CASES, ids=[f"{f}-{'adiabatic' if t == 0 else 'finite-tau_e'}" for f, t in CASES])
def test_stationary_covariance_is_the_euler_maruyama_recursions(family, tau_e):
    """Cov of z (and of v) over 3000 chains = the exact stationary law of the EM recursion of the circuit's linear
    SDE (A, B of circuits.theory); with tau_e > 0 (non-adiabatic error units) too.  A 30% noise error fails."""
    c, model, x1, z, v = _stationary_samples(family, tau_e, 1.0)
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    A, _, B = _theory(c, W, b, x, tau_e)
    exact = ar1_stationary_cov(*euler_maruyama_ar1(A, B, c.config.dt))
    d = 3
    emp = np.cov(np.concatenate([z, v], 1).T) if v is not None else np.cov(z.T)
    idx = list(range(d)) + (list(range(A.shape[0] - d, A.shape[0])) if v is not None else [])
    exact = exact[np.ix_(idx, idx)]
    assert _max_rel_error(emp, exact) < 0.1, (emp, exact)
    *_, z_hot, v_hot = _stationary_samples(family, tau_e, 1.3)   # a 30% noise error is seen
    emp_hot = np.cov(np.concatenate([z_hot, v_hot], 1).T) if v_hot is not None else np.cov(z_hot.T)
    assert _max_rel_error(emp_hot, exact) > 0.2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_em_law_tends_to_the_posterior_as_dt_to_0(family):
    """Adiabatic circuit: the EM recursion's stationary covariance -> the Lyapunov solution as dt -> 0 (error O(dt)),
    whose z block is the posterior covariance (W^T W / sigma^2 + I / s_p^2)^-1 and v block T M (numpy here)."""
    model, x1 = linear_model(d=3, n=5)
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, **FAMILIES[family]))
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    A, _, B = _theory(c, W, b, x, 0.0)
    lyap = scipy.linalg.solve_continuous_lyapunov(A, -B @ B.T)
    post = np.linalg.inv(W.T @ W / 0.25 + np.eye(3))
    np.testing.assert_allclose(lyap[:3, :3], post, rtol=1e-8, atol=1e-10)
    if family == "underdamped":
        np.testing.assert_allclose(lyap[3:, 3:], 0.5 * np.eye(3), atol=1e-10)   # T M
        np.testing.assert_allclose(lyap[:3, 3:], 0.0, atol=1e-10)
    errs = [np.abs(ar1_stationary_cov(*euler_maruyama_ar1(A, B, dt)) - lyap).max() for dt in (2e-5, 1e-5, 5e-6)]
    assert errs[0] > errs[1] > errs[2] > 0
    assert 1.6 < errs[0] / errs[1] < 2.4 and 1.6 < errs[1] / errs[2] < 2.4   # first order in dt


def test_zero_skew_is_the_overdamped_circuit_bit_for_bit():
    """skew = 0 (d, d): the non-reversible circuit is the overdamped one exactly (the general kernels)."""
    model = mlp_model(d=3, n=6)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    base = dict(dt=1e-4, tau_z=1e-2, tau_e=2e-3, seed=4)
    a = Circuit(model, CircuitConfig(**base)).simulate(x, steps=200, record_every=10)
    b = Circuit(model, CircuitConfig(**base, dynamics="nonreversible", skew=torch.zeros(3, 3, dtype=F64))).simulate(
        x, steps=200, record_every=10)
    assert torch.equal(a.z, b.z) and torch.equal(a.log_joint, b.log_joint)
    c = Circuit(model, CircuitConfig(**base, dynamics="nonreversible", skew="random", skew_scale=0.3)).simulate(
        x, steps=200, record_every=10)
    assert not torch.allclose(a.z, c.z)   # a skew does act


def test_skew_acts_as_J_s_in_one_step():
    """One noise-free step from z0: z1 - z1(overdamped) = (dt / tau_z) J s(z0) (linear decoder, settled errors)."""
    model, x1 = linear_model(d=3, n=5)
    J = torch.tensor([[0.0, 0.7, -0.2], [-0.7, 0.0, 0.4], [0.2, -0.4, 0.0]], dtype=F64)
    z0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x1.repeat(2, 1)
    base = dict(dt=1e-4, tau_z=1e-2, tau_e=0.0, noise="none")
    over = Circuit(model, CircuitConfig(**base))
    over.simulate(x, z0=z0, steps=1, record_every=1)
    skew = Circuit(model, CircuitConfig(**base, dynamics="nonreversible", skew=J))
    skew.simulate(x, z0=z0, steps=1, record_every=1)
    s = model.score(x, z0).detach()
    torch.testing.assert_close(skew.state["z"] - over.state["z"], 1e-2 * s @ J.T, rtol=1e-9, atol=1e-12)


def _cond_model(kappa):
    """d = n = 2, sigma_x = s_p = 1: the posterior precision is diag(1, kappa) (condition number kappa)."""
    dec = nn.Linear(2, 2).double()
    with torch.no_grad():
        dec.weight.copy_(torch.diag(torch.tensor([0.0, math.sqrt(kappa - 1)], dtype=F64)))
        dec.bias.zero_()
    return GenerativeModel(dec, GaussianLikelihood(1.0).double())


def _cond_family(family, kappa):
    if family == "overdamped":
        return {}
    if family == "nonreversible":
        return {"dynamics": "nonreversible", "skew": "optimal"}
    return {"dynamics": "underdamped", "friction": 2.0}   # critical damping of the slowest mode (lambda_min = 1)


def _time_average_var_theory(F, Q, v, R):
    """Exact R Var(mean of R consecutive stationary records of v.X) / Var(v.X) of the AR(1) chain X' = F X + n:
    (1/R) [R c_0 + 2 sum_k (R - k) c_k] / c_0 with c_k = v F^k Sigma v -> the integrated autocorrelation time."""
    sigma = ar1_stationary_cov(F, Q)
    c, Fk = [], np.eye(F.shape[0])
    for _ in range(R):
        c.append(float(v @ Fk @ sigma @ v))
        Fk = F @ Fk
    c = np.array(c)
    k = np.arange(1, R)
    return (R * c[0] + 2 * np.sum((R - k) * c[1:])) / (R * c[0])


@pytest.mark.slow
@pytest.mark.parametrize("kappa", [100, 1000])
@pytest.mark.parametrize("family", ["overdamped", "nonreversible", "underdamped"])
def test_slowest_mode_autocorrelation_time_matches_the_recursion(family, kappa):
    """The slow posterior direction's autocorrelation time, measured as R Var(time average) / Var over 2500 chains,
    matches the EM recursion's exact value within 10% (condition number 100 and 1000, each family at a quarter of
    its own Euler bound); 30% more noise (T = 1.3 against the T = 1 theory) is seen in Var."""
    model = _cond_model(kappa)
    W, b, x = model.decoder.weight.detach().numpy(), np.zeros(2), np.zeros(2)
    probe = Circuit(model, CircuitConfig(dt=1e-9, tau_z=1.0, tau_e=0.0, **_cond_family(family, kappa)))
    A, _, B = _theory(probe, W, b, x, 0.0)
    dt = 0.5 * euler_stable_dt(np.linalg.eigvals(A))
    e0 = np.zeros(A.shape[0])
    e0[0] = 1.0
    F, Q = euler_maruyama_ar1(A, B, dt)
    tau_steps = max(1.0, float(ou_integrated_autocorr_time(A, B, e0[None])[0]) / dt)
    every = max(1, int(tau_steps // 8))
    Fr, Qr = euler_maruyama_ar1(A, B, dt, every)
    R = max(64, int(3 * tau_steps / every))
    sigma = ar1_stationary_cov(F, Q)
    g = torch.Generator().manual_seed(kappa)
    for T, ok in ((1.0, True), (1.3, False)):
        c = Circuit(model, CircuitConfig(dt=dt, tau_z=1.0, tau_e=0.0, temperature=T, seed=kappa,
                                         **_cond_family(family, kappa)))
        z0 = torch.randn(2500, 2, generator=g, dtype=F64) @ torch.tensor(np.linalg.cholesky(sigma[:2, :2] * T)).T
        burn = int(tau_steps) // every + 1                           # records dropped (v(0) is not the EM law)
        traj = c.simulate(torch.zeros(2500, 2, dtype=F64), z0=z0, steps=(burn + R) * every, record_every=every)
        y = traj.z[burn:, :, 0].numpy()                              # (R, chains): the slow direction
        var = float(sigma[0, 0])
        measured = R * y.mean(0).var() / var
        predicted = _time_average_var_theory(Fr, Qr, e0, R)
        assert (abs(measured / predicted - 1) < 0.1) == ok, (T, measured, predicted)


def test_large_friction_with_rescaled_time_is_the_overdamped_circuit():
    """gamma_f -> inf with tau_z -> tau_z / gamma_f: z's autocorrelation function is the overdamped circuit's
    (Smoluchowski limit), the error O(1 / gamma_f^2) (closed forms of the circuit's linear SDE; the integrated
    autocorrelation time of z agrees exactly for every gamma_f, 2 gamma_f (-A)^-1 Sigma, a check of its own)."""
    from circuits.diagnostics.ou import ou_autocorrelation
    model, x1 = linear_model(d=3, n=5)
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    over = linear_circuit_matrices(W, b, x, 0.5, 1.0, 1e-2, 0.0)
    proj = np.eye(3)
    lags = np.array([1e-3, 3e-3, 1e-2])
    rho_over = ou_autocorrelation(over[0], over[2], lags, proj)
    errs = []
    for g in (10.0, 100.0, 1000.0):
        A, _, B = linear_circuit_matrices(W, b, x, 0.5, 1.0, 1e-2 / g, 0.0, dynamics="underdamped", friction=g)
        pz = np.concatenate([proj, np.zeros((3, 3))], 1)
        errs.append(float(np.max(np.abs(ou_autocorrelation(A, B, lags, pz) - rho_over))))
        np.testing.assert_allclose(ou_integrated_autocorr_time(A, B, pz),
                                   ou_integrated_autocorr_time(over[0], over[2], proj), rtol=1e-9)
    assert errs[0] > 30 * errs[1] > 900 * errs[2] and errs[2] < 1e-4
    # and the simulated circuit follows: 1000 chains at gamma_f = 10, the autocorrelation of z at lag 1 ms
    g = 10.0
    c = Circuit(model, CircuitConfig(dt=2e-5, tau_z=1e-2 / g, tau_e=0.0, dynamics="underdamped", friction=g))
    traj = c.simulate(x1.repeat(1000, 1), steps=5000, record_every=50)
    z = traj.z.numpy()[50:]                                                  # after 5 tau_z
    zc = z - z.mean((0, 1))
    rho = np.mean(zc[1:] * zc[:-1], (0, 1)) / np.mean(zc * zc, (0, 1))
    A0, _, B0 = over
    rho_over = ou_autocorrelation(A0, B0, [1e-3], proj)[0]
    np.testing.assert_allclose(rho, rho_over, atol=0.05)


def _flux_run(skew):
    """Every step of 300 chains (the circulation estimator needs Delta -> 0: at dt = tau_z / 100 the EM chain's
    sampled entropy production is 2.5% above the continuous one for this J)."""
    model, x1 = linear_model(d=2, n=4)
    kw = {} if skew is None else {"dynamics": "nonreversible", "skew": skew}
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, seed=2, **kw))
    traj = c.simulate(x1.repeat(300, 1), steps=4000, record_every=1)
    return c, model, x1, traj.z.numpy()[200:]


def _entropy_production(res, diffusion):
    """tr(Q^T D^-1 Q Sigma^-1) from a measured circulation and covariance (the flux module's closed form)."""
    Q, S = res.circulation, res.sigma
    return float(np.trace(Q.T @ Q @ np.linalg.inv(S)) / diffusion)


def test_entropy_production_zero_for_reversible_and_closed_form_for_nonreversible():
    J = torch.tensor([[0.0, 0.5], [-0.5, 0.0]], dtype=F64)
    c, model, x1, z = _flux_run(None)
    rev = time_reversal_asymmetry(z, dt_record=1e-4)
    assert rev.max_abs_z < 4.5                                       # no circulation within error
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    A, _, B = linear_circuit_matrices(W, b, x, 0.5, 1.0, 1e-2, 0.0, dynamics="nonreversible", skew=J.numpy())
    theory = linear_flux_theory(A, B).entropy_production
    assert theory > 0
    assert linear_flux_theory(*linear_circuit_matrices(W, b, x, 0.5, 1.0, 1e-2, 0.0)[::2]).entropy_production < 1e-9
    D = 1.0 / 1e-2                                                   # T / tau_z: the value units' diffusion
    ep_rev = _entropy_production(rev, D)
    c2, *_, z2 = _flux_run(J)
    irr = time_reversal_asymmetry(z2, dt_record=1e-4)
    assert irr.max_abs_z > 10
    ep = _entropy_production(irr, D)
    assert abs(ep / theory - 1) < 0.1, (ep, theory)
    assert ep_rev < 0.01 * theory, (ep_rev, theory)


def test_fair_comparison_at_equal_fastest_time_scale(capsys):
    """Condition number 1000 (d = 2): each family's slowest-mode decay rate and IAT with its linearised drift scaled
    so that max |eigenvalue| = 1 (equal fastest time scale).  Closed forms; printed for docs/circuits_dynamics.md.
    Underdamped at critical damping of the slowest mode gains sqrt(kappa) in rate; the optimal skew
    (Lelievre et al. 2013) makes every mode decay at the mean eigenvalue rate."""
    kappa = 1000
    model = _cond_model(kappa)
    W, b, x = model.decoder.weight.detach().numpy(), np.zeros(2), np.zeros(2)
    P = W.T @ W + np.eye(2)
    rows = {}
    for family, kw in (("overdamped", {}), ("nonreversible", {"skew": optimal_skew(torch.tensor(P)).numpy()}),
                       ("underdamped", {"friction": 2.0})):
        A, _, B = linear_circuit_matrices(W, b, x, 1.0, 1.0, 1.0, 0.0, dynamics=family, **kw)
        s = fastest_rate(A)
        A, B = A / s, B / math.sqrt(s)                               # fastest time scale 1
        e0 = np.zeros((1, A.shape[0]))
        e0[0, 0] = 1.0
        rows[family] = (slowest_decay_rate(A), float(ou_integrated_autocorr_time(A, B, e0)[0]))
    over_rate, over_iat = rows["overdamped"]
    assert over_rate == pytest.approx(1 / kappa)
    assert rows["underdamped"][0] / over_rate == pytest.approx(math.sqrt(kappa), rel=0.01)
    assert rows["nonreversible"][0] / over_rate > 100
    with capsys.disabled():
        print(f"\nfair comparison, kappa = {kappa}, equal fastest |eigenvalue|:")
        for f, (rate, iat) in rows.items():
            print(f"  {f:14s} slowest rate {rate:.4g}  IAT(slow z) {iat:.4g}  IAT ratio vs overdamped "
                  f"{over_iat / iat:.3g}x")
    assert over_iat / rows["underdamped"][1] > 10 and over_iat / rows["nonreversible"][1] > 10


# ------------------------------------------------------------------------------------------- bad input ----

@pytest.mark.parametrize("kw, msg", [
    ({"dynamics": "nonreversible", "skew": torch.ones(3, 3)}, "antisymmetric"),
    ({"dynamics": "nonreversible", "skew": torch.zeros(2, 3)}, "square"),
    ({"dynamics": "underdamped", "friction": 0.0}, "friction"),
    ({"dynamics": "underdamped", "friction": -1.0}, "friction"),
    ({"dynamics": "underdamped", "mass": 0.0}, "mass"),
    ({"dynamics": "underdamped", "mass": torch.tensor([1.0, -1.0, 1.0])}, "mass"),
    ({"dynamics": "sideways"}, "dynamics"),
    ({"skew": "random"}, "nonreversible"),
    ({"dynamics": "underdamped", "precondition": "rms"}, "gain units"),
])
def test_bad_dynamics_config_is_one_line(kw, msg):
    with pytest.raises(ValueError, match=msg) as err:
        CircuitConfig(**kw).validate()
    assert "\n" not in str(err.value)


def test_bad_input_at_the_circuit_is_one_line():
    model, x1 = linear_model(d=3, n=5)
    for kw, msg in (({"dynamics": "nonreversible", "skew": torch.zeros(2, 2, dtype=F64)}, r"shape \(3, 3\)"),
                    ({"dynamics": "underdamped", "mass": torch.ones(2, dtype=F64)}, "mass"),
                    ({"dynamics": "nonreversible", "skew": "random", "skew_scale": 20.0, "tau_e": 2e-3},
                     "unstable")):
        with pytest.raises(ValueError, match=msg) as err:
            Circuit(model, CircuitConfig(dt=1e-4, **kw))
        assert "\n" not in str(err.value)
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_e=0.0, dynamics="underdamped"))
    with pytest.raises(ValueError, match="linear-plain.*dynamics='underdamped'") as err:
        run_em(c, x1, steps=2, record_every=1, kernel="linear-plain")
    assert "\n" not in str(err.value)


def test_brian2_refuses_other_dynamics():
    from circuits.brian import BrianUnsupported, circuit_spec
    model, x1 = linear_model(d=3, n=5)
    for dyn in ("nonreversible", "underdamped"):
        with pytest.raises(BrianUnsupported, match=f"Brian2.*dynamics='{dyn}'") as err:
            circuit_spec(model, x1, CircuitConfig(dt=1e-4, tau_e=0.0, dynamics=dyn))
        assert "\n" not in str(err.value)


def test_config_round_trip_keeps_the_dynamics():
    J = torch.tensor([[0.0, 0.3], [-0.3, 0.0]], dtype=F64)
    cfg = CircuitConfig(dynamics="nonreversible", skew=J).validate()
    back = CircuitConfig.from_dict(cfg.to_dict())
    assert back.dynamics == "nonreversible" and torch.equal(back.skew, J)


# ------------------------------------------------------------------------------- ODE form, records, CLI ----

def test_ode_form_has_the_momentum_units():
    """T = 0 underdamped from z0 with v0 = 0: the ODE (torchdiffeq) and fine EM agree; the prior-only linear
    circuit oscillates (z overshoots 0) for small friction, which the overdamped circuit never does."""
    model, x1 = linear_model(d=3, n=5, scale=0.0)   # W = 0: the prior alone, posterior mean = 0
    z0 = torch.ones(1, 3, dtype=F64)
    cfg = CircuitConfig(dt=1e-5, tau_z=1e-2, tau_e=0.0, noise="none", dynamics="underdamped", friction=0.2)
    c = Circuit(model, cfg)
    ode = c.simulate_ode(x1, z0=z0, t_end=0.1, n_points=11)
    em = c.simulate(x1, z0=z0, steps=10000, record_every=1000)
    torch.testing.assert_close(em.z[-1], ode.z[-1], atol=2e-3, rtol=0)
    assert float(ode.z[:, 0, 0].min()) < -0.2          # overshoot: an oscillator
    assert c.state["v"] is not None


def test_momentum_records_have_variance_T_M():
    """The "v" records: variance T M (mass 3) up to the EM bias, which vanishes with dt (the recursion's own law)."""
    model, x1 = linear_model(d=3, n=5)
    c = Circuit(model, CircuitConfig(dt=5e-5, tau_z=1e-2, tau_e=0.0, dynamics="underdamped", mass=3.0))
    traj = c.simulate(x1.repeat(1000, 1), steps=4000, record_every=400)
    v = traj.extras["v"][4:].reshape(-1, 3).numpy()
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    A, _, B = _theory(c, W, b, x, 0.0)
    exact = ar1_stationary_cov(*euler_maruyama_ar1(A, B, 5e-5))[3:, 3:]
    np.testing.assert_allclose(np.diag(exact), 3.0, rtol=0.05)
    np.testing.assert_allclose(v.var(0), np.diag(exact), rtol=0.1)
    assert torch.equal(traj.extras["v"][-1], c.state["v"])


def test_cli_dynamics_reaches_the_circuit():
    """--dynamics underdamped --mass 4: at T = 0 with v(0) = 0 the first step leaves z still and the second moves it
    by a_z^2 s(z0) / M (EM of dz = M^-1 v dt / tau_z, dv = s dt / tau_z ...), the config keeps the fields."""
    from circuits.cli import build_parser, config_from_args
    args = build_parser().parse_args(["--out", "/tmp/unused", "--dynamics", "underdamped", "--mass", "4",
                                      "--friction", "3", "--noise", "none", "--tau-e", "0", "--dt", "1e-4"])
    cfg = config_from_args(args)
    assert (cfg.dynamics, cfg.mass, cfg.friction) == ("underdamped", 4.0, 3.0)
    cc = cfg.circuit_config()
    assert cc.dynamics == "underdamped" and cc.to_dict()["mass"] == 4.0
    model, x1 = linear_model(d=3, n=5)
    c = Circuit(model, cc)
    z0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x1.repeat(2, 1)
    c.simulate(x, z0=z0, steps=1, record_every=1)
    assert torch.equal(c.state["z"], z0)
    c.simulate(x, z0=z0, steps=2, record_every=1)
    a = cc.dt / cc.tau_z
    torch.testing.assert_close(c.state["z"] - z0, a * a * model.score(x, z0).detach() / 4.0, rtol=1e-9, atol=1e-12)
    bad = build_parser().parse_args(["--out", "/tmp/unused", "--dynamics", "underdamped", "--friction", "-1"])
    with pytest.raises(ValueError, match="friction"):
        config_from_args(bad)
    # --skew random --skew-scale 0.5: the circuit's J has spectral norm 0.5 (neuro_lpc.dynamics' "random")
    nr = config_from_args(build_parser().parse_args(["--out", "/tmp/unused", "--dynamics", "nonreversible", "--skew",
                                                     "random", "--skew-scale", "0.5", "--tau-e", "0", "--dt", "1e-4"]))
    J = Circuit(model, nr.circuit_config()).skew
    assert float(torch.linalg.matrix_norm(J, ord=2)) == pytest.approx(0.5)
    none = config_from_args(build_parser().parse_args(["--out", "/tmp/unused", "--skew", "none"]))
    assert none.skew is None
    # --integrator baoab: one step from v(0) = 0 at T = 0 (kick h s, half drift, friction c = exp(-gamma_f h / M),
    # half drift) moves z by h^2 s(z0) (1 + c) / (2 M), h = a_z
    ba = config_from_args(build_parser().parse_args(["--out", "/tmp/unused", "--dynamics", "underdamped", "--mass", "4",
                                                     "--integrator", "baoab", "--noise", "none", "--tau-e", "0",
                                                     "--dt", "1e-4"]))
    c = Circuit(model, ba.circuit_config())
    c.simulate(x, z0=z0, steps=1, record_every=1)
    cf = math.exp(-1.0 * a / 4.0)
    torch.testing.assert_close(c.state["z"] - z0, a * a * model.score(x, z0).detach() * (1 + cf) / 8.0, rtol=1e-9,
                               atol=1e-12)


def test_learning_with_underdamped_dynamics_accumulates_gradients():
    """theta-gradients along an underdamped chain: the same hebbian rule at the visited z(t) -- equal to the
    gradient of sum_t log p(x, z(t)) recomputed by autograd at the recorded states."""
    model = mlp_model(d=3, n=6)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, dynamics="underdamped", seed=1))
    for p in model.parameters():
        p.grad = None
    traj = c.simulate(x, steps=6, record_every=1, accumulate_grad=True, grad_scale=1.0)
    got = [p.grad.clone() for p in model.decoder.parameters()]
    z0 = c.state  # states visited before each step: z(0) .. z(5); z(0) is the prior draw of the run generator
    g = torch.Generator().manual_seed(1)
    zs = [1.0 * torch.randn(4, 3, generator=g, dtype=F64)] + [traj.z[k] for k in range(5)]
    for p in model.parameters():
        p.grad = None
    sum(model.log_joint(x, z).sum() for z in zs).backward()
    for a, p in zip(got, model.decoder.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-9, atol=1e-12)
    assert z0["v"] is not None


@pytest.mark.parametrize("family", ["nonreversible", "underdamped", "baoab"])
def test_graph_block_schedule_keeps_the_momentum_and_skew(family):
    """The CUDA-graph path's block schedule (emulated on the CPU: buffer swaps of z, eps and v restored after each
    block) gives the eager run bit for bit, v records and final v included."""
    from circuits.fast import simulate_graphed
    model, x1 = linear_model(d=3, n=5)
    kw = {**FAMILIES["underdamped"], "integrator": "baoab"} if family == "baoab" else FAMILIES[family]
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, **kw))
    x = x1.repeat(4, 1)
    ref = c.simulate(x, steps=52, record_every=7, generator=torch.Generator().manual_seed(9))
    v_ref = c.state["v"]
    out = simulate_graphed(c, x, None, steps=52, record_every=7, generator=torch.Generator().manual_seed(9),
                           _emulate=True)
    assert out.attrs["fast"] == "emulated"
    assert torch.equal(out.z, ref.z)
    for k, v in ref.extras.items():   # the graph path measures records itself (not from the next step's forward)
        torch.testing.assert_close(out.extras[k], v, rtol=1e-12, atol=1e-12, msg=k)
    if family != "nonreversible":
        assert torch.equal(out.extras["v"], ref.extras["v"])
        assert torch.equal(c.state["v"], v_ref)


def test_study_passes_dynamics_to_the_circuit_rows():
    """sims/run_circuit.py --dynamics underdamped --precondition none: the circuit rows' CircuitConfig and
    CircuitTrainConfig carry it; with the default gain units (precondition 0.25) the study refuses in one line."""
    from circuits.study.config import StudyError, check_fields
    from circuits.study.posterior import circuit_config_for
    from circuits.study.run import build_parser, config_from_args
    base = ["--out", "/tmp/unused-study", "--quick", "--dynamics", "underdamped", "--friction", "2", "--mass", "0.5"]
    cfg = config_from_args(build_parser().parse_args(base + ["--precondition", "none"]))
    check_fields(cfg)
    cc = circuit_config_for(cfg, "ideal", "cpu")
    assert (cc.dynamics, cc.friction, cc.mass, cc.precondition) == ("underdamped", 2.0, 0.5, None)
    bad = config_from_args(build_parser().parse_args(base))
    with pytest.raises(StudyError, match="gain units") as err:
        check_fields(bad)
    assert "\n" not in str(err.value)
    nr = config_from_args(build_parser().parse_args(["--out", "/tmp/unused-study", "--quick", "--dynamics",
                                                     "nonreversible", "--skew", "random", "--skew-scale", "0.3"]))
    cc = circuit_config_for(nr, "ideal", "cpu")
    assert (cc.dynamics, cc.skew, cc.skew_scale, cc.precondition) == ("nonreversible", "random", 0.3, 0.25)


@pytest.mark.parametrize("family", ["nonreversible", "underdamped"])
def test_per_unit_time_constants_keep_the_posterior(family):
    """Heterogeneous tau_z,i (v_i shares tau_z,i; the skew enters as D^-1/2 J D^-1/2): the stationary law of z is
    still the posterior.  Closed form (numpy, written here): the Lyapunov solution of the per-unit drift; and the
    simulated circuit (3000 chains, dt = min tau / 200) against it."""
    model, x1 = linear_model(d=3, n=5)
    cfg = CircuitConfig(dt=2e-5, tau_z=1e-2, tau_e=0.0, timescales="heterogeneous", **FAMILIES[family])
    c = Circuit(model, cfg)
    tau = c.timescales.tau_z.numpy()
    assert tau.std() > 0.1 * tau.mean()                              # really heterogeneous
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    P = W.T @ W / 0.25 + np.eye(3)
    Di = np.diag(1 / tau)
    if family == "nonreversible":
        J = c.skew.numpy()
        A = -(Di + np.sqrt(Di) @ J @ np.sqrt(Di)) @ P
        B = np.sqrt(2 * Di)
    else:
        g, Mi = 2.0, np.eye(3) / 0.5
        A = np.block([[np.zeros((3, 3)), Di @ Mi], [-Di @ P, -g * Di @ Mi]])
        B = np.concatenate([np.zeros((3, 3)), np.sqrt(2 * g * Di)])
    lyap = scipy.linalg.solve_continuous_lyapunov(A, -B @ B.T)
    np.testing.assert_allclose(lyap[:3, :3], np.linalg.inv(P), rtol=1e-8, atol=1e-12)
    c.simulate(x1.repeat(3000, 1), steps=int(8 * tau.max() / 2e-5), record_every=100)
    assert _max_rel_error(np.cov(c.state["z"].numpy().T), np.linalg.inv(P)) < 0.1


def test_circuit_trainer_runs_underdamped_presentations(tmp_path):
    """CircuitTrainConfig(dynamics="underdamped"): every presentation's circuit is underdamped (its state has the
    momentum units), the config is saved in config.json, and a short training moves the decoder."""
    import json

    from circuits.learn import CircuitTrainConfig, CircuitTrainer
    from test_learn import vector_problem
    cfg = CircuitTrainConfig(batch_size=16, presentation_steps=20, max_batches_per_epoch=2, prior_init_batches=0,
                             sample_grid=0, warm_start="none", seed=3, tau_e=0.0, dt=1e-4, noise="ideal", latent_dim=3,
                             likelihood="gaussian", device="cpu", dynamics="underdamped", friction=2.0, mass=0.5)
    model, enc, data = vector_problem()
    w0 = model.decoder.weight.detach().clone()
    trainer = CircuitTrainer(model, enc, cfg, out_dir=tmp_path)
    trainer.fit(data, progress=False)
    c = trainer.build_circuit()
    assert c.config.dynamics == "underdamped" and c.mass is not None and float(c.mass[0]) == 0.5
    saved = json.loads((tmp_path / "config.json").read_text())
    saved = saved.get("config", saved)
    assert (saved["dynamics"], saved["friction"], saved["mass"]) == ("underdamped", 2.0, 0.5)
    assert not torch.equal(model.decoder.weight.detach(), w0)


def _baoab_recursion(P, h, gamma, mass, T=1.0):
    """The circuit's BAOAB step on a Gaussian (s = -P z, mean removed) as X' = F X + noise, X = (z, u), written out
    here in numpy: u += h s; z += h/2 M^-1 u; u = c u + sqrt(T M (1 - c^2)) xi; z += h/2 M^-1 u."""
    d = P.shape[0]
    I, Z, Mi = np.eye(d), np.zeros((d, d)), np.eye(d) / mass
    c = np.exp(-gamma * h / mass)
    kick = np.block([[I, Z], [-h * P, I]])
    drift = np.block([[I, h / 2 * Mi], [Z, I]])
    ou = np.block([[I, Z], [Z, c * I]])
    F = drift @ ou @ drift @ kick
    noise = np.block([[Z, Z], [Z, T * mass * (1 - c * c) * I]])
    return F, drift @ noise @ drift.T


def test_baoab_samples_the_posterior_exactly_at_a_large_step():
    """integrator="baoab": the z-marginal of BAOAB on a Gaussian is exact at any stable step (Leimkuhler & Matthews
    2013): at h sqrt(lambda_max / M) = 1, where Euler-Maruyama is refused, the z covariance of 3000 chains is the
    posterior's and the momentum units' T M (the recursion written out in numpy); T = 1.3 is seen."""
    model, x1 = linear_model(d=3, n=5)
    W, b, x = (t.numpy() for t in Wbx(model, x1))
    P = W.T @ W / 0.25 + np.eye(3)
    mass, gamma, tau = 0.5, 2.0, 1e-2
    h = math.sqrt(mass / np.linalg.eigvalsh(P).max())
    kw = dict(dt=h * tau, tau_z=tau, tau_e=0.0, dynamics="underdamped", friction=gamma, mass=mass)
    with pytest.raises(ValueError, match="unstable"):
        Circuit(model, CircuitConfig(**kw))                          # Euler-Maruyama at this step
    F, Q = _baoab_recursion(P, h, gamma, mass)
    exact = scipy.linalg.solve_discrete_lyapunov(F, Q)
    np.testing.assert_allclose(exact[:3, :3], np.linalg.inv(P), rtol=1e-9, atol=1e-12)   # exact z-marginal
    # the stored u = v - (h/2) s (after O-A, before the closing kick) has exactly the law N(0, T M) here; the
    # momentum at step boundaries, v = u + (h/2) s, does not (BAOAB's O(h^2) bias in v)
    np.testing.assert_allclose(exact[3:, 3:], mass * np.eye(3), atol=1e-12)
    v_full = np.block([[np.eye(3), np.zeros((3, 3))], [-h / 2 * P, np.eye(3)]])
    assert np.abs(np.diag(v_full @ exact @ v_full.T)[3:] / mass - 1).max() > 0.02
    for T, ok in ((1.0, True), (1.3, False)):
        c = Circuit(model, CircuitConfig(**kw, integrator="baoab", temperature=T))
        c.simulate(x1.repeat(3000, 1), steps=300, record_every=300)
        emp = np.cov(np.concatenate([c.state["z"].numpy(), c.state["v"].numpy()], 1).T)
        assert (_max_rel_error(emp, exact) < 0.1) == ok, (T, emp, exact)


def test_baoab_needs_underdamped():
    with pytest.raises(ValueError, match="integrator='baoab'.*underdamped") as err:
        CircuitConfig(integrator="baoab").validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="integrator must be one of"):
        CircuitConfig(dynamics="underdamped", integrator="leapfrog").validate()
