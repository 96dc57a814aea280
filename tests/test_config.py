"""CircuitConfig (circuits.config): round trip through dict / JSON and validation."""
import pytest

from circuits import CircuitConfig, NoiseModel


pytestmark = pytest.mark.usefixtures("single_thread")


def test_config_round_trip_and_validation():
    cfg = CircuitConfig(dt=2e-4, noise={"preset": "thermal", "temperature": 0.5}, timescales="mismatch", seed=4)
    d = cfg.to_dict()
    assert CircuitConfig.from_dict(d) == cfg
    cfg2 = CircuitConfig(noise=NoiseModel.preset("analog"))
    assert CircuitConfig.from_dict(cfg2.to_dict()).noise_model() == NoiseModel.preset("analog")
    assert cfg.resolved_temperature() == 0.5
    assert CircuitConfig(noise="none").resolved_temperature() == 0.0
    for bad in ({"dt": -1e-4}, {"tau_z": 0.0}, {"tau_e": -1e-3}, {"temperature": -1.0}, {"error_form": "x"},
                {"precondition": "adam"}, {"noise": "loud"}, {"timescales": "weird"}, {"check_every": 0},
                {"noise": {"sources": [{"type": "thermal", "value_std": -1}]}}):
        with pytest.raises(ValueError):
            CircuitConfig(**bad).validate()
    with pytest.raises(ValueError, match="unknown field"):
        CircuitConfig.from_dict({"dt": 1e-4, "tau": 1})
