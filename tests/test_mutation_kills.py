"""Closed-form checks of the converter, mismatch and feedback sources and of the deployment wrappers, written against
the mutants that survived the sampled mutation run of issue 18 (docs/mutation.md).

The sources are bound to a circuit's context with a frozen generator of a known seed, and the test re-draws the
documented frozen normals from an independent generator of the same seed (CircuitContext.frozen_randn: N(0, 1) in
float64 on the CPU, cast to the circuit's dtype; NoiseModel.bind: frozen draws in source order, each source in the
order of its sites / of the decoder's weights), then predicts the transform from the formula in the source's
docstring.
"""
import dataclasses
import math

import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.modes import DeployedDecoder, ReadoutDecoder, deployed_model, program_array
from circuits.noise import NoiseModel
from circuits.noise.converters import Quantisation, Saturation, quantise
from circuits.noise.feedback import FeedbackMismatch
from circuits.noise.mismatch import Mismatch
from neuro_lpc import GaussianLikelihood, GenerativeModel
from problems import linear_model

F64 = torch.float64
SIGMA_X = 0.5          # the likelihood's sigma: error units are in units of 1 / sigma_x = 2, value units of s_p = 1
SEED = 11


def _mlp(d=3, h=4, n=5):
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, n)).double()
    return GenerativeModel(dec, GaussianLikelihood(SIGMA_X).double(), latent_dim=d)


def _context(model):
    """The context of a noise-free circuit of ``model`` with its frozen generator replaced by one seeded SEED."""
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"preset": "ideal"}))
    return dataclasses.replace(c.context, frozen_gen=torch.Generator().manual_seed(SEED))


def _oracle_draws():
    g = torch.Generator().manual_seed(SEED)
    return lambda shape: torch.randn(tuple(shape), generator=g, dtype=F64)


# ------------------------------------------------------------------------------------------------ mismatch ----

@pytest.mark.parametrize("gain_std, offset_std", [(0.3, 0.0), (0.0, 0.3), (0.2, 0.1)])
def test_mismatch_transform_is_gain_times_activity_plus_offset_from_the_seed(gain_std, offset_std):
    """a' = a (1 + s_g xi) + s_o scale xi' per unit, xi then xi' drawn per site in site order; either spread alone acts."""
    model, _ = linear_model(3, 5, SIGMA_X)
    b = Mismatch(gain_std=gain_std, offset_std=offset_std, sites=["value", "error"]).bind(_context(model))
    draw = _oracle_draws()
    a = torch.linspace(-2.0, 2.0, 5, dtype=F64)
    for site, n, scale in (("value", 3, 1.0), ("error", 5, 1 / SIGMA_X)):
        xi, xi2 = draw((n,)), draw((n,))
        expected = a[:n] * (1 + gain_std * xi) + offset_std * scale * xi2
        torch.testing.assert_close(getattr(b, f"{site}_transform")(a[:n]), expected)
        assert not torch.allclose(expected, a[:n])          # the case is one where the mismatch shows


# ------------------------------------------------------------------------------------------ feedback mismatch ----

@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
@pytest.mark.parametrize("std", [0.3, 1.0])
def test_feedback_mismatch_perturbs_every_weight_matrix_as_documented(mode, std):
    """w_fb = w (1 + std xi) (multiplicative) or w + std max|w| xi (additive), one frozen xi per weight matrix in the
    decoder's parameter order (biases skipped, not the end of the list); std = 1 is as live as any other std."""
    model = _mlp()
    b = FeedbackMismatch(std=std, mode=mode).bind(_context(model))
    assert b is not None
    draw = _oracle_draws()
    params = dict(model.decoder.named_parameters())
    assert [n for n, w in params.items() if w.dim() >= 2] == ["0.weight", "2.weight"]
    for name, w in params.items():
        w = w.detach()
        if w.dim() < 2:
            assert b.feedback_static(name, w) is w       # biases: no feedback copy
            continue
        xi = draw(w.shape)
        expected = w * (1 + std * xi) if mode == "multiplicative" else w + std * w.abs().max() * xi
        torch.testing.assert_close(b.feedback_static(name, w), expected)


# ----------------------------------------------------------------------------------------------- quantisation ----

def test_two_bit_quantiser_has_three_levels_and_rounds_to_nearest_before_any_run():
    """bits = 2 (the smallest allowed): resolution 2 bound / (2^2 - 2) = bound, levels {-bound, 0, bound}; a freshly
    bound quantiser (no run started) rounds to nearest, the stochastic = False default."""
    model, _ = linear_model(3, 5, SIGMA_X)
    b = Quantisation(site="value", bits=2, bound=1.5).bind(_context(model))
    a = torch.tensor([-9.0, -1.0, -0.7, 0.7, 0.8, 9.0], dtype=F64)
    torch.testing.assert_close(b.value_transform(a), torch.tensor([-1.5, -1.5, 0.0, 0.0, 1.5, 1.5], dtype=F64))


@pytest.mark.parametrize("params", [{"bound": 0}, {"bound": 0.0}, {"site": "weights", "stochastic": True}])
def test_quantisation_refuses_a_zero_bound_and_stochastic_weights(params):
    with pytest.raises(ValueError, match="quantisation"):
        Quantisation(**params)


# ------------------------------------------------------------------------------------------------- saturation ----

def test_saturation_on_outputs_clips_both_rails_in_units_of_the_site_scale():
    """Error units: scale 1 / sigma_x = 2, so bound 3 clips at +-6 (clip) or maps a -> 6 tanh(a / 6) (tanh)."""
    model, _ = linear_model(3, 5, SIGMA_X)
    ctx = _context(model)
    a = torch.tensor([-50.0, -5.0, 0.5, 5.0, 50.0], dtype=F64)
    clip = Saturation(sites=["error"], bound=3.0, mode="clip").bind(ctx)
    torch.testing.assert_close(clip.error_transform(a), torch.tensor([-6.0, -5.0, 0.5, 5.0, 6.0], dtype=F64))
    tanh = Saturation(sites=["error"], bound=3.0, mode="tanh").bind(ctx)
    torch.testing.assert_close(tanh.error_transform(a), 6.0 * torch.tanh(a / 6.0))


@pytest.mark.parametrize("mode", ["clip", "tanh"])
def test_saturation_on_the_state_bounds_value_and_error_units_in_place(mode):
    """on = "state": z in units of s_p = 1 (bound 3), eps in units of 1 / sigma_x = 2 (bound 6), both in place."""
    model, _ = linear_model(3, 5, SIGMA_X)
    b = Saturation(sites=["value", "error"], bound=3.0, mode=mode, on="state").bind(_context(model))
    z = torch.tensor([[-10.0, 1.0, 10.0]], dtype=F64)
    eps = torch.tensor([[-20.0, -4.0, 0.0, 4.0, 20.0]], dtype=F64)
    z0, eps0 = z.clone(), eps.clone()
    b.state_clip(z, eps)
    for t, t0, bound in ((z, z0, 3.0), (eps, eps0, 6.0)):
        expected = t0.clamp(-bound, bound) if mode == "clip" else bound * torch.tanh(t0 / bound)
        torch.testing.assert_close(t, expected)


# ------------------------------------------------------------------------------------------------- deployment ----

def test_deployed_decoder_reads_the_drifted_weights_at_the_arrays_clock():
    """Drift alone (nu = 0.05, t0 = 20 s), deployed 1 h after programming: W(t) = W ((t + t0) / t0)^(-nu) and the
    decoder states the clock it was read at; the bias (not on the array's drift) is unchanged."""
    model, _ = linear_model(3, 5, SIGMA_X)
    noise = NoiseModel([{"type": "drift", "nu": 0.05, "t0": 20.0}])
    arr = program_array(model, noise, seed=0, t_since_programming=3600.0)
    dec = DeployedDecoder(model.decoder, arr)
    assert dec.clock == 3600.0
    factor = ((3600.0 + 20.0) / 20.0) ** -0.05
    torch.testing.assert_close(dec.inner.weight, model.decoder.weight.detach() * factor)
    torch.testing.assert_close(dec.inner.bias, model.decoder.bias.detach())


def test_deployed_model_owns_its_likelihood():
    """The deployed model is an evaluation copy: changing its learned sigma leaves the trained model's alone."""
    model, _ = linear_model(3, 5, SIGMA_X, learn_sigma=True)
    noise = NoiseModel([{"type": "weight_programming", "model": "constant", "std": 0.05}])
    dm = deployed_model(model, program_array(model, noise, seed=0))
    with torch.no_grad():
        dm.likelihood.log_sigma.add_(1.0)
    assert float(model.likelihood.log_sigma.detach()) == pytest.approx(math.log(SIGMA_X))


def test_readout_decoder_without_a_generator_reads_with_a_fixed_seed():
    """generator=None: fresh draws (read noise) come from a generator seeded 0, so two read-outs agree, equal the
    read-out with an explicit Generator().manual_seed(0), and differ from one seeded 1 (the noise is on)."""
    model, _ = linear_model(3, 5, SIGMA_X)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"preset": "ideal",
                                                     "sources": [{"type": "weight_read", "std": 0.2}]}))
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    y0 = ReadoutDecoder(c)(z)
    torch.testing.assert_close(ReadoutDecoder(c)(z), y0, rtol=0, atol=0)
    torch.testing.assert_close(ReadoutDecoder(c, torch.Generator().manual_seed(0))(z), y0, rtol=0, atol=0)
    assert not torch.allclose(ReadoutDecoder(c, torch.Generator().manual_seed(1))(z), y0)


def test_a_pulsed_circuit_is_refused_by_the_ode_integrator_naming_its_source():
    """simulate_ode integrates the noise-free circuit: a circuit with a pulsed-update source is refused with a
    ValueError that names the source type."""
    model, x = linear_model(3, 5, SIGMA_X)
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"preset": "ideal", "sources": [{"type": "pulsed"}]}))
    with pytest.raises(ValueError, match="pulsed"):
        c.simulate_ode(x, t_end=1e-3, n_points=3)


# ----------------------------------------------------------------------------------------------------- on CUDA ----

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_readout_and_stochastic_quantisation_stay_on_the_circuits_cuda_device():
    """On CUDA the read-out's default generator, its zero observation and the stochastic rounding's uniforms are made
    on the circuit's device (a CPU generator or tensor there is a device error): the read-out is a finite CUDA tensor,
    and stochastic rounding lands on the grid within one step of its input."""
    model, _ = linear_model(3, 5, SIGMA_X)
    model = model.to("cuda")
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"preset": "ideal",
                                                     "sources": [{"type": "weight_read", "std": 0.2}]}))
    z = torch.randn(4, 3, dtype=F64, device="cuda")
    y = ReadoutDecoder(c)(z)
    assert y.device.type == "cuda" and bool(torch.isfinite(y).all())
    a = torch.linspace(-1.0, 1.0, 101, dtype=F64, device="cuda")
    q = quantise(a, 0.25, 1.0, torch.Generator(device="cuda").manual_seed(0))
    assert q.device.type == "cuda"
    torch.testing.assert_close(q / 0.25, torch.round(q / 0.25))        # on the grid
    assert bool(((q - a).abs() < 0.25 + 1e-12).all())                   # within one step of the input
