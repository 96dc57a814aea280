"""The circuit's read-out path (circuits.modes.readout_model / ReadoutDecoder): generative samples go through the
value-site transforms, the circuit's weights and the prediction-site transforms, each as its closed form says."""
import torch

from circuits import CircuitConfig
from circuits.modes import ReadoutDecoder, readout_model
from problems import F64, linear_model


def _z(B=6, d=3):
    return 2.0 * torch.randn(B, d, generator=torch.Generator().manual_seed(4), dtype=F64)


def test_an_ideal_circuit_reads_out_through_the_model_itself():
    model, _ = linear_model(3, 8, 0.5)
    assert readout_model(model, CircuitConfig(dt=1e-4, noise="ideal")) is model


def test_the_prediction_adc_quantises_the_readout_in_closed_form():
    """site "prediction", 4 bits, bound 1: mu -> round(clip(mu, -1, 1) / r) r with r = 2 / (2^4 - 2) = 1/7."""
    model, _ = linear_model(3, 8, 0.5, scale=3.0)
    cfg = CircuitConfig(dt=1e-4, noise={"preset": "ideal", "sources": [
        {"type": "quantisation", "site": "prediction", "bits": 4, "bound": 1.0}]})
    ro = readout_model(model, cfg)
    assert isinstance(ro.decoder, ReadoutDecoder)
    z = _z()
    mu = model.decoder(z).detach()
    expected = torch.round(mu.clamp(-1.0, 1.0) * 7) / 7
    assert (mu.abs() > 1).any() and not torch.allclose(expected, mu.clamp(-1, 1))   # both clip and grid act
    torch.testing.assert_close(ro.decoder(z), expected, rtol=0, atol=1e-12)


def test_the_value_dac_quantises_z_before_the_decoder():
    """site "value", 3 bits, bound 1 (x s_p = 1.5): g(round(clip(z, -1.5, 1.5) / r) r), r = 2 x 1.5 / (2^3 - 2)."""
    model, _ = linear_model(3, 8, 0.5)
    model.prior_std = 1.5
    cfg = CircuitConfig(dt=1e-4, noise={"preset": "ideal", "sources": [
        {"type": "quantisation", "site": "value", "bits": 3, "bound": 1.0}]})
    ro = readout_model(model, cfg)
    z = _z()
    r = 2 * 1.5 / (2**3 - 2)
    expected = model.decoder(torch.round(z.clamp(-1.5, 1.5) / r) * r).detach()
    torch.testing.assert_close(ro.decoder(z), expected, rtol=0, atol=1e-12)
