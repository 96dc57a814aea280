"""The noise registry, presets and configs (circuits.noise.model, .presets) and the circuit with noise.

Every preset runs on linear and conv decoders, configs round-trip through dicts and JSON, bad
configs raise clear errors, runs are reproducible by seed and sources with nothing to do are dropped.
"""
import json

import pytest
import torch
from torch import nn

from circuits import NOISE_SOURCES, PRESETS, TIMESCALES, Circuit, CircuitConfig, NoiseModel
from helpers_noise import bind, conv_model, linear_model
from neuro_lpc import GenerativeModel


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------- registry & config ----

def test_registries_and_presets():
    assert set(PRESETS) == {"none", "ideal", "thermal", "analog", "cortical"}
    assert set(NOISE_SOURCES) == {"thermal", "shot", "flicker", "mismatch", "weight_programming", "weight_read",
                                  "drift", "pulsed", "quantisation", "saturation", "feedback_mismatch"}
    assert set(TIMESCALES) == {"uniform", "heterogeneous", "mismatch", "adiabatic"}
    assert NoiseModel.preset("none").temperature == 0.0 and NoiseModel.preset("ideal").temperature == 1.0
    for name in PRESETS:
        nm = NoiseModel.preset(name)
        assert NoiseModel.from_dict(nm.to_dict()) == nm
        for cls in NOISE_SOURCES.values():  # every default parameter set validates
            cls()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_every_preset_runs_on_linear_and_conv_decoders(preset, kind):
    if kind == "linear":
        model, x1 = linear_model(4, 10, 0.5, seed=1, dtype=torch.float32)
        x = x1.expand(3, -1)
    else:
        model = conv_model()
        x = torch.rand(3, 1, 4, 4) * 2 - 1
    circuit = Circuit(model, CircuitConfig(dt=1e-4, noise=preset))
    traj = circuit.simulate(x, steps=40, record_every=10)
    assert torch.isfinite(traj.z).all() and torch.isfinite(traj.log_joint).all()
    assert circuit.temperature == (0.0 if preset == "none" else 1.0)
    if preset == "cortical":
        tz = circuit.timescales.tau_z
        assert isinstance(tz, torch.Tensor) and tz.min() >= 0.01 - 1e-9 and tz.max() <= 0.02 + 1e-9


def test_noise_config_round_trips_through_dict_and_json(tmp_path):
    nm = NoiseModel.from_dict({"preset": "thermal", "sources": [{"type": "flicker", "value_std": 0.2}],
                               "temperature": 0.5})
    assert [s.type for s in nm.sources] == ["thermal", "flicker"] and nm.temperature == 0.5
    path = tmp_path / "noise.json"
    nm.to_file(path)
    assert NoiseModel.from_file(path) == nm
    assert json.loads(path.read_text())["sources"][1]["value_std"] == 0.2
    cfg = CircuitConfig(noise=str(path))
    assert cfg.noise_model() == nm and cfg.resolved_temperature() == 0.5
    (tmp_path / "preset.json").write_text('"analog"')
    assert NoiseModel.from_file(tmp_path / "preset.json") == NoiseModel.preset("analog")


@pytest.mark.parametrize("spec, match", [
    ("loud", "unknown noise preset"),
    ({"sources": [{"type": "hum"}]}, "unknown noise source"),
    ({"sources": [{"value_std": 0.1}]}, "unknown noise source None"),
    ({"sources": [{"type": "thermal", "volume": 1}]}, r"unknown parameter\(s\) \['volume'\]"),
    ({"sources": [{"type": "thermal", "value_std": -0.1}]}, "non-negative"),
    ({"sources": [{"type": "shot", "error_fano": -1}]}, "non-negative"),
    ({"sources": [{"type": "flicker", "value_std": -1}]}, "non-negative"),
    ({"sources": [{"type": "flicker", "tau_min": 10, "tau_max": 1}]}, "tau_min"),
    ({"sources": [{"type": "mismatch", "gain_std": -0.1}]}, "non-negative"),
    ({"sources": [{"type": "mismatch", "sites": ["axon"]}]}, "unknown site"),
    ({"sources": [{"type": "weight_read", "std": -0.01}]}, "non-negative"),
    ({"sources": [{"type": "weight_programming", "model": "rram"}]}, "must be one of"),
    ({"sources": [{"type": "drift", "nu": -0.1}]}, "nu"),
    ({"sources": [{"type": "quantisation", "bits": 1}]}, "bits"),
    ({"sources": [{"type": "saturation", "bound": 0}]}, "positive"),
    ({"sources": [{"type": "saturation", "sites": ["prediction"], "on": "state"}]}, "unknown site"),
    ({"sources": [{"type": "feedback_mismatch", "std": -0.1}]}, "non-negative"),
    ({"temperature": -1}, "temperature"),
    ({"sauces": []}, "unknown key"),
])
def test_bad_noise_configs_raise_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        NoiseModel.resolve(spec)


def test_bad_noise_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        NoiseModel.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        NoiseModel.from_file(tmp_path / "bad.json")


# ---------------------------------------------------------------- the circuit with noise ----

def test_linear_and_autograd_kernels_agree_under_the_analog_preset():
    """Two code paths (explicit matmuls vs functional_call + autograd) give the same chain, noise and all."""
    model, x1 = linear_model(3, 8, 0.5, seed=7)
    wrapped = GenerativeModel(nn.Sequential(model.decoder), model.likelihood, latent_dim=3)
    x = x1.expand(5, -1)
    a = Circuit(model, CircuitConfig(dt=1e-4, noise="analog", seed=3))
    b = Circuit(wrapped, CircuitConfig(dt=1e-4, noise="analog", seed=3))
    ta, tb = a.simulate(x, steps=200, record_every=10), b.simulate(x, steps=200, record_every=10)
    assert a.state["kernel"] == "linear" and b.state["kernel"] == "autograd"
    torch.testing.assert_close(ta.z, tb.z, rtol=0, atol=1e-12)


def test_seeds_make_runs_reproducible_and_distinct():
    model, x1 = linear_model(3, 8, 0.5, seed=8)
    x = x1.expand(4, -1)
    runs = [Circuit(model, CircuitConfig(dt=1e-4, noise="analog", seed=s)).simulate(x, steps=50, record_every=10).z
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_sources_with_nothing_to_do_are_dropped_at_construction():
    circuit, sources = bind([{"type": "thermal", "value_std": 0.0, "error_std": 0.0},
                             {"type": "weight_read", "std": 0.0}, {"type": "shot", "value_fano": 0, "error_fano": 0}])
    assert sources == [] and all(not h for h in circuit.hooks.values())
    c = Circuit(linear_model()[0], CircuitConfig(noise={"sources": [{"type": "thermal", "error_std": 0.0}]}))
    assert c.hooks["value_increment"] and not c.hooks["error_increment"]
