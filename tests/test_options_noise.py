"""Every noise source's parameters against a prediction (issue 18, part 2): the option changes the circuit as a
closed form says, so a source or parameter that did nothing (or the wrong thing) fails.

Closed forms used (circuits.noise docstrings, docs/circuits.md section 3):

* flicker: tau_z dz = [... + std s y(t)] dt with y the unit-variance sum of K OU processes (exact discretisation
  y' = a_k y + sqrt(v (1 - a_k^2)) xi, v = 1/K, a_k = exp(-dt/tau_k), tau_k log-spaced, K = round(per_decade *
  decades) + 1). In Euler-Maruyama the z-increment carries (dt/tau_z) * (the recorded current); the augmented linear
  recursion (z, y) of a linear circuit has an exact discrete Lyapunov stationary covariance; the current's
  autocorrelation at lag L is (1/K) sum_k a_k^L.
* shot: per-step variance F scale |a| 2 dt / tau (adiabatic error units: F scale |e| per evaluation), entering z.
* mismatch / quantisation / feedback mismatch: exact one-step drifts of the linear circuit with the transformed
  signals; quantisation error <= step / 2 inside the bound.
* weight devices: include_bias puts biases on the array (programming spread std * w_max, drift factor); the pulsed
  device's device-to-device spread dw_min_dtod and headroom init_fraction.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.noise import AnalogArray, NoiseModel
from circuits.run import CircuitRun
from neuro_lpc import GaussianLikelihood, GenerativeModel
from problems import assert_moments


pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def lin_model(d=3, n=5, sigma=0.5, prior_std=1.0, seed=0):
    """nn.Linear decoder (weights ~ N(0, 1/n)), Gaussian likelihood, prior N(0, prior_std^2); and one x."""
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=F64) / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=F64) * 0.1)
    model = GenerativeModel(dec, GaussianLikelihood(sigma).double(), prior_std=prior_std)
    return model, torch.randn(1, n, generator=g, dtype=F64)


def sig2(model):
    """sigma_x^2 as the likelihood holds it (a stored log sigma: 0.5 comes back as 0.5 - 1e-9)."""
    return float(model.likelihood.sigma) ** 2


def posterior_terms(model, x):
    """(P, c) of the adiabatic linear circuit's drift s = c - P z: P = W^T W / sigma^2 + I / s_p^2."""
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    s2, sp2 = sig2(model), float(model.prior_std) ** 2
    P = W.T @ W / s2 + torch.eye(W.shape[1], dtype=F64) / sp2
    c = W.T @ (x.reshape(-1) - b) / s2
    return P, c


def log_spaced(tau_min, tau_max, per_decade):
    """The flicker source's documented OU time constants (circuits.noise.units.Flicker): K = round(per_decade *
    log10(tau_max / tau_min)) + 1 log-spaced values from tau_min to tau_max (written out here, not imported)."""
    K = max(1, int(round(per_decade * math.log10(tau_max / tau_min))) + 1)
    if K == 1:
        return [math.sqrt(tau_min * tau_max)]
    return [tau_min * (tau_max / tau_min) ** (k / (K - 1)) for k in range(K)]


# ================================================================================ flicker ====

def test_flicker_current_enters_the_value_and_error_units_with_its_coefficient():
    """flicker value_std / error_std (finite tau_e, T = 0): every Euler step moves z by dt/tau_z (W^T eps - z) plus
    dt/tau_z times the recorded value current, and eps by dt/tau_e ((x - W z - b)/sigma^2 - eps) plus dt/tau_e times
    the recorded error current -- to rounding. A flicker source that only recorded its current (the issue's survivor)
    leaves a zero residual and fails; so does a wrong coefficient."""
    model, x1 = lin_model(seed=4)
    dt, tau_z, tau_e, B, steps = 1e-4, 1e-2, 2e-3, 16, 40
    noise = {"temperature": 0.0, "sources": [{"type": "flicker", "value_std": 0.3, "error_std": 0.2, "record": True}]}
    c = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise=noise))
    z0 = torch.randn(B, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    traj = c.simulate(x1.expand(B, -1), z0, steps=steps, record_every=1, record_eps=True)
    z, eps = traj.z, traj.extras["eps"]
    cur_v, cur_e = traj.extras["noise_flicker_value"], traj.extras["noise_flicker_error"]
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    drift_z = (eps[:-1] @ W - z[:-1]) * (dt / tau_z)
    drift_e = ((x1 - z[:-1] @ W.T - b) / sig2(model) - eps[:-1]) * (dt / tau_e)
    res_z = z[1:] - z[:-1] - drift_z
    res_e = eps[1:] - eps[:-1] - drift_e
    assert float(cur_v.abs().mean()) > 0.05 and float(cur_e.abs().mean()) > 0.05      # a current to see
    torch.testing.assert_close(res_z, cur_v[1:] * (dt / tau_z), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(res_e, cur_e[1:] * (dt / tau_e), rtol=1e-7, atol=1e-12)


def _flicker_lyapunov(model, x, dt, tau_z, taus, value_std, error_std):
    """Stationary covariance of z for the adiabatic linear circuit at T = 0 driven by the flicker banks, from the exact
    augmented recursion (step order of the circuit: the banks advance, then z moves with the new currents):

        y' = A y + B xi                          (per unit: a_k = exp(-dt/tau_k), b_k = sqrt((1 - a_k^2) / K))
        z' = (I - h P) z + h c + h value_std S_v y_v' + h W^T error_std S_e y_e'      (h = dt / tau_z)

    value_std / error_std already in state units (relative units times s_p or 1/sigma_x)."""
    P, _ = posterior_terms(model, x)
    P, W = P.numpy(), model.decoder.weight.detach().numpy()
    n, d = W.shape
    K, h = len(taus), dt / tau_z
    a = np.exp(-dt / np.asarray(taus))
    bk = np.sqrt((1 - a ** 2) / K)
    Av, Bv = np.kron(np.diag(a), np.eye(d)), np.kron(np.diag(bk), np.eye(d))
    Ae, Be = np.kron(np.diag(a), np.eye(n)), np.kron(np.diag(bk), np.eye(n))
    Sv, Se = np.kron(np.ones((1, K)), np.eye(d)), np.kron(np.ones((1, K)), np.eye(n))
    cv, ce = h * value_std * Sv, h * error_std * W.T @ Se
    N = d + K * d + K * n
    F = np.zeros((N, N))
    G = np.zeros((N, K * d + K * n))
    iv, ie = slice(d, d + K * d), slice(d + K * d, N)
    F[:d, :d] = np.eye(d) - h * P
    F[:d, iv], F[:d, ie] = cv @ Av, ce @ Ae
    F[iv, iv], F[ie, ie] = Av, Ae
    G[:d, :K * d], G[:d, K * d:] = cv @ Bv, ce @ Be
    G[iv, :K * d], G[ie, K * d:] = Bv, Be
    cov = scipy.linalg.solve_discrete_lyapunov(F, G @ G.T)
    return cov[:d, :d]


@pytest.mark.parametrize("value_std, error_std, units", [(0.6, 0.0, "relative"), (0.0, 0.3, "relative"),
                                                         (0.6, 0.3, "absolute")])
def test_flicker_sets_the_stationary_covariance_of_a_linear_circuit(value_std, error_std, units):
    """flicker value_std / error_std / units, T = 0, adiabatic error units, s_p = 1.5, sigma_x = 0.5: the only noise is
    the 1/f current, so the stationary covariance of z is the exact Lyapunov solution of the augmented (z, OU bank)
    recursion -- proportional to std^2, zero at std = 0 -- with the relative amplitudes scaled by s_p (value) and
    1/sigma_x (error) and the absolute ones not. 4000 chains, one snapshot each, 5 standard errors
    (problems.assert_moments). A flicker current that never reached z gives a zero covariance; a value current of the
    wrong coefficient, or error-unit flicker dropped in the adiabatic form, misses by many standard errors."""
    sp, sigma = 1.5, 0.5
    model, x1 = lin_model(prior_std=sp, seed=2)
    dt, tau_z, B = 2e-4, 1e-2, 4000
    tau_min, tau_max, per_decade = 1e-3, 1e-1, 1.0
    src = {"type": "flicker", "value_std": value_std, "error_std": error_std, "tau_min": tau_min, "tau_max": tau_max,
           "per_decade": per_decade, "units": units}
    c = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=0.0, noise={"temperature": 0.0, "sources": [src]}))
    P, cvec = posterior_terms(model, x1)
    mean = torch.linalg.solve(P, cvec)
    e_fold = 1 / (float(torch.linalg.eigvalsh(P).min()) * dt / tau_z)          # steps per e-fold of the slowest z mode
    steps = int(15 * e_fold)
    traj = c.simulate(x1.expand(B, -1), mean.expand(B, -1).clone(), steps=steps, record_every=steps,
                      generator=torch.Generator().manual_seed(5))
    rel = units == "relative"
    cov = _flicker_lyapunov(model, x1, dt, tau_z, log_spaced(tau_min, tau_max, per_decade),
                            value_std * (sp if rel else 1.0), error_std * (1 / sigma if rel else 1.0))
    assert np.diag(cov).min() > 1e-4                                            # a covariance worth measuring
    assert_moments(traj.z[-1], mean, cov, n_sigma=5.0)
    off = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=0.0, noise={"temperature": 0.0, "sources": [
        {**src, "value_std": 0.0, "error_std": 0.0}]}))
    assert off.sources == []                                                    # std 0: the source does nothing


@pytest.mark.parametrize("tau_min, tau_max, per_decade", [(1e-3, 1e-1, 1.0), (1e-2, 1e-1, 1.0), (1e-3, 1.0, 1.0),
                                                          (1e-3, 1e-1, 3.0)])
def test_flicker_time_constants_set_the_autocorrelation_of_its_current(tau_min, tau_max, per_decade):
    """flicker tau_min / tau_max / per_decade: the recorded current (stationary from the start, independent across
    chains and units) has autocorrelation (1/K) sum_k exp(-lag / tau_k) over the documented log-spaced tau_k. The four
    cases each change one parameter from the first; their predictions at the lags used differ by >= 10 standard
    errors, so a parameter that did not reach the bank fails. Tolerance: 5 standard errors (1 - rho^2)/sqrt(N) of a
    correlation over N = chains x units pairs."""
    model, x1 = lin_model(seed=3)
    dt, B, lags = 1e-3, 4000, (1, 3, 10)
    src = {"type": "flicker", "value_std": 0.2, "tau_min": tau_min, "tau_max": tau_max, "per_decade": per_decade,
           "record": True}
    c = Circuit(model, CircuitConfig(dt=dt, tau_z=1e-2, tau_e=0.0, noise={"sources": [src]}))
    traj = c.simulate(x1.expand(B, -1), steps=1 + max(lags), record_every=1, generator=torch.Generator().manual_seed(6))
    cur = traj.extras["noise_flicker_value"]                                   # (steps, B, d)
    taus = np.asarray(log_spaced(tau_min, tau_max, per_decade))
    for lag in lags:
        a, b = cur[0].flatten(), cur[lag].flatten()
        rho = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        pred = float(np.exp(-lag * dt / taus).mean())
        se = (1 - pred ** 2) / math.sqrt(a.numel())
        assert abs(rho - pred) < 5 * se, (lag, rho, pred, se)


# =================================================================================== shot ====

def _one_step_residual(model, x1, noise, B=20000, dt=1e-4, tau_z=1e-2, z0=None, seed=7):
    """z(1) - z(0) - (dt/tau_z)(c - P z(0)) for B chains from one z(0) at T = 0 with adiabatic error units: the
    noise sources' whole contribution to one step of the value units."""
    c = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=0.0, noise={"temperature": 0.0, **noise}))
    P, cvec = posterior_terms(model, x1)
    z0 = torch.tensor([[0.5, -1.5, 2.5]], dtype=F64) if z0 is None else z0
    traj = c.simulate(x1.expand(B, -1), z0.expand(B, -1).clone(), steps=1, record_every=1,
                      generator=torch.Generator().manual_seed(seed))
    return traj.z[0] - z0 - (dt / tau_z) * (cvec - z0 @ P), z0[0]


@pytest.mark.parametrize("units", ["relative", "absolute"])
def test_shot_noise_on_value_units_scales_with_activity_in_the_dynamics(units):
    """shot value_fano / units, through the circuit's step (not the source's hook alone): the value units' one-step
    noise has variance F scale |z| 2 dt / tau_z per unit (scale s_p = 2 in relative units, 1 in absolute), i.e. it grows
    linearly with |z| (z(0) = 0.5, -1.5, 2.5). 20000 chains, 5 standard errors sqrt(2/N) of a variance."""
    sp, F, dt, tau_z = 2.0, 0.2, 1e-4, 1e-2
    model, x1 = lin_model(prior_std=sp, seed=1)
    r, z0 = _one_step_residual(model, x1, {"sources": [{"type": "shot", "value_fano": F, "error_fano": 0.0,
                                                        "units": units}]})
    pred = F * (sp if units == "relative" else 1.0) * z0.abs() * 2 * dt / tau_z
    assert ((r.var(0) / pred - 1).abs() < 5 * math.sqrt(2 / r.shape[0])).all(), (r.var(0), pred)
    assert r.mean(0).abs().max() < 5 * float(pred.max().sqrt()) / math.sqrt(r.shape[0])


@pytest.mark.parametrize("units", ["relative", "absolute"])
def test_adiabatic_error_shot_noise_reaches_z_through_the_feedback(units):
    """shot error_fano / units with adiabatic error units: eps = e + sqrt(F scale |e|) xi per evaluation (scale
    1/sigma_x = 2 relative, 1 absolute), so the value units' one-step noise is (dt/tau_z) W^T of it, with covariance
    (dt/tau_z)^2 W^T diag(F scale |e(z0)|) W. 20000 chains, 5 standard errors of the covariance entries."""
    F, dt, tau_z, sigma = 0.3, 1e-4, 1e-2, 0.5
    model, x1 = lin_model(sigma=sigma, seed=1)
    r, z0 = _one_step_residual(model, x1, {"sources": [{"type": "shot", "value_fano": 0.0, "error_fano": F,
                                                        "units": units}]})
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    e = (x1[0] - W @ z0 - b) / sig2(model)
    cov = (dt / tau_z) ** 2 * W.T @ torch.diag(F * (1 / sigma if units == "relative" else 1.0) * e.abs()) @ W
    assert_moments(r, torch.zeros(3, dtype=F64), cov, n_sigma=5.0)


# ============================================================================ unit mismatch ====

def _mismatch_step(model, x1, site, B=6):
    """(z(0), z(1), the bound mismatch source) of one T = 0 step with mismatch on one site only."""
    noise = {"temperature": 0.0, "sources": [{"type": "mismatch", "gain_std": 0.3, "offset_std": 0.2,
                                              "sites": [site]}]}
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, noise=noise, seed=4))
    z0 = torch.randn(B, 3, dtype=F64, generator=torch.Generator().manual_seed(8))
    traj = c.simulate(x1.expand(B, -1), z0.clone(), steps=1, record_every=1)
    (src,) = c.sources
    return z0, traj.z[0], src


@pytest.mark.parametrize("site", ["value", "prediction", "error"])
def test_mismatch_on_each_site_sets_the_drift_in_closed_form(site):
    """mismatch sites / gain_std / offset_std: one step of the adiabatic linear circuit at T = 0 is
    z(1) = z(0) + (dt/tau_z) [W^T (g_e (x - mu)/sigma^2 + o_e) - z(0)/s_p^2], mu = g_p (W (g_v z + o_v) + b) + o_p,
    with gains g = 1 + gain_std xi and offsets o = offset_std scale xi' on the chosen site only (1 and 0 elsewhere).
    The frozen gains/offsets have the configured spread (value scale s_p = 1, prediction 1, error 1/sigma_x = 2) --
    checked on the draws the step used. A site that was not transformed, or the wrong site, misses the step."""
    model, x1 = lin_model(d=3, n=400, sigma=0.5, seed=9)
    z0, z1, src = _mismatch_step(model, x1, site)
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    n, d = W.shape
    g = {s: torch.ones(d if s == "value" else n, dtype=F64) for s in ("value", "prediction", "error")}
    o = {s: torch.zeros_like(g[s]) for s in g}
    g[site], o[site] = src.frozen[f"{site}_gain"], src.frozen[f"{site}_offset"]
    scale = {"value": 1.0, "prediction": 1.0, "error": 2.0}[site]
    if site != "value":                                                          # 400 units: the spreads themselves
        assert abs(float(g[site].std()) / 0.3 - 1) < 5 / math.sqrt(2 * n)
        assert abs(float(o[site].std()) / (0.2 * scale) - 1) < 5 / math.sqrt(2 * n)
    mu = g["prediction"] * ((g["value"] * z0 + o["value"]) @ W.T + b) + o["prediction"]
    s = (g["error"] * (x1 - mu) / sig2(model) + o["error"]) @ W - z0
    torch.testing.assert_close(z1, z0 + 1e-2 * s, rtol=1e-9, atol=1e-12)
    clean = z0 + 1e-2 * (((x1 - z0 @ W.T - b) / sig2(model)) @ W - z0)
    assert float((z1 - clean).abs().max()) > 1e-4                                # the mismatch moved the step


# ============================================================================ quantisation ====

@pytest.mark.parametrize("site, bits, bound", [("value", None, None), ("error", None, None),
                                               ("prediction", None, None), ("value", 4, 1.0), ("prediction", 6, 1.5)])
def test_quantisation_bits_and_bound_set_the_grid_and_bound_the_error(site, bits, bound):
    """quantisation site / bits / bound (None: the documented defaults 7 / 7 / 9 bits, bound 3 / 3 / 2 in units of the
    site scale s_p = 1, 1/sigma_x = 2, 1): outputs lie on the grid k * res, res = 2 bound scale / (2^bits - 2), clipped
    to +-bound scale, and inside the bound the error is at most res / 2 (round to nearest); the grid is fully used."""
    model, _ = lin_model(seed=0)
    c = Circuit(model, CircuitConfig(noise={"sources": [{"type": "quantisation", "site": site, "bits": bits,
                                                         "bound": bound}]}))
    (q,) = c.sources
    q.start(1, None)
    nbits = bits if bits is not None else {"value": 7, "error": 7, "prediction": 9}[site]
    scale = {"value": 1.0, "error": 1 / float(model.likelihood.sigma), "prediction": 1.0}[site]
    lim = (bound if bound is not None else {"value": 3.0, "error": 3.0, "prediction": 2.0}[site]) * scale
    res = 2 * lim / (2 ** nbits - 2)
    a = torch.linspace(-2 * lim, 2 * lim, 20001, dtype=F64)
    out = getattr(q, f"{site}_transform")(a)
    k = out / res
    torch.testing.assert_close(k, torch.round(k), rtol=0, atol=1e-9)             # on the grid
    assert float(out.abs().max()) == pytest.approx(lim, rel=1e-12)               # clipped at the bound
    inside = a.abs() <= lim
    assert float((out - a)[inside].abs().max()) <= res / 2 * (1 + 1e-9)         # error <= step / 2
    assert len(torch.unique(torch.round(k))) == 2 ** nbits - 1                    # every level reached


@pytest.mark.parametrize("bits", [3, 6])
def test_weight_quantisation_error_is_at_most_half_a_step_of_the_largest_weight(bits):
    """quantisation site="weights" / bits: the circuit reads W quantised on 2 w_max / (2^bits - 2), every weight within
    half a step of its digital value, at most 2^bits - 1 levels; biases stay digital."""
    model, _ = lin_model(d=8, n=200, seed=5)
    c = Circuit(model, CircuitConfig(noise={"sources": [{"type": "quantisation", "site": "weights", "bits": bits}]}))
    fwd, fb = c.effective_weights()
    w = model.decoder.weight.detach()
    res = 2 * float(w.abs().max()) / (2 ** bits - 2)
    err = fwd["weight"] - w
    assert float(err.abs().max()) <= res / 2 * (1 + 1e-9) and float(err.abs().max()) > res / 4
    torch.testing.assert_close(fwd["weight"] / res, torch.round(fwd["weight"] / res), rtol=0, atol=1e-9)
    assert len(torch.unique(fwd["weight"])) <= 2 ** bits - 1
    assert torch.equal(fwd["bias"], model.decoder.bias.detach()) and torch.equal(fb["weight"], fwd["weight"])


# ======================================================================== feedback mismatch ====

@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
def test_feedback_mismatch_mode_sets_the_form_of_the_deviation(mode):
    """feedback_mismatch mode / std: multiplicative w_fb = w (1 + std xi): the deviation is proportional to w (its ratio
    to w has std `std`, so |deviation| is ~ 0 on the smallest weights); additive w_fb = w + std w_max xi: the deviation
    does not depend on |w| (the same std std * w_max on the smallest and the largest third of the weights). The forward
    path keeps w, and the feedback weights are what J^T uses: one T = 0 step moves z by (dt/tau_z)(W_fb^T eps - z).
    Tolerances: 5 standard errors sqrt(1/(2N)) of a std over N weights."""
    torch.manual_seed(0)
    model = GenerativeModel(nn.Linear(20, 300).double(), GaussianLikelihood(0.5).double())
    std = 0.1
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0,
                                     noise={"temperature": 0.0, "sources": [{"type": "feedback_mismatch", "std": std,
                                                                             "mode": mode}]}))
    B = 4
    x = torch.randn(B, 300, dtype=F64, generator=torch.Generator().manual_seed(1))
    z0 = torch.randn(B, 20, dtype=F64, generator=torch.Generator().manual_seed(2))
    run = CircuitRun(c, x, z0, torch.Generator())
    w = model.decoder.weight.detach()
    wfb = run.weights.fb["weight"]
    torch.testing.assert_close(run.weights.fwd["weight"], w)
    dev = (wfb - w).flatten()
    aw = w.abs().flatten()
    lo, hi = aw <= aw.quantile(1 / 3), aw >= aw.quantile(2 / 3)
    wmax = float(aw.max())
    if mode == "multiplicative":
        ratio = dev / w.flatten()
        assert abs(float(ratio.std()) / std - 1) < 5 / math.sqrt(2 * ratio.numel())
        # proportional to w: the deviation's rms on the large third over the small third is their |w| rms ratio (> 3)
        pred = float((aw[hi] ** 2).mean().sqrt() / (aw[lo] ** 2).mean().sqrt())
        got = float(dev[hi].pow(2).mean().sqrt() / dev[lo].pow(2).mean().sqrt())
        assert pred > 3 and abs(got / pred - 1) < 0.1
    else:
        for part in (lo, hi):
            assert abs(float(dev[part].std()) / (std * wmax) - 1) < 5 / math.sqrt(2 * int(part.sum())), part.sum()
    traj = c.simulate(x, z0.clone(), steps=1, record_every=1)
    b = model.decoder.bias.detach()
    expect = z0 + 1e-2 * (((x - z0 @ w.T - b) / sig2(model)) @ wfb - z0)
    torch.testing.assert_close(traj.z[0], expect, rtol=1e-9, atol=1e-12)


# ============================================================================== weight devices ====

def test_include_bias_puts_the_biases_on_the_array():
    """include_bias of weight_programming / drift / pulsed: with it the biases are devices -- programmed with the
    spread std * w_max(bias) (constant model), read with the drift factor ((t + t0)/t0)^-nu -- and the circuit reads
    them so; without it they stay digital (exactly the model's). 5 standard errors sqrt(1/(2N)) of a std."""
    model, _ = lin_model(d=4, n=3000, seed=6)
    w, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    for inc in (False, True):
        c = Circuit(model, CircuitConfig(noise={"sources": [
            {"type": "weight_programming", "model": "constant", "std": 0.05, "include_bias": inc}]}))
        fwd, _ = c.effective_weights()
        assert ("bias" in c.array.names) == inc
        if not inc:
            assert torch.equal(fwd["bias"], b)
        else:
            xi = (fwd["bias"] - b) / (0.05 * float(b.abs().max()))
            assert abs(float(xi.std()) - 1) < 5 / math.sqrt(2 * xi.numel()) and abs(float(xi.mean())) < 5 / math.sqrt(
                xi.numel())
        d = Circuit(model, CircuitConfig(noise={"sources": [{"type": "drift", "nu": 0.05, "t_start": 100.0,
                                                             "include_bias": inc}]}))
        fwd, _ = d.effective_weights()
        f = ((100.0 + 20.0) / 20.0) ** -0.05
        torch.testing.assert_close(fwd["weight"], w * f)
        torch.testing.assert_close(fwd["bias"], b * f if inc else b)
        arr = AnalogArray.from_noise(dict(model.decoder.named_parameters()),
                                     NoiseModel([{"type": "pulsed", "include_bias": inc}]).sources)
        assert ("bias" in arr.names) == inc


def test_each_sources_include_bias_is_its_own():
    """include_bias is per source: a bias on the array because one source includes it sees only that source's effect.
    programming (include_bias) + drift (not): the bias reads b + std w_max(b) xi, no drift factor; drift (include_bias)
    + programming (not): the bias reads b f exactly, f = ((t_start + t0)/t0)^-nu; weight_read (include_bias) + drift
    (not): the bias reads b, undrifted -- before the fix one OR-ed flag made every effect act on the biases; pulsed (not) + programming (include_bias): pulse_update writes the
    bias exactly, the weights by pulses."""
    model, _ = lin_model(d=4, n=3000, seed=6)
    w, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    f = ((100.0 + 20.0) / 20.0) ** -0.05
    drift = {"type": "drift", "nu": 0.05, "t_start": 100.0}
    prog = {"type": "weight_programming", "model": "constant", "std": 0.05}
    c = Circuit(model, CircuitConfig(noise={"sources": [{**prog, "include_bias": True}, drift]}))
    fwd, _ = c.effective_weights()
    xi = (fwd["bias"] - b) / (0.05 * float(b.abs().max()))
    assert abs(float(xi.std()) - 1) < 5 / math.sqrt(2 * xi.numel()) and abs(float(xi.mean())) < 5 / math.sqrt(xi.numel())
    xw = (fwd["weight"] / f - w) / (0.05 * float(w.abs().max()))
    assert abs(float(xw.std()) - 1) < 5 / math.sqrt(2 * xw.numel())
    c = Circuit(model, CircuitConfig(noise={"sources": [prog, {**drift, "include_bias": True}]}))
    fwd, _ = c.effective_weights()
    torch.testing.assert_close(fwd["bias"], b * f, rtol=1e-12, atol=0)
    c = Circuit(model, CircuitConfig(noise={"sources": [drift, {"type": "weight_read", "std": 0.01,
                                                                "include_bias": True}]}))
    fwd, _ = c.effective_weights()
    assert torch.equal(fwd["bias"], b)                                  # not drifted: drift leaves biases out
    arr = AnalogArray.from_noise(dict(model.decoder.named_parameters()), NoiseModel([
        {**prog, "include_bias": True}, {"type": "pulsed", "dw_min": 0.01, "rounding": "deterministic",
                                         "dw_min_std": 0.0}]).sources, seed=0)
    before = {n: arr.stored[n].clone() for n in arr.names}
    step = 0.37 * arr.step_up["weight"] * arr.scale["weight"]          # below half a pulse: rounds to no pulse
    arr.pulse_update({"weight": step, "bias": torch.full_like(b, 1e-4)}, None)
    torch.testing.assert_close(arr.stored["weight"], before["weight"], rtol=1e-15, atol=0)   # (to the / scale * scale)
    torch.testing.assert_close(arr.stored["bias"], before["bias"] + 1e-4, rtol=0, atol=1e-15)


@pytest.mark.parametrize("t0", [20.0, 2.0])
def test_drift_t0_sets_the_read_weights_of_a_circuit(t0):
    """drift t0 (with t_start and a numeric nu): the circuit reads w ((t + t_start + t0) / t0)^-nu at time t of a run
    (t0 = 20 s: 0.7712 at 1 h; t0 = 2 s: 0.6882) -- the two differ by 11 %, so a drift that ignored t0 fails one."""
    model, _ = lin_model(d=4, n=50, seed=7)
    w = model.decoder.weight.detach()
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "drift", "nu": 0.05, "t_start": 3600.0,
                                                                  "t0": t0}]}))
    for t in (0.0, 0.5):
        fwd, _ = c.effective_weights(t)
        torch.testing.assert_close(fwd["weight"], w * ((t + 3600.0 + t0) / t0) ** -0.05, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(c.array.read("weight", t), w * ((t + 3600.0 + t0) / t0) ** -0.05, rtol=1e-12,
                                   atol=1e-15)


def test_pulsed_device_to_device_spread_and_headroom():
    """pulsed dw_min_dtod: each device's step is dw_min (1 + dw_min_dtod xi) (frozen), so the relative spread of the
    steps is dw_min_dtod (0 with dtod 0); up_down scales the up / down steps by 1 +- up_down. init_fraction: the
    largest initial |w| sits at init_fraction * w_max device units, so a device driven up without bound stops at
    w_max device units = max|w0| / init_fraction in weight units (2x the initial max at 0.5, 4x at 0.25).
    5 standard errors sqrt(1/(2N)) of a std over N devices."""
    w = torch.randn(100, 100, dtype=F64, generator=torch.Generator().manual_seed(3)) * 0.1
    for dtod in (0.0, 0.1):
        arr = AnalogArray.from_noise({"w": w}, NoiseModel([{"type": "pulsed", "dw_min": 0.002, "dw_min_dtod": dtod,
                                                            "up_down": 0.2}]).sources, seed=1)
        rel = arr.step_up["w"] / (0.002 * 1.2)
        torch.testing.assert_close(arr.step_down["w"] / (0.002 * 0.8), rel)
        assert abs(float(rel.mean()) - 1) < 5 * max(dtod, 1e-12) / 100
        assert abs(float(rel.std()) - dtod) < 5 * dtod / math.sqrt(2 * rel.numel()) + 1e-15
    wmax0 = float(w.abs().max())
    for frac in (0.5, 0.25):
        arr = AnalogArray.from_noise({"w": w}, NoiseModel([{"type": "pulsed", "init_fraction": frac, "max_pulses": None,
                                                            "dw_min_dtod": 0.0, "dw_min_std": 0.0}]).sources, seed=1)
        assert arr.scale["w"] == pytest.approx(wmax0 / (frac * 0.6))
        arr.pulse_update({"w": torch.full_like(w, 10.0)}, None)                   # far past the bound
        torch.testing.assert_close(arr.stored["w"], torch.full_like(w, wmax0 / frac))
