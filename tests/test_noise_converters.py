"""Converters and rails (circuits.noise.converters): quantisation grids, bounds, stochastic rounding,
and saturation on outputs and on the state."""
import pytest
import torch

from circuits import Circuit, CircuitConfig
from helpers_noise import F64, bind, linear_model


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------ transforms ----

def test_quantisation_grid_bounds_and_stochastic_rounding():
    _, (q,) = bind([{"type": "quantisation", "site": "value", "bits": 5, "bound": 2.0}])
    q.start(1, None)
    a = torch.linspace(-5, 5, 1001, dtype=F64)
    out = q.value_transform(a)
    res = 2 * 2.0 / (2**5 - 2)
    assert out.abs().max() <= 2.0 + 1e-12
    torch.testing.assert_close(out / res, torch.round(out / res))
    inside = a.abs() < 1.9
    assert ((out - a)[inside].abs() <= res / 2 + 1e-12).all()
    _, (qs,) = bind([{"type": "quantisation", "site": "error", "bits": 4, "bound": 1.0, "stochastic": True}])
    gen = torch.Generator().manual_seed(0)
    qs.start(1, gen)
    e = torch.full((200000,), 0.37 * 2.0, dtype=F64)  # error site scale 1/sigma_x = 2
    se = qs.error_transform(e)
    assert abs(se.mean().item() - 0.74) < 0.01 and len(torch.unique(se)) == 2  # unbiased, two neighbours
    _, (qw,) = bind([{"type": "quantisation", "site": "weights", "bits": 4}])
    w = torch.randn(30, 4, dtype=F64)
    wq = qw.weight_static("weight", w)
    assert len(torch.unique(wq)) <= 2**4 - 1


def test_saturation_on_outputs_and_on_the_state():
    _, (s,) = bind([{"type": "saturation", "sites": ["value", "prediction"], "bound": 1.5, "mode": "tanh"}])
    a = torch.linspace(-10, 10, 101, dtype=F64)
    torch.testing.assert_close(s.value_transform(a), 1.5 * torch.tanh(a / 1.5))
    assert s.prediction_transform(a).abs().max() < 1.5
    model, x1 = linear_model(3, 5, 0.5, seed=6)
    c = Circuit(model, CircuitConfig(dt=1e-4, temperature=4.0, noise={"sources": [
        {"type": "saturation", "sites": ["value"], "bound": 0.5, "on": "state"}]}))
    traj = c.simulate(x1.expand(50, -1), steps=300, record_every=10)
    assert traj.z.abs().max() <= 0.5 + 1e-12 and (traj.z.abs() == 0.5).any()
