"""Time-constant models (circuits.timescales): seeded heterogeneity, mismatch, adiabatic, presets."""
import pytest
import torch

from circuits import Circuit, CircuitConfig, NoiseModel
from circuits.timescales import make_timescales
from helpers_noise import linear_model


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------- time constants ----

def test_timescale_models():
    het = make_timescales({"name": "heterogeneous", "sigma": 0.3})
    a = het.build(1e-2, 2e-3, 0.1, 2000, (500,), seed=1)
    b = het.build(1e-2, 2e-3, 0.1, 2000, (500,), seed=1)
    c = het.build(1e-2, 2e-3, 0.1, 2000, (500,), seed=2)
    assert torch.equal(a.tau_z, b.tau_z) and not torch.equal(a.tau_z, c.tau_z)
    logs = torch.log(a.tau_z / 1e-2)
    assert abs(logs.std().item() / 0.3 - 1) < 0.1 and abs(logs.mean().item()) < 0.03
    assert a.tau_e.shape == (500,) and a.tau_m == 0.1  # gain units stay uniform by default
    mis = make_timescales("mismatch").build(1e-2, 2e-3, 0.1, 5000, (10,), seed=0)
    assert abs((mis.tau_z / 1e-2 - 1).std().item() / 0.1 - 1) < 0.1
    ad = make_timescales("adiabatic").build(1e-2, 2e-3, 0.1, 3, (4,))
    assert ad.adiabatic and ad.tau_e == 0.0
    cort = NoiseModel.preset("cortical").timescales.build(1.0, 1.0, 0.1, 3000, (100,))
    assert cort.tau_z.min() >= 0.01 and cort.tau_z.max() <= 0.02 and 0.013 < cort.tau_z.median() < 0.0155
    with pytest.raises(ValueError, match="unknown timescale model"):
        make_timescales("bursty")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_timescales({"name": "mismatch", "spread": 0.1})
    # the config's choice wins over the preset's, and the time constants reach the circuit
    model = linear_model()[0]
    circuit = Circuit(model, CircuitConfig(dt=1e-4, noise="cortical", timescales="uniform"))
    assert circuit.uniform_timescales


# --------------------------------------------------------------------------------- renames ----

def test_timescale_mismatch_is_registered_by_name_and_saves_as_before():
    from circuits.timescales import TIMESCALES, TimescaleMismatch

    model = make_timescales({"name": "mismatch", "sigma": 0.2})
    assert TIMESCALES["mismatch"] is TimescaleMismatch and type(model) is TimescaleMismatch
    assert model.to_dict() == {"name": "mismatch", "sigma": 0.2, "tau_z": None, "tau_e": None,
                               "populations": ["value", "error", "gain"]}
    assert make_timescales(model.to_dict()) == model


def test_old_name_timescales_mismatch_warns_and_is_timescale_mismatch():
    import circuits.timescales as ts

    with pytest.warns(DeprecationWarning, match="circuits.timescales.Mismatch is deprecated; use .*TimescaleMismatch"):
        old = ts.Mismatch
    assert old is ts.TimescaleMismatch
    with pytest.raises(AttributeError):
        ts.NoSuchModel
