"""Sources at zero amplitude bind nothing (the circuit then runs the noise-free kernels), and a mismatch source with
only one of its two spreads set still acts, with that spread alone (issue 18: mutants of the 'active' checks)."""
import pytest

from circuits import Circuit, CircuitConfig
from problems import linear_model


@pytest.mark.parametrize("source", [
    {"type": "mismatch", "gain_std": 0.0, "offset_std": 0.0},
    {"type": "feedback_mismatch", "std": 0.0},
    {"type": "thermal", "value_std": 0.0, "error_std": 0.0},
    {"type": "weight_read", "std": 0.0},
    {"type": "weight_programming", "model": "constant", "std": 0.0},
])
def test_a_source_at_zero_amplitude_binds_nothing(source):
    model, _ = linear_model(3, 50, 0.5)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"preset": "ideal", "sources": [source]}))
    assert c.sources == [] and c.frozen == {}


@pytest.mark.parametrize("gain_std, offset_std", [(0.3, 0.0), (0.0, 0.3), (0.5, 0.2)])
def test_mismatch_acts_with_either_spread_alone(gain_std, offset_std):
    """Frozen gains 1 + gain_std xi and offsets offset_std x scale xi per unit (value units: scale s_p = 1; error
    units: 1 / sigma_x = 2): their spreads are the configured ones within 5 se of 2,000 error units (se of a std of
    N normals ~ std / sqrt(2N)), exactly 1 / 0 for a spread that is 0."""
    model, _ = linear_model(3, 2000, 0.5)
    c = Circuit(model, CircuitConfig(dt=1e-5, noise={"preset": "ideal", "sources": [
        {"type": "mismatch", "gain_std": gain_std, "offset_std": offset_std}]}))
    assert [b.source.type for b in c.sources] == ["mismatch"]
    gain, offset = c.frozen["mismatch[0].error_gain"].double(), c.frozen["mismatch[0].error_offset"].double()
    for values, std, centre in ((gain, gain_std, 1.0), (offset, offset_std * 2.0, 0.0)):
        if std == 0:
            assert bool((values == centre).all())
        else:
            assert abs(float(values.std()) - std) < 5 * std / (2 * values.numel()) ** 0.5
            assert abs(float(values.mean()) - centre) < 5 * std / values.numel() ** 0.5


@pytest.mark.parametrize("nu, ok", [(0.0, True), (0.05, True), ("pcm", True), (-0.01, False), (float("inf"), False),
                                    (True, False), ("fast", False)])
def test_drift_exponent_is_validated_before_any_step(nu, ok):
    """drift's nu: "pcm" or a finite number >= 0 (0 = no drift is allowed); anything else a one-line error."""
    from circuits import NoiseModel
    cfg = {"preset": "ideal", "sources": [{"type": "drift", "nu": nu}]}
    if ok:
        NoiseModel.from_dict(cfg)
    else:
        with pytest.raises(ValueError, match="nu must be 'pcm' or a non-negative number"):
            NoiseModel.from_dict(cfg)
