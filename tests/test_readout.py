"""The circuit's read-out path (circuits.modes.readout_model / ReadoutDecoder): generative samples go through the
value-site transforms, the circuit's weights and the prediction-site transforms, each as its closed form says."""
import torch

from circuits import CircuitConfig, NoiseModel
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


def _read_noise_config(std=0.05):
    return CircuitConfig(dt=1e-4, noise={"preset": "ideal", "sources": [{"type": "weight_read", "std": std}]})


def test_the_readout_keeps_the_models_prior_and_latent_size_and_draws_from_the_given_generator():
    """readout_model's model has the prior std and latent size of the model (what ``sample`` draws z from), and its
    per-product read noise comes from the generator handed over: the same seed gives the same read-out, another
    seed another one (a read-out that ignored the generator would give seed 0's draws for both)."""
    model, _ = linear_model(3, 8, 0.5)
    model.prior_std = 1.7
    z = _z()
    outs = {}
    for seed in (5, 5, 6):
        ro = readout_model(model, _read_noise_config(), generator=torch.Generator().manual_seed(seed))
        assert ro.prior_std == 1.7 and ro.latent_dim == 3
        outs.setdefault(seed, []).append(ro.decoder(z))
    torch.testing.assert_close(outs[5][0], outs[5][1], rtol=0, atol=0)
    assert not torch.allclose(outs[5][0], outs[6][0])
    default = readout_model(model, _read_noise_config()).decoder(z)                # no generator: seed 0
    assert not torch.allclose(default, outs[5][0])


def test_the_readout_reads_the_array_it_is_given():
    """A programmed array handed to readout_model is the one read: without read noise the read-out is the decoder
    with the array's stored (programmed) weights, not the model's own and not a fresh programming."""
    from circuits.modes import program_array
    model, _ = linear_model(3, 8, 0.5)
    noise = {"preset": "ideal", "sources": [{"type": "weight_programming", "std": 0.05}]}
    arr = program_array(model, NoiseModel.from_dict(noise), seed=11)
    ro = readout_model(model, CircuitConfig(dt=1e-4, noise=noise, seed=3), array=arr)
    z = _z()
    W = arr.read("weight", 0.0)
    b = model.decoder.bias.detach()
    torch.testing.assert_close(ro.decoder(z), z @ W.T + b, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(W, model.decoder.weight.detach())


def test_the_deployed_model_keeps_the_prior_is_frozen_and_uses_its_generator():
    from circuits.modes import deployed_model, program_array
    model, _ = linear_model(3, 8, 0.5)
    model.prior_std = 0.8
    noise = {"preset": "ideal", "sources": [{"type": "weight_programming", "std": 0.05},
                                            {"type": "weight_read", "std": 0.05}]}
    arr = program_array(model, NoiseModel.from_dict(noise), seed=2)
    z = _z()
    a = deployed_model(model, arr, torch.Generator().manual_seed(9))
    b = deployed_model(model, arr, torch.Generator().manual_seed(9))
    c = deployed_model(model, arr, torch.Generator().manual_seed(10))
    assert a.prior_std == 0.8 and a.latent_dim == 3
    assert not any(p.requires_grad for p in a.decoder.parameters())
    torch.testing.assert_close(a.decoder(z), b.decoder(z), rtol=0, atol=0)
    assert not torch.allclose(a.decoder(z), c.decoder(z))
