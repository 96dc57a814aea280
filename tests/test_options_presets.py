"""Every noise preset is what docs/circuits.md section 3 documents, and its sources act as predicted (issue 18,
part 2).

``test_every_preset_runs_on_linear_and_conv_decoders`` (tests/test_noise_model.py) checks finiteness and the
temperature only: a preset whose sources were dropped passed it. Here (1) each preset's *bound* sources, in order and
with their documented parameters, and its temperature, time constants and analog array equal the documented table;
(2) each preset's noise changes the stationary law of a linear circuit as a closed form says:

* ``none`` (T = 0, no sources): the circuit is a gradient flow; every chain ends at the fixed point (no spread);
* ``ideal`` (T = 1): Euler-Maruyama's stationary law of the adiabatic linear circuit, the discrete Lyapunov equation
  C = M C M^T + 2 h T I (M = I - h P, h = dt / tau_z): the posterior to O(h);
* ``thermal`` with its temperature set to 0, so that its source alone is measured: thermal value noise adds
  2 h value_std^2 per step and the adiabatic error noise (value of eps redrawn with std error_std / sigma_x per
  evaluation) adds h^2 (error_std / sigma_x)^2 W^T W: C = M C M^T + Q;
* ``cortical`` with T = 0: its shot noise alone, on heterogeneous value and error units (finite tau_e). Its
  variance F scale |a| 2 dt / tau is linear in |a|, so the second-moment equations of the linear circuit close with
  E|a| = |E a| when every unit's mean is many standard deviations from 0 (arranged here: |mean| / std > 6, so
  the folded-normal correction E|a| - |E a| is below 1e-8 |E a|): the EM Lyapunov equation of the (z, eps) system
  with that diffusion.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from circuits import PRESETS, Circuit, CircuitConfig
from neuro_lpc import GaussianLikelihood, GenerativeModel
from problems import assert_moments


pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64

# docs/circuits.md section 3, "Presets": each preset's temperature, time-constant model and sources, in order,
# with the parameters the table states (anything not stated is the source's default)
DOCUMENTED = {
    "none": dict(T=0.0, timescales=None, sources=[]),
    "ideal": dict(T=1.0, timescales=None, sources=[]),
    "thermal": dict(T=1.0, timescales=None, sources=[("thermal", {"value_std": 0.1, "error_std": 0.1})]),
    "analog": dict(T=1.0, timescales=("mismatch", {"sigma": 0.1}), sources=[
        ("weight_programming", {"model": "pcm"}),
        ("drift", {"t_start": 3600.0, "compensate": True}),
        ("weight_read", {"std": 0.0175}),
        ("feedback_mismatch", {"std": 0.05}),
        ("mismatch", {"gain_std": 0.1, "offset_std": 0.02, "sites": ["value", "error"]}),
        ("quantisation", {"site": "value", "bits": 7}),
        ("quantisation", {"site": "prediction", "bits": 9}),
        ("quantisation", {"site": "error", "bits": 7}),
        ("thermal", {"value_std": 0.05, "error_std": 0.05}),
        ("flicker", {"value_std": 0.05}),
        ("saturation", {"sites": ["value"], "bound": 4.0, "mode": "clip", "on": "state"}),
    ]),
    "cortical": dict(T=1.0, timescales=("heterogeneous", {"sigma": math.log(2) / 4, "low": 0.01, "high": 0.02,
                                                          "tau_z": math.sqrt(0.01 * 0.02),
                                                          "tau_e": math.sqrt(0.01 * 0.02)}),
                     sources=[("shot", {"value_fano": 0.15, "error_fano": 0.15})]),
}


def lin_model(d=3, n=5, sigma=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=F64) / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=F64) * 0.1)
    return GenerativeModel(dec, GaussianLikelihood(sigma).double()), torch.randn(1, n, generator=g, dtype=F64)


def test_documented_presets_are_the_registered_ones():
    assert set(PRESETS) == set(DOCUMENTED)


@pytest.mark.parametrize("preset", sorted(DOCUMENTED))
def test_each_preset_binds_its_documented_sources(preset):
    """Preset `preset`: the circuit's bound sources (what acts; sources with nothing to do are dropped at binding),
    their order and documented parameters, the temperature, the time-constant model and -- for the weight devices --
    the analog array equal docs/circuits.md's table. A preset with a source dropped (e.g. cortical without its shot
    noise) or a changed amplitude fails."""
    doc = DOCUMENTED[preset]
    model, _ = lin_model()
    c = Circuit(model, CircuitConfig(dt=1e-4, noise=preset))
    assert c.temperature == doc["T"]
    got = [b.source for b in c.sources]
    assert [s.type for s in got] == [t for t, _ in doc["sources"]]
    for s, (_, params) in zip(got, doc["sources"]):
        for k, v in params.items():
            assert s.params[k] == pytest.approx(v), (s.type, k)
    ts = c.timescale_model
    if doc["timescales"] is None:
        assert ts.name == "uniform" and c.uniform_timescales
    else:
        name, params = doc["timescales"]
        assert ts.name == name and not c.uniform_timescales
        for k, v in params.items():
            assert ts.params[k] == pytest.approx(v), k
    types = {t for t, _ in doc["sources"]}
    if types & {"weight_programming", "drift", "weight_read"}:
        arr = c.array
        assert arr.programming.model == "pcm" and arr.drift.t0 == 20.0 and arr.drift.compensate is True
        assert arr.clock == 3600.0 and arr.read_std == 0.0175 and arr.drift.nu == "pcm"
    else:
        assert c.array is None


def _stationary(c, x1, z0, steps, B, seed=3):
    traj = c.simulate(x1.expand(B, -1), z0.expand(B, -1).clone(), steps=steps, record_every=steps,
                      generator=torch.Generator().manual_seed(seed))
    return traj.z[-1]


@pytest.mark.parametrize("noise", ["none", "ideal", {"preset": "thermal", "temperature": 0.0}],
                         ids=["none", "ideal", "thermal-sources"])
def test_uniform_presets_set_the_stationary_covariance_in_closed_form(noise):
    """Presets none / ideal / thermal (its sources alone, T = 0) on the adiabatic linear circuit: the stationary law of
    z is N(P^-1 c, C) with C the discrete Lyapunov solution of the module docstring (thermal: value_std = error_std =
    0.1 as documented, giving a covariance ~ 1 % of ideal's, yet zero without the source); none gives exactly the
    fixed point. 4000 chains, one snapshot, 5 standard errors (problems.assert_moments)."""
    model, x1 = lin_model(seed=1)
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    s2 = float(model.likelihood.sigma) ** 2
    P = (W.T @ W / s2 + torch.eye(3, dtype=F64)).numpy()
    # h lambda_max(P) = 1.5 (stable below 2): the adiabatic error noise's h^2 term is then ~ 3/4 of the value noise's
    # along the stiffest direction, so dropping either is many standard errors off
    tau_z, B = 1e-2, 4000
    h = 1.5 / np.linalg.eigvalsh(P).max()
    dt = h * tau_z
    c = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=0.0, noise=noise))
    mean = np.linalg.solve(P, (W.T @ (x1[0] - b) / s2).numpy())
    steps = int(15 / (np.linalg.eigvalsh(P).min() * h))
    z = _stationary(c, x1, torch.as_tensor(mean + 0.3), steps, B)
    if noise == "none":
        torch.testing.assert_close(z, torch.as_tensor(mean).expand(B, -1), rtol=0, atol=1e-6)
        return
    T = 1.0 if noise == "ideal" else 0.0
    sv, se = (0.0, 0.0) if noise == "ideal" else (0.1, 0.1)
    Q = 2 * h * (T + sv ** 2) * np.eye(3) + h ** 2 * se ** 2 / s2 * (W.T @ W).numpy()
    M = np.eye(3) - h * P
    cov = scipy.linalg.solve_discrete_lyapunov(M, Q)
    assert_moments(z, mean, cov, n_sigma=5.0)


def _far_from_zero_problem(d=3, n=5, sigma=0.5, seed=2):
    """A linear model and x whose T = 0 fixed point has every value unit and every error unit far from 0:
    z* = (8, -9, 10), eps* = (x - W z* - b) / sigma^2 = +-16 (the columns of W are shifted along eps* so that
    W^T eps* = z*, the fixed-point condition with s_p = 1)."""
    model, _ = lin_model(d, n, sigma, seed)
    e_star = torch.tensor([16.0, -16.0, 16.0, 16.0, -16.0], dtype=F64)
    z_star = torch.tensor([8.0, -9.0, 10.0], dtype=F64)
    with torch.no_grad():
        W = model.decoder.weight
        W += torch.outer(e_star, z_star - W.T @ e_star) / float(e_star @ e_star)
    s2 = float(model.likelihood.sigma) ** 2
    x = W.detach() @ z_star + model.decoder.bias.detach() + s2 * e_star
    return model, x[None], z_star, e_star


def test_cortical_shot_noise_sets_the_stationary_covariance_of_heterogeneous_units():
    """Preset cortical with T = 0 (its shot source alone; heterogeneous tau_z, tau_e of 10-20 ms): the stationary
    covariance of (z, eps) is the EM Lyapunov solution with diffusion F scale |mean| 2 dt / tau per unit (value scale
    s_p = 1, error scale 1/sigma_x; F = 0.15 as documented), exact here to ~1e-8 (module docstring). The preset without
    its shot source has no spread at all, and the ideal preset's T = 1 spread is ~ 10x larger: both fail.
    2000 chains, one snapshot, 5 standard errors."""
    model, x1, z_star, e_star = _far_from_zero_problem()
    dt, B = 1e-3, 2000
    c = Circuit(model, CircuitConfig(dt=dt, noise={"preset": "cortical", "temperature": 0.0}))
    tz, te = c.timescales.tau_z, c.timescales.tau_e
    assert isinstance(tz, torch.Tensor) and isinstance(te, torch.Tensor) and not c.adiabatic
    W = model.decoder.weight.detach().numpy()
    s2 = float(model.likelihood.sigma) ** 2
    tz, te = tz.numpy(), te.numpy()
    A = np.block([[-np.eye(3) / tz[:, None], W.T / tz[:, None]],
                  [-W / (s2 * te[:, None]), -np.eye(5) / te[:, None]]])
    Fm = np.eye(8) + dt * A
    F_shot = 0.15
    q = np.concatenate([F_shot * 1.0 * np.abs(z_star.numpy()) * 2 * dt / tz,
                        F_shot / math.sqrt(s2) * np.abs(e_star.numpy()) * 2 * dt / te])
    cov = scipy.linalg.solve_discrete_lyapunov(Fm, np.diag(q))
    sd = np.sqrt(np.diag(cov))
    assert (np.abs(np.concatenate([z_star, e_star])) / sd).min() > 6                  # the closure holds (docstring)
    steps = int(15 / (np.abs(np.linalg.eigvals(A).real).min() * dt))
    traj = c.simulate(x1.expand(B, -1), z_star.expand(B, -1).clone(), steps=steps, record_every=steps, record_eps=True,
                      generator=torch.Generator().manual_seed(4))
    X = torch.cat([traj.z[-1], traj.extras["eps"][-1]], 1)
    assert_moments(X, np.concatenate([z_star, e_star]), cov, n_sigma=5.0)
