"""Noise of units (circuits.noise.units): thermal, shot and flicker noise.

Measured statistics against each source's definition: increment variances, the stationary law of
the linear circuit (Lyapunov), variance proportional to activity, the 1/f slope of the OU bank.
"""
import math

import numpy as np
import pytest
import scipy.signal
import torch

from circuits import Circuit, CircuitConfig
from circuits.noise import OUBank
from circuits.analysis import euler_maruyama_stationary, linear_circuit_matrices
from helpers_noise import F64, bind, increments, linear_model


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------- additive noise ----

@pytest.mark.parametrize("units", ["relative", "absolute"])
@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
def test_thermal_increment_variances(units, tau_e):
    dt, tau_z, sigma_x = 1e-4, 1e-2, 0.5
    circuit, (b,) = bind([{"type": "thermal", "value_std": 0.3, "error_std": 0.2, "units": units}],
                         dt=dt, tau_z=tau_z, tau_e=tau_e)
    B = 20000
    dv = increments(b, "value", torch.zeros(B, 3, dtype=F64), B)
    de = increments(b, "error", torch.zeros(B, 5, dtype=F64), B)
    if units == "relative":
        var_v = 0.3**2 * 2 * dt / tau_z
        var_e = (0.2 / sigma_x) ** 2 * (2 * dt / tau_e if tau_e else 1.0)
    else:
        var_v = 0.3**2 * dt
        var_e = 0.2**2 * (dt if tau_e else 1.0)
    tol = 5 * math.sqrt(2 / dv.numel())
    assert abs(dv.var().item() / var_v - 1) < tol
    assert abs(de.var().item() / var_e - 1) < 5 * math.sqrt(2 / de.numel())
    assert abs(dv.mean().item()) < 5 * math.sqrt(var_v / dv.numel())
    d2 = increments(b, "value", torch.zeros(B, 3, dtype=F64), B, seed=0)
    d3 = torch.zeros_like(d2)
    b.value_increment(None, d3, torch.Generator().manual_seed(1))
    assert torch.equal(dv, d2) and not torch.equal(d2, d3)  # reproducible from the seed, fresh per call


def test_thermal_noise_stationary_law_matches_lyapunov():
    """Finite tau_e linear circuit + thermal noise on both populations: the noise matrix gains
    sqrt(2/tau_z) value_std on z (effective temperature T + value_std^2) and sqrt(2/tau_e) error_std/sigma_x
    on eps; 4000 chains match the EM discrete Lyapunov solution."""
    model, x1 = linear_model(3, 5, 0.5, seed=3)
    W, b, x = model.decoder.weight.detach(), model.decoder.bias.detach(), x1[0]
    tau_z, tau_e, dt, sv, se = 1e-2, 2e-3, 2e-4, 0.7, 0.5
    A, c, Bm = linear_circuit_matrices(W, b, x, 0.5, 1.0, tau_z, tau_e)
    B_noise = np.zeros((8, 8))
    B_noise[:3, :3] = np.eye(3) * math.sqrt(2 * (1 + sv**2) / tau_z)
    B_noise[3:, 3:] = np.eye(5) * math.sqrt(2 / tau_e) * se / 0.5
    mean, cov = euler_maruyama_stationary(A, B_noise, dt, c)
    noise = {"sources": [{"type": "thermal", "value_std": sv, "error_std": se}]}
    circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise=noise))
    e_fold = 1 / (np.min(np.abs(np.linalg.eigvals(A).real)) * dt)
    spacing = int(3 * e_fold) + 1
    chains, records = 4000, 8
    traj = circuit.simulate(x1.expand(chains, -1), torch.zeros(chains, 3, dtype=F64), steps=spacing * (records + 3),
                            record_every=spacing, record_eps=True)
    X = torch.cat([traj.z[3:], traj.extras["eps"][3:]], -1).reshape(-1, 8)
    emp = torch.cov(X.T).numpy()
    var = np.diag(cov)
    se_cov = np.sqrt((var[:, None] * var[None, :] + cov**2) / X.shape[0])
    assert (np.abs(emp - cov) / se_cov).max() < 5
    assert (np.abs(X.mean(0).numpy() - mean) / np.sqrt(var / X.shape[0])).max() < 5


def test_shot_noise_variance_is_proportional_to_activity():
    dt, tau_z, tau_e = 1e-4, 1e-2, 2e-3
    circuit, (b,) = bind([{"type": "shot", "value_fano": 0.2, "error_fano": 0.1}], dt=dt, tau_z=tau_z, tau_e=tau_e)
    B = 20000
    a = torch.tensor([0.25, 1.0, -2.0], dtype=F64).expand(B, 3)
    dv = increments(b, "value", a, B)
    ratio = dv.var(0) / a[0].abs()
    expect = 0.2 * 1.0 * 2 * dt / tau_z  # F * s_p * 2 dt / tau_z per unit |a|
    assert ((ratio / expect - 1).abs() < 5 * math.sqrt(2 / B)).all(), ratio / expect
    e = torch.tensor([0.5, 1.0, 2.0, 4.0, -8.0], dtype=F64).expand(B, 5)
    de = increments(b, "error", e, B)
    expect_e = 0.1 * (1 / 0.5) * 2 * dt / tau_e
    assert ((de.var(0) / e[0].abs() / expect_e - 1).abs() < 5 * math.sqrt(2 / B)).all()
    assert increments(b, "value", torch.zeros(B, 3, dtype=F64), B).abs().max() == 0  # silent at zero activity


def test_flicker_bank_has_a_one_over_f_spectrum():
    dt, steps, units = 1e-3, 2**16, 16
    taus = OUBank.log_spaced(2e-3, 20.0, per_decade=2)
    assert len(taus) == 9 and taus[0] == pytest.approx(2e-3) and taus[-1] == pytest.approx(20.0)
    bank = OUBank(taus, std=0.5, shape=(units,), dt=dt, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    bank.reset(gen)
    y = torch.empty(steps, units, dtype=F64)
    for k in range(steps):
        y[k] = bank.step(gen)
    assert abs(y.std().item() / 0.5 - 1) < 0.1  # stationary from the start, total std as set
    f, S = scipy.signal.welch(y.numpy(), fs=1 / dt, nperseg=2**13, axis=0)
    S = S.mean(1)
    band = (f > 0.3) & (f < 20)  # well inside the corners 1/(2 pi 20 s) = 0.008 Hz and 1/(2 pi 2 ms) = 80 Hz
    slope = np.polyfit(np.log(f[band]), np.log(S[band]), 1)[0]
    assert -1.15 < slope < -0.85, slope
    theory = bank.psd(torch.as_tensor(f[band])).numpy()
    slope_th = np.polyfit(np.log(f[band]), np.log(theory), 1)[0]
    assert -1.1 < slope_th < -0.9
    assert np.median(np.abs(np.log(S[band] / theory))) < 0.15  # matches the closed-form PSD


def test_flicker_source_in_the_circuit_records_its_current():
    model, x1 = linear_model(3, 5, 0.5, seed=4)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [
        {"type": "flicker", "value_std": 0.3, "error_std": 0.1, "record": True}]}))
    traj = c.simulate(x1.expand(64, -1), steps=400, record_every=10)
    fv, fe = traj.extras["noise_flicker_value"], traj.extras["noise_flicker_error"]
    assert fv.shape == (40, 64, 3) and fe.shape == (40, 64, 5)
    assert abs(fv.std().item() / 0.3 - 1) < 0.2  # std in units of s_p = 1
    assert abs(fe.std().item() / (0.1 / 0.5) - 1) < 0.2  # relative to the error scale 1/sigma_x
