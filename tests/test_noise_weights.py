"""Weight devices (circuits.noise.weights): programming noise, read noise and drift against the
aihwkit PCM formulas; frozen draws against the seed, fresh draws every step."""
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.circuit import CircuitRun
from circuits.noise import pcm_drift_nu_moments, pcm_programming_std
from helpers_noise import F64, bind
from neuro_lpc import GaussianLikelihood, GenerativeModel


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- frozen draws ----

def test_weight_programming_noise_follows_the_pcm_model():
    model = GenerativeModel(nn.Linear(40, 784).double(), GaussianLikelihood(0.5).double())
    w = model.decoder.weight.detach()
    wmax = w.abs().max()
    _, (b,) = bind([{"type": "weight_programming", "model": "pcm"}], model, seed=3)
    delta = b.frozen["weight"]
    assert "bias" not in b.frozen
    xi = delta / (pcm_programming_std(w.abs() / wmax) * wmax)
    assert abs(xi.std().item() - 1) < 0.03 and abs(xi.mean().item()) < 0.03
    assert pcm_programming_std(torch.tensor(0.0)) == pytest.approx(0.26348 / 25)
    assert pcm_programming_std(torch.tensor(1.0)) == pytest.approx((0.26348 + 1.9650 - 1.1731) / 25)
    _, (c,) = bind([{"type": "weight_programming", "model": "constant", "std": 0.02}], model, seed=3)
    assert abs(c.frozen["weight"].std().item() / (0.02 * wmax.item()) - 1) < 0.03
    _, (b2,) = bind([{"type": "weight_programming"}], model, seed=3)
    assert torch.equal(b2.frozen["weight"], delta)
    torch.testing.assert_close(b.weight_static("weight", w), w + delta)


def test_read_noise_is_fresh_every_step_and_shared_by_the_batch():
    model = GenerativeModel(nn.Linear(20, 300).double(), GaussianLikelihood(0.5).double())
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "weight_read", "std": 0.0175}]}))
    x = torch.zeros(4, 300, dtype=F64)
    run = CircuitRun(c, x, torch.zeros(4, 20, dtype=F64), torch.Generator().manual_seed(0))
    w = model.decoder.weight.detach()
    run.weights.step(0.0, run.gen)
    d1 = run.weights.fwd["weight"] - w
    run.weights.step(1e-4, run.gen)
    d2 = run.weights.fwd["weight"] - w
    assert not torch.equal(d1, d2)
    for d in (d1, d2):
        assert abs(d.std().item() / (0.0175 * w.abs().max().item()) - 1) < 0.05
    assert abs(torch.corrcoef(torch.stack([d1.flatten(), d2.flatten()]))[0, 1].item()) < 0.05
    assert torch.equal(run.weights.fwd["bias"], model.decoder.bias.detach())
    assert run.weights.fb is run.weights.fwd  # the same read feeds the feedback path


def test_drift_follows_the_power_law():
    model = GenerativeModel(nn.Linear(10, 200).double(), GaussianLikelihood(0.5).double())
    w = model.decoder.weight.detach()
    _, (b,) = bind([{"type": "drift", "t_start": 100.0}], model)
    nu = b.frozen["weight"]
    mu_lo, _ = pcm_drift_nu_moments(torch.tensor(1.0))
    assert (nu >= 0).all() and 0.02 < nu.mean().item() < 0.12 and mu_lo.item() == pytest.approx(0.049)
    t = 2.5
    expect = w * ((t + 100.0 + 20.0) / 20.0) ** (-nu)
    torch.testing.assert_close(b.weight_dynamic("weight", w, t, None), expect)
    _, (c,) = bind([{"type": "drift", "nu": 0.05, "t_start": 3600.0, "compensate": True}], model)
    assert c.factor("weight", 0.0).mean().item() == pytest.approx(1.0)
    _, (d,) = bind([{"type": "drift", "nu": 0.05, "t_start": 3600.0}], model)
    assert d.factor("weight", 0.0).mean().item() == pytest.approx((3620 / 20) ** -0.05)
