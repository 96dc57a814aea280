"""Unit noise under preconditioning, and noise states that persist across presentations (issue 7).

With gain units the value equation is tau/G dz = s dt + sqrt(2 T tau / G) dW: G modulates the unit's
time constant, and the unit's own noise (thermal, shot, flicker current) follows it, so a thermal
value_std sigma gives the effective temperature T + sigma^2 whatever G is (closed form on a linear
Gaussian posterior: covariance (T + sigma^2) Sigma_post). The 1/f bank keeps its state across
presentations when the circuit is given a persistent ``noise_state``.
"""
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.analysis import gaussian_posterior
from neuro_lpc import GaussianLikelihood, GenerativeModel

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def _linear_model():
    torch.manual_seed(4)
    dec = nn.Linear(2, 6).double()
    with torch.no_grad():
        dec.weight.mul_(2.0)
    return GenerativeModel(dec, GaussianLikelihood(0.2).double())


@pytest.mark.parametrize("sigma", [0.5])
def test_thermal_noise_raises_the_temperature_by_sigma_squared_with_preconditioning(sigma):
    model = _linear_model()
    x = torch.randn(1, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    W, b = model.decoder.weight.detach().numpy(), model.decoder.bias.detach().numpy()
    mean, cov, _ = gaussian_posterior(W, b, x[0].numpy(), 0.2, 1.0)
    B, T = 4000, 1.0
    cfg = CircuitConfig(dt=2e-5, tau_z=1e-2, tau_e=0.0, temperature=T, precondition="rms", precondition_tau=1.0,
                        noise={"sources": [{"type": "thermal", "value_std": sigma, "error_std": 0.0}]}, seed=3)
    c = Circuit(model, cfg)
    z0 = torch.as_tensor(mean, dtype=F64).expand(B, 2) + torch.randn(B, 2, dtype=F64) * 0.05
    traj = c.simulate(x.expand(B, 6), z0, steps=4000, record_every=4000)
    G = traj.extras["gain"][-1]
    assert float(G.median()) < 0.3                          # far from 1: the unscaled form would give T + sigma^2 / G
    z = traj.z[-1].numpy()
    var = z.var(0)
    expected = (T + sigma**2) * cov.diagonal()
    wrong = (T + sigma**2 / float(G.median())) * cov.diagonal()
    se = expected * (2 / B) ** 0.5
    assert abs(var - expected).max() < 5 * se.max() + 0.05 * expected.max(), (var, expected, wrong)
    assert (abs(var - wrong) > 0.3 * wrong).all()


def test_flicker_bank_persists_across_presentations_with_a_noise_state():
    model = _linear_model()
    B = 400
    x = torch.zeros(B, 6, dtype=F64)
    noise = {"sources": [{"type": "flicker", "value_std": 0.5, "tau_min": 1e-2, "tau_max": 10.0, "record": True}]}
    cfg = CircuitConfig(dt=2e-5, tau_z=1e-2, tau_e=0.0, noise=noise)
    z0 = torch.zeros(B, 2, dtype=F64)

    def end_and_start(store):
        t1 = Circuit(model, cfg, noise_state=store).simulate(x, z0, steps=50, record_every=1,
                                                             generator=torch.Generator().manual_seed(1))
        t2 = Circuit(model, cfg, noise_state=store).simulate(x, z0, steps=50, record_every=1,
                                                             generator=torch.Generator().manual_seed(2))
        a = t1.extras["noise_flicker_value"][-1].flatten()
        b = t2.extras["noise_flicker_value"][0].flatten()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    assert end_and_start({}) > 0.9          # the second presentation continues the first one's 1/f noise
    assert abs(end_and_start(None)) < 0.2   # without a state: a fresh stationary draw per presentation
