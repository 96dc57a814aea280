"""Shared helpers of the noise tests (tests/test_noise_*.py, tests/test_timescales.py): small models and
bound sources."""
import math

import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from neuro_lpc import GaussianLikelihood, GenerativeModel


F64 = torch.float64


def linear_model(d=3, n=5, sigma=0.5, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).to(dtype)
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=dtype) / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=dtype) * 0.1)
    model = GenerativeModel(dec, GaussianLikelihood(sigma).to(dtype))
    return model, torch.randn(1, n, generator=g, dtype=dtype)


def conv_model(d=4, seed=0):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 32), nn.Unflatten(1, (8, 2, 2)), nn.SiLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1))
    return GenerativeModel(dec, GaussianLikelihood(0.5), latent_dim=d)


def bind(sources, model=None, **cfg):
    """A circuit with these sources and its bound sources."""
    model = model or linear_model()[0]
    circuit = Circuit(model, CircuitConfig(noise={"sources": sources}, **cfg))
    return circuit, circuit.sources


def increments(b, which, ref, batch, seed=0):
    """One draw of a bound source's additive increment for a batch (out starts at zero)."""
    gen = torch.Generator().manual_seed(seed)
    b.start(batch, gen)
    out = torch.zeros_like(ref)
    getattr(b, f"{which}_increment")(ref, out, gen)
    return out
