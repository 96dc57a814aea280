"""Weight devices (circuits.noise.weight_sources, served by the circuit's analog array): programming noise, read
noise and drift against the aihwkit PCM formulas; a programming draw per array from the seed, read noise
fresh per product (per chain, per output, per step), drift in the time since programming."""
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.run import CircuitRun
from circuits.noise import pcm_drift_nu_moments, pcm_programming_std
from helpers_noise import F64, bind
from neuro_lpc import GaussianLikelihood, GenerativeModel


pytestmark = pytest.mark.usefixtures("single_thread")


def test_weight_programming_noise_follows_the_pcm_model():
    model = GenerativeModel(nn.Linear(40, 784).double(), GaussianLikelihood(0.5).double())
    w = model.decoder.weight.detach()
    wmax = w.abs().max()
    c, _ = bind([{"type": "weight_programming", "model": "pcm"}], model, seed=3)
    assert c.array is not None and c.array.names == ["weight"]            # biases stay digital by default
    delta = c.array.stored["weight"] - w
    xi = delta / (pcm_programming_std(w.abs() / wmax) * wmax)
    assert abs(xi.std().item() - 1) < 0.03 and abs(xi.mean().item()) < 0.03
    assert pcm_programming_std(torch.tensor(0.0)) == pytest.approx(0.26348 / 25)
    assert pcm_programming_std(torch.tensor(1.0)) == pytest.approx((0.26348 + 1.9650 - 1.1731) / 25)
    cc, _ = bind([{"type": "weight_programming", "model": "constant", "std": 0.02}], model, seed=3)
    assert abs((cc.array.stored["weight"] - w).std().item() / (0.02 * wmax.item()) - 1) < 0.03
    c2, _ = bind([{"type": "weight_programming"}], model, seed=3)
    assert torch.equal(c2.array.stored["weight"], c.array.stored["weight"])   # one draw per seed
    c4, _ = bind([{"type": "weight_programming"}], model, seed=4)
    assert not torch.equal(c4.array.stored["weight"], c.array.stored["weight"])
    fwd, fb = c.effective_weights()
    torch.testing.assert_close(fwd["weight"], w + delta)
    assert torch.equal(fwd["bias"], model.decoder.bias.detach()) and fb is fwd


def test_read_noise_is_fresh_per_chain_per_output_and_per_step():
    model = GenerativeModel(nn.Linear(20, 300).double(), GaussianLikelihood(0.5).double())
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "weight_read", "std": 0.0175}]}))
    B = 64
    z = torch.randn(B, 20, dtype=F64, generator=torch.Generator().manual_seed(1))
    run = CircuitRun(c, torch.zeros(B, 300, dtype=F64), z, torch.Generator().manual_seed(0))
    assert run.kernel == "linear" and run.read_sigma == pytest.approx(0.0175 * float(model.decoder.weight.abs().max()))
    clean = model.decoder(z).detach()
    d1 = (run.kernel_impl.forward(z) - clean) / (run.read_sigma * z.norm(dim=1, keepdim=True))
    d2 = (run.kernel_impl.forward(z) - clean) / (run.read_sigma * z.norm(dim=1, keepdim=True))
    for d in (d1, d2):                                  # unit normal per output: sigma_r ||z|| xi
        assert abs(d.std().item() - 1) < 0.03 and abs(d.mean().item()) < 0.03
    assert abs(torch.corrcoef(torch.stack([d1.flatten(), d2.flatten()]))[0, 1].item()) < 0.05   # fresh per read
    assert abs(torch.corrcoef(torch.stack([d1[0], d1[1]]))[0, 1].item()) < 0.2                # not shared by chains
    # the autograd kernel (a learning run, or any decoder) draws the same law through forward hooks
    conv = nn.Sequential(nn.Linear(20, 300)).double()
    conv[0].load_state_dict(model.decoder.state_dict())
    mc = GenerativeModel(conv, GaussianLikelihood(0.5).double())
    c2 = Circuit(mc, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "weight_read", "std": 0.0175}]}))
    run2 = CircuitRun(c2, torch.zeros(B, 300, dtype=F64), z, torch.Generator().manual_seed(0))
    assert run2.kernel == "autograd"
    run2.weights.step(0.0, run2.gen)
    e = (run2.kernel_impl.forward(z) - clean) / (run.read_sigma * z.norm(dim=1, keepdim=True))
    assert abs(e.std().item() - 1) < 0.03


def test_drift_follows_the_power_law_in_the_time_since_programming():
    model = GenerativeModel(nn.Linear(10, 200).double(), GaussianLikelihood(0.5).double())
    w = model.decoder.weight.detach()
    c, _ = bind([{"type": "drift", "t_start": 100.0}], model)
    nu = c.array.nu["weight"]
    mu_lo, _ = pcm_drift_nu_moments(torch.tensor(1.0))
    assert (nu >= 0).all() and 0.02 < nu.mean().item() < 0.12 and mu_lo.item() == pytest.approx(0.049)
    assert c.array.clock == 100.0                                 # a stand-alone circuit starts t_start after programming
    t = 2.5
    fwd, _ = c.effective_weights(t)
    torch.testing.assert_close(fwd["weight"], w * ((t + 100.0 + 20.0) / 20.0) ** (-nu))
    cc, _ = bind([{"type": "drift", "nu": 0.05, "t_start": 3600.0, "compensate": True}], model)
    assert cc.array.drift_factor("weight").mean().item() == pytest.approx(1.0)
    d, _ = bind([{"type": "drift", "nu": 0.05, "t_start": 3600.0}], model)
    assert d.array.drift_factor("weight").mean().item() == pytest.approx((3620 / 20) ** -0.05)
