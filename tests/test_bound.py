"""The circuit bound to a model (circuits.bound): initial states, and every bad configuration refused at
construction, before any step."""
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from problems import F64, counted_model, linear_model


pytestmark = pytest.mark.usefixtures("single_thread")


def test_initial_states_prior_encoder_and_seed():
    model, x1 = linear_model(3, 5, 0.5, seed=15)
    x = x1.expand(3, -1)
    c = Circuit(model, CircuitConfig(dt=1e-4, seed=2))
    a = c.simulate(x, steps=20, record_every=10)
    b = c.simulate(x, z0="prior", steps=20, record_every=10)
    torch.testing.assert_close(a.z, b.z)  # None == "prior", same seed -> same run

    class Enc(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), 5.0, dtype=F64), torch.full((x.shape[0], 3), 1e-8, dtype=F64)

    e = c.simulate(x, z0="encoder", encoder=Enc(), steps=5, record_every=1, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    z0 = 5.0 + 1e-4 * torch.randn((3, 3), generator=g, dtype=F64)  # the reparameterised draw, then the run
    manual = c.simulate(x, z0, steps=5, record_every=1, generator=g)
    torch.testing.assert_close(e.z, manual.z)
    with pytest.raises(ValueError, match="encoder="):
        c.simulate(x, z0="encoder", steps=1, record_every=1)



# ----------------------------------------------------------------------------- bad inputs ----

@pytest.mark.parametrize("kw, match", [
    ({"noise": "loud"}, "unknown noise preset"),
    ({"noise": {"sources": [{"type": "hum"}]}}, "unknown noise source"),
    ({"noise": {"sources": [{"type": "thermal", "volume": 1}]}}, "unknown parameter"),
    ({"noise": {"sources": [{"type": "thermal", "value_std": -0.1}]}}, "non-negative"),
    ({"dt": 5e-3, "tau_e": 2e-3}, "unstable"),
    ({"tau_z": -1e-2}, "tau_z must be positive"),
    ({"timescales": {"name": "mismatch", "sigma": -1}}, "sigma"),
])
def test_bad_configuration_raises_before_any_step(kw, match):
    model, dec = counted_model()
    with pytest.raises(ValueError, match=match):
        Circuit(model, CircuitConfig(**kw))
    assert dec.calls == 0
